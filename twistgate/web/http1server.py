"""
The gateway's HTTP/1.1 front end: the protocol clients talk to on the proxy
listener, lean enough that parsing a request and writing its response cost
a fraction of what twisted.web's general-purpose server does per request.

Each request's head is parsed whole, as soon as its blank line arrived, and
handed to the site's resource at once; its body (C{Content-Length} or
chunked) then arrives through a L{RequestBodyStream}. Responses are written
in order, one request at a time: bytes of a pipelined next request wait
until the current response ended.

The front end's defences: bad request lines and headers (400), oversized
or too many headers (431), oversized bodies (413), slow clients (header and
idle timeouts), and clients that do not read their responses (no next
request is read meanwhile).

Bodies are decoded by twisted.web's own (private) transfer decoders, the
ones its C{HTTPChannel} uses.
"""

import json
import re
from collections import deque
from typing import Callable, Deque, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import (
    NO_BODY_CODES, RESPONSES, _ChunkedTransferDecoder, _IdentityTransferDecoder, _MalformedChunkedDataError,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

import twistgate
from twistgate.gateway.sendnow import sendNow
from twistgate.proxywasm.maps import validName

Pairs = List[Tuple[bytes, bytes]]

SERVER_TOKEN = b"twistgate/" + twistgate.__version__.encode("ascii")

#: Kong's bodies for the responses the gateway itself produces.
MESSAGES = {
    400: "Bad request",
    404: "Not found",
    408: "Request timeout",
    413: "Payload too large",
    431: "Request header or cookie too large",
    500: "An unexpected error occurred",
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable",
    504: "The upstream server is timing out",
}
_REASONS = {431: b"Request Header Fields Too Large"}


def jsonBody(message: str, **extra) -> bytes:
    """
    Kong's JSON error body, C{{"message": ...}}.
    """
    document = {"message": message}
    document.update(extra)
    return json.dumps(document).encode("utf-8")


def rawResponse(status: int, message: str) -> bytes:
    """
    A whole HTTP/1.1 response closing the connection, for errors found
    while parsing, before a request object can answer.
    """
    body = jsonBody(message)
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status) or RESPONSES.get(status, b"Error")),
        b"Content-Type: application/json; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % (len(body),),
        b"Connection: close\r\n",
        b"Server: " + SERVER_TOKEN + b"\r\n\r\n",
        body,
    ])


#: Names whose conventional case is not word-capitalized (as twisted.web
#: writes them).
_NAME_CASE = {
    b"content-md5": b"Content-MD5", b"dnt": b"DNT", b"etag": b"ETag", b"p3p": b"P3P", b"te": b"TE",
    b"www-authenticate": b"WWW-Authenticate", b"x-xss-protection": b"X-XSS-Protection",
}
_canonicalNames: dict = {}
#: At most this many names are remembered (names come from upstreams).
_MAX_CANONICAL_NAMES = 4096


def canonicalName(name: bytes) -> bytes:
    """
    @return: the header name in the case twisted.web writes it
        (C{Content-Length}), so that whole and streamed responses look alike.
    @raise ValueError: if C{name} is not an HTTP token.
    """
    canonical = _canonicalNames.get(name)
    if canonical is not None:
        return canonical
    if not validName(name):
        raise ValueError("invalid header name {!r}".format(name))
    lower = name.lower()
    canonical = _NAME_CASE.get(lower) or b"-".join(word.capitalize() for word in lower.split(b"-"))
    if len(_canonicalNames) < _MAX_CANONICAL_NAMES:
        _canonicalNames[name] = canonical
    return canonical


def renderHead(version: bytes, code: int, reason: bytes, pairs: Pairs) -> List[bytes]:
    """
    @return: the pieces of a response head: status line, C{pairs} (values
        with line breaks folded to spaces), blank line.
    """
    pieces = [version, b" %d " % (code,), reason, b"\r\n"]
    for name, value in pairs:
        if b"\r" in value or b"\n" in value:
            value = b" ".join(value.splitlines())
        pieces += (canonicalName(name), b": ", value, b"\r\n")
    pieces.append(b"\r\n")
    return pieces


