"""
A lean HTTP/1.1 client connection for the upstream hot path.

One L{HTTP11ClientConnection} carries one request at a time: the request
head (and an in-memory body) goes out in one write, the response head is
parsed from the first bytes that complete it, and the body is handed to
the receiving protocol as it arrives, framed by C{Content-Length},
C{chunked} or the end of the connection. A connection may carry a next
request only when its response was read to the end, its request body was
sent whole and neither side said C{Connection: close}.

The response given to the caller behaves like Twisted's L{IResponse} as
far as the gateway uses it (C{code}, C{phrase}, C{headers}, C{length},
C{deliverBody}) and also carries its headers as lower-cased pairs
(C{headerPairs}), without the connection's own headers.
"""

from typing import Callable, List, Optional, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from twistgate.gateway.sendnow import sendNow
from twistgate.proxywasm.maps import validName

Pairs = List[Tuple[bytes, bytes]]

#: How every response body ends well; one instance serves them all (it
#: carries no traceback).
_RESPONSE_DONE = Failure(ResponseDone())

#: The largest response head accepted.
MAX_HEAD = 65536

#: Response headers that frame one message on one connection: never part of
#: the response's headers (as with Twisted's client).
_CONNECTION_CONTROL = frozenset([
    b"content-length", b"connection", b"keep-alive", b"te", b"trailers", b"transfer-encoding",
    b"upgrade", b"proxy-connection",
])
_NO_BODY_STATUS = (204, 304)
_EMPTY_BODY_METHODS = (b"PUT", b"POST")

# Response parsing states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class BadResponse(Exception):
    """
    The upstream's response is not valid HTTP/1.1.
    """


class ConnectionClosedEarly(Exception):
    """
    The connection closed before the response head arrived.

    @ivar reused: the connection had carried an earlier request (an idle
        connection the upstream closed at the same time: worth a retry).
    """

    def __init__(self, reused: bool) -> None:
        super().__init__("the upstream closed the connection before answering")
        self.reused = reused


def _sanitize(component: bytes) -> bytes:
    return b" ".join(component.splitlines())


