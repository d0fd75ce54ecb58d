"""
The built-in echo upstream (like mockbin or httpbin): answers with the
request it received, as JSON, so the shipped configuration works offline.

Knobs for tests and demos:
  - C{/status/<code>} answers with that status;
  - C{/delay/<seconds>} answers after that many seconds (at most 60);
  - C{/bytes/<n>} streams C{n} bytes (honouring backpressure);
  - anything else, C{/anything...} included, echoes the request.
"""

import base64
import json
from typing import Dict, List
from urllib.parse import parse_qsl

from twisted.internet.interfaces import IPushProducer
from twisted.web import http, server
from twisted.web.resource import Resource
from zope.interface import implementer

import twistgate

MAX_DELAY = 60.0
_CHUNK = 1 << 16
_PATTERN = bytes(range(256)) * (_CHUNK // 256)


def describeRequest(request: server.Request) -> Dict[str, object]:
    """
    The JSON document the echo answers with.

    @return: C{method}, C{path}, C{uri}, C{query} (name to a value, or a
        list of values when repeated), C{headers} (name as received to a
        value, or a list when repeated), C{body} (text, or base64 when not
        UTF-8, with C{body_encoding}), C{client} (address and port), and
        C{http_version}.
    """
    path, _, rawQuery = request.uri.partition(b"?")
    query: Dict[str, object] = {}
    for name, value in parse_qsl(rawQuery.decode("latin-1"), keep_blank_values=True):
        _addRepeated(query, name, value)
    headers: Dict[str, object] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        for value in values:
            _addRepeated(headers, name.decode("latin-1").lower(), value.decode("latin-1"))
    content = request.content.read() if request.content is not None else b""
    document: Dict[str, object] = {
        "method": request.method.decode("latin-1"),
        "path": path.decode("latin-1"),
        "uri": request.uri.decode("latin-1"),
        "query": query,
        "headers": headers,
        "http_version": request.clientproto.decode("latin-1"),
    }
    try:
        document["body"] = content.decode("utf-8")
    except UnicodeDecodeError:
        document["body"] = base64.b64encode(content).decode("ascii")
        document["body_encoding"] = "base64"
    peer = request.getClientAddress()
    document["client"] = {"address": getattr(peer, "host", None), "port": getattr(peer, "port", None)}
    return document


def _addRepeated(into: Dict[str, object], name: str, value: str) -> None:
    if name not in into:
        into[name] = value
    elif isinstance(into[name], list):
        into[name].append(value)
    else:
        into[name] = [into[name], value]


@implementer(IPushProducer)
class _ByteStream:
    """
    Writes C{remaining} bytes to a request, a chunk per reactor turn while
    the client keeps up.
    """

    def __init__(self, request: server.Request, remaining: int, clock) -> None:
        self._request = request
        self._remaining = remaining
        self._clock = clock
        self._paused = False
        self._stopped = False
        self._call = None

    def start(self) -> None:
        self._request.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self._paused and not self._stopped:
            self._call = self._clock.callLater(0, self._produce)

    def _produce(self) -> None:
        self._call = None
        while not self._paused and not self._stopped and self._remaining > 0:
            size = min(_CHUNK, self._remaining)
            self._remaining -= size
            self._request.write(_PATTERN[:size])
        if self._remaining == 0 and not self._stopped:
            self._stopped = True
            self._request.unregisterProducer()
            self._request.finish()

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._schedule()

    def stopProducing(self):
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


def patternBytes(n: int) -> bytes:
    """
    @return: the first C{n} bytes that C{/bytes/<n>} sends.
    """
    repeats = n // len(_PATTERN) + 1
    return (_PATTERN * repeats)[:n]


class EchoResource(Resource):
    """
    The echo upstream's root resource.
    """

    isLeaf = True

    def __init__(self, clock) -> None:
        """
        @param clock: an C{IReactorTime} for C{/delay} and C{/bytes}.
        """
        super().__init__()
        self._clock = clock

    def render(self, request: server.Request):
        request.setHeader(b"server", b"twistgate-echo/" + twistgate.__version__.encode("ascii"))
        segments: List[bytes] = request.path.split(b"/")[1:]
        knob = segments[0] if segments else b""
        argument = segments[1] if len(segments) > 1 else b""
        if knob == b"status" and argument.isdigit() and 100 <= int(argument) <= 599:
            return self._echo(request, int(argument))
        if knob == b"delay":
            return self._delayed(request, argument)
        if knob == b"bytes" and argument.isdigit():
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", argument)
            if request.method == b"HEAD":
                return b""
            _ByteStream(request, int(argument), self._clock).start()
            return server.NOT_DONE_YET
        return self._echo(request, http.OK)

    def _echo(self, request: server.Request, status: int) -> bytes:
        request.setResponseCode(status)
        body = json.dumps(describeRequest(request), indent=2, sort_keys=True).encode("utf-8") + b"\n"
        request.setHeader(b"content-type", b"application/json")
        if status in http.NO_BODY_CODES:
            return b""
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body

    def _delayed(self, request: server.Request, argument: bytes):
        try:
            seconds = float(argument)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_DELAY:
            request.setResponseCode(http.BAD_REQUEST)
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"message": "delay must be 0 to %d seconds" % MAX_DELAY}).encode("utf-8")
        call = self._clock.callLater(seconds, self._answerLate, request)
        request.notifyFinish().addErrback(lambda reason: call.cancel() if call.active() else None)
        return server.NOT_DONE_YET

    def _answerLate(self, request: server.Request) -> None:
        body = self._echo(request, http.OK)
        request.write(body)
        request.finish()
