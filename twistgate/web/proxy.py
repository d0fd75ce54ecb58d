"""
The reverse proxy: the site clients talk to. Each request is routed as
soon as its headers arrived, run through its filter chain (L{IChainRun})
and forwarded to its service; its body streams upstream as it arrives
(read whole first only when a filter wants it), and the response streams
back, both with backpressure, through the chain when a filter wants it.

Also the HTTP front end's defences: bad request lines and headers (400),
oversized headers (431), oversized bodies (413), slow clients (header and
body timeouts).
"""

import ctypes
import json
from collections import deque
from collections.abc import Mapping
from typing import Callable, Deque, List, Optional, Sequence, Tuple

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, fail, inlineCallbacks, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http import NO_BODY_CODES, RESPONSES, datetimeToString, parse_qs, unquote
from twisted.web.client import FileBodyProducer, PotentialDataLoss, ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import Resource
from zope.interface import implementer

import twistgate
from twistgate.gateway.exchange import Exchange, LocalResponse
from twistgate.gateway.sendnow import sendNow
from twistgate.gateway.state import GatewayState, Generation
from twistgate.gateway.upstream import UpstreamClient, UpstreamTimeout
from twistgate.proxywasm.maps import validName
from twistgate.web.accesslog import AccessLog, AccessLogEntry

SERVER_TOKEN = b"twistgate/" + twistgate.__version__.encode("ascii")
VIA = b"1.1 " + SERVER_TOKEN

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
NO_ROUTE = "no Route matched with those values"
#: The status logged for a request whose client went away first (nginx's).
_CLIENT_CLOSED = 499
_REASONS = {431: b"Request Header Fields Too Large"}

#: Headers that describe one connection, never forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
])
#: Request headers the gateway replaces or that the upstream client frames.
_NOT_FORWARDED_UPSTREAM = HOP_BY_HOP | {b"content-length", b"host", b"expect"}

#: Response headers only the gateway sets (a value from upstream or a filter
#: is replaced).
_GATEWAY_HEADERS = frozenset([b"x-kong-upstream-latency", b"x-kong-proxy-latency", b"x-kong-response-latency"])

#: Request bodies up to this size are sent upstream from memory.
_IN_MEMORY_BODY = 1 << 20
#: Dropping a request body at least this large returns freed heap memory to
#: the system (L{_trimHeap}).
_TRIM_AFTER_BODY = 1 << 20


