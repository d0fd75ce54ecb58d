"""
Tests for L{twistgate.gateway.upstream} and its HTTP/1.1 client
(L{twistgate.gateway.http1client}) over a L{MemoryReactorClock},
connections completed or refused with L{iosim}.
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import ConnectionCompleter
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import PotentialDataLoss, ResponseDone, readBody
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from twistgate.config.model import Service
from twistgate.gateway.upstream import UpstreamClient, UpstreamError, UpstreamTimeout


class _Recorder(Resource):
    """
    Answers C{ok} and records each request's method, target, headers and
    body; C{/hang} never answers.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render(self, request):
        self.seen.append((request.method, request.uri, list(request.requestHeaders.getAllRawHeaders()),
                          request.content.read()))
        if request.path == b"/hang":
            return NOT_DONE_YET
        return b"ok"


def _service(port=8080, retries=2, readTimeout=5000):
    return Service(id="s", name="svc", protocol="http", host="127.0.0.1", port=port, path=None,
                   retries=retries, readTimeout=readTimeout, connectTimeout=2000)


class UpstreamClientTests(SynchronousTestCase):
    """
    L{UpstreamClient.request}.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.completer = ConnectionCompleter(self.reactor)
        self.upstream = _Recorder()
        self.reactor.listenTCP(8080, Site(self.upstream, reactor=self.reactor))
        self.client = UpstreamClient(self.reactor)

    def test_sendsRequestToService(self):
        """
        The request goes to the service's host and port with the given
        target, headers (repeats in order) and body.
        """
        from twistgate.web.proxy import _BytesProducer
        d = self.client.request(_service(), b"POST", b"/a?b=c",
                                [(b"host", b"example"), (b"x-r", b"1"), (b"x-r", b"2")],
                                lambda: _BytesProducer(b"body"))
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("127.0.0.1", 8080))
        pump = self.completer.succeedOnce()
        pump.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        body = readBody(response)
        pump.flush()
        self.assertEqual(self.successResultOf(body), b"ok")
        method, uri, headers, content = self.upstream.seen[0]
        self.assertEqual((method, uri, content), (b"POST", b"/a?b=c", b"body"))
        headers = dict(headers)
        self.assertEqual(headers[b"Host"], [b"example"])
        self.assertEqual(headers[b"X-R"], [b"1", b"2"])

    def test_retriesRefusedConnections(self):
        """
        A refused connection is retried C{retries} times; then the request
        fails with L{UpstreamError}.
        """
        attempts = []
        d = self.client.request(_service(retries=2), b"GET", b"/", [(b"host", b"h")],
                                onAttempt=lambda: attempts.append(1))
        for attempt in range(3):
            self.assertNoResult(d)
            self.assertEqual(len(attempts), attempt + 1)
            self.completer.failOnce()
        self.failureResultOf(d, UpstreamError)
        self.assertEqual((len(attempts), self.reactor.tcpClients), (3, []))

    def test_retrySucceeds(self):
        """
        A retry that connects answers the request.
        """
        d = self.client.request(_service(retries=1), b"GET", b"/", [(b"host", b"h")])
        self.completer.failOnce()
        pump = self.completer.succeedOnce()
        pump.flush()
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_readTimeout(self):
        """
        No response headers within C{read_timeout} fails with
        L{UpstreamTimeout} (not retried).
        """
        d = self.client.request(_service(readTimeout=1500), b"GET", b"/hang", [(b"host", b"h")])
        pump = self.completer.succeedOnce()
        pump.flush()
        self.reactor.advance(1.4)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        pump.flush()
        self.failureResultOf(d, UpstreamTimeout)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_connectionsReused(self):
        """
        A second request to the same service reuses the pooled connection.
        """
        first = self.client.request(_service(), b"GET", b"/1", [(b"host", b"h")])
        pump = self.completer.succeedOnce()
        pump.flush()
        response = self.successResultOf(first)
        readBody(response)
        pump.flush()
        second = self.client.request(_service(), b"GET", b"/2", [(b"host", b"h")])
        pump.flush()
        self.assertEqual(self.successResultOf(second).code, 200)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual([seen[1] for seen in self.upstream.seen], [b"/1", b"/2"])

    def test_cancel(self):
        """
        Cancelling the request's Deferred abandons the attempt.
        """
        d = self.client.request(_service(), b"GET", b"/hang", [(b"host", b"h")])
        pump = self.completer.succeedOnce()
        pump.flush()
        d.cancel()
        self.failureResultOf(d)
        pump.flush()
        self.reactor.advance(10)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_readTimeoutOnPooledConnection(self):
        """
        The read timeout also holds for a request on a reused connection.
        """
        first = self.client.request(_service(readTimeout=1000), b"GET", b"/1", [(b"host", b"h")])
        pump = self.completer.succeedOnce()
        pump.flush()
        readBody(self.successResultOf(first))
        pump.flush()
        second = self.client.request(_service(readTimeout=1000), b"GET", b"/hang", [(b"host", b"h")])
        pump.flush()
        self.assertNoResult(second)
        self.reactor.advance(1.1)
        pump.flush()
        self.failureResultOf(second, UpstreamTimeout)


    def test_readTimeoutCountsFromEachRequest(self):
        """
        On a reused connection the read timeout counts from the second
        request, not from the first.
        """
        first = self.client.request(_service(readTimeout=1000), b"GET", b"/1", [(b"host", b"h")])
        pump = self.completer.succeedOnce()
        pump.flush()
        readBody(self.successResultOf(first))
        pump.flush()
        self.reactor.advance(0.5)
        second = self.client.request(_service(readTimeout=1000), b"GET", b"/hang", [(b"host", b"h")])
        pump.flush()
        self.reactor.advance(0.9)
        self.assertNoResult(second)
        self.reactor.advance(0.2)
        self.failureResultOf(second, UpstreamTimeout)


class NoDelayTests(SynchronousTestCase):
    """
    Upstream connections disable Nagle's algorithm.
    """

    def test_connectionSetsNoDelay(self):
        """
        A new upstream connection turns C{TCP_NODELAY} on.
        """
        from twistgate.gateway.http1client import HTTP11ClientConnection

        class Transport:
            noDelay = False

            def setTcpNoDelay(self, enabled):
                self.noDelay = enabled

        connection = HTTP11ClientConnection(lambda c: None, lambda c: None)
        connection.makeConnection(Transport())
        self.assertTrue(connection.transport.noDelay)


class _Scripted(Protocol):
    """
    An upstream answering each request (once its head arrived, or the last
    chunk of a chunked body) with the next of its scripted raw responses;
    records what it received.
    """

    def __init__(self, responses, received):
        self._responses = responses
        self._received = received
        self._request = b""

    def dataReceived(self, data):
        self._received.append(data)
        self._request += data
        end = b"0\r\n\r\n" if b"transfer-encoding: chunked" in self._request.lower() else b"\r\n\r\n"
        if self._request.endswith(end) and self._responses:
            self._request = b""
            answer = self._responses.pop(0)
            if answer is None:
                self.transport.loseConnection()
            else:
                self.transport.write(answer)


class HTTP11ClientTests(SynchronousTestCase):
    """
    The built-in HTTP/1.1 client against raw upstream responses.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.completer = ConnectionCompleter(self.reactor)
        self.responses = []
        self.received = []
        factory = Factory.forProtocol(lambda: _Scripted(self.responses, self.received))
        self.reactor.listenTCP(8080, factory)
        self.client = UpstreamClient(self.reactor)

    def request(self, method=b"GET", path=b"/", producer=None, service=None):
        return self.client.request(service or _service(), method, path, [(b"host", b"h")],
                                   (lambda: producer) if producer is not None else None)

    def receive(self, response):
        """
        Deliver C{response}'s body into lists.

        @return: the list of chunks received and the list of end reasons,
            filled as the body arrives.
        """
        chunks = []
        ended = []

        class Receiver(Protocol):
            def dataReceived(self, data):
                chunks.append(data)

            def connectionLost(self, reason):
                ended.append(reason)

        response.deliverBody(Receiver())
        return chunks, ended

    def body(self, response, pump):
        chunks, ended = self.receive(response)
        pump.flush()
        return b"".join(chunks), ended[0] if ended else None

    def test_chunkedResponse(self):
        """
        A chunked body arrives decoded, with extensions and trailers
        ignored, and the connection is reused.
        """
        self.responses += [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
                           b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
                           b"HTTP/1.1 204 No Content\r\n\r\n"]
        d = self.request()
        pump = self.completer.succeedOnce()
        pump.flush()
        response = self.successResultOf(d)
        self.assertEqual((response.code, response.length, response.headerPairs),
                         (200, UNKNOWN_LENGTH, [(b"x-a", b"1")]))
        body, reason = self.body(response, pump)
        self.assertEqual(body, b"abcde")
        reason.trap(ResponseDone)
        second = self.request()
        pump.flush()
        self.assertEqual(self.successResultOf(second).code, 204)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_wholeBodyWithHead(self):
        """
        A body that arrived with its head is on the response at once, and
        the connection is free for the next request.
        """
        self.responses += [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                           b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"]
        d = self.request()
        pump = self.completer.succeedOnce()
        pump.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.bufferedBody, b"hello")
        self.assertEqual(self.body(response, pump)[0], b"hello")
        second = self.request()
        pump.flush()
        response = self.successResultOf(second)
        self.assertIsNone(response.bufferedBody)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_connectionCloseNotReused(self):
        """
        After C{Connection: close} the next request opens a new connection;
        headers named in C{Connection} are not passed on.
        """
        self.responses.append(b"HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nX-Hop: 1\r\n"
                              b"Content-Length: 2\r\n\r\nok")
        d = self.request()
        pump = self.completer.succeedOnce()
        pump.flush()
        response = self.successResultOf(d)
        self.assertEqual((response.headerPairs, response.length), ([], 2))
        self.assertEqual(self.body(response, pump)[0], b"ok")
        self.request()
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_bodyUntilClose(self):
        """
        A body without framing ends with the connection
        (L{PotentialDataLoss}, as Twisted's client).
        """
        self.responses.append(b"HTTP/1.0 200 OK\r\n\r\nsome body")
        d = self.request()
        pump = self.completer.succeedOnce()
        pump.flush()
        response = self.successResultOf(d)
        chunks, ended = self.receive(response)
        self.assertEqual(ended, [])
        pump.server.transport.loseConnection()
        pump.flush()
        self.assertEqual(b"".join(chunks), b"some body")
        ended[0].trap(PotentialDataLoss)

    def test_invalidResponse(self):
        """
        A response that is not HTTP fails with L{UpstreamError}.
        """
        self.responses.append(b"SSH-2.0-OpenSSH\r\n\r\n")
        d = self.request()
        self.completer.succeedOnce().flush()
        self.assertIn("invalid status line", str(self.failureResultOf(d, UpstreamError).value))

    def test_invalidHeaderName(self):
        """
        A header name that is not an HTTP token (here with a space before
        the colon, or a parenthesis) fails with L{UpstreamError} naming the
        line.
        """
        for line in (b"X-Bad : 1", b"X(Bad): 1"):
            self.responses.append(b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n")
            d = self.request()
            self.completer.succeedOnce().flush()
            error = self.failureResultOf(d, UpstreamError).value
            self.assertIn("invalid header line {!r}".format(line), str(error))

    def test_invalidContentLength(self):
        """
        Conflicting C{Content-Length} values fail with L{UpstreamError}.
        """
        self.responses.append(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")
        d = self.request()
        self.completer.succeedOnce().flush()
        self.failureResultOf(d, UpstreamError)

    def test_informationalSkipped(self):
        """
        A C{100 Continue} before the response is skipped.
        """
        self.responses.append(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        d = self.request()
        self.completer.succeedOnce().flush()
        self.assertEqual(self.successResultOf(d).code, 201)

    def test_headKeepsContentLength(self):
        """
        A C{HEAD} response has no body; its C{Content-Length} stays a
        header.
        """
        self.responses.append(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
        d = self.request(method=b"HEAD")
        pump = self.completer.succeedOnce()
        pump.flush()
        response = self.successResultOf(d)
        self.assertEqual((response.length, response.headerPairs), (0, [(b"content-length", b"42")]))
        body, reason = self.body(response, pump)
        self.assertEqual(body, b"")
        reason.trap(ResponseDone)

    def test_staleIdleConnectionRetried(self):
        """
        A GET on a pooled connection the upstream closed without answering
        is sent again on a new connection.
        """
        self.responses += [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", None]
        first = self.request()
        pump = self.completer.succeedOnce()
        pump.flush()
        self.successResultOf(first)
        second = self.request(path=b"/again")
        pump.flush()
        self.assertNoResult(second)
        self.responses.append(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.completer.succeedOnce().flush()
        self.assertEqual(self.successResultOf(second).code, 200)
        self.assertTrue(self.received[-1].startswith(b"GET /again HTTP/1.1\r\n"))

    def test_chunkedRequestBody(self):
        """
        A body of unknown length goes out chunked, then the response is
        read.
        """
        from twisted.web.client import FileBodyProducer
        from twisted.internet.task import Cooperator
        from io import BytesIO
        work = []
        producer = FileBodyProducer(BytesIO(b"hello"), cooperator=Cooperator(scheduler=work.append),
                                    readSize=3)
        producer.length = UNKNOWN_LENGTH
        self.responses.append(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        d = self.request(method=b"POST", producer=producer)
        pump = self.completer.succeedOnce()
        while work:
            work.pop(0)()
            pump.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        sent = b"".join(self.received)
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n", sent)
        self.assertEqual(sent[sent.index(b"\r\n\r\n"):], b"\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n")

    def test_headerValuesCannotSplitTheHead(self):
        """
        Line breaks inside header values are sent as spaces.
        """
        self.responses.append(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        d = self.client.request(_service(), b"GET", b"/", [(b"host", b"h"), (b"x-a", b"1\r\nX-Injected: 1")])
        self.completer.succeedOnce().flush()
        self.successResultOf(d)
        self.assertIn(b"\r\nx-a: 1 X-Injected: 1\r\n", self.received[0])
