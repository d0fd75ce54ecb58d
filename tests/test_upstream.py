"""
Tests for L{twistgate.gateway.upstream}: the real L{Agent} over a
L{MemoryReactorClock}, connections completed or refused with L{iosim}.
"""

from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import ConnectionCompleter
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import readBody
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from twistgate.config.model import Service
from twistgate.gateway.upstream import UpstreamClient, UpstreamError, UpstreamTimeout, _NoDelayEndpoint


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


class NoDelayTests(SynchronousTestCase):
    """
    Upstream connections disable Nagle's algorithm.
    """

    def test_endpointSetsNoDelay(self):
        class Transport:
            noDelay = False

            def setTcpNoDelay(self, enabled):
                self.noDelay = enabled

        class Protocol:
            transport = Transport()

        class Endpoint:
            def connect(self, factory):
                return succeed(Protocol())

        protocol = self.successResultOf(_NoDelayEndpoint(Endpoint()).connect(None))
        self.assertTrue(protocol.transport.noDelay)
