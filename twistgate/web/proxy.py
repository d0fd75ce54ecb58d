"""
The reverse proxy: the site clients talk to. Each request is routed as
soon as its headers arrived, run through its filter chain (L{IChainRun})
and forwarded to its service; its body streams upstream as it arrives
(read whole first only when a filter wants it), and the response streams
back, both with backpressure, through the chain when a filter wants it.

Requests come from the gateway's own HTTP/1.1 front end
(L{twistgate.web.http1server}); the resource also serves twisted.web's
requests (whose body is in C{content}).
"""

import ctypes
from collections.abc import Mapping
from functools import lru_cache
from typing import Callable, List, Optional, Sequence, Tuple

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import NO_BODY_CODES, datetimeToString
from twisted.web.client import FileBodyProducer, PotentialDataLoss, ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import Resource
from zope.interface import implementer

from twistgate.gateway.exchange import Exchange, LocalResponse
from twistgate.gateway.state import GatewayState, Generation
from twistgate.gateway.upstream import UpstreamClient, UpstreamTimeout
from twistgate.web.accesslog import AccessLog, AccessLogEntry
from twistgate.web.http1server import MESSAGES, SERVER_TOKEN, Pairs, RequestBodyTooLarge, jsonBody

VIA = b"1.1 " + SERVER_TOKEN

NO_ROUTE = "no Route matched with those values"
#: The status logged for a request whose client went away first (nginx's).
_CLIENT_CLOSED = 499

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
        pairs = getattr(request, "headerPairs", None)
        # The exchange's copy is the filters' to change.
        pairs = rawHeaderPairs(request.requestHeaders) if pairs is None else list(pairs)
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
        framed = _framed(self.request)
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
            return (lambda: _BytesProducer(b"")) if framed else None
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
                requestSize=_requestSize(request),
                responseSize=getattr(request, "bytesSent", request.sentLength),
                responseBodySize=request.sentLength,
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


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _serviceHost(service) -> bytes:
    return _hostHeaderFor(service.host, service.port, service.protocol)


@lru_cache(maxsize=1024)
def _hostHeaderFor(host: str, port: int, protocol: str) -> bytes:
    """
    @return: the C{Host} header naming a service's host and port (the port
        left out when it is the protocol's default).
    """
    name = host.encode("idna") if not host.isascii() else host.encode("ascii")
    if b":" in name:
        name = b"[" + name + b"]"
    if port == _DEFAULT_PORTS.get(protocol):
        return name
    return name + b":%d" % (port,)


def _framed(request) -> bool:
    """
    @return: whether the client's request declared a body (C{Content-Length}
        or C{Transfer-Encoding}), even an empty one.
    """
    pairs = getattr(request, "headerPairs", None)
    if pairs is None:
        headers = request.requestHeaders
        return headers.hasHeader(b"content-length") or headers.hasHeader(b"transfer-encoding")
    return any(name == b"content-length" or name == b"transfer-encoding" for name, _ in pairs)


def _text(value: Optional[bytes]) -> Optional[str]:
    return value.decode("latin-1") if value is not None else None


def _requestURL(request) -> str:
    scheme = "https" if request.isSecure() else "http"
    host = _text(request.getHeader(b"host")) or ""
    return "{}://{}{}".format(scheme, host, request.uri.decode("latin-1"))


def _requestSize(request) -> int:
    """
    @return: the request's bytes received (head and body), as Kong logs
        them; for a twisted.web request, its spooled body's.
    """
    size = getattr(request, "receivedSize", None)
    if size is not None:
        return size
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
