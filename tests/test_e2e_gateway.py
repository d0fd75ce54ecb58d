"""
End-to-end tests: the real C{twistd -n twistgate} on loopback ports, real
HTTP from the test, real upstreams (the built-in echo listener and
twisted.web servers run by the test).
"""

import base64
import os
import socket

import twisted.test
from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import DefaultOpenSSLContextFactory
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from tests.e2e import (
    TrackingFactory,
    REPOSITORY,
    deferLater,
    fetch,
    fetchBlocking,
    freePort,
    rawExchange,
    runTwistgate,
    startGateway,
    startUpstream,
)
from twistgate.web.echo import EchoResource, patternBytes

FILTERS = os.path.join(REPOSITORY, "filters")

ECHO_CONFIG = """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:{echoPort}
    routes:
      - name: echo-route
        paths: ["/"]
"""


def upstreamConfig(upstreamPort: int, echoExtra: str = "") -> str:
    return """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:{echoPort}
    read_timeout: 1000
    routes:
      - name: echo-route
        paths: ["/"]
%s
  - name: api
    url: http://127.0.0.1:%d/base
    routes:
      - name: stripped
        paths: ["/api"]
      - name: kept
        paths: ["/keep"]
        strip_path: false
      - name: preserved
        paths: ["/preserve"]
        preserve_host: true
  - name: dead
    url: http://127.0.0.1:%d
    retries: 1
    connect_timeout: 2000
    routes:
      - name: dead-route
        paths: ["/dead"]
""" % (echoExtra, upstreamPort, freePort())


