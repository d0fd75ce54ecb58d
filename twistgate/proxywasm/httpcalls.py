"""
HTTP calls filters make with C{proxy_http_call}: validation of the call,
the request through treq over an injected C{IAgent}, and the result the
filter reads in C{on_http_call_response}.
"""

import re
from typing import Callable, List, Optional, Tuple

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError as ConnectTimeoutError,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer
from treq.client import HTTPClient
from treq.content import collect as collectBody

from twistgate.proxywasm.constants import Status
from twistgate.proxywasm.maps import validName, validValue

Pairs = List[Tuple[bytes, bytes]]

DEFAULT_TIMEOUT = 60.0
"""
Seconds an HTTP call may take when the filter passes a timeout of 0.
"""

MAX_RESPONSE_BODY = 16 * 1024 * 1024
"""
The largest HTTP call response body a filter is given; a larger one fails
the call with C{:dispatch_status: reader failure}.
"""

_HOST = re.compile(r"\A(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?\Z")
_HOP_BY_HOP = (b"connection", b"host", b"content-length", b"transfer-encoding", b"keep-alive", b"upgrade")

log = Logger(namespace="twistgate.proxywasm.httpcalls")


class HttpCall:
    """
    One HTTP call a filter dispatched, and its outcome.

    @ivar token: the call id the filter got.
    @ivar root: the root context the response goes to.
    @ivar stream: the stream context that made the call (it waits for it),
        or L{None} for a call made outside a request (e.g. C{on_tick}).
    @ivar statusCode: the response status, 0 when no response arrived.
    @ivar headers: the response headers, lower-case names.
    @ivar body: the response body, L{None} when no response arrived.
    @ivar dispatchStatus: why the call failed (C{b"timeout"},
        C{b"broken connection"}, ...), or L{None}.
    """

    def __init__(self, token: int, root, stream) -> None:
        self.token = token
        self.root = root
        self.stream = stream
        self.statusCode = 0
        self.headers: Pairs = []
        self.trailers: Pairs = []
        self.body = b""
        self.dispatchStatus: Optional[bytes] = None
        self.cancelled = False
        self.timedOut = False
        self.pending: Optional[Deferred] = None

    def pseudoHeaders(self) -> Pairs:
        """
        @return: C{:status} when a response arrived, C{:dispatch_status}
            when the call failed.
        """
        pseudo = []
        if self.statusCode:
            pseudo.append((b":status", b"%d" % (self.statusCode,)))
        if self.dispatchStatus is not None:
            pseudo.append((b":dispatch_status", self.dispatchStatus))
        return pseudo

    def status(self) -> Tuple[int, bytes]:
        """
        @return: what C{proxy_get_status} reports for this call.
        """
        if self.dispatchStatus is None:
            return Status.OK, b""
        return Status.BROKEN_CONNECTION, self.dispatchStatus

    def cancel(self) -> None:
        """
        Abandon the call: its callback will not run.
        """
        self.cancelled = True
        if self.pending is not None:
            self.pending.cancel()


class CallTarget:
    """
    Where an HTTP call goes: a scheme, a host and a port.
    """

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port

    def url(self, path: bytes) -> bytes:
        host = self.host
        default = 443 if self.scheme == "https" else 80
        netloc = host if self.port == default else "{}:{}".format(host, self.port)
        return "{}://{}".format(self.scheme, netloc).encode("ascii") + path