def _heapTrimmer() -> Callable[[], None]:
    """
    @return: glibc's C{malloc_trim(0)}, or a no-op where the C library has
        none. Bodies arrive in 64 KiB chunks, below glibc's mmap threshold,
        so a large body read whole leaves the heap grown; glibc gives such
        memory back only when the top of the heap is free, which a single
        long-lived object allocated meanwhile prevents.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_trimHeap = _heapTrimmer()

Pairs = List[Tuple[bytes, bytes]]


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


def connectionHeaders(pairs: Sequence[Tuple[bytes, bytes]]) -> frozenset:
    """
    @return: the lower-cased hop-by-hop names: the fixed set plus every name
        listed in C{Connection}.
    """
    named = None
    for name, value in pairs:
        if name == b"connection":
            if named is None:
                named = set(HOP_BY_HOP)
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return HOP_BY_HOP if named is None else frozenset(named)


def withoutHopByHop(pairs: Sequence[Tuple[bytes, bytes]]) -> Pairs:
    """
    @return: C{pairs} without the hop-by-hop headers.
    """
    dropped = connectionHeaders(pairs)
    return [(name, value) for name, value in pairs if name not in dropped]


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


def rawHeaderPairs(headers) -> Pairs:
    """
    @param headers: a L{twisted.web.http_headers.Headers}.
    @return: lower-cased C{(name, value)} pairs, repeated headers kept in
        order.
    """
    return [(name.lower(), value) for name, values in headers.getAllRawHeaders() for value in values]


class _DecodedHeaders(Mapping):
    """
    Request header values by lower-case name, decoded for the router only
    when it looks at one (most routes match on none).
    """

    __slots__ = ("_pairs", "_decoded")

    def __init__(self, pairs: Pairs) -> None:
        self._pairs = pairs
        self._decoded: Optional[dict] = None

    def _values(self) -> dict:
        if self._decoded is None:
            decoded: dict = {}
            for name, value in self._pairs:
                decoded.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
            self._decoded = decoded
        return self._decoded

    def __getitem__(self, name: str) -> List[str]:
        return self._values()[name]

    def get(self, name: str, default=None):
        return self._values().get(name, default)

    def __iter__(self):
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


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


class GatewayRequest(server.Request):
    """
    A request that enforces the site's body size limit while the body
    arrives, adds no default headers of its own, and (on a site that streams
    request bodies) is processed as soon as its headers arrived, its body
    then arriving through L{bodyStream}.

    @ivar bodyStream: the L{RequestBodyStream} of a request processed before
        its body arrived, else L{None}.
    """

    defaultContentType = None
    bodyStream: Optional[RequestBodyStream] = None
    _rejected = False
    _received = 0

    def _maxBodySize(self) -> Optional[int]:
        return getattr(self.channel.site, "maxBodySize", None) if self.channel is not None else None

    def gotLength(self, length):
        limit = self._maxBodySize()
        if limit is not None and length is not None and length > limit:
            self._reject(413)
            return
        streams = getattr(self.channel.site, "streamRequestBodies", False)
        if streams and (length is None or length > 0):
            transport = self.channel.transport
            self.bodyStream = RequestBodyStream(length, transport.pauseProducing, transport.resumeProducing)
            self.content = None
            return
        super().gotLength(length)

    def process(self):
        """
        Process as Twisted does, without its default C{Server} and C{Date}
        headers (the proxy writes its own) and without splitting the path
        for a resource tree when the site's resource is a leaf.
        """
        self.site = site = self.channel.site
        self.prepath = []
        if site.resource.isLeaf:
            self.postpath = []
        else:
            self.postpath = list(map(unquote, self.path[1:].split(b"/")))
        if self.path == b"*":
            self._handleStar()
            return
        try:
            self.render(site.getResourceFor(self))
        except BaseException:
            self.processingFailed(Failure())

    def startEarly(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        Process this request now, before its body arrived.
        """
        self.method, self.uri, self.clientproto = command, path, version
        self.path, _, query = self.uri.partition(b"?")
        self.args = parse_qs(query, 1) if query else {}
        self.process()

    def handleContentChunk(self, data):
        if self._rejected:
            return
        self._received += len(data)
        limit = self._maxBodySize()
        if limit is not None and self._received > limit:
            if self.bodyStream is not None:
                self.bodyStream.fail(Failure(RequestBodyTooLarge(limit)))
                return
            self._reject(413)
            return
        if self.bodyStream is not None:
            self.bodyStream.write(data)
            return
        super().handleContentChunk(data)

    def _reject(self, status: int) -> None:
        self._rejected = True
        self.content = None
        self.channel.refuse(status)

    def requestReceived(self, command, path, version):
        if self._rejected:
            return
        if self.bodyStream is not None:
            self.bodyStream.finish()
            return
        super().requestReceived(command, path, version)

    def _closeIfBodyUnread(self) -> bool:
        """
        End the connection after this response if the request body is not
        all read: the rest of it could not be told from a next request.

        @return: whether the response head still needs C{Connection: close}.
        """
        if self.bodyStream is not None and not self.bodyStream.complete and self.channel is not None:
            self.channel.persistent = False
            return not self.startedWriting
        return False

    def write(self, data):
        if not self.startedWriting and self._closeIfBodyUnread():
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])
        super().write(data)

    def writeWhole(self, code: int, reason: Optional[bytes], pairs: Pairs, body: bytes) -> None:
        """
        Write a whole response in one write: the status line, C{pairs}
        (which carry its framing) and C{body}; a C{HEAD} request or a status
        without a body gets the head only. L{finish} ends it as usual.
        """
        self.setResponseCode(code, reason)
        if self._disconnected:
            return
        if self._closeIfBodyUnread() and not any(name == b"connection" for name, _ in pairs):
            pairs = pairs + [(b"connection", b"close")]
        pieces = renderHead(self.clientproto, code, self.code_message, pairs)
        self.startedWriting = 1
        if body and self.method != b"HEAD" and code not in NO_BODY_CODES:
            pieces.append(body)
            self.sentLength += len(body)
        self.channel.writeSequence(pieces)

    def finish(self):
        if self._closeIfBodyUnread():
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])
        super().finish()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if self.bodyStream is not None:
            self.bodyStream.fail(reason)