class ProxyingTests(TestCase):
    """
    Requests through the proxy to real upstreams.
    """

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.upstream = startUpstream(self, EchoResource(reactor))
        self.gateway = yield startGateway(self, upstreamConfig(self.upstream.port))

    @defer.inlineCallbacks
    def test_echoThroughGateway(self):
        """
        A request reaches the echo upstream with Kong's forwarded headers;
        repeated headers keep their order; the response carries Via and the
        latency headers.
        """
        response = yield fetch("POST", self.gateway.proxyURL + "/anything/x?a=1&a=2&b=",
                               headers=[("Host", "example.test:1234"), ("X-Multi", "one"), ("X-Multi", "two"),
                                        ("X-Forwarded-For", "10.1.2.3"), ("Connection", "keep-alive, X-Hop"),
                                        ("X-Hop", "dropped"), ("Keep-Alive", "timeout=5")],
                               body=b"payload")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("Via"), "1.1 twistgate/0.1.0")
        self.assertTrue(response.header("X-Kong-Upstream-Latency").isdigit())
        self.assertTrue(response.header("X-Kong-Proxy-Latency").isdigit())
        seen = response.json()
        self.assertEqual(seen["method"], "POST")
        self.assertEqual(seen["path"], "/anything/x")
        self.assertEqual(seen["query"], {"a": ["1", "2"], "b": ""})
        self.assertEqual(seen["body"], "payload")
        headers = seen["headers"]
        self.assertEqual(headers["x-multi"], ["one", "two"])
        self.assertEqual(headers["host"], "127.0.0.1:%d" % self.gateway.echoPort)
        self.assertEqual(headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1")
        self.assertEqual(headers["x-forwarded-proto"], "http")
        self.assertEqual(headers["x-forwarded-host"], "example.test")
        self.assertEqual(headers["x-forwarded-port"], str(self.gateway.proxyPort))
        self.assertEqual(headers["x-forwarded-path"], "/anything/x")
        self.assertEqual(headers["x-real-ip"], "127.0.0.1")
        for hop in ("x-hop", "keep-alive"):
            self.assertNotIn(hop, headers)

    @defer.inlineCallbacks
    def test_stripPathAndPreserveHost(self):
        """
        C{strip_path} removes the matched prefix and joins the service path;
        C{strip_path: false} keeps it; C{preserve_host} sends the client's
        Host.
        """
        stripped = (yield fetch("GET", self.gateway.proxyURL + "/api/users?id=7")).json()
        self.assertEqual(stripped["uri"], "/base/users?id=7")
        self.assertEqual(stripped["headers"]["host"], "127.0.0.1:%d" % self.upstream.port)
        kept = (yield fetch("GET", self.gateway.proxyURL + "/keep/this")).json()
        self.assertEqual(kept["path"], "/base/keep/this")
        preserved = (yield fetch("GET", self.gateway.proxyURL + "/preserve",
                                 headers=[("Host", "client.example:8000")])).json()
        self.assertEqual(preserved["headers"]["host"], "client.example:8000")
        self.assertEqual(preserved["path"], "/base")

    @defer.inlineCallbacks
    def test_upstreamStatusAndErrors(self):
        """
        Upstream statuses pass through; no route is Kong's 404, a refused
        connection 502 and a slow upstream 504, with Kong's bodies.
        """
        teapot = yield fetch("GET", self.gateway.proxyURL + "/status/418")
        self.assertEqual(teapot.status, 418)
        dead = yield fetch("GET", self.gateway.proxyURL + "/dead")
        self.assertEqual((dead.status, dead.json()),
                         (502, {"message": "An invalid response was received from the upstream server"}))
        slow = yield fetch("GET", self.gateway.proxyURL + "/delay/3")
        self.assertEqual((slow.status, slow.json()), (504, {"message": "The upstream server is timing out"}))
        yield self.gateway.stop()
        config = ECHO_CONFIG.replace('paths: ["/"]', 'paths: ["/only"]')
        self.gateway = yield startGateway(self, config)
        missing = yield fetch("GET", self.gateway.proxyURL + "/elsewhere")
        self.assertEqual((missing.status, missing.json()), (404, {"message": "no Route matched with those values"}))

    @defer.inlineCallbacks
    def test_adminListings(self):
        """
        The admin API lists the configuration in Kong's shapes.
        """
        admin = self.gateway.adminURL
        services = (yield fetch("GET", admin + "/services")).json()
        self.assertEqual([s["name"] for s in services["data"]], ["echo", "api", "dead"])
        self.assertIsNone(services["next"])
        api = (yield fetch("GET", admin + "/services/api")).json()
        self.assertEqual((api["host"], api["port"], api["path"]), ("127.0.0.1", self.upstream.port, "/base"))
        byId = (yield fetch("GET", admin + "/services/" + api["id"] + "/routes")).json()
        self.assertEqual([r["name"] for r in byId["data"]], ["stripped", "kept", "preserved"])
        route = (yield fetch("GET", admin + "/routes/kept")).json()
        self.assertEqual((route["strip_path"], route["service"]), (False, {"id": api["id"]}))
        chains = (yield fetch("GET", admin + "/filter-chains")).json()
        self.assertEqual(chains, {"data": [], "next": None})
        noFilters = (yield fetch("GET", admin + "/routes/kept/filters/all")).json()
        self.assertEqual(noFilters, {"filters": []})
        missing = yield fetch("GET", admin + "/services/nope")
        self.assertEqual(missing.status, 404)
        schema = yield fetch("GET", admin + "/schemas/filters/nope")
        self.assertEqual((schema.status, schema.json()), (404, {"message": "Filter 'nope' not found"}))
        status = (yield fetch("GET", admin + "/status")).json()
        self.assertEqual(status["database"], {"reachable": True})

    @defer.inlineCallbacks
    def test_reloadThroughAdmin(self):
        """
        C{POST /config} swaps the configuration; an invalid one is refused
        with every error and the old one keeps serving.
        """
        admin, proxy = self.gateway.adminURL, self.gateway.proxyURL
        newConfig = ECHO_CONFIG.replace("{echoPort}", str(self.gateway.echoPort)).replace(
            'paths: ["/"]', 'paths: ["/v2"]')
        accepted = yield fetch("POST", admin + "/config", headers=[("Content-Type", "text/yaml")],
                               body=newConfig.encode("utf-8"))
        self.assertEqual(accepted.status, 201, accepted.body)
        self.assertEqual((yield fetch("GET", proxy + "/v2/x")).json()["path"], "/x")
        self.assertEqual((yield fetch("GET", proxy + "/api")).status, 404)
        self.assertEqual((yield fetch("GET", admin + "/config")).body.decode("utf-8"), newConfig)
        bad = newConfig.replace('paths: ["/v2"]', 'paths: ["v3"]')
        refused = yield fetch("POST", admin + "/config", body=bad.encode("utf-8"))
        self.assertEqual(refused.status, 400)
        document = refused.json()
        self.assertEqual(document["message"], "declarative config is invalid")
        self.assertEqual(len(document["errors"]), 1)
        self.assertIn("services[0].routes[0].paths[0]", document["errors"][0])
        self.assertEqual((yield fetch("GET", proxy + "/v2/y")).status, 200)

    @defer.inlineCallbacks
    def test_sighupReloadsFile(self):
        """
        SIGHUP re-reads the configuration file.
        """
        with open(self.gateway.configPath, "w") as configFile:
            configFile.write(ECHO_CONFIG.replace("{echoPort}", str(self.gateway.echoPort))
                             .replace('paths: ["/"]', 'paths: ["/after-hup"]'))
        self.gateway.signal("HUP")
        for _ in range(50):
            response = yield fetch("GET", self.gateway.proxyURL + "/after-hup/z")
            if response.status == 200:
                break
            yield deferLater(0.1)
        self.assertEqual(response.json()["path"], "/z")


class ReloadUnderLoadTests(TestCase):
    """
    Reloads while traffic flows lose no request.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_noFailedRequestsDuringReloads(self):
        """
        Four clients keep sending requests (some slow) while the
        configuration is posted ten times and SIGHUP re-reads it twice:
        every request gets its 200.
        """
        gateway = yield startGateway(self, ECHO_CONFIG)
        yield reloadUnderLoad(self, gateway, ECHO_CONFIG.replace("{echoPort}", str(gateway.echoPort)))


@defer.inlineCallbacks
def reloadUnderLoad(testCase, gateway, text, paths=("/delay/0.2", "/anything/1", "/anything/2", "/anything/3")):
    """
    Post C{text} ten times (and SIGHUP twice) while one client per path
    keeps requesting it; assert every request got a 200.
    """
    done = []

    def client(path):
        statuses = []
        while not done:
            statuses.append(fetchBlocking("GET", gateway.proxyURL + path).status)
        return statuses

    clients = [threads.deferToThread(client, path) for path in paths]
    for round in range(10):
        posted = yield fetch("POST", gateway.adminURL + "/config", body=text.encode("utf-8"))
        testCase.assertEqual(posted.status, 201, posted.body)
        if round in (3, 7):
            gateway.signal("HUP")
        yield deferLater(0.1)
    done.append(True)
    results = yield defer.gatherResults(clients)
    statuses = [status for result in results for status in result]
    testCase.assertGreater(len(statuses), 20)
    testCase.assertEqual(set(statuses), {200})
    status = (yield fetch("GET", gateway.adminURL + "/status")).json()
    testCase.assertGreaterEqual(status["configuration_generation"], 11)
    testCase.assertNotIn("Traceback", gateway.logText())


class TLSListenerTests(TestCase):
    """
    A Twisted C{ssl:} endpoint string is all TLS takes.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_httpsProxyListener(self):
        """
        The proxy serves HTTPS on an C{ssl:} endpoint; the upstream sees
        C{X-Forwarded-Proto: https}.
        """
        certificate = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        port = freePort()
        yield startGateway(self, ECHO_CONFIG, extraArgs=[
            "--proxy-listen", "ssl:%d:interface=127.0.0.1:privateKey=%s" % (port, certificate)])
        response = yield fetch("GET", "https://127.0.0.1:%d/anything" % (port,))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json()["headers"]["x-forwarded-proto"], "https")