class RequestBodyTooLarge(Exception):
    """
    The request body passed the site's C{maxBodySize}.
    """


class RequestBodyStream:
    """
    A request body as it arrives, for the proxy to stream upstream (or read
    whole, for filters) while the client is still sending it.

    Chunks are buffered until a consumer takes them; past C{highWater}
    buffered bytes the client's transport is paused.

    @ivar length: the declared C{Content-Length}, or L{None} (chunked).
    @ivar received: bytes received so far.
    @ivar complete: the whole body arrived.
    @ivar failure: why the body will never complete, or L{None}.
    """

    highWater = 1 << 16

    def __init__(self, length: Optional[int], pauseClient: Callable[[], None],
                 resumeClient: Callable[[], None]) -> None:
        self.length = length
        self.received = 0
        self.complete = False
        self.failure: Optional[Failure] = None
        self._pauseClient = pauseClient
        self._resumeClient = resumeClient
        self._clientPaused = False
        self._chunks: Deque[bytes] = deque()
        self._buffered = 0
        self._keepAll = False
        self._consumer = None
        self._consumerPaused = False
        self._sent: Optional[Deferred] = None
        self._waiters: List[Deferred] = []
        self._failureObservers: List[Callable[[Failure], None]] = []
        self._sentWaiters: List[Deferred] = []
        self._allSent = False
        self.started = False

    def write(self, data: bytes) -> None:
        """
        More of the body arrived.
        """
        if self.complete or self.failure is not None:
            return
        self.received += len(data)
        self._chunks.append(data)
        self._buffered += len(data)
        self._flush()
        if self._buffered > self.highWater and not self._keepAll and not self._clientPaused:
            self._clientPaused = True
            self._pauseClient()

    def finish(self) -> None:
        """
        The whole body arrived.
        """
        if self.complete or self.failure is not None:
            return
        self.complete = True
        self._flush()
        if self._keepAll:
            body = b"".join(self._chunks)
            # Kept joined: the arrived chunks are one more copy of the body.
            self._chunks.clear()
            self._chunks.append(body)
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(body)

    def fail(self, reason: Failure) -> None:
        """
        The body will never complete (the client went away, or sent too
        much).
        """
        if self.complete or self.failure is not None:
            return
        self.failure = reason
        self._chunks.clear()
        self._buffered = 0
        for observer in self._failureObservers:
            observer(reason)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(reason)
        if self._sent is not None and not self._sent.called:
            sent, self._sent = self._sent, None
            sent.errback(reason)

    def discard(self) -> int:
        """
        The request ended: forget the failure observers (which refer back
        to the request, a cycle only the cyclic collector would free) and
        drop a body kept whole for L{readAll}. A body still streaming to a
        consumer is left alone.

        @return: how many bytes were dropped.
        """
        self._failureObservers.clear()
        if not self._keepAll:
            return 0
        dropped = sum(len(chunk) for chunk in self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return dropped

    def whenFailed(self, observer: Callable[[Failure], None]) -> None:
        """
        Call C{observer} with the reason if the body fails.
        """
        self._failureObservers.append(observer)

    def readAll(self) -> Deferred:
        """
        @return: a Deferred firing with the whole body once it arrived.
        """
        self._keepAll = True
        self._resumeIfPaused()
        if self.failure is not None:
            return fail(self.failure)
        if self.complete:
            return succeed(b"".join(self._chunks))
        waiter: Deferred = Deferred()
        self._waiters.append(waiter)
        return waiter

    def producer(self) -> IBodyProducer:
        """
        @return: a body producer streaming this body (for one upstream
            attempt that has not started sending yet).
        """
        return _StreamProducer(self)

    def _attach(self, consumer) -> Deferred:
        self.started = True
        if self.failure is not None:
            return fail(self.failure)
        self._consumer = consumer
        sent = self._sent = Deferred(lambda d: None)
        self._flush()
        return sent

    def _detach(self) -> None:
        self._consumer = None
        self._sent = None

    def _setConsumerPaused(self, paused: bool) -> None:
        self._consumerPaused = paused
        if not paused:
            self._flush()

    def _flush(self) -> None:
        if self._keepAll:
            return
        while self._chunks and self._consumer is not None and not self._consumerPaused:
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            self._consumer.write(chunk)
        if self._buffered <= self.highWater // 2:
            self._resumeIfPaused()
        if self.complete and not self._chunks and self._sent is not None:
            sent, self._sent = self._sent, None
            self._consumer = None
            self._allSent = True
            sent.callback(None)
            waiters, self._sentWaiters = self._sentWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    def whenSent(self) -> Deferred:
        """
        @return: a Deferred firing once the whole body was written to a
            consumer.
        """
        if self._allSent:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._sentWaiters.append(waiter)
        return waiter

    def _resumeIfPaused(self) -> None:
        if self._clientPaused:
            self._clientPaused = False
            self._resumeClient()


@implementer(IBodyProducer)
class _StreamProducer:
    """
    Streams a L{RequestBodyStream} to one upstream request.
    """

    def __init__(self, stream: RequestBodyStream) -> None:
        self._stream = stream
        self.length = stream.length if stream.length is not None else UNKNOWN_LENGTH

    def startProducing(self, consumer) -> Deferred:
        return self._stream._attach(consumer)

    def whenSent(self) -> Deferred:
        """
        @return: a Deferred firing once the whole body was written.
        """
        return self._stream.whenSent()

    def pauseProducing(self):
        self._stream._setConsumerPaused(True)

    def resumeProducing(self):
        self._stream._setConsumerPaused(False)

    def stopProducing(self):
        self._stream._detach()


_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) (HTTP/1\.[01])")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
#: A longer Content-Length is refused (Python will not convert past 4300
#: digits, and no body is that long).
_MAX_LENGTH_DIGITS = 100