class GatewayChannel(http.HTTPChannel):
    """
    An HTTP channel answering Kong's JSON errors for bad input: 400 for a
    malformed request line or header, 431 for too many or too large headers,
    and closing connections whose headers take longer than the site's
    C{headerTimeout}.
    """

    _headerTimer = None
    _headerWaitSince: Optional[float] = None
    _partialHead = False
    _peer = None
    _local = None
    _secure = None

    def getPeer(self):
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def getHost(self):
        if self._local is None:
            self._local = super().getHost()
        return self._local

    def isSecure(self):
        if self._secure is None:
            self._secure = super().isSecure()
        return self._secure

    def write(self, data):
        sendNow(self.transport, data)

    def writeSequence(self, iovec):
        sendNow(self.transport, b"".join(iovec))

    def connectionMade(self):
        super().connectionMade()
        self.site.channels.add(self)
        self._startHeaderTimer()

    def _startHeaderTimer(self) -> None:
        """
        Start waiting for a request head. One timer per connection follows
        the waits lazily: when it fires during a later wait, it moves on to
        that wait's deadline.
        """
        site = getattr(self, "site", None)
        timeout = getattr(site, "headerTimeout", None) if site is not None else None
        self._partialHead = False
        if not timeout:
            return
        self._headerWaitSince = site.reactor.seconds()
        if self._headerTimer is None:
            self._headerTimer = self.callLater(timeout, self._headerTimerFired)

    def _stopHeaderTimer(self) -> None:
        self._headerWaitSince = None

    def _cancelHeaderTimer(self) -> None:
        self._headerWaitSince = None
        if self._headerTimer is not None and self._headerTimer.active():
            self._headerTimer.cancel()
        self._headerTimer = None

    def _headerTimerFired(self) -> None:
        self._headerTimer = None
        if self._headerWaitSince is None:
            return
        timeout = self.site.headerTimeout
        waited = self.site.reactor.seconds() - self._headerWaitSince
        if waited < timeout:
            self._headerTimer = self.callLater(timeout - waited, self._headerTimerFired)
            return
        self._headerTimedOut()

    def _headerTimedOut(self) -> None:
        self._headerWaitSince = None
        if self._partialHead and self.transport is not None:
            self.transport.write(rawResponse(408, MESSAGES[408]))
        self.loseConnection()

    _refused = False
    lingerTimeout = 2.0

    def refuse(self, status: int) -> None:
        """
        Answer C{status} with Kong's JSON body and close: stop sending, read
        and drop whatever the client still sends for a moment (so the answer
        is not lost to a reset), then disconnect.
        """
        if self._refused:
            return
        self._refused = True
        self._cancelHeaderTimer()
        self.setTimeout(None)
        self.transport.write(rawResponse(status, MESSAGES[status]))
        try:
            self.transport.resumeProducing()
            self.transport.loseWriteConnection()
        except (AttributeError, NotImplementedError):
            self.transport.loseConnection()
            return
        self._lingering = self.callLater(self.lingerTimeout, self.transport.abortConnection)

    def dataReceived(self, data):
        if self._refused:
            return
        super().dataReceived(data)

    def rawDataReceived(self, data):
        if self._refused:
            return
        super().rawDataReceived(data)

    def lineLengthExceeded(self, line):
        self.refuse(431)

    def lineReceived(self, line):
        if self._refused:
            return
        self._partialHead = True
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(431)
            return
        super().lineReceived(line)

    def headerReceived(self, line):
        if self._receivedHeaderCount >= self.maxHeaders:
            self.refuse(431)
            return False
        return super().headerReceived(line)

    def allHeadersReceived(self):
        self._stopHeaderTimer()
        super().allHeadersReceived()
        request = self.requests[-1] if self.requests else None
        if request is not None and getattr(request, "bodyStream", None) is not None and not self._refused:
            request.startEarly(self._command, self._path, self._version)

    def allContentReceived(self):
        if not self.requests or self._refused:
            return
        super().allContentReceived()

    def _send100Continue(self):
        if not self._refused:
            super()._send100Continue()

    def requestDone(self, request):
        super().requestDone(request)
        if self.persistent and self.transport is not None and not self.transport.disconnecting:
            self._startHeaderTimer()

    def _respondToBadRequestAndDisconnect(self):
        self.refuse(400)

    def connectionLost(self, reason):
        self.site.channels.discard(self)
        self._cancelHeaderTimer()
        lingering = getattr(self, "_lingering", None)
        if lingering is not None and lingering.active():
            lingering.cancel()
        super().connectionLost(reason)