class StreamingTests(TestCase):
    """
    Large bodies stream through the gateway with backpressure.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_largeDownloadDoesNotGrowMemory(self):
        """
        A 256 MiB download read slowly by the client does not pile up in the
        gateway: its RSS stays within a few MiB while the client stalls,
        then every byte arrives.
        """
        gateway = yield startGateway(self, ECHO_CONFIG)
        size = 256 * 1024 * 1024
        baseline = gateway.rss()
        connection = socket.create_connection(("127.0.0.1", gateway.proxyPort), timeout=30)
        self.addCleanup(connection.close)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        connection.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        yield deferLater(1.5)
        stalledGrowth = gateway.rss() - baseline
        received = yield threads.deferToThread(_drain, connection, size)
        self.assertEqual(received, size)
        self.assertLess(stalledGrowth, 32 * 1024 * 1024)
        self.assertLess(gateway.rss() - baseline, 64 * 1024 * 1024)

    @defer.inlineCallbacks
    def test_largeUpload(self):
        """
        A request body larger than the in-memory threshold reaches the
        upstream intact.
        """
        gateway = yield startGateway(self, ECHO_CONFIG)
        body = patternBytes(3 * 1024 * 1024)
        response = yield fetch("POST", gateway.proxyURL + "/anything", body=body)
        self.assertEqual(response.status, 200)
        seen = response.json()
        self.assertEqual(seen["headers"]["content-length"], str(len(body)))
        self.assertEqual(len(seen["body"]), len(base64.b64encode(body)))


class _UploadRecorder(Protocol):
    """
    A raw upstream that reports when it has seen C{factory.expect} bytes of
    request body, and answers 200 once the whole body of
    C{factory.total} bytes arrived.
    """

    def connectionMade(self):
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        head, separator, body = self.buffer.partition(b"\r\n\r\n")
        if not separator:
            return
        factory = self.factory
        if len(body) >= factory.expect and not factory.sawPart.called:
            factory.sawPart.callback(len(body))
        if len(body) >= factory.total:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d"
                                 % (len(str(len(body))), len(body)))


class RequestStreamingEndToEndTests(TestCase):
    """
    A request body reaches the upstream while the client is still sending
    it.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_uploadStreamsBeforeItEnds(self):
        factory = Factory.forProtocol(_UploadRecorder)
        half = 256 * 1024
        factory.expect, factory.total, factory.sawPart = half, 2 * half, defer.Deferred()
        upstream = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(upstream.stopListening)
        config = ECHO_CONFIG + """\
  - name: recorder
    url: http://127.0.0.1:%d
    routes:
      - paths: ["/upload"]
""" % (upstream.getHost().port,)
        gateway = yield startGateway(self, config)
        connection = socket.create_connection(("127.0.0.1", gateway.proxyPort), timeout=20)
        self.addCleanup(connection.close)
        connection.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 * half,)
                           + b"a" * half)
        seen = yield factory.sawPart.addTimeout(20, reactor)
        self.assertGreaterEqual(seen, half)
        connection.sendall(b"b" * half)
        answer = yield threads.deferToThread(connection.recv, 65536)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK"), answer)
        self.assertTrue(answer.endswith(b"%d" % (2 * half,)), answer)