class ClientRequest:
    """
    One request from a client, as the proxy resource sees it: its head,
    its body as a L{RequestBodyStream} (or L{None} without a body), and the
    calls that answer it (L{writeWhole}, or L{setResponseCode},
    L{responseHeaders} and L{write} for a streamed body; then L{finish}).

    @ivar headerPairs: the request headers, lower-cased C{(name, value)}
        pairs in the order received.
    @ivar content: always L{None} (the body is in L{bodyStream}); there for
        code written for twisted.web's requests.
    @ivar headSize: the bytes of the request's head, blank line included.
    @ivar sentLength: the response body bytes sent.
    @ivar bytesSent: all response bytes sent: head, body and its framing.
    """

    content = None
    bodyStream: Optional[RequestBodyStream] = None
    code = 200
    code_message = b"OK"
    startedWriting = False
    finished = False
    sentLength = 0
    bytesSent = 0
    headSize = 0
    _disconnected = False
    _chunked = False
    _quiet = False
    _requestHeaders: Optional[Headers] = None
    _responseHeaders: Optional[Headers] = None

    def __init__(self, channel: "GatewayChannel", method: bytes, uri: bytes, clientproto: bytes,
                 headerPairs: Pairs) -> None:
        self.channel = channel
        self.method = method
        self.uri = uri
        self.clientproto = clientproto
        self.headerPairs = headerPairs
        self._finishWaiters: List[Deferred] = []

    @property
    def path(self) -> bytes:
        return self.uri.partition(b"?")[0]

    @property
    def receivedSize(self) -> int:
        """
        The request's bytes received so far: its head and its (decoded)
        body.
        """
        stream = self.bodyStream
        return self.headSize + (stream.received if stream is not None else 0)

    def getHeader(self, name: bytes) -> Optional[bytes]:
        """
        @return: the last value of header C{name}, or L{None}.
        """
        name = name.lower()
        found = None
        for key, value in self.headerPairs:
            if key == name:
                found = value
        return found

    @property
    def requestHeaders(self) -> Headers:
        """
        The request headers as a twisted.web L{Headers}, made when first
        asked for.
        """
        if self._requestHeaders is None:
            headers = Headers()
            for name, value in self.headerPairs:
                headers.addRawHeader(name, value)
            self._requestHeaders = headers
        return self._requestHeaders

    @property
    def responseHeaders(self) -> Headers:
        """
        The headers of a response written through L{write}.
        """
        if self._responseHeaders is None:
            self._responseHeaders = Headers()
        return self._responseHeaders

    def getClientAddress(self):
        return self.channel.getPeer()

    def getHost(self):
        return self.channel.getHost()

    def isSecure(self) -> bool:
        return self.channel.isSecure()

    def setResponseCode(self, code: int, message: Optional[bytes] = None) -> None:
        self.code = code
        self.code_message = message or RESPONSES.get(code, b"Unknown Status")

    def notifyFinish(self) -> Deferred:
        """
        @return: a Deferred firing when the response ended, or failing if
            the connection was lost first.
        """
        if self.finished:
            return succeed(None)
        if self._disconnected:
            return fail(Failure(self._disconnected))
        waiter: Deferred = Deferred()
        self._finishWaiters.append(waiter)
        return waiter

    def registerProducer(self, producer, streaming: bool) -> None:
        """
        Have C{producer} (an C{IPushProducer}) paused while the client does
        not take the response as fast as it is written.
        """
        if not streaming:
            raise ValueError("the response of a gateway request takes push producers only")
        self.channel.registerResponseProducer(producer)

    def unregisterProducer(self) -> None:
        self.channel.registerResponseProducer(None)

    def writeWhole(self, code: int, reason: Optional[bytes], pairs: Pairs, body: bytes) -> None:
        """
        Write a whole response in one write: the status line, C{pairs}
        (which carry its framing) and C{body}; a C{HEAD} request or a status
        without a body gets the head only. L{finish} ends it.
        """
        self.setResponseCode(code, reason)
        if self._disconnected or self.startedWriting:
            return
        if self.channel.bodyUnread(self) and not any(name == b"connection" for name, _ in pairs):
            pairs = pairs + [(b"connection", b"close")]
        pieces = renderHead(self.clientproto, code, self.code_message, pairs)
        self.startedWriting = True
        if body and self.method != b"HEAD" and code not in NO_BODY_CODES:
            pieces.append(body)
            self.sentLength += len(body)
        response = b"".join(pieces)
        self.bytesSent += len(response)
        self.channel.write(response)

    def write(self, data: bytes) -> None:
        """
        Write part of the response body; the first write sends the head
        from L{responseHeaders}, chunked when it has no C{Content-Length}
        (on HTTP/1.0, the connection's end delimits the body instead).
        """
        if self.finished or self._disconnected:
            return
        if not self.startedWriting:
            self._writeHead()
        if not data or self._quiet:
            return
        self.sentLength += len(data)
        if self._chunked:
            chunk = b"".join([b"%x\r\n" % (len(data),), data, b"\r\n"])
            self.bytesSent += len(chunk)
            self.channel.write(chunk)
        else:
            self.bytesSent += len(data)
            self.channel.write(data)

    def _writeHead(self) -> None:
        self.startedWriting = True
        channel = self.channel
        pairs = [(name.lower(), value) for name, values in self.responseHeaders.getAllRawHeaders()
                 for value in values]
        self._quiet = self.method == b"HEAD" or self.code in NO_BODY_CODES
        if not self._quiet and not any(name == b"content-length" for name, _ in pairs):
            if self.clientproto == b"HTTP/1.1":
                self._chunked = True
                pairs.append((b"transfer-encoding", b"chunked"))
            else:
                channel.persistent = False
        if channel.bodyUnread(self) and not any(name == b"connection" for name, _ in pairs):
            pairs.append((b"connection", b"close"))
        head = b"".join(renderHead(self.clientproto, self.code, self.code_message, pairs))
        self.bytesSent += len(head)
        channel.write(head)

    def finish(self) -> None:
        """
        End the response; the channel goes on with the connection.
        """
        if self.finished or self._disconnected:
            return
        if not self.startedWriting:
            self._writeHead()
        if self._chunked:
            self.bytesSent += len(_LAST_CHUNK)
            self.channel.write(_LAST_CHUNK)
        self.finished = True
        waiters, self._finishWaiters = self._finishWaiters, []
        for waiter in waiters:
            waiter.callback(None)
        self.channel.requestDone(self)

    def connectionLost(self, reason: Failure) -> None:
        """
        The client went away: pending L{notifyFinish} waiters and the body
        stream fail with C{reason}.
        """
        if self._disconnected:
            return
        self._disconnected = reason.value
        if self.finished:
            return
        waiters, self._finishWaiters = self._finishWaiters, []
        for waiter in waiters:
            waiter.errback(reason)
        if self.bodyStream is not None:
            self.bodyStream.fail(reason)