def parseTarget(target: bytes, scheme: str,
                services: Callable[[str], Optional[Tuple[str, str, int]]]) -> Optional[CallTarget]:
    """
    Resolve the C{upstream} argument of C{proxy_http_call}: a configured
    service name, or C{host[:port]}.

    @param services: looks up a service name, returning C{(protocol, host,
        port)} or L{None}.
    @return: the L{CallTarget}, or L{None} if C{target} is neither.
    """
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        return None
    service = services(text)
    if service is not None:
        return CallTarget(*service)
    match = _HOST.match(text)
    if match is None:
        return None
    host = match.group(1)
    port = int(match.group(2)) if match.group(2) else (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        return None
    if host.startswith("["):
        host = host[1:-1]
    return CallTarget(scheme, host, port)


def validateCall(headers: Pairs) -> Tuple[Optional[str], dict, Pairs]:
    """
    Check the headers of a call and split off its pseudo-headers.

    @return: C{(problem, pseudo, headers)}: a description of what is wrong
        (or L{None}), the pseudo-headers by name, and the headers to send.
    """
    pseudo = {}
    plain = []
    for name, value in headers:
        name = name.lower()
        if not validValue(value):
            return "invalid value for header {!r}".format(name), pseudo, plain
        if name.startswith(b":"):
            pseudo[name] = value
        elif not validName(name):
            return "invalid header name {!r}".format(name), pseudo, plain
        elif name not in _HOP_BY_HOP:
            plain.append((name, value))
    for required in (b":method", b":path", b":authority"):
        if not pseudo.get(required):
            return "missing {}".format(required.decode()), pseudo, plain
    if not validName(pseudo[b":method"]):
        return "invalid :method", pseudo, plain
    if not pseudo[b":path"].startswith(b"/") or b" " in pseudo[b":path"]:
        return "invalid :path", pseudo, plain
    if b" " in pseudo[b":authority"]:
        return "invalid :authority", pseudo, plain
    return None, pseudo, plain


def _describe(failure: Failure) -> bytes:
    if failure.check(CancelledError, ConnectTimeoutError):
        return b"timeout"
    if failure.check(DNSLookupError):
        return b"resolver failure"
    if failure.check(ConnectionRefusedError, ConnectError):
        return b"broken connection"
    if failure.check(_BodyTooLarge):
        return b"reader failure"
    return b"broken connection"


class _BodyTooLarge(Exception):
    """
    An HTTP call response body exceeded L{MAX_RESPONSE_BODY}.
    """


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body written at once (treq's default producer cooperates
    through the global reactor).
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class HttpCaller:
    """
    Sends HTTP calls through treq on an injected agent and reactor.
    """

    def __init__(self, reactor, agent, defaultTimeout: float = DEFAULT_TIMEOUT) -> None:
        """
        @param reactor: an C{IReactorTime} for timeouts.
        @param agent: the C{IAgent} the calls go through.
        """
        self.reactor = reactor
        self.client = HTTPClient(agent, data_to_body_producer=_BytesProducer)
        self.defaultTimeout = defaultTimeout

    def send(self, call: HttpCall, method: bytes, url: bytes, authority: bytes, headers: Pairs,
             body: bytes, timeoutMs: int) -> Deferred:
        """
        Send one call; fill in C{call} with the outcome.

        @return: a Deferred firing with C{call} when it has a response or
            failed (never with a failure).
        """
        outgoing = Headers()
        outgoing.addRawHeader(b"host", authority)
        for name, value in headers:
            outgoing.addRawHeader(name, value)
        timeout = timeoutMs / 1000.0 if timeoutMs else self.defaultTimeout
        requested = self.client.request(method.decode("ascii"), url, headers=outgoing,
                                        data=body if body or method not in (b"GET", b"HEAD") else None)
        call.pending = requested

        def timedOut():
            call.timedOut = True
            if call.pending is not None:
                call.pending.cancel()

        timer = self.reactor.callLater(timeout, timedOut)

        def received(response):
            call.statusCode = response.code
            call.headers = [(name.lower(), value) for name, values in response.headers.getAllRawHeaders()
                            for value in values]
            collected = []
            size = [0]

            def collect(data):
                size[0] += len(data)
                if size[0] > MAX_RESPONSE_BODY:
                    raise _BodyTooLarge()
                collected.append(data)

            reading = collectBody(response, collect)
            call.pending = reading
            reading.addCallback(lambda _: b"".join(collected))
            return reading

        def succeeded(body):
            call.body = body
            return call

        def failed(failure):
            call.statusCode = 0
            call.headers = []
            call.body = None
            call.dispatchStatus = b"timeout" if call.timedOut else _describe(failure)
            if not call.cancelled:
                log.warn("HTTP call {token} to {url} failed: {status} ({error})", token=call.token,
                         url=url, status=call.dispatchStatus, error=failure.getErrorMessage())
            return call

        def stopTimer(result):
            call.pending = None
            if timer.active():
                timer.cancel()
            return result

        requested.addCallback(received)
        requested.addCallbacks(succeeded, failed)
        requested.addBoth(stopTimer)
        return requested