class ConnectionHandlingTests(TestCase):
    """
    The proxy listener's connection handling, through a real gateway.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_pipelinedAndHTTP10(self):
        """
        Three pipelined requests, one with a chunked body, sent in one
        write, are answered in order on the kept-alive connection, the last
        asking to close it; an HTTP/1.0 request is answered and closed.
        """
        gateway = yield startGateway(self, ECHO_CONFIG)
        pipelined = (b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n"
                     b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = yield threads.deferToThread(rawExchange, gateway.proxyPort, pipelined)
        self.assertEqual(answer.count(b"HTTP/1.1 200 OK\r\n"), 3, answer)
        positions = [answer.find(b'"path": "/' + name + b'"') for name in (b"first", b"second", b"third")]
        self.assertEqual(positions, sorted(positions), answer)
        self.assertNotIn(-1, positions, answer)
        self.assertIn(b'"body": "hello"', answer)
        old = yield threads.deferToThread(rawExchange, gateway.proxyPort, b"GET /old HTTP/1.0\r\n\r\n")
        self.assertTrue(old.startswith(b"HTTP/1.0 200 OK\r\n"), old)
        self.assertIn(b'"path": "/old"', old)


    @defer.inlineCallbacks
    def test_clientNotReadingIsNotAnsweredAhead(self):
        """
        A client that pipelines many requests for large responses and reads
        none of them is not answered far ahead of its reading (the answers
        would pile up in the gateway's memory): the gateway stops taking
        its requests once responses wait unread. Once the client reads,
        every response arrives.
        """
        gateway = yield startGateway(self, ECHO_CONFIG)
        count, size = 300, 60000
        connection = socket.socket()
        self.addCleanup(connection.close)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        connection.settimeout(30)
        connection.connect(("127.0.0.1", gateway.proxyPort))
        requests = [b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size] * (count - 1)
        requests.append(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % size)
        connection.sendall(b"".join(requests))
        yield deferLater(1.5)
        metrics = yield fetch("GET", gateway.adminURL + "/metrics")
        answered = sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.body.decode().splitlines()
                       if line.startswith("twistgate_http_requests_total{"))
        self.assertLess(answered, count // 2)
        received = yield threads.deferToThread(_readUntilClosed, connection)
        self.assertEqual(received.count(b"HTTP/1.1 200 OK\r\n"), count)
        self.assertGreater(len(received), count * size)


    @defer.inlineCallbacks
    def test_clientLeavingResponseUntakenCutOff(self):
        """
        A client that stops reading a large streamed response is cut off
        once it left the gateway's buffered part untaken for
        C{--body-timeout}; the gateway goes on serving.
        """
        gateway = yield startGateway(self, ECHO_CONFIG, extraArgs=["--body-timeout", "1"])
        size = 256 * 1024 * 1024
        connection = socket.socket()
        self.addCleanup(connection.close)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        connection.settimeout(30)
        connection.connect(("127.0.0.1", gateway.proxyPort))
        connection.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        yield deferLater(3.5)
        received = yield threads.deferToThread(_readUntilCut, connection)
        self.assertLess(received, size)
        fine = yield fetch("GET", gateway.proxyURL + "/anything")
        self.assertEqual(fine.status, 200)


def _readUntilCut(connection: socket.socket) -> int:
    """
    Read until the server closes or resets the connection; @return: the
    bytes read.
    """
    received = 0
    while True:
        try:
            chunk = connection.recv(1 << 20)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += len(chunk)


def _readUntilClosed(connection: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = connection.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _drain(connection: socket.socket, size: int) -> int:
    """
    Read one response with a body of C{size} bytes; @return: the body bytes
    read.
    """
    buffered = b""
    while b"\r\n\r\n" not in buffered:
        chunk = connection.recv(65536)
        if not chunk:
            return -1
        buffered += chunk
    head, _, rest = buffered.partition(b"\r\n\r\n")
    assert b"content-length: %d" % size in head.lower(), head
    received = len(rest)
    while received < size:
        chunk = connection.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
    return received


class _Garbage(Protocol):
    def dataReceived(self, data):
        self.transport.write(b"NOT HTTP AT ALL\r\n\r\n")
        self.transport.loseConnection()


class _CutShort(Protocol):
    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        self._cut = reactor.callLater(0.3, self.transport.abortConnection)

    def connectionLost(self, reason):
        if self._cut.active():
            self._cut.cancel()


class _Stall(Protocol):
    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"s" * 1000)


class BadInputTests(TestCase):
    """
    Bad clients and bad upstreams get clean answers and do not hurt the
    gateway.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_badClients(self):
        """
        Malformed request lines and headers get 400, oversized headers 431,
        oversized bodies 413; the gateway keeps serving.
        """
        gateway = yield startGateway(self, ECHO_CONFIG, extraArgs=["--max-body-size", "1k"])
        port = gateway.proxyPort
        malformed = yield threads.deferToThread(rawExchange, port, b"GARBAGE\r\n\r\n")
        self.assertTrue(malformed.startswith(b"HTTP/1.1 400 "), malformed)
        badHeader = yield threads.deferToThread(rawExchange, port, b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n")
        self.assertTrue(badHeader.startswith(b"HTTP/1.1 400 "), badHeader)
        huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        tooLarge = yield threads.deferToThread(rawExchange, port, huge)
        self.assertTrue(tooLarge.startswith(b"HTTP/1.1 431 "), tooLarge)
        bigBody = yield fetch("POST", gateway.proxyURL + "/anything", body=b"z" * 2048)
        self.assertEqual((bigBody.status, bigBody.json()), (413, {"message": "Payload too large"}))
        chunked = (b"POST /anything HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"800\r\n" + b"y" * 2048 + b"\r\n0\r\n\r\n")
        chunkedTooLarge = yield threads.deferToThread(rawExchange, port, chunked)
        self.assertTrue(chunkedTooLarge.startswith(b"HTTP/1.1 413 "), chunkedTooLarge)
        fine = yield fetch("POST", gateway.proxyURL + "/anything", body=b"z" * 512)
        self.assertEqual(fine.status, 200)

    @defer.inlineCallbacks
    def test_slowClientHeaders(self):
        """
        A client that does not finish its headers in time is disconnected.
        """
        gateway = yield startGateway(self, ECHO_CONFIG, extraArgs=["--header-timeout", "0.5"])
        answer = yield threads.deferToThread(rawExchange, gateway.proxyPort, b"GET / HTTP/1.1\r\nHost: x\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)

    @defer.inlineCallbacks
    def test_clientDisconnectsMidResponse(self):
        """
        A client that goes away mid-download, while waiting for the
        upstream, or mid-upload cancels the upstream transfer without errors;
        the gateway keeps serving.
        """
        gateway = yield startGateway(self, ECHO_CONFIG)
        connection = socket.create_connection(("127.0.0.1", gateway.proxyPort), timeout=10)
        connection.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (64 * 1024 * 1024))
        connection.recv(65536)
        connection.close()
        yield deferLater(0.5)
        delayed = socket.create_connection(("127.0.0.1", gateway.proxyPort), timeout=10)
        delayed.sendall(b"GET /delay/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        yield deferLater(0.2)
        delayed.close()
        uploading = socket.create_connection(("127.0.0.1", gateway.proxyPort), timeout=10)
        uploading.sendall(b"POST /anything HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"u" * 10000)
        yield deferLater(0.2)
        uploading.close()
        yield deferLater(1.2)
        after = yield fetch("GET", gateway.proxyURL + "/anything")
        self.assertEqual(after.status, 200)
        log = gateway.logText()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("after its connection was lost", log)

    @defer.inlineCallbacks
    def test_badUpstreams(self):
        """
        An upstream answering garbage gives 502; one that resets mid-body
        cuts the client's response short, and so does one that stalls
        mid-body past its read timeout; none poisons the pool.
        """
        garbage = reactor.listenTCP(0, Factory.forProtocol(_Garbage), interface="127.0.0.1")
        self.addCleanup(garbage.stopListening)
        cut = reactor.listenTCP(0, Factory.forProtocol(_CutShort), interface="127.0.0.1")
        self.addCleanup(cut.stopListening)
        stallFactory = TrackingFactory(Factory.forProtocol(_Stall))
        stall = reactor.listenTCP(0, stallFactory, interface="127.0.0.1")
        self.addCleanup(stallFactory.closeAll)
        self.addCleanup(stall.stopListening)
        config = ECHO_CONFIG + """\
  - name: garbage
    url: http://127.0.0.1:%d
    routes:
      - paths: ["/garbage"]
  - name: cut
    url: http://127.0.0.1:%d
    routes:
      - paths: ["/cut"]
  - name: stall
    url: http://127.0.0.1:%d
    read_timeout: 500
    routes:
      - paths: ["/stall"]
""" % (garbage.getHost().port, cut.getHost().port, stall.getHost().port)
        gateway = yield startGateway(self, config)
        bad = yield fetch("GET", gateway.proxyURL + "/garbage")
        self.assertEqual(bad.status, 502)
        truncated = yield threads.deferToThread(
            rawExchange, gateway.proxyPort, b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = truncated.partition(b"\r\n\r\n")
        self.assertIn(b"200 OK", head)
        self.assertLess(len(body), 100000)
        stalled = yield threads.deferToThread(
            rawExchange, gateway.proxyPort, b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = stalled.partition(b"\r\n\r\n")
        self.assertIn(b"200 OK", head)
        self.assertEqual(body, b"s" * 1000)
        for _ in range(3):
            self.assertEqual((yield fetch("GET", gateway.proxyURL + "/anything")).status, 200)


class LifecycleTests(TestCase):
    """
    Starting with a bad configuration, and stopping gracefully.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_badConfigExitsBeforeListening(self):
        """
        An invalid configuration prints every problem on stderr and exits
        non-zero without listening.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as configFile:
            configFile.write('_format_version: "3.0"\nservices:\n  - name: a\n    url: http://127.0.0.1:1\n'
                             '    routes:\n      - paths: ["api"]\n      - paths: ["/ok"]\n        hots: ["x"]\n')
        port = freePort()
        code, out, err = yield runTwistgate(["--config", path, "--proxy-listen", "tcp:%d:interface=127.0.0.1" % port,
                                             "--admin-listen", "off", "--echo-listen", "none"])
        self.assertEqual(code, 1, out + err)
        problems = [line for line in err.splitlines() if line.startswith(path + ": ")]
        self.assertEqual(len(problems), 2, err)
        self.assertIn("services[0].routes[0].paths[0]", problems[0])
        self.assertIn("services[0].routes[1]", problems[1])
        self.assertNotIn("starting on", out + err)

    @defer.inlineCallbacks
    def test_helpAndMissingConfig(self):
        """
        C{--help} lists the options; a missing C{--config} is an error.
        """
        code, out, err = yield runTwistgate(["--help"])
        self.assertEqual(code, 0)
        for option in ("--config", "--vm", "--proxy-listen", "--admin-listen", "--filters-path"):
            self.assertIn(option, out)
        code, out, err = yield runTwistgate([])
        self.assertNotEqual(code, 0)
        self.assertIn("--config is required", out + err)

    @defer.inlineCallbacks
    def test_environmentFallbacks(self):
        """
        Kong's environment variables are used when no option is given.
        """
        path = os.path.abspath(self.mktemp())
        echoPort, proxyPort = freePort(), freePort()
        with open(path, "w") as configFile:
            configFile.write(ECHO_CONFIG.replace("{echoPort}", str(echoPort)))
        code, out, err = yield runTwistgate(
            ["--echo-listen", "none"],
            env={"KONG_DECLARATIVE_CONFIG": path, "KONG_PROXY_LISTEN": "127.0.0.1:%d" % proxyPort,
                 "KONG_ADMIN_LISTEN": "off", "KONG_WASM": "off", "KONG_WASM_FILTERS_PATH": "/no/such/dir"})
        self.assertEqual(code, 1)
        self.assertIn("/no/such/dir: is not a valid directory", err)

    @defer.inlineCallbacks
    def test_sigtermLetsRequestsFinish(self):
        """
        SIGTERM stops accepting, lets the request in flight finish, then
        exits 0.
        """
        gateway = yield startGateway(self, ECHO_CONFIG)
        inFlight = fetch("GET", gateway.proxyURL + "/delay/1")
        yield deferLater(0.3)
        gateway.signal("TERM")
        yield deferLater(0.2)
        refused = yield threads.deferToThread(_connects, gateway.proxyPort)
        self.assertFalse(refused)
        response = yield inFlight
        self.assertEqual(response.status, 200)
        code = yield gateway.ended()
        self.assertEqual(code, 0, gateway.logText())


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True



def walkthroughConfig() -> str:
    """
    The shipped C{config/kong.yml}, its echo service on the test's echo
    port.
    """
    with open(os.path.join(REPOSITORY, "config", "kong.yml"), encoding="utf-8") as configFile:
        return configFile.read().replace("http://127.0.0.1:8080", "http://127.0.0.1:{echoPort}")


class WalkthroughMixin:
    """
    The shipped configuration with its filters, on the runtime C{vm}.
    """

    vm = None
    timeout = 90

    @defer.inlineCallbacks
    def test_shippedConfiguration(self):
        """
        C{/greet} gets the greeting filter's header and the service's
        rate-limiting headers; other paths only the latter; the admin API
        lists the route's filters, service chain first.
        """
        gateway = yield startGateway(self, walkthroughConfig(), filtersPath=FILTERS, vm=self.vm)
        greeted = yield fetch("GET", gateway.proxyURL + "/greet")
        self.assertEqual(greeted.status, 200, greeted.body)
        self.assertEqual(greeted.header("X-Greeting"), "Hello from Kong using WebAssembly!")
        self.assertEqual(greeted.header("X-RateLimit-Limit-Minute"), "60")
        self.assertEqual(greeted.json()["path"], "/")
        plain = yield fetch("GET", gateway.proxyURL + "/anything")
        self.assertIsNone(plain.header("X-Greeting"))
        again = yield fetch("GET", gateway.proxyURL + "/anything")
        self.assertEqual([plain.header("X-RateLimit-Remaining-Minute"), again.header("X-RateLimit-Remaining-Minute")],
                         ["59", "58"])
        listed = (yield fetch("GET", gateway.adminURL + "/routes/greeting-route/filters/enabled")).json()
        self.assertEqual([(f["name"], f["from"]) for f in listed["filters"]],
                         [("rate-limiting", "service"), ("greeting", "route")])
        installed = (yield fetch("GET", gateway.adminURL + "/filters")).json()
        self.assertIn("greeting", [f["name"] for f in installed["data"]])

    @defer.inlineCallbacks
    def test_reloadWithRejectedFilterConfig(self):
        """
        A posted configuration whose filter configuration is invalid is
        refused with its location; the running chain keeps working.
        """
        gateway = yield startGateway(self, walkthroughConfig(), filtersPath=FILTERS, vm=self.vm)
        current = (yield fetch("GET", gateway.adminURL + "/config")).body.decode("utf-8")
        bad = current.replace("minute: 60", "minute: \"sixty\"")
        refused = yield fetch("POST", gateway.adminURL + "/config", headers=[("Content-Type", "application/yaml")],
                              body=bad.encode("utf-8"))
        self.assertEqual(refused.status, 400, refused.body)
        self.assertTrue(any("filters[0]" in line for line in refused.json()["errors"]), refused.body)
        still = yield fetch("GET", gateway.proxyURL + "/greet")
        self.assertEqual(still.header("X-Greeting"), "Hello from Kong using WebAssembly!")


    @defer.inlineCallbacks
    def test_reloadUnderLoad(self):
        """
        Reloading a configuration with filter chains while requests flow
        fails none of them.
        """
        text = walkthroughConfig().replace("minute: 60", "minute: 100000")
        gateway = yield startGateway(self, text, filtersPath=FILTERS, vm=self.vm)
        yield reloadUnderLoad(self, gateway, text.replace("{echoPort}", str(gateway.echoPort)),
                              paths=("/greet", "/anything/a", "/delay/0.2"))


class WasmtimeWalkthroughTests(WalkthroughMixin, TestCase):
    vm = "wasmtime"


class WasmerWalkthroughTests(WalkthroughMixin, TestCase):
    vm = "wasmer"


class TLSUpstreamTests(TestCase):
    """
    An https service is reached over TLS; as in Kong, its certificate is
    not verified by default.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_selfSignedUpstream(self):
        certificate = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        factory = TrackingFactory(Site(EchoResource(reactor)))
        port = reactor.listenSSL(0, factory, DefaultOpenSSLContextFactory(certificate, certificate),
                                 interface="127.0.0.1")

        @defer.inlineCallbacks
        def stop():
            yield port.stopListening()
            yield factory.closeAll()

        self.addCleanup(stop)
        config = ECHO_CONFIG + """\
  - name: secure
    url: https://localhost:%d/base
    routes:
      - paths: ["/secure"]
""" % (port.getHost().port,)
        gateway = yield startGateway(self, config)
        response = yield fetch("GET", gateway.proxyURL + "/secure/x")
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.json()["path"], "/base/x")
        self.assertEqual(response.json()["headers"]["host"], "localhost:%d" % (port.getHost().port,))