@implementer(IPushProducer)
class GatewayChannel(Protocol):
    """
    One client connection: parses request heads whole, streams bodies into
    their requests, and answers one request at a time.

    The channel is its transport's producer: while the client does not read
    what was written (the transport's buffer is full), it reads no more
    requests and pauses the producer of a streamed response.

    @ivar requests: the request being answered, if any (a list, as on
        twisted.web's channels).
    @ivar persistent: whether the connection stays open after the current
        response.
    """

    maxHeaders = 500
    totalHeadersSize = 16384
    #: Bytes of a pipelined next request buffered before the client is
    #: paused.
    maxBuffered = 1 << 16
    lingerTimeout = 2.0

    site: "GatewaySite"
    persistent = True
    _refused = False
    _closing = False
    _buffer = b""
    _bodyDecoder = None
    _receiving: Optional[ClientRequest] = None
    _bodyReceived = 0
    _writeBlockedSince = 0.0
    _responseProducer = None
    _headerTimer = None
    _headerWaitSince: Optional[float] = None
    _idleTimer = None
    _lastActivity = 0.0
    _lingering = None
    _resumeCall = None
    _peer = None
    _local = None
    _secure = None

    def __init__(self) -> None:
        self.requests: List[ClientRequest] = []
        self._readPauses: Set[str] = set()

    def getPeer(self):
        if self._peer is None:
            self._peer = self.transport.getPeer()
        return self._peer

    def getHost(self):
        if self._local is None:
            self._local = self.transport.getHost()
        return self._local

    def isSecure(self) -> bool:
        if self._secure is None:
            self._secure = ISSLTransport.providedBy(self.transport)
        return self._secure

    def write(self, data: bytes) -> None:
        sendNow(self.transport, data)

    def loseConnection(self) -> None:
        self._closing = True
        self.transport.loseConnection()

    def connectionMade(self):
        self.site.channels.add(self)
        self.transport.registerProducer(self, True)
        self._lastActivity = self.site.reactor.seconds()
        if self.site.timeOut:
            self._idleTimer = self.site.reactor.callLater(self.site.timeOut, self._idleTimerFired)
        self._startHeaderTimer()

    # Receiving.

    def dataReceived(self, data: bytes) -> None:
        if self._refused or self._closing:
            return
        self._lastActivity = self.site.reactor.seconds()
        if self._bodyDecoder is not None:
            self._feedBody(data)
            return
        self._buffer += data
        if self.requests or "writes" in self._readPauses:
            self._holdPipelined()
            return
        self._parseHeads()

    def _holdPipelined(self) -> None:
        """
        Bytes after the current request wait for its response; past
        L{maxBuffered} of them the client is paused.
        """
        if len(self._buffer) > self.maxBuffered:
            self._pauseReading("pipeline")

    # Reading is paused for any of several reasons at once: a request body
    # the upstream does not take fast enough ("body"), bytes of a next
    # request waiting ("pipeline"), responses the client does not read
    # ("writes").

    def _pauseReading(self, reason: str) -> None:
        if not self._readPauses:
            self.transport.pauseProducing()
        self._readPauses.add(reason)

    def _resumeReading(self, reason: str) -> None:
        pauses = self._readPauses
        if reason in pauses:
            pauses.discard(reason)
            if not pauses and not self._closing:
                self.transport.resumeProducing()

    # The transport's producer: the client reads its responses, or not.

    def pauseProducing(self) -> None:
        self._writeBlockedSince = self.site.reactor.seconds()
        self._pauseReading("writes")
        if self._responseProducer is not None:
            self._responseProducer.pauseProducing()

    def resumeProducing(self) -> None:
        self._resumeReading("writes")
        if self._responseProducer is not None:
            self._responseProducer.resumeProducing()
        if not self.requests:
            self._parseLater()

    def stopProducing(self) -> None:
        if self._responseProducer is not None:
            self._responseProducer.stopProducing()

    def registerResponseProducer(self, producer) -> None:
        """
        Pause and resume C{producer} (or no producer, if L{None}) as the
        client reads the response.
        """
        self._responseProducer = producer
        if producer is not None and "writes" in self._readPauses:
            producer.pauseProducing()

    def _parseHeads(self) -> None:
        """
        Start the request whose head is complete in the buffer, if any.
        """
        buffer = self._buffer
        if buffer[:2] == b"\r\n":
            # A stray line break after a previous request's body.
            buffer = self._buffer = buffer[2:]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > self.totalHeadersSize:
                self.refuse(431)
            return
        if end > self.totalHeadersSize:
            self.refuse(431)
            return
        self._buffer = buffer[end + 4:]
        self._headerWaitSince = None
        self._startRequest(buffer[:end])

    def _startRequest(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        requestLine = _REQUEST_LINE.fullmatch(lines[0])
        if requestLine is None:
            self.refuse(400)
            return
        if len(lines) > self.maxHeaders + 1:
            self.refuse(431)
            return
        pairs: Pairs = []
        length: Optional[int] = None
        chunked = False
        framed = False
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t"):
                if not pairs:
                    self.refuse(400)
                    return
                name, value = pairs[-1]
                if name == b"content-length" or name == b"transfer-encoding":
                    # Already read as framing; the whole value would differ.
                    self.refuse(400)
                    return
                pairs[-1] = (name, value + b" " + line.strip(b" \t"))
                continue
            name, colon, value = line.partition(b":")
            if not colon or not validName(name):
                self.refuse(400)
                return
            name = name.lower()
            value = value.strip(b" \t")
            if b"\r" in value or b"\n" in value or b"\x00" in value:
                self.refuse(400)
                return
            if name == b"content-length":
                if framed or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                    self.refuse(400)
                    return
                framed, length = True, int(value)
            elif name == b"transfer-encoding":
                coding = value.lower()
                if coding == b"chunked" and not framed:
                    framed = chunked = True
                elif coding != b"identity":
                    self.refuse(400)
                    return
            pairs.append((name, value))
        method, uri, version = requestLine.groups()
        limit = self.site.maxBodySize
        if limit is not None and length is not None and length > limit:
            self.refuse(413)
            return
        if version != b"HTTP/1.1":
            self.persistent = False
        else:
            for name, value in pairs:
                if name == b"connection" and b"close" in [token.strip() for token in value.lower().split(b",")]:
                    self.persistent = False
        request = ClientRequest(self, method, uri, version, pairs)
        request.headSize = len(head) + 4
        self.requests.append(request)
        if chunked or length:
            request.bodyStream = RequestBodyStream(length, self._bodyPaused, self._bodyResumed)
            self._receiving = request
            self._bodyReceived = 0
            if chunked:
                self._bodyDecoder = _ChunkedTransferDecoder(self._bodyChunk, self._bodyEnded)
            else:
                self._bodyDecoder = _IdentityTransferDecoder(length, self._bodyChunk, self._bodyEnded)
            if version == b"HTTP/1.1" and (request.getHeader(b"expect") or b"").lower() == b"100-continue":
                self.write(_CONTINUE)
        self._render(request)
        if self._bodyDecoder is not None and self._buffer:
            data, self._buffer = self._buffer, b""
            self._feedBody(data)

    def _render(self, request: ClientRequest) -> None:
        try:
            self.site.resource.render(request)
        except Exception:
            self.site.log.failure("answering {uri}", uri=request.uri)
            if not request.startedWriting:
                request.writeWhole(500, None, [(b"content-type", b"application/json; charset=utf-8")],
                                   jsonBody(MESSAGES[500]))
            if not request.finished:
                request.finish()

    def _feedBody(self, data: bytes) -> None:
        try:
            self._bodyDecoder.dataReceived(data)
        except _MalformedChunkedDataError:
            self._bodyMalformed(Failure())

    def _bodyMalformed(self, reason: Failure) -> None:
        """
        The request body's chunked framing is broken: the request fails as
        if the client had gone, and the client gets 400 if nothing of the
        response was sent yet; the connection closes.
        """
        request, self._receiving, self._bodyDecoder = self._receiving, None, None
        if request is None:
            # Answered already: the connection is closing.
            return
        self.persistent = False
        responded = request.startedWriting
        request.connectionLost(reason)
        if responded:
            self.loseConnection()
        else:
            self.refuse(400)

    def _bodyChunk(self, data: bytes) -> None:
        request = self._receiving
        if request is None:
            # Answered and ended before its body did: the connection closes.
            return
        self._bodyReceived += len(data)
        limit = self.site.maxBodySize
        if limit is not None and self._bodyReceived > limit:
            request.bodyStream.fail(Failure(RequestBodyTooLarge(limit)))
            return
        request.bodyStream.write(data)

    def _bodyPaused(self) -> None:
        self._pauseReading("body")

    def _bodyResumed(self) -> None:
        """
        The body stream lets the client go on: the idle timeout counts from
        now.
        """
        self._lastActivity = self.site.reactor.seconds()
        self._resumeReading("body")

    def _bodyEnded(self, rest: bytes) -> None:
        request, self._receiving, self._bodyDecoder = self._receiving, None, None
        if request is None:
            return
        # Buffered first: the response may end inside finish(), and then
        # starts the next request from the buffer.
        self._buffer = rest
        request.bodyStream.finish()
        if rest and self.requests:
            self._holdPipelined()

    def bodyUnread(self, request: ClientRequest) -> bool:
        """
        @return: whether C{request}'s body is still arriving; its response
            then ends the connection (the rest of the body could not be
            told from a next request).
        """
        if self._receiving is request:
            self.persistent = False
            return True
        return False

    def requestDone(self, request: ClientRequest) -> None:
        """
        C{request}'s response ended: close, or wait for the next request.
        """
        self.requests.remove(request)
        if self._receiving is request:
            self.persistent = False
            self._receiving = self._bodyDecoder = None
        if not self.persistent or self.transport is None:
            self._buffer = b""
            self.loseConnection()
            return
        self._lastActivity = self.site.reactor.seconds()
        self._startHeaderTimer()
        if self._readPauses:
            # A body that arrived whole but was not all taken keeps no hold
            # on the client: its bytes from now on are a next request.
            self._resumeReading("body")
            self._resumeReading("pipeline")
        self._parseLater()

    def _parseLater(self) -> None:
        """
        Start the next request buffered, if any, from the reactor (not from
        inside the end of the previous one), unless the client does not
        read its responses.
        """
        if self._buffer and self._resumeCall is None and "writes" not in self._readPauses:
            self._resumeCall = self.site.reactor.callLater(0, self._parseBuffered)

    def _parseBuffered(self) -> None:
        self._resumeCall = None
        if not self.requests and not self._refused and not self._closing and "writes" not in self._readPauses:
            self._parseHeads()

    # Refusing.

    def refuse(self, status: int) -> None:
        """
        Answer C{status} with Kong's JSON body and close: stop sending, read
        and drop whatever the client still sends for a moment (so the answer
        is not lost to a reset), then disconnect.
        """
        if self._refused:
            return
        self._refused = True
        self._cancelTimers()
        self.transport.write(rawResponse(status, MESSAGES[status]))
        try:
            self.transport.resumeProducing()
            self.transport.loseWriteConnection()
        except (AttributeError, NotImplementedError):
            self.transport.loseConnection()
            return
        self._lingering = self.site.reactor.callLater(self.lingerTimeout, self.transport.abortConnection)

    # Timeouts: one lazy timer each, moved on when it fires early.

    def _startHeaderTimer(self) -> None:
        """
        Start waiting for a request head.
        """
        timeout = self.site.headerTimeout
        if not timeout:
            return
        self._headerWaitSince = self.site.reactor.seconds()
        if self._headerTimer is None:
            self._headerTimer = self.site.reactor.callLater(timeout, self._headerTimerFired)

    def _headerTimerFired(self) -> None:
        self._headerTimer = None
        if self._headerWaitSince is None or self._closing or self._refused:
            return
        timeout = self.site.headerTimeout
        waited = self.site.reactor.seconds() - self._headerWaitSince
        if waited < timeout:
            self._headerTimer = self.site.reactor.callLater(timeout - waited, self._headerTimerFired)
            return
        self._headerWaitSince = None
        if self._buffer and self.transport is not None:
            self.site.log.info("client {peer} sent an incomplete request head for {timeout:g} s: 408, closed",
                               peer=self._peerText(), timeout=timeout)
            self.transport.write(rawResponse(408, MESSAGES[408]))
        self.loseConnection()

    def _idleTimerFired(self) -> None:
        """
        Close a connection silent for the site's C{timeOut}: between
        requests or while a request body arrives (not while a response is
        being made, nor while the body stream holds the client back); and
        abort one whose client has not taken the buffered part of its
        response (the transport's full buffer) within as long, as nginx's
        C{send_timeout} does.
        """
        self._idleTimer = None
        timeout = self.site.timeOut
        if self._closing or self._refused or not timeout:
            return
        reactor = self.site.reactor
        if "writes" in self._readPauses:
            blocked = reactor.seconds() - self._writeBlockedSince
            if blocked >= timeout:
                self.site.log.info("client {peer} took none of its response for {timeout:g} s: aborted",
                                   peer=self._peerText(), timeout=timeout)
                self._closing = True
                self.transport.abortConnection()
                return
            self._idleTimer = reactor.callLater(timeout - blocked, self._idleTimerFired)
            return
        if self.requests and (self._receiving is None or "body" in self._readPauses):
            self._idleTimer = reactor.callLater(timeout, self._idleTimerFired)
            return
        waited = reactor.seconds() - self._lastActivity
        if waited < timeout:
            self._idleTimer = reactor.callLater(timeout - waited, self._idleTimerFired)
            return
        if self._receiving is not None:
            self.site.log.info("client {peer} sent nothing of its request body for {timeout:g} s: closed",
                               peer=self._peerText(), timeout=timeout)
        self.loseConnection()

    def _peerText(self) -> str:
        peer = self.getPeer()
        return "{}:{}".format(getattr(peer, "host", "?"), getattr(peer, "port", "?"))

    def _cancelTimers(self) -> None:
        self._headerWaitSince = None
        for name in ("_headerTimer", "_idleTimer", "_resumeCall"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)

    def connectionLost(self, reason=None):
        self.site.channels.discard(self)
        self._closing = True
        self._cancelTimers()
        if self._lingering is not None and self._lingering.active():
            self._lingering.cancel()
        self._lingering = None
        requests, self.requests = self.requests, []
        for request in requests:
            request.connectionLost(reason if reason is not None else Failure(ConnectionDone()))
        self._receiving = self._bodyDecoder = None


class GatewaySite(ServerFactory):
    """
    The proxy listener's factory: a L{GatewayChannel} per connection, each
    request handed to C{resource.render}.

    @ivar maxBodySize: largest request body accepted (bytes), or L{None}.
    @ivar headerTimeout: seconds a client has to send a request's head.
    @ivar timeOut: seconds a connection may stay silent between requests or
        while sending a body.
    @ivar channels: the open connections.
    """

    protocol = GatewayChannel
    noisy = False
    log = Logger()

    def buildProtocol(self, addr):
        channel = self.protocol()
        channel.factory = channel.site = self
        return channel

    def __init__(self, resource, reactor, maxBodySize: Optional[int] = None, headerTimeout: float = 60.0,
                 bodyTimeout: float = 60.0) -> None:
        """
        @param resource: renders each request (C{render(request)}); it
            answers through the request, now or later.
        @param bodyTimeout: the L{timeOut}.
        """
        self.resource = resource
        self.reactor = reactor
        self.maxBodySize = maxBodySize
        self.headerTimeout = headerTimeout
        self.timeOut = bodyTimeout
        self.channels = set()

    def closeIdleConnections(self) -> None:
        """
        On stop: close the connections waiting for a next request, and have
        the busy ones close after their current response.
        """
        for channel in list(self.channels):
            if channel.requests:
                channel.persistent = False
            else:
                channel.loseConnection()