class GatewaySite(server.Site):
    """
    The proxy's site.

    @ivar maxBodySize: largest request body accepted (bytes), or L{None}.
    @ivar headerTimeout: seconds a client has to send a request's headers.
    @ivar channels: the open connections.
    """

    protocol = GatewayChannel
    requestFactory = GatewayRequest
    noisy = False

    def __init__(self, resource, reactor, maxBodySize: Optional[int] = None, headerTimeout: float = 60.0,
                 bodyTimeout: float = 60.0, streamRequestBodies: bool = True) -> None:
        """
        @param bodyTimeout: seconds of silence allowed while a request body
            arrives (and on idle connections).
        @param streamRequestBodies: process requests as soon as their
            headers arrived and stream their bodies upstream (else Twisted
            spools each body, to a file past 100 kB, before processing).
        """
        super().__init__(resource, timeout=bodyTimeout, reactor=reactor)
        self.maxBodySize = maxBodySize
        self.headerTimeout = headerTimeout
        self.streamRequestBodies = streamRequestBodies
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

    def log(self, request):
        """
        No per-request access log line (the latencies are in the response
        headers).
        """


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body already in memory.
    """

    def __init__(self, data: bytes) -> None:
        self.body = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _Gate:
    """
    The upstream body's transport, paused while any of several reasons
    (the client is slow, a filter is busy) holds.
    """

    def __init__(self, transport) -> None:
        self._transport = transport
        self._reasons = set()

    def pause(self, reason: str) -> None:
        if not self._reasons:
            self._transport.pauseProducing()
        self._reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self._reasons:
            self._reasons.discard(reason)
            if not self._reasons:
                self._transport.resumeProducing()

    @property
    def paused(self) -> bool:
        return bool(self._reasons)

    def stop(self) -> None:
        self._transport.stopProducing()


@implementer(IBodyProducer)
class _ClientPressure:
    """
    The push producer registered with the downstream request: the client's
    backpressure pauses the upstream body.
    """

    def __init__(self, gate: _Gate) -> None:
        self._gate = gate

    def pauseProducing(self):
        self._gate.pause("client")

    def resumeProducing(self):
        self._gate.resume("client")

    def stopProducing(self):
        self._gate.stop()


class _BodyReceiver(Protocol):
    """
    Receives the upstream response body for a L{_ProxiedRequest}.
    """

    def __init__(self, proxied: "_ProxiedRequest") -> None:
        self._proxied = proxied

    def connectionMade(self):
        self._proxied._bodyStarted(self.transport)

    def dataReceived(self, data):
        self._proxied._bodyReceived(data)

    def connectionLost(self, reason):
        self._proxied._bodyEnded(reason)


class _ProxiedRequest:
    """
    One request through the gateway, from routing to the last byte.
    """

    _log = Logger()

    def __init__(self, resource: "ProxyResource", request: server.Request) -> None:
        self._resource = resource
        self._clock = resource.clock
        self.request = request
        self.generation: Optional[Generation] = None
        self.exchange: Optional[Exchange] = None
        self.chain = None
        self._clientGone = False
        self._ended = False
        self._upstreamPending: Optional[Deferred] = None
        self._gate: Optional[_Gate] = None
        self._bodyQueue: Deferred = succeed(None)
        self._readTimer = None
        self._startedAt = self._clock.seconds()
        self._upstreamStartedAt: Optional[float] = None
        self._upstreamLatency = 0
        self._proxyLatency = 0
        self._bodyRefused = False
        self._bodyDone = False
        self._lastBodyAt = 0.0
        self._clientHost = b""

    def start(self) -> None:
        self.request.notifyFinish().addErrback(self._clientLost)
        stream = getattr(self.request, "bodyStream", None)
        if stream is not None:
            stream.whenFailed(self._requestBodyFailed)
        self.generation = self._resource.state.acquire()
        try:
            self._route()
        except Exception:
            self._log.failure("proxying {uri}", uri=self.request.uri)
            self._respondDirect(500, jsonBody(MESSAGES[500]))

    def _route(self) -> None:
        request = self.request
        pairs = rawHeaderPairs(request.requestHeaders)
        hostHeader = b""
        for name, value in pairs:
            if name == b"host":
                hostHeader = value
        uri = request.uri
        path, sep, query = uri.partition(b"?")
        headerMap = _DecodedHeaders(pairs)
        local = request.getHost()
        port = getattr(local, "port", None)
        scheme = b"https" if request.isSecure() else b"http"
        router = self.generation.router
        method, host, routedPath = request.method.decode("latin-1"), hostHeader.decode("latin-1"), \
            path.decode("latin-1")
        match = router.match(method, host, routedPath, headerMap, scheme=scheme.decode("ascii"), port=port)
        if match is None:
            if scheme == b"http" and router.match(method, host, routedPath, headerMap, scheme="https",
                                                  port=port) is not None:
                # A route for HTTPS only (Kong's https_redirect_status_code).
                self._respondDirect(426, jsonBody("Please use HTTPS protocol"))
                return
            self._respondDirect(404, jsonBody(NO_ROUTE))
            return
        service = match.service
        if service is None:
            self._respondDirect(503, jsonBody("no Service found with those values"))
            return
        upstreamPath = match.upstreamPath
        if isinstance(upstreamPath, str):
            upstreamPath = upstreamPath.encode("latin-1")
        if sep:
            upstreamPath += b"?" + query
        peer = request.getClientAddress()
        self.exchange = Exchange(
            method=request.method,
            path=upstreamPath,
            originalUri=uri,
            scheme=scheme,
            authority=hostHeader,
            requestHeaders=pairs,
            clientAddress=(getattr(peer, "host", ""), getattr(peer, "port", 0)),
            serverAddress=(getattr(local, "host", ""), port or 0),
            route=match.route,
            service=service,
            startedAt=self._startedAt,
            connectionId=id(request.channel),
        )
        self._clientHost = hostHeader
        plan = self.generation.plan
        chain = self.chain = plan.chainFor(self.exchange) if plan is not None else None
        if chain is None:
            self._forward()
            return
        steps = self._afterStep(chain.requestHeaders(), self._requestHeadersDone)
        if isinstance(steps, Deferred):
            steps.addErrback(self._unexpected)

    def _afterStep(self, step: Deferred, callback: Callable, *args):
        """
        Go on with C{callback(result, *args)} once a chain step ended: at
        once, with no Deferred in between, when it already has (a chain of
        filters that neither pause nor wait for a busy instance runs
        synchronously); otherwise when it does.

        @return: what C{callback} returned, or a Deferred of it.
        """
        if step.called and not step.paused and not isinstance(step.result, Failure):
            try:
                return callback(step.result, *args)
            except Exception:
                self._unexpected(Failure())
                return None
        return step.addCallback(callback, *args)

    def _unexpected(self, failure) -> None:
        if self._clientGone or self._ended:
            # The request already ended (client gone, body refused): what
            # failed was waiting for it.
            self._end()
            return
        self._log.failure("proxying {uri}", failure, uri=self.request.uri)
        if self.request.startedWriting:
            self._abortClient()
        else:
            self._respondDirect(500, jsonBody(MESSAGES[500]))

    # The request steps: synchronous unless a filter or the body makes them
    # wait.

    def _requestHeadersDone(self, _=None) -> Optional[Deferred]:
        exchange, chain = self.exchange, self.chain
        if exchange.localResponse is None and chain.wantsRequestBody and not self._clientGone:
            if self._bodiless():
                return self._requestBodyRead(b"")
            return self._afterStep(self._readBody(), self._requestBodyRead)
        return self._forward()

    def _bodiless(self) -> bool:
        """
        @return: whether the request has no body at all (nothing to read).
        """
        request = self.request
        if getattr(request, "bodyStream", None) is not None:
            return False
        content = request.content
        if content is None:
            return True
        size = content.seek(0, 2)
        content.seek(0)
        return size == 0

    def _requestBodyRead(self, body: bytes) -> Optional[Deferred]:
        self.exchange.requestBody = body
        return self._afterStep(self.chain.requestBody(), self._forwardAfterStep)

    def _forwardAfterStep(self, _) -> Optional[Deferred]:
        return self._forward()

    def _forward(self) -> Optional[Deferred]:
        """
        Send the request upstream, or answer the local response a filter
        set.
        """
        if self._clientGone:
            return None
        exchange = self.exchange
        if exchange.localResponse is not None:
            local, exchange.localResponse = exchange.localResponse, None
            return self._respondLocal(local)
        bodyFactory = self._bodyFactory()
        headers = self._upstreamHeaders()
        self._proxyLatency = _ms(self._clock.seconds() - self._startedAt)
        pending = self._upstreamPending = self._resource.upstream.request(
            exchange.service, exchange.method, exchange.path, headers, bodyFactory, self._attemptStarted)
        pending.addCallbacks(self._upstreamResponded, self._upstreamFailed)
        pending.addErrback(self._unexpected)
        return None

    def _upstreamFailed(self, failure: Failure) -> Optional[Deferred]:
        self._upstreamPending = None
        service = self.exchange.service
        if failure.check(UpstreamTimeout):
            self._log.warn("upstream {service} timed out: {error}", service=service.name, error=failure.value)
            return self._respondLocal(_errorResponse(504))
        if failure.check(CancelledError) or self._bodyRefused:
            return None
        self._log.warn("upstream {service} failed: {error}", service=service.name, error=failure.value)
        return self._respondLocal(_errorResponse(502))

    def _upstreamResponded(self, response) -> Optional[Deferred]:
        self._upstreamPending = None
        self._upstreamLatency = _ms(self._clock.seconds() - self._upstreamStartedAt)
        if self._clientGone:
            response.deliverBody(_Discard())
            return None
        exchange, chain = self.exchange, self.chain
        exchange.responseStatus = response.code
        exchange.responseReason = response.phrase
        pairs = getattr(response, "headerPairs", None)
        pairs = withoutHopByHop(pairs if pairs is not None else rawHeaderPairs(response.headers))
        if response.length is not UNKNOWN_LENGTH and response.code not in NO_BODY_CODES \
                and exchange.method != b"HEAD":
            pairs.append((b"content-length", b"%d" % (response.length,)))
        exchange.responseHeaders = pairs
        if chain is None:
            return self._sendResponse(response)
        return self._afterStep(chain.responseHeaders(), self._responseHeadersDone, response)

    def _responseHeadersDone(self, _, response) -> Optional[Deferred]:
        exchange = self.exchange
        if self._clientGone:
            response.deliverBody(_Discard())
            return None
        if exchange.localResponse is not None:
            response.deliverBody(_Discard())
            local, exchange.localResponse = exchange.localResponse, None
            return self._respondLocal(local, ranHeaders=True)
        return self._sendResponse(response)

    def _sendResponse(self, response) -> Optional[Deferred]:
        exchange = self.exchange
        whole = getattr(response, "bufferedBody", None)
        if whole is not None and exchange.method != b"HEAD" and response.code not in NO_BODY_CODES:
            # The whole body is here: one pass through the filters, and the
            # response keeps a Content-Length.
            self._bodyDone = True
            if self.chain is None:
                self._writeWhole(whole)
                return None
            return self._afterStep(self.chain.responseBody(whole, True), self._writeWhole)
        self._writeHead(exchange.responseStatus, exchange.responseReason, exchange.responseHeaders, proxied=True)
        response.deliverBody(_BodyReceiver(self))
        if not self._bodyDone and not self._ended and not self._clientGone:
            self._armReadTimer(self.exchange.service.readTimeout / 1000.0)

    def _attemptStarted(self) -> None:
        self._upstreamStartedAt = self._clock.seconds()

    def _readBody(self) -> Deferred:
        """
        @return: a Deferred firing with the whole request body.
        """
        stream = getattr(self.request, "bodyStream", None)
        if stream is not None:
            return stream.readAll()
        content = self.request.content
        if content is None:
            return succeed(b"")
        content.seek(0)
        data = content.read()
        content.seek(0)
        return succeed(data)

    def _bodyFactory(self) -> Optional[Callable[[], IBodyProducer]]:
        """
        @return: what makes the upstream request's body producer (per
            attempt), or L{None} for a request without a body.
        """
        exchange = self.exchange
        headers = self.request.requestHeaders
        framed = headers.hasHeader(b"content-length") or headers.hasHeader(b"transfer-encoding")
        if exchange.requestBody is not None:
            body = exchange.requestBody
            if not body and not framed:
                return None
            return lambda: _BytesProducer(body)
        stream = getattr(self.request, "bodyStream", None)
        if stream is not None:
            return stream.producer
        content = self.request.content
        if content is None:
            return None
        content.seek(0, 2)
        length = content.tell()
        content.seek(0)
        if length == 0 and not framed:
            return None
        if length <= _IN_MEMORY_BODY:
            body = content.read()
            return lambda: _BytesProducer(body)
        cooperator = task.Cooperator(scheduler=lambda work: self._clock.callLater(0, work))

        def fromFile() -> IBodyProducer:
            content.seek(0)
            return FileBodyProducer(content, cooperator=cooperator)

        return fromFile

    def _requestBodyFailed(self, reason: Failure) -> None:
        """
        The request body will not complete: too large (413 if nothing was
        answered yet), or the client went away.
        """
        if self._ended or self._clientGone:
            return
        if self._upstreamPending is not None:
            pending, self._upstreamPending = self._upstreamPending, None
            self._bodyRefused = True
            pending.cancel()
        if reason.check(RequestBodyTooLarge) and not self.request.startedWriting:
            self._respondDirect(413, jsonBody(MESSAGES[413]))
        elif self._gate is not None:
            self._gate.stop()
            self._abortClient()

    def _upstreamHeaders(self) -> Pairs:
        exchange = self.exchange
        route, service = exchange.route, exchange.service
        named = connectionHeaders(exchange.requestHeaders)
        dropped = _NOT_FORWARDED_UPSTREAM if named is HOP_BY_HOP else named | _NOT_FORWARDED_UPSTREAM
        clientHost = self._clientHost
        if exchange.authority != clientHost:
            hostValue = exchange.authority
        elif getattr(route, "preserveHost", False) and clientHost:
            hostValue = clientHost
        else:
            hostValue = _serviceHost(service)
        headers: Pairs = [(b"host", hostValue)]
        forwardedFor = []
        for name, value in exchange.requestHeaders:
            if name in dropped or name.startswith(b"x-forwarded-") or name == b"x-real-ip":
                if name == b"x-forwarded-for":
                    forwardedFor.append(value)
                continue
            headers.append((name, value))
        clientIP = exchange.clientAddress[0].encode("ascii")
        forwardedFor.append(clientIP)
        path = exchange.originalUri.partition(b"?")[0]
        headers += [
            (b"x-forwarded-for", b", ".join(forwardedFor)),
            (b"x-forwarded-proto", exchange.scheme),
            (b"x-forwarded-host", _hostWithoutPort(clientHost)),
            (b"x-forwarded-port", b"%d" % (exchange.serverAddress[1],)),
            (b"x-forwarded-path", path),
            (b"x-real-ip", clientIP),
        ]
        return headers

    def _responseHead(self, pairs: Pairs, proxied: bool, framed: bool = False) -> Pairs:
        """
        The response headers the client gets: C{pairs}, with the gateway's
        own (C{Server} and C{Date} unless given, C{Via} and Kong's latency
        headers, C{Connection: close} when the connection ends).

        @param framed: C{pairs} carry the final Content-Length (a whole
            response); otherwise it is dropped when a filter may rewrite the
            body.
        """
        rewrites = self.chain is not None and self.chain.rewritesResponseBody and not framed
        head: Pairs = []
        hasServer = hasDate = False
        for name, value in pairs:
            if name in _GATEWAY_HEADERS or (rewrites and name == b"content-length"):
                continue
            if name == b"server":
                hasServer = True
            elif name == b"date":
                hasDate = True
            head.append((name, value))
        if not hasDate:
            head.insert(0, (b"date", self._resource.dateHeader()))
        if not hasServer:
            head.insert(0, (b"server", SERVER_TOKEN))
        channel = getattr(self.request, "channel", None)
        if channel is not None and getattr(channel, "persistent", True) is False:
            head = [(name, value) for name, value in head if name != b"connection"]
            head.append((b"connection", b"close"))
        if proxied:
            head += [(b"via", VIA), (b"x-kong-upstream-latency", b"%d" % self._upstreamLatency),
                     (b"x-kong-proxy-latency", b"%d" % self._proxyLatency)]
        else:
            latency = _ms(self._clock.seconds() - self._startedAt)
            head.append((b"x-kong-response-latency", b"%d" % latency))
        return head

    def _writeHead(self, status: int, reason: Optional[bytes], pairs: Pairs, proxied: bool) -> None:
        """
        Set the status and headers of a response whose body streams.
        """
        request = self.request
        request.setResponseCode(status, reason or None)
        headers = request.responseHeaders
        for name, value in self._responseHead(pairs, proxied):
            headers.addRawHeader(name, value)

    def _writeWholeResponse(self, status: int, reason: Optional[bytes], pairs: Pairs, body: bytes,
                            proxied: bool) -> None:
        """
        Write a whole response: C{pairs} (any Content-Length in them is
        replaced by the body's) with the gateway's own headers, and
        C{body}. The caller finishes the request.
        """
        pairs = [(name, value) for name, value in pairs if name != b"content-length"]
        pairs.append((b"content-length", b"%d" % (len(body),)))
        head = self._responseHead(pairs, proxied, framed=True)
        request = self.request
        writeWhole = getattr(request, "writeWhole", None)
        if writeWhole is not None:
            writeWhole(status, reason or None, head, body)
            return
        # A plain twisted.web request (the resource served by another site).
        request.setResponseCode(status, reason or None)
        for name, value in head:
            request.responseHeaders.addRawHeader(name, value)
        request.write(body)

    # The upstream body, streamed.

    def _bodyStarted(self, transport) -> None:
        if self._clientGone:
            transport.stopProducing()
            return
        self._gate = _Gate(transport)
        self.request.registerProducer(_ClientPressure(self._gate), True)

    def _bodyReceived(self, data: bytes) -> None:
        if self._clientGone:
            return
        if self._readTimer is not None:
            self._lastBodyAt = self._clock.seconds()
        if self.chain is None:
            self.request.write(data)
            return
        self._gate.pause("filter")
        self._bodyQueue.addCallback(lambda _: self.chain.responseBody(data, False))
        self._bodyQueue.addCallback(self._writeFiltered)
        self._bodyQueue.addCallback(lambda _: self._gate.resume("filter"))
        self._bodyQueue.addErrback(self._unexpected)

    def _writeWhole(self, body: bytes) -> None:
        """
        Answer with the whole (filtered) upstream body.
        """
        if self._clientGone or self._ended:
            return
        exchange = self.exchange
        self._writeWholeResponse(exchange.responseStatus, exchange.responseReason, exchange.responseHeaders,
                                 body, proxied=True)
        self._complete()

    def _writeFiltered(self, data: bytes) -> None:
        if data and not self._clientGone:
            self.request.write(data)

    def _bodyEnded(self, reason) -> None:
        self._bodyDone = True
        self._cancelReadTimer()
        if self._clientGone:
            return
        if not reason.check(ResponseDone, PotentialDataLoss):
            self._log.warn("upstream {service} broke off its response: {error}",
                           service=self.exchange.service.name, error=reason.getErrorMessage())
            self._abortClient()
            return
        if self.chain is None:
            self._complete()
            return
        self._bodyQueue.addCallback(lambda _: self.chain.responseBody(b"", True))
        self._bodyQueue.addCallback(self._writeFiltered)
        self._bodyQueue.addCallback(lambda _: self._complete())
        self._bodyQueue.addErrback(self._unexpected)

    def _complete(self) -> None:
        if self._clientGone:
            return
        if self._gate is not None:
            self.request.unregisterProducer()
        self.request.finish()
        self._end()

    def _armReadTimer(self, delay: float) -> None:
        """
        Watch the upstream body for a stall: the timer is armed once and
        moved on lazily, from the time the last chunk arrived.
        """
        self._lastBodyAt = self._clock.seconds()
        self._readTimer = self._clock.callLater(delay, self._readTimedOut)

    def _cancelReadTimer(self) -> None:
        if self._readTimer is not None and self._readTimer.active():
            self._readTimer.cancel()
        self._readTimer = None

    def _readTimedOut(self) -> None:
        self._readTimer = None
        timeout = self.exchange.service.readTimeout / 1000.0
        if self._gate is not None and self._gate.paused:
            self._armReadTimer(timeout)
            return
        quiet = self._clock.seconds() - self._lastBodyAt
        if quiet < timeout:
            lastBodyAt = self._lastBodyAt
            self._armReadTimer(timeout - quiet)
            self._lastBodyAt = lastBodyAt
            return
        self._log.warn("upstream {service} stalled mid-body", service=self.exchange.service.name)
        self._gate.stop()

    # Local responses.

    @inlineCallbacks
    def _respondLocal(self, local: LocalResponse, ranHeaders: bool = False):
        """
        Answer with C{local} (from a filter or the gateway), through the
        chain's response steps when there is a chain.
        """
        exchange, chain = self.exchange, self.chain
        exchange.responseStatus = local.status
        exchange.responseReason = local.reason
        exchange.responseHeaders = list(local.headers)
        body = local.body
        if chain is not None and not ranHeaders:
            yield chain.responseHeaders()
            if exchange.localResponse is not None:
                local, exchange.localResponse = exchange.localResponse, None
                exchange.responseStatus = local.status
                exchange.responseReason = local.reason
                exchange.responseHeaders = list(local.headers)
                body = local.body
        if chain is not None:
            body = yield chain.responseBody(body, True)
        if self._clientGone or self._ended:
            return
        self._writeWholeResponse(exchange.responseStatus, exchange.responseReason, exchange.responseHeaders,
                                 body, proxied=False)
        self.request.finish()
        self._end()

    def _respondDirect(self, status: int, body: bytes) -> None:
        """
        Answer before any chain exists (no route, internal error).
        """
        if self._clientGone or self._ended:
            return
        self._writeWholeResponse(status, None, [(b"content-type", b"application/json; charset=utf-8")], body,
                                 proxied=False)
        self.request.finish()
        self._end()

    # The end.

    def _abortClient(self) -> None:
        channel = self.request.channel
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()
        self._end()

    def _clientLost(self, reason) -> None:
        self._clientGone = True
        self._cancelReadTimer()
        if self._upstreamPending is not None:
            self._upstreamPending.cancel()
        if self._gate is not None:
            self._gate.stop()
        self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._cancelReadTimer()
        if self.chain is not None:
            try:
                self.chain.finish()
            except Exception:
                self._log.failure("finishing the filter chain of {uri}", uri=self.request.uri)
        try:
            self._record()
        except Exception:
            self._log.failure("recording {uri}", uri=self.request.uri)
        if self.generation is not None:
            self._resource.state.release(self.generation)
        self._releaseRequestBody()

    def _releaseRequestBody(self) -> None:
        """
        Drop this request's references to a body read whole for filters.
        The request's objects refer to each other and wait for Python's
        cyclic collector, which may run long after; a body they kept would
        stay in memory until then.
        """
        released = 0
        if self.exchange is not None and self.exchange.requestBody is not None:
            released = len(self.exchange.requestBody)
            self.exchange.requestBody = None
        stream = getattr(self.request, "bodyStream", None)
        if stream is not None:
            released = max(released, stream.discard())
        if released >= _TRIM_AFTER_BODY:
            _trimHeap()

    def _record(self) -> None:
        """
        Count the request in the metrics and write its access log line.
        """
        metrics, accessLog = self._resource.metrics, self._resource.accessLog
        if accessLog is not None and not accessLog.enabled:
            accessLog = None
        if metrics is None and accessLog is None:
            return
        request, exchange = self.request, self.exchange
        status = _CLIENT_CLOSED if self._clientGone and not request.finished else request.code
        totalSeconds = self._clock.seconds() - self._startedAt
        upstreamSeconds = self._upstreamLatency / 1000.0 if self._upstreamStartedAt is not None else None
        service = exchange.service if exchange is not None else None
        route = exchange.route if exchange is not None else None
        serviceName = (service.name or service.id) if service is not None else None
        routeName = (route.name or route.id) if route is not None else None
        if metrics is not None:
            metrics.observeRequest(serviceName, routeName, status, totalSeconds, upstreamSeconds)
        if accessLog is not None:
            accessLog.log(AccessLogEntry(
                startedAt=self._startedAt,
                clientIP=getattr(request.getClientAddress(), "host", "") or "",
                method=request.method.decode("latin-1"),
                uri=request.uri.decode("latin-1"),
                status=status,
                totalSeconds=totalSeconds,
                url=_requestURL(request),
                protocol=(request.clientproto or b"HTTP/1.1").decode("latin-1"),
                requestSize=_bodySize(request),
                responseSize=request.sentLength,
                upstreamSeconds=upstreamSeconds,
                proxySeconds=self._proxyLatency / 1000.0 if self._upstreamStartedAt is not None else None,
                upstreamURI=exchange.path.decode("latin-1") if self._upstreamStartedAt is not None else None,
                serviceId=service.id if service is not None else None,
                serviceName=service.name if service is not None else None,
                routeId=route.id if route is not None else None,
                routeName=route.name if route is not None else None,
                filters=self._filterNames(),
                userAgent=_text(request.getHeader(b"user-agent")),
                referer=_text(request.getHeader(b"referer")),
            ))

    def _filterNames(self) -> Tuple[str, ...]:
        """
        The enabled filters of this request's chains, service chain first.
        """
        exchange = self.exchange
        if self.chain is None or exchange is None:
            return ()
        config = self.generation.config
        names = []
        for chain in (config.chainFor(serviceId=exchange.service.id), config.chainFor(routeId=exchange.route.id)):
            if chain is not None and chain.enabled:
                names.extend(entry.name for entry in chain.filters if entry.enabled)
        return tuple(names)


class _Discard(Protocol):
    """
    Reads and drops an upstream body nobody wants.
    """

    def connectionMade(self):
        self.transport.stopProducing()


def _errorResponse(status: int) -> LocalResponse:
    return LocalResponse(status=status, body=jsonBody(MESSAGES[status]),
                         headers=[(b"content-type", b"application/json; charset=utf-8")])


def _hostWithoutPort(host: bytes) -> bytes:
    if host.startswith(b"["):
        return host[:host.find(b"]") + 1]
    return host.rsplit(b":", 1)[0] if b":" in host else host


def _serviceHost(service) -> bytes:
    host = service.host.encode("idna") if not service.host.isascii() else service.host.encode("ascii")
    if b":" in host:
        host = b"[" + host + b"]"
    default = {"http": 80, "https": 443}.get(service.protocol)
    if service.port == default:
        return host
    return host + b":%d" % (service.port,)


def _text(value: Optional[bytes]) -> Optional[str]:
    return value.decode("latin-1") if value is not None else None


def _requestURL(request) -> str:
    scheme = "https" if request.isSecure() else "http"
    host = _text(request.getHeader(b"host")) or ""
    return "{}://{}{}".format(scheme, host, request.uri.decode("latin-1"))


def _bodySize(request) -> int:
    content = request.content
    if content is None:
        return 0
    try:
        position = content.tell()
        content.seek(0, 2)
        size = content.tell()
        content.seek(position)
        return size
    except (ValueError, OSError):
        return 0


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


class ProxyResource(Resource):
    """
    The root resource of the proxy site: every request is proxied.
    """

    isLeaf = True

    def __init__(self, state: GatewayState, upstream: UpstreamClient, clock, metrics=None,
                 accessLog: Optional[AccessLog] = None) -> None:
        """
        @param state: the configuration generations.
        @param upstream: sends requests to services.
        @param clock: an C{IReactorTime} for latencies and timeouts.
        @param metrics: counts each finished request
            (C{observeRequest(service, route, status, totalSeconds,
            upstreamSeconds)}), or L{None}.
        @param accessLog: logs each finished request, or L{None}.
        """
        super().__init__()
        self.state = state
        self.upstream = upstream
        self.clock = clock
        self.metrics = metrics
        self.accessLog = accessLog

    _dateSecond = None
    _date = b""

    def dateHeader(self) -> bytes:
        """
        @return: the C{Date} header value for now, made once a second.
        """
        second = int(self.clock.seconds())
        if second != self._dateSecond:
            self._dateSecond, self._date = second, datetimeToString(second)
        return self._date

    def render(self, request):
        _ProxiedRequest(self, request).start()
        return server.NOT_DONE_YET