def requestHead(method: bytes, target: bytes, headers: Pairs, framing: bytes) -> bytes:
    """
    @param framing: the body's framing header line (with its CRLF), or
        C{b""}.
    @return: the request's head: request line, C{headers} and C{framing};
        line breaks inside header names or values become spaces (as
        Twisted's L{Headers} does).
    @raise ValueError: the method or target cannot be sent.
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (framing, b"\r\n")
    head = b"".join(parts)
    lines = len(headers) + (3 if framing else 2)
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b" " in target:
        for part in (method, target):
            if not part or any(c in part for c in b" \r\n\t"):
                raise ValueError("invalid request line: {!r} {!r}".format(method, target))
        head = requestHead(method, target, [(_sanitize(n), _sanitize(v)) for n, v in headers], framing)
    return head


class UpstreamResponse:
    """
    One upstream response, its body delivered to one protocol.

    @ivar version: e.g. C{b"HTTP/1.1"}.
    @ivar code: the status code.
    @ivar phrase: the reason phrase.
    @ivar headerPairs: lower-cased C{(name, value)} pairs in order, without
        the connection control headers and those named in C{Connection}.
    @ivar length: the body length, or L{UNKNOWN_LENGTH}.
    @ivar bufferedBody: the whole body when it arrived with the head (the
        connection then already carries no part of this response), else
        L{None}.
    """

    bufferedBody: Optional[bytes] = None

    def __init__(self, version: bytes, code: int, phrase: bytes, headerPairs: Pairs, length,
                 connection: "HTTP11ClientConnection") -> None:
        self.version = version
        self.code = code
        self.phrase = phrase
        self.headerPairs = headerPairs
        self.length = length
        self._connection = connection
        self._protocol = None
        self._delivered = False
        self._pending: List[bytes] = []
        self._ended: Optional[Failure] = None
        self._headers: Optional[Headers] = None

    @property
    def headers(self) -> Headers:
        """
        The headers as a L{Headers}.
        """
        if self._headers is None:
            headers = self._headers = Headers()
            for name, value in self.headerPairs:
                headers.addRawHeader(name, value)
        return self._headers

    def deliverBody(self, protocol) -> None:
        """
        Deliver the body to C{protocol}: C{makeConnection} with a transport
        that pauses, resumes and stops the body, C{dataReceived} per chunk,
        C{connectionLost} with L{ResponseDone} (L{PotentialDataLoss} for a
        body ended by closing the connection) or a L{ResponseFailed}.

        Once the body ended, the response forgets C{protocol}: the protocol
        refers back to the response through its transport, a cycle only the
        cyclic collector would otherwise free.
        """
        if self._delivered:
            raise RuntimeError("the response body was already delivered")
        self._delivered = True
        self._protocol = protocol
        protocol.makeConnection(_BodyTransport(self))
        pending, self._pending = self._pending, []
        for data in pending:
            protocol.dataReceived(data)
        if self._ended is not None and self._protocol is protocol:
            self._protocol = None
            protocol.connectionLost(self._ended)

    def _data(self, data: bytes) -> None:
        if self._protocol is None:
            self._pending.append(data)
        else:
            self._protocol.dataReceived(data)

    def _end(self, reason: Failure) -> None:
        if self._ended is not None:
            return
        self._ended = reason
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connectionLost(reason)


class _BodyTransport:
    """
    What a body protocol controls: its response's part of the connection.
    """

    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response

    def pauseProducing(self) -> None:
        self._response._connection._pauseBody(self._response)

    def resumeProducing(self) -> None:
        self._response._connection._resumeBody(self._response)

    def stopProducing(self) -> None:
        self._response._connection._stopBody(self._response)

    abortConnection = stopProducing
    loseConnection = stopProducing


class _BodyConsumer:
    """
    Writes a streamed request body, chunked when its length is unknown.
    """

    def __init__(self, connection: "HTTP11ClientConnection", chunked: bool) -> None:
        self._connection = connection
        self._chunked = chunked
        self.stopped = False

    def write(self, data: bytes) -> None:
        if self.stopped or not data:
            return
        transport = self._connection.transport
        if self._chunked:
            transport.writeSequence([b"%x\r\n" % (len(data),), data, b"\r\n"])
        else:
            transport.write(data)

    def registerProducer(self, producer, streaming) -> None:
        self._connection.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._connection.transport.unregisterProducer()


class HTTP11ClientConnection(Protocol):
    """
    An HTTP/1.1 connection to an upstream, one request at a time.

    @ivar reused: the connection carried an earlier request.
    @ivar idleSince: when the connection last became idle.
    """

    reused = False
    idleSince = 0.0
    _headTimer = None
    _headDeadline = 0.0
    _onHeadTimeout: Optional[Callable[[], None]] = None

    def __init__(self, onIdle: Callable[["HTTP11ClientConnection"], None],
                 onLost: Callable[["HTTP11ClientConnection"], None]) -> None:
        """
        @param onIdle: called when the connection can carry a next request.
        @param onLost: called when the connection closed.
        """
        self._onIdle = onIdle
        self._onLost = onLost
        self._buffer = b""
        self._state = _DONE
        self._method = b""
        self._response: Optional[UpstreamResponse] = None
        self._onResponse: Optional[Callable[[UpstreamResponse], None]] = None
        self._onFailure: Optional[Callable[[Failure], None]] = None
        self._remaining = 0
        self._keepAlive = False
        self._bodySent = True
        self._producer = None
        self._consumer: Optional[_BodyConsumer] = None
        self._paused = False
        self._receivedAny = False
        self.lost = False
        self._aborted = False
        self._lostWaiters: list = []

    def connectionMade(self) -> None:
        setTcpNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setTcpNoDelay is not None:
            setTcpNoDelay(True)

    # Sending.

    def request(self, method: bytes, target: bytes, headers: Pairs, producer,
                onResponse: Callable[[UpstreamResponse], None], onFailure: Callable[[Failure], None],
                onSent: Optional[Callable[[], None]] = None) -> None:
        """
        Send one request.

        @param headers: the request headers, C{Host} included, without
            framing headers.
        @param producer: the body's L{IBodyProducer}, or L{None}; a producer
            with a C{body} attribute (bytes) is sent from memory.
        @param onResponse: called with the L{UpstreamResponse} once its head
            arrived.
        @param onFailure: called with the reason if no response head comes.
        @param onSent: called once the whole request was written.
        @raise ValueError: the request cannot be sent (nothing was written).
        """
        self._method = method
        self._onResponse = onResponse
        self._onFailure = onFailure
        self._state = _HEAD
        self._response = None
        self._receivedAny = False
        body = getattr(producer, "body", None) if producer is not None else None
        if producer is None:
            framing = b"Content-Length: 0\r\n" if method in _EMPTY_BODY_METHODS else b""
            sendNow(self.transport, requestHead(method, target, headers, framing))
            self._bodySent = True
        elif isinstance(body, bytes):
            sendNow(self.transport, requestHead(method, target, headers, b"Content-Length: %d\r\n" % (len(body),))
                    + body)
            self._bodySent = True
        else:
            chunked = producer.length is UNKNOWN_LENGTH
            framing = b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % (
                producer.length,)
            self.transport.write(requestHead(method, target, headers, framing))
            self._bodySent = False
            self._streamBody(producer, chunked, onSent)
            return
        if onSent is not None:
            onSent()

    def _streamBody(self, producer, chunked: bool, onSent: Optional[Callable[[], None]]) -> None:
        consumer = self._consumer = _BodyConsumer(self, chunked)
        self._producer = producer
        self.transport.registerProducer(producer, True)

        def sent(_) -> None:
            if consumer.stopped:
                return
            self._releaseProducer()
            if chunked:
                self.transport.write(b"0\r\n\r\n")
            self._bodySent = True
            if onSent is not None:
                onSent()
            if self._state == _DONE:
                self._maybeIdle()

        def failed(reason: Failure) -> None:
            if consumer.stopped:
                return
            self._releaseProducer()
            self._fail(reason)

        producer.startProducing(consumer).addCallbacks(sent, failed)

    def _releaseProducer(self) -> None:
        if self._consumer is not None:
            self._consumer.stopped = True
            self._consumer = None
            self._producer = None
            if not self.lost:
                self.transport.unregisterProducer()

    def _stopProducer(self) -> None:
        producer = self._producer
        self._releaseProducer()
        if producer is not None:
            try:
                producer.stopProducing()
            except Exception:
                pass

    def watchHead(self, clock, timeout: float, onTimeout: Callable[[], None]) -> None:
        """
        Call C{onTimeout} if the current request's response head has not
        arrived within C{timeout} seconds. One timer per connection follows
        the requests lazily (moved on when it fires early).

        @param clock: an C{IReactorTime}.
        """
        self._headDeadline = clock.seconds() + timeout
        self._onHeadTimeout = onTimeout
        if self._headTimer is None:
            self._headTimer = clock.callLater(timeout, self._headTimerFired, clock)

    def _headTimerFired(self, clock) -> None:
        self._headTimer = None
        onTimeout = self._onHeadTimeout
        if onTimeout is None:
            return
        remaining = self._headDeadline - clock.seconds()
        if remaining > 0:
            self._headTimer = clock.callLater(remaining, self._headTimerFired, clock)
            return
        self._onHeadTimeout = None
        onTimeout()

    def _cancelHeadTimer(self) -> None:
        self._onHeadTimeout = None
        timer, self._headTimer = self._headTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    # Receiving.

    def dataReceived(self, data: bytes) -> None:
        self._receivedAny = True
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        state = self._state
        while data:
            if state == _HEAD:
                data = self._parseHead(data)
            elif state == _LENGTH:
                if len(data) < self._remaining:
                    self._remaining -= len(data)
                    self._response._data(data)
                    return
                body, data = data[:self._remaining], data[self._remaining:]
                self._remaining = 0
                if body:
                    self._response._data(body)
                self._finishResponse()
            elif state == _UNTIL_CLOSE:
                self._response._data(data)
                return
            elif state == _DONE:
                if data.strip():
                    self._abort()
                return
            else:
                data = self._parseChunked(data)
            if data is None:
                return
            state = self._state

    def _parseHead(self, data: bytes) -> Optional[bytes]:
        end = data.find(b"\r\n\r\n")
        bare = data.find(b"\n\n", 0, end if end >= 0 else len(data))
        if bare >= 0:
            head, rest = data[:bare], data[bare + 2:]
        elif end >= 0:
            head, rest = data[:end], data[end + 4:]
        else:
            if len(data) > MAX_HEAD:
                self._badResponse("response head larger than {} bytes".format(MAX_HEAD))
                return None
            self._buffer = data
            return None
        if len(head) > MAX_HEAD:
            self._badResponse("response head larger than {} bytes".format(MAX_HEAD))
            return None
        lines = head.split(b"\n")
        status = lines[0].rstrip(b"\r").split(b" ", 2)
        version = status[0]
        try:
            if not version.startswith(b"HTTP/1.") or len(status[1]) != 3:
                raise ValueError(status)
            code = int(status[1])
        except (ValueError, IndexError):
            self._badResponse("invalid status line {!r}".format(lines[0][:100]))
            return None
        phrase = status[2] if len(status) == 3 else b""
        pairs: Pairs = []
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t") and pairs:
                name, value = pairs[-1]
                pairs[-1] = (name, value + b" " + line.strip())
                continue
            name, sep, value = line.partition(b":")
            if not sep or not validName(name):
                self._badResponse("invalid header line {!r}".format(line.rstrip(b"\r")[:100]))
                return None
            pairs.append((name.lower(), value.strip()))
        if 100 <= code < 200 and code != 101:
            return rest
        rest = self._startBody(version, code, phrase, pairs, rest)
        return rest if self._state != _DONE else self._afterDone(rest)

    def _afterDone(self, rest: bytes) -> Optional[bytes]:
        if rest.strip():
            self._abort()
        return None

    def _startBody(self, version: bytes, code: int, phrase: bytes, pairs: Pairs, rest: bytes) -> bytes:
        """
        Start receiving the body of a response whose head arrived, with
        C{rest} the bytes that came after the head.

        @return: what is left of C{rest} to parse.
        """
        head = self._method == b"HEAD"
        connection: List[bytes] = []
        lengths: List[bytes] = []
        codings: List[bytes] = []
        headerPairs: Pairs = []
        for name, value in pairs:
            if name in _CONNECTION_CONTROL and not (head and name == b"content-length"):
                if name == b"connection":
                    connection.extend(token.strip().lower() for token in value.split(b","))
                elif name == b"content-length":
                    lengths.append(value)
                elif name == b"transfer-encoding":
                    codings.extend(token.strip().lower() for token in value.split(b","))
                continue
            headerPairs.append((name, value))
        if connection:
            named = frozenset(connection)
            headerPairs = [(name, value) for name, value in headerPairs if name not in named]
        keepAlive = version == b"HTTP/1.1" and b"close" not in connection and code != 101
        if head or code in _NO_BODY_STATUS or code == 101:
            length = 0
            self._state = _DONE
        elif codings:
            length = UNKNOWN_LENGTH
            if codings[-1] == b"chunked":
                self._state = _CHUNK_SIZE
            else:
                self._state = _UNTIL_CLOSE
                keepAlive = False
        elif lengths:
            values = {value.strip() for value in b",".join(lengths).split(b",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                self._badResponse("invalid Content-Length {!r}".format(b", ".join(lengths)))
                return b""
            length = self._remaining = int(next(iter(values)))
            self._state = _LENGTH if length else _DONE
        else:
            length = UNKNOWN_LENGTH
            self._state = _UNTIL_CLOSE
            keepAlive = False
        self._keepAlive = keepAlive
        self._onHeadTimeout = None
        response = self._response = UpstreamResponse(version, code, phrase, headerPairs, length, self)
        onResponse, self._onResponse, self._onFailure = self._onResponse, None, None
        if self._state == _LENGTH and len(rest) >= self._remaining:
            # The whole body came with the head: the caller gets it at once.
            response.bufferedBody = body = rest[:self._remaining]
            rest = rest[self._remaining:]
            self._remaining = 0
            response._pending.append(body)
            self._finishResponse()
        elif self._state == _DONE:
            response.bufferedBody = b""
            self._finishResponse()
        onResponse(response)
        return rest

    def _parseChunked(self, data: bytes) -> Optional[bytes]:
        state = self._state
        if state == _CHUNK_DATA:
            if len(data) <= self._remaining:
                self._remaining -= len(data)
                self._response._data(data)
                if self._remaining == 0:
                    self._state = _CHUNK_END
                return None
            chunk, data = data[:self._remaining], data[self._remaining:]
            self._remaining = 0
            self._state = _CHUNK_END
            self._response._data(chunk)
            return data
        end = data.find(b"\n")
        if end < 0:
            if len(data) > 4096:
                self._badBody("chunk line too long")
                return None
            self._buffer = data
            return None
        line, data = data[:end].rstrip(b"\r"), data[end + 1:]
        if state == _CHUNK_END:
            if line:
                self._badBody("missing CRLF after a chunk")
                return None
            self._state = _CHUNK_SIZE
        elif state == _CHUNK_SIZE:
            size = line.split(b";", 1)[0].strip()
            try:
                self._remaining = int(size, 16)
                if self._remaining < 0 or not size:
                    raise ValueError(size)
            except ValueError:
                self._badBody("invalid chunk size {!r}".format(line[:100]))
                return None
            self._state = _CHUNK_DATA if self._remaining else _TRAILER
        elif not line:
            self._finishResponse()
            return self._afterDone(data) if data else None
        return data

    def _finishResponse(self) -> None:
        response = self._response
        self._state = _DONE
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        if not self._bodySent:
            self._keepAlive = False
            self._stopProducer()
        if not self._keepAlive:
            self.transport.loseConnection()
        else:
            self._maybeIdle()
        if response is not None:
            response._end(_RESPONSE_DONE)

    def _maybeIdle(self) -> None:
        if self._keepAlive and not self.lost and self._state == _DONE and self._response is not None:
            self._response = None
            self.reused = True
            self._onIdle(self)

    # Failures.

    def _badResponse(self, message: str) -> None:
        self._state = _DONE
        self._abort()
        self._fail(Failure(BadResponse(message)))

    def _badBody(self, message: str) -> None:
        self._state = _DONE
        self._abort()
        if self._response is not None:
            self._response._end(Failure(ResponseFailed([Failure(BadResponse(message))])))

    def _fail(self, reason: Failure) -> None:
        self._onHeadTimeout = None
        self._stopProducer()
        onFailure, self._onResponse, self._onFailure = self._onFailure, None, None
        if onFailure is not None:
            self._abort()
            onFailure(reason)
        elif self._response is not None and self._state != _DONE:
            self._state = _DONE
            self._abort()
            self._response._end(Failure(ResponseFailed([reason])))

    def _abort(self) -> None:
        self._keepAlive = False
        if not self.lost and not self._aborted:
            self._aborted = True
            self.transport.abortConnection()

    def abandon(self) -> None:
        """
        Give up the current request (cancelled or timed out): close the
        connection without telling the caller.
        """
        self._onResponse = self._onFailure = None
        self._cancelHeadTimer()
        self._stopProducer()
        self._abort()
        if self._response is not None and self._state != _DONE:
            self._state = _DONE
            self._response._end(Failure(ResponseFailed([Failure(ConnectionClosedEarly(self.reused))])))

    def _pauseBody(self, response: UpstreamResponse) -> None:
        if response is self._response and self._state != _DONE and not self._paused and not self.lost:
            self._paused = True
            self.transport.pauseProducing()

    def _resumeBody(self, response: UpstreamResponse) -> None:
        if response is self._response and self._paused and not self.lost:
            self._paused = False
            self.transport.resumeProducing()

    def _stopBody(self, response: UpstreamResponse) -> None:
        if response is self._response and self._state != _DONE:
            self._state = _DONE
            self._stopProducer()
            self._abort()
            response._end(Failure(ResponseFailed([Failure(ConnectionClosedEarly(self.reused))])))

    def close(self):
        """
        Close the connection.

        @return: a Deferred firing once it closed.
        """
        if self.lost:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._lostWaiters.append(waiter)
        self.transport.loseConnection()
        return waiter

    def connectionLost(self, reason: Failure = None) -> None:
        self.lost = True
        self._cancelHeadTimer()
        self._releaseProducer()
        state, self._state = self._state, _DONE
        if self._onFailure is not None:
            self._fail(Failure(ConnectionClosedEarly(self.reused)) if not self._receivedAny else Failure(
                BadResponse("the upstream closed the connection within the response head")))
        elif state == _UNTIL_CLOSE and self._response is not None:
            self._response._end(Failure(PotentialDataLoss()))
        elif state != _DONE and self._response is not None:
            self._response._end(Failure(ResponseFailed([reason])))
        self._onLost(self)
        waiters, self._lostWaiters = self._lostWaiters, []
        for waiter in waiters:
            waiter.callback(None)
