"""
Tests for L{twistgate.web.proxy}: the proxy resource driven with
L{StubTreq} against upstreams reached through L{RequestTraversalAgent}, the
filter chain contract driven with a scripted L{IChainRun}, and the HTTP
front end's defences at the byte level (L{StringTransport}).
"""

import gc
import json
import weakref

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test.iosim import ConnectionCompleter
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from twistgate.config.loader import loadConfigText
from twistgate.gateway.exchange import IChainRun, LocalResponse
from twistgate.gateway.router import Router
from twistgate.gateway.state import GatewayState, Generation
from twistgate.gateway.upstream import UpstreamClient
from twistgate.web.echo import EchoResource
from twistgate.web.http1server import GatewaySite, RequestBodyStream, RequestBodyTooLarge
from twistgate.web.proxy import ProxyResource, _ClientPressure, _Gate

CONFIG = """\
_format_version: "3.0"
services:
  - name: up
    url: http://127.0.0.1:9999/base
    retries: 2
    read_timeout: 3000
    routes:
      - name: api
        paths: ["/api"]
      - name: kept
        paths: ["/kept"]
        strip_path: false
        preserve_host: true
  - name: root
    url: http://127.0.0.1:9999
    routes:
      - name: root
        paths: ["/root"]
      - name: secure-only
        paths: ["/secure"]
        protocols: ["https"]
"""


@implementer(IChainRun)
class ScriptedChain:
    """
    An L{IChainRun} whose steps run the given Python callables over the
    exchange, recording every call.
    """

    def __init__(self, exchange, wantsRequestBody=False, rewritesResponseBody=False, onRequestHeaders=None,
                 onRequestBody=None, onResponseHeaders=None, onChunk=None):
        self.exchange = exchange
        self.wantsRequestBody = wantsRequestBody
        self.rewritesResponseBody = rewritesResponseBody
        self._hooks = {"requestHeaders": onRequestHeaders, "requestBody": onRequestBody,
                       "responseHeaders": onResponseHeaders}
        self._onChunk = onChunk
        self.calls = []

    def _step(self, name):
        self.calls.append(name)
        if self._hooks[name] is not None:
            self._hooks[name](self.exchange)
        return succeed(None)

    def requestHeaders(self):
        return self._step("requestHeaders")

    def requestBody(self):
        return self._step("requestBody")

    def responseHeaders(self):
        return self._step("responseHeaders")

    def responseBody(self, chunk, endOfStream):
        self.calls.append(("responseBody", endOfStream))
        return succeed(self._onChunk(chunk) if self._onChunk is not None else chunk)

    def finish(self):
        self.calls.append("finish")


class ScriptedPlan:
    """
    A chain plan giving every request a L{ScriptedChain}.
    """

    def __init__(self, **behaviour):
        self.behaviour = behaviour
        self.chains = []
        self.stopped = False

    def chainFor(self, exchange):
        chain = ScriptedChain(exchange, **self.behaviour)
        self.chains.append(chain)
        return chain

    def stop(self):
        self.stopped = True


@implementer(IAgent)
class RefusingAgent:
    """
    An upstream that refuses every connection.
    """

    def __init__(self):
        self.attempts = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.attempts.append(uri)
        return fail(ConnectionRefusedError())


@implementer(IAgent)
class SilentAgent:
    """
    An upstream that accepts requests and never answers; records
    cancellations.
    """

    def __init__(self):
        self.cancelled = 0
        self.attempts = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.attempts.append(uri)

        def cancel(d):
            self.cancelled += 1
        return Deferred(cancel)


def generationFor(config=CONFIG, plan=None):
    loaded = loadConfigText(config, "test.yml", {})
    return Generation(loaded, Router(loaded), plan)


class ProxyHarness:
    """
    A proxy resource over C{agent}, and a L{StubTreq} client for it.
    """

    def __init__(self, agent, plan=None):
        self.clock = Clock()
        self.agent = agent
        self.state = GatewayState(generationFor(plan=plan))
        self.upstream = UpstreamClient(self.clock, agentFactory=lambda timeout: agent)
        self.resource = ProxyResource(self.state, self.upstream, self.clock)
        self.client = StubTreq(self.resource)

    def settle(self):
        for _ in range(5):
            self.client.flush()
            if isinstance(self.agent, RequestTraversalAgent):
                self.agent.flush()

    def request(self, testCase, method, url, **kwargs):
        d = self.client.request(method, url, **kwargs)
        self.settle()
        response = testCase.successResultOf(d)
        body = self.client.content(response)
        self.settle()
        return response, testCase.successResultOf(body)


class ProxyTests(SynchronousTestCase):
    """
    Requests through L{ProxyResource} without filters.
    """

    def setUp(self):
        self.harness = ProxyHarness(RequestTraversalAgent(EchoResource(Clock())))

    def test_forwardsWithKongHeaders(self):
        """
        The upstream gets the stripped path joined to the service path, the
        service's Host, Kong's forwarded headers (X-Forwarded-For appended),
        repeated headers in order and no hop-by-hop headers; the client gets
        Via and the latency headers.
        """
        response, body = self.harness.request(
            self, "GET", "http://gw.example/api/users?x=1",
            headers={"X-Forwarded-For": ["10.0.0.1"], "X-Repeat": ["a", "b"], "Connection": ["X-Private"],
                     "X-Private": ["secret"], "Proxy-Authorization": ["Basic x"], "TE": ["trailers"]})
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"via"), [b"1.1 twistgate/0.1.0"])
        self.assertTrue(response.headers.getRawHeaders(b"x-kong-upstream-latency")[0].isdigit())
        self.assertTrue(response.headers.getRawHeaders(b"x-kong-proxy-latency")[0].isdigit())
        seen = json.loads(body)
        self.assertEqual(seen["uri"], "/base/users?x=1")
        headers = seen["headers"]
        self.assertEqual(headers["host"], "127.0.0.1:9999")
        self.assertEqual(headers["x-repeat"], ["a", "b"])
        self.assertEqual(headers["x-forwarded-for"].split(", ")[0], "10.0.0.1")
        self.assertEqual(len(headers["x-forwarded-for"].split(", ")), 2)
        self.assertEqual(headers["x-forwarded-host"], "gw.example")
        self.assertEqual(headers["x-forwarded-path"], "/api/users")
        self.assertEqual(headers["x-forwarded-proto"], "http")
        for hop in ("x-private", "proxy-authorization", "te"):
            self.assertNotIn(hop, headers)

    def test_preserveHostAndKeptPath(self):
        """
        C{preserve_host} sends the client's Host; C{strip_path: false} keeps
        the matched prefix.
        """
        _, body = self.harness.request(self, "GET", "http://client.example:8000/kept/x")
        seen = json.loads(body)
        self.assertEqual(seen["headers"]["host"], "client.example:8000")
        self.assertEqual(seen["path"], "/base/kept/x")

    def test_noRoute(self):
        """
        A request no route matches gets Kong's 404.
        """
        response, body = self.harness.request(self, "GET", "http://gw.example/nothing")
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(body), {"message": "no Route matched with those values"})
        self.assertEqual(self.harness.state.inFlight, 0)

    def test_httpsOnlyRoute(self):
        """
        Plain HTTP to a route that takes only HTTPS gets Kong's 426.
        """
        response, body = self.harness.request(self, "GET", "http://gw.example/secure")
        self.assertEqual(response.code, 426)
        self.assertEqual(json.loads(body), {"message": "Please use HTTPS protocol"})

    def test_upstreamStatusAndBody(self):
        """
        The upstream's status and body pass through.
        """
        response, body = self.harness.request(self, "POST", "http://gw.example/root/status/201", data=b"abc")
        self.assertEqual(response.code, 201)
        self.assertEqual(json.loads(body)["body"], "abc")
        self.assertEqual(self.harness.state.inFlight, 0)


class UpstreamFailureTests(SynchronousTestCase):
    """
    Upstream failures become Kong's 502 and 504.
    """

    def test_refused(self):
        """
        A refused connection is retried C{retries} times, then answered
        with 502.
        """
        agent = RefusingAgent()
        harness = ProxyHarness(agent)
        response, body = harness.request(self, "GET", "http://gw.example/api")
        self.assertEqual(response.code, 502)
        self.assertEqual(json.loads(body), {"message": "An invalid response was received from the upstream server"})
        self.assertEqual(len(agent.attempts), 3)
        self.assertEqual(harness.state.inFlight, 0)

    def test_timeout(self):
        """
        No answer within the service's C{read_timeout} is a 504; the
        upstream request is cancelled.
        """
        agent = SilentAgent()
        harness = ProxyHarness(agent)
        d = harness.client.get("http://gw.example/api")
        harness.settle()
        harness.clock.advance(2.9)
        harness.settle()
        self.assertNoResult(d)
        harness.clock.advance(0.2)
        harness.settle()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 504)
        body = harness.client.content(response)
        harness.settle()
        self.assertEqual(json.loads(self.successResultOf(body)), {"message": "The upstream server is timing out"})
        self.assertEqual(agent.cancelled, 1)


class ChainDrivingTests(SynchronousTestCase):
    """
    The proxy drives an L{IChainRun} as its contract says.
    """

    def harness(self, **behaviour):
        plan = ScriptedPlan(**behaviour)
        return ProxyHarness(RequestTraversalAgent(EchoResource(Clock())), plan), plan

    def test_requestRewritten(self):
        """
        Changes a filter makes to the method, path and headers in the
        request step are what the upstream receives.
        """
        def rewrite(exchange):
            exchange.method = b"PUT"
            exchange.path = b"/rewritten?q=1"
            exchange.requestHeaders.append((b"x-added", b"yes"))

        harness, plan = self.harness(onRequestHeaders=rewrite)
        response, body = harness.request(self, "GET", "http://gw.example/api/original")
        seen = json.loads(body)
        self.assertEqual((seen["method"], seen["uri"], seen["headers"]["x-added"]), ("PUT", "/rewritten?q=1", "yes"))
        self.assertEqual(plan.chains[0].calls, ["requestHeaders", "responseHeaders", ("responseBody", False),
                                                ("responseBody", True), "finish"])

    def test_requestBodyReplaced(self):
        """
        A chain that wants the request body gets it whole, and the body it
        leaves is sent upstream with its own length.
        """
        bodies = []

        def replace(exchange):
            bodies.append(exchange.requestBody)
            exchange.requestBody = b"replaced body"

        harness, plan = self.harness(wantsRequestBody=True, onRequestBody=replace)
        _, body = harness.request(self, "POST", "http://gw.example/api", data=b"original")
        seen = json.loads(body)
        self.assertEqual(bodies, [b"original"])
        self.assertEqual((seen["body"], seen["headers"]["content-length"]), ("replaced body", "13"))

    def test_localResponseFromRequestStep(self):
        """
        A local response set in the request step is sent without contacting
        the upstream, through the response steps.
        """
        def deny(exchange):
            exchange.localResponse = LocalResponse(403, b"denied", [(b"x-why", b"filter")])

        plan = ScriptedPlan(onRequestHeaders=deny, onChunk=lambda chunk: chunk + b"!")
        agent = RefusingAgent()
        harness = ProxyHarness(agent, plan)
        response, body = harness.request(self, "GET", "http://gw.example/api")
        self.assertEqual((response.code, body), (403, b"denied!"))
        self.assertEqual(response.headers.getRawHeaders(b"x-why"), [b"filter"])
        self.assertEqual(agent.attempts, [])
        self.assertEqual(plan.chains[0].calls, ["requestHeaders", "responseHeaders", ("responseBody", True),
                                                "finish"])

    def test_localResponseFromResponseStep(self):
        """
        A local response set in the response-headers step replaces the
        upstream's response.
        """
        def replace(exchange):
            self.assertEqual(exchange.responseStatus, 200)
            exchange.localResponse = LocalResponse(502, b"replaced")

        harness, plan = self.harness(onResponseHeaders=replace)
        response, body = harness.request(self, "GET", "http://gw.example/api")
        self.assertEqual((response.code, body), (502, b"replaced"))
        self.assertEqual(plan.chains[0].calls[-1], "finish")
        self.assertEqual(plan.chains[0].calls.count("finish"), 1)

    def test_responseBodyRewritten(self):
        """
        A chain that rewrites the response body gets every chunk, then the
        end of stream; the proxy drops the upstream's Content-Length.
        """
        harness, plan = self.harness(rewritesResponseBody=True, onChunk=bytes.upper)
        response, body = harness.request(self, "GET", "http://gw.example/api/anything")
        self.assertEqual(json.loads(body.lower())["path"], "/base/anything")
        self.assertIn(b'"PATH"', body)
        self.assertEqual(response.length, UNKNOWN_LENGTH)
        self.assertEqual(plan.chains[0].calls[-2:], [("responseBody", True), "finish"])

    def test_clientGoneFinishesOnce(self):
        """
        A client that disconnects while the upstream is busy cancels the
        upstream request and finishes the chain once, without errors.
        """
        plan = ScriptedPlan()
        agent = SilentAgent()
        clock = MemoryReactorClock()
        state = GatewayState(generationFor(plan=plan))
        resource = ProxyResource(state, UpstreamClient(clock, agentFactory=lambda timeout: agent), clock)
        channel = GatewaySite(resource, clock).buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"GET /api HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertEqual(state.inFlight, 1)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(agent.cancelled, 1)
        self.assertEqual(plan.chains[0].calls, ["requestHeaders", "finish"])
        self.assertEqual(state.inFlight, 0)
        clock.advance(10)
        self.assertEqual(self.flushLoggedErrors(), [])


class RecordingProducer:
    """
    A push producer (or the transport it stands for) that records the calls
    it gets in C{events}.
    """

    def __init__(self):
        self.events = []

    def pauseProducing(self):
        self.events.append("pause")

    def resumeProducing(self):
        self.events.append("resume")

    def stopProducing(self):
        self.events.append("stop")


class BackpressureTests(SynchronousTestCase):
    """
    The upstream body's transport is paused while the client or a filter
    holds it.
    """

    def test_clientAndFilterPauses(self):
        """
        The transport resumes only when neither the client nor the filter
        holds it.
        """
        transport = RecordingProducer()
        gate = _Gate(transport)
        client = _ClientPressure(gate)
        client.pauseProducing()
        gate.pause("filter")
        client.resumeProducing()
        self.assertEqual(transport.events, ["pause"])
        gate.resume("filter")
        self.assertEqual(transport.events, ["pause", "resume"])
        client.stopProducing()
        self.assertEqual(transport.events[-1], "stop")


class _TrickleResponse:
    """
    An upstream response whose body arrives when the test says.
    """

    code = 200
    phrase = b"OK"
    length = UNKNOWN_LENGTH
    headerPairs = [(b"content-type", b"text/plain")]

    def __init__(self):
        self.transport = RecordingProducer()
        self.protocol = None

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class StalledBodyTests(SynchronousTestCase):
    """
    An upstream body that stops arriving for the service's C{read_timeout}
    is given up; one that keeps arriving is not.
    """

    def test_stallAfterLastChunk(self):
        """
        The read timeout counts from the last chunk of the body, not from
        its start.
        """
        clock = MemoryReactorClock()
        response = _TrickleResponse()

        class Agent:
            def request(self, method, uri, headers=None, bodyProducer=None):
                return succeed(response)

        resource = ProxyResource(GatewayState(generationFor()),
                                 UpstreamClient(clock, agentFactory=lambda t: Agent()), clock)
        channel = GatewaySite(resource, clock).buildProtocol(None)
        client = StringTransport()
        channel.makeConnection(client)
        channel.dataReceived(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        response.protocol.dataReceived(b"a")
        clock.advance(2)
        response.protocol.dataReceived(b"b")
        clock.advance(2.9)
        self.assertEqual(response.transport.events, [])
        clock.advance(0.2)
        self.assertEqual(response.transport.events, ["stop"])
        self.assertIn(b"\r\n\r\n1\r\na\r\n1\r\nb\r\n", client.value())


class _WholeResponse:
    """
    An upstream response whose whole body arrived with its head, as the
    built-in client gives it.
    """

    code = 200
    phrase = b"OK"

    def __init__(self, body):
        self.bufferedBody = body
        self.length = len(body)
        self.headerPairs = [(b"content-type", b"text/plain")]

    def deliverBody(self, protocol):
        raise AssertionError("a whole body is not delivered again")


class WholeBodyTests(SynchronousTestCase):
    """
    A body that arrived whole with its head goes through the filters in
    one step and keeps a Content-Length, even when a filter rewrites it.
    """

    def test_filterRewritesWholeBody(self):
        """
        The filter sees the body once, at the end of the stream; the client
        gets the rewritten body with its own length.
        """
        plan = ScriptedPlan(rewritesResponseBody=True, onChunk=lambda chunk: chunk.upper() + b"!")

        class Agent:
            def request(self, method, uri, headers=None, bodyProducer=None):
                return succeed(_WholeResponse(b"hello"))

        clock = MemoryReactorClock()
        resource = ProxyResource(GatewayState(generationFor(plan=plan)),
                                 UpstreamClient(clock, agentFactory=lambda t: Agent()), clock)
        channel = GatewaySite(resource, clock).buildProtocol(None)
        client = StringTransport()
        channel.makeConnection(client)
        channel.dataReceived(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = client.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: 6\r\n", head)
        self.assertNotIn(b"Transfer-Encoding", head)
        self.assertEqual(body, b"HELLO!")
        self.assertEqual(plan.chains[0].calls, ["requestHeaders", "responseHeaders", ("responseBody", True),
                                                "finish"])


class FrontEndTests(SynchronousTestCase):
    """
    Bad client input, at the byte level.
    """

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.upstreamCalls = SilentAgent()
        state = GatewayState(generationFor())
        resource = ProxyResource(state, UpstreamClient(self.clock, agentFactory=lambda t: self.upstreamCalls),
                                 self.clock)
        self.site = GatewaySite(resource, self.clock, maxBodySize=100, headerTimeout=5)

    def send(self, data):
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        return channel, transport

    def statusOf(self, transport):
        return transport.value().split(b"\r\n", 1)[0]

    def test_malformedRequestLine(self):
        _, transport = self.send(b"NONSENSE\r\n\r\n")
        self.assertEqual(self.statusOf(transport), b"HTTP/1.1 400 Bad Request")
        self.assertTrue(transport.value().endswith(b'{"message": "Bad request"}'))

    def test_malformedHeader(self):
        _, transport = self.send(b"GET /api HTTP/1.1\r\nno colon\r\n\r\n")
        self.assertEqual(self.statusOf(transport), b"HTTP/1.1 400 Bad Request")

    def test_oversizedHeaders(self):
        _, transport = self.send(b"GET /api HTTP/1.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
        self.assertEqual(self.statusOf(transport), b"HTTP/1.1 431 Request Header Fields Too Large")

    def test_tooManyHeaders(self):
        headers = b"".join(b"X-%d: v\r\n" % i for i in range(600))
        _, transport = self.send(b"GET /api HTTP/1.1\r\n" + headers + b"\r\n")
        self.assertEqual(self.statusOf(transport), b"HTTP/1.1 431 Request Header Fields Too Large")

    def test_declaredBodyTooLarge(self):
        """
        A Content-Length over the limit is refused before the body is read.
        """
        _, transport = self.send(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
        self.assertEqual(self.statusOf(transport), b"HTTP/1.1 413 Request Entity Too Large")
        self.assertEqual(self.upstreamCalls.attempts, [])

    def test_chunkedBodyTooLarge(self):
        """
        A chunked body is refused once it passes the limit.
        """
        _, transport = self.send(b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"65\r\n" + b"z" * 101 + b"\r\n0\r\n\r\n")
        self.assertEqual(self.statusOf(transport), b"HTTP/1.1 413 Request Entity Too Large")
        self.assertEqual(self.upstreamCalls.cancelled, len(self.upstreamCalls.attempts))

    def test_headerTimeout(self):
        """
        Headers not complete within the header timeout: 408 and the
        connection closes; a complete request cancels the timer.
        """
        _, transport = self.send(b"GET /api HTTP/1.1\r\nHost: x\r\n")
        self.clock.advance(4.9)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.2)
        self.assertTrue(self.statusOf(transport).startswith(b"HTTP/1.1 408 "))
        self.assertTrue(transport.disconnecting)

    def test_headerTimeoutOfNextRequest(self):
        """
        On a kept-alive connection the header timeout counts from the end
        of the previous response: a next head started late is still given
        the whole timeout.
        """
        self.clock.advance(0)
        channel, transport = self.send(b"")
        self.clock.advance(4)
        channel.dataReceived(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(self.statusOf(transport).startswith(b"HTTP/1.1 404 "))
        transport.clear()
        channel.dataReceived(b"GET /nowhere HTTP/1.1\r\n")
        self.clock.advance(4.9)
        self.assertEqual((transport.value(), transport.disconnecting), (b"", False))
        self.clock.advance(0.2)
        self.assertTrue(self.statusOf(transport).startswith(b"HTTP/1.1 408 "))
        self.assertTrue(transport.disconnecting)

    def test_bodyTimeout(self):
        """
        A client that stops sending its body for longer than the body
        timeout is disconnected and the upstream request cancelled.
        """
        self.site.timeOut = 30
        channel, transport = self.send(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nabc")
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.upstreamCalls.cancelled, 1)

    def test_closeIdleConnections(self):
        """
        On stop, idle connections close at once; busy ones close after
        their response.
        """
        idle, idleTransport = self.send(b"")
        busy, busyTransport = self.send(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        self.site.closeIdleConnections()
        self.assertTrue(idleTransport.disconnecting)
        self.assertFalse(busyTransport.disconnecting)
        self.assertFalse(busy.persistent)

    def test_idleConnectionClosedSilently(self):
        """
        A connection that never sends anything is closed without a response
        when the header timeout passes.
        """
        _, transport = self.send(b"")
        self.clock.advance(5.1)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)



@implementer(IAgent)
class CapturingAgent:
    """
    An upstream that records each request's body producer and never
    answers.
    """

    def __init__(self):
        self.requests = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        d = Deferred()
        self.requests.append((method, uri, bodyProducer, d))
        return d


class _Collector:
    def __init__(self):
        self.data = []

    def write(self, data):
        self.data.append(data)


class RequestStreamingTests(SynchronousTestCase):
    """
    Request bodies stream upstream while the client is still sending them.
    """

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.agent = CapturingAgent()
        self.state = GatewayState(generationFor())
        resource = ProxyResource(self.state, UpstreamClient(self.clock, agentFactory=lambda t: self.agent), self.clock)
        self.channel = GatewaySite(resource, self.clock, maxBodySize=1000).buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def test_bodyStreamsBeforeItEnds(self):
        """
        The upstream request starts once the headers arrived; the body's
        bytes reach it as they arrive; the producer finishes with the body.
        """
        self.channel.dataReceived(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        self.assertEqual(len(self.agent.requests), 1)
        method, uri, producer, _ = self.agent.requests[0]
        self.assertEqual((method, uri, producer.length), (b"POST", b"http://127.0.0.1:9999/base", 10))
        collector = _Collector()
        sent = producer.startProducing(collector)
        self.assertEqual(collector.data, [b"hello"])
        self.assertNoResult(sent)
        self.channel.dataReceived(b"world")
        self.assertEqual(b"".join(collector.data), b"helloworld")
        self.successResultOf(sent)

    def test_chunkedBodyHasUnknownLength(self):
        self.channel.dataReceived(b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        producer = self.agent.requests[0][2]
        self.assertEqual(producer.length, UNKNOWN_LENGTH)
        collector = _Collector()
        sent = producer.startProducing(collector)
        self.channel.dataReceived(b"0\r\n\r\n")
        self.successResultOf(sent)
        self.assertEqual(b"".join(collector.data), b"abc")

    def test_declaredEmptyBodyStaysDeclared(self):
        """
        A request declaring an empty body (C{Content-Length: 0}) goes
        upstream with an empty body of length 0; one declaring none goes
        without a body.
        """
        self.channel.dataReceived(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                                  b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        producer = self.agent.requests[0][2]
        self.assertEqual(producer.length, 0)
        self.agent.requests[0][3].errback(Failure(ConnectionDone()))
        self.clock.advance(0)
        self.assertEqual([(method, producer) for method, _, producer, _ in self.agent.requests[1:]],
                         [(b"GET", None)])

    def test_slowUpstreamPausesClient(self):
        """
        While the upstream does not take the body, the client's transport is
        paused past the high-water mark, and resumed once it drained.
        """
        self.channel.dataReceived(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n")
        producer = self.agent.requests[0][2]
        stream = self.channel.requests[0].bodyStream
        stream.highWater = 100
        self.channel.dataReceived(b"a" * 150)
        self.assertEqual(self.transport.producerState, "paused")
        collector = _Collector()
        producer.startProducing(collector)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(b"".join(collector.data), b"a" * 150)

    def test_earlyAnswerClosesConnection(self):
        """
        A response sent before the body ended (here, the upstream answered
        early) closes the connection, so the rest of the body is never read
        as a next request.
        """
        self.channel.dataReceived(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nGET / HTTP")
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 404 "))
        self.assertIn(b"Connection: close", self.transport.value())
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.state.inFlight, 0)


class RequestBodyStreamTests(SynchronousTestCase):
    """
    L{RequestBodyStream} on its own.
    """

    def test_completeBeforeConsumer(self):
        """
        A body that arrived whole before the upstream connected is written
        at once and the producer finishes.
        """
        stream = RequestBodyStream(5, lambda: None, lambda: None)
        stream.write(b"hello")
        stream.finish()
        collector = _Collector()
        self.successResultOf(stream.producer().startProducing(collector))
        self.assertEqual(collector.data, [b"hello"])
        self.successResultOf(stream.whenSent())

    def test_readAll(self):
        stream = RequestBodyStream(None, lambda: None, lambda: None)
        stream.write(b"a")
        whole = stream.readAll()
        stream.write(b"b")
        self.assertNoResult(whole)
        stream.finish()
        self.assertEqual(self.successResultOf(whole), b"ab")

    def test_failure(self):
        """
        A failed body fails the producer and notifies observers.
        """
        stream = RequestBodyStream(None, lambda: None, lambda: None)
        seen = []
        stream.whenFailed(seen.append)
        sent = stream.producer().startProducing(_Collector())
        stream.fail(Failure(RequestBodyTooLarge(10)))
        self.failureResultOf(sent, RequestBodyTooLarge)
        self.assertEqual(len(seen), 1)


class StreamedBodyForFiltersTests(SynchronousTestCase):
    """
    A chain that wants the request body gets it whole even when it arrives
    after the headers were processed.
    """

    def test_wholeBodyForChain(self):
        bodies = []

        def replace(exchange):
            bodies.append(exchange.requestBody)
            exchange.requestBody = b"new"

        clock = MemoryReactorClock()
        agent = CapturingAgent()
        plan = ScriptedPlan(wantsRequestBody=True, onRequestBody=replace)
        state = GatewayState(generationFor(plan=plan))
        resource = ProxyResource(state, UpstreamClient(clock, agentFactory=lambda t: agent), clock)
        channel = GatewaySite(resource, clock).buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        self.assertEqual((bodies, agent.requests), ([], []))
        channel.dataReceived(b"def")
        self.assertEqual(bodies, [b"abcdef"])
        producer = agent.requests[0][2]
        collector = _Collector()
        self.successResultOf(producer.startProducing(collector))
        self.assertEqual((producer.length, collector.data), (3, [b"new"]))

    def test_clientGoneMidBody(self):
        """
        A client that disconnects mid-body cancels the upstream request and
        ends the chain once.
        """
        clock = MemoryReactorClock()
        agent = SilentAgent()
        plan = ScriptedPlan()
        state = GatewayState(generationFor(plan=plan))
        resource = ProxyResource(state, UpstreamClient(clock, agentFactory=lambda t: agent), clock)
        channel = GatewaySite(resource, clock).buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(agent.cancelled, 1)
        self.assertEqual(plan.chains[0].calls.count("finish"), 1)
        self.assertEqual(state.inFlight, 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def streamingChannel(self, plan, maxBodySize=None):
        clock = MemoryReactorClock()
        self.agent = SilentAgent()
        self.state = GatewayState(generationFor(plan=plan))
        resource = ProxyResource(self.state, UpstreamClient(clock, agentFactory=lambda t: self.agent), clock)
        channel = GatewaySite(resource, clock, maxBodySize=maxBodySize).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def test_tooLargeWhileFilterWaits(self):
        """
        A chunked body passing the limit while a filter waits for it is
        answered 413, with no error logged.
        """
        plan = ScriptedPlan(wantsRequestBody=True)
        channel, transport = self.streamingChannel(plan, maxBodySize=10)
        channel.dataReceived(b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"8\r\n12345678\r\n8\r\n12345678\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertEqual(self.agent.attempts, [])
        self.assertEqual(plan.chains[0].calls, ["requestHeaders", "finish"])
        self.assertEqual(self.state.inFlight, 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_clientGoneWhileFilterWaits(self):
        plan = ScriptedPlan(wantsRequestBody=True)
        channel, _ = self.streamingChannel(plan)
        channel.dataReceived(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(plan.chains[0].calls, ["requestHeaders", "finish"])
        self.assertEqual(self.state.inFlight, 0)
        self.assertEqual(self.flushLoggedErrors(), [])


class _EchoUpstream(Resource):
    """
    An upstream answering C{ok:} and the request body with a
    Content-Length, or, for a path ending in C{/stream}, a chunked body.
    """

    isLeaf = True

    def render(self, request):
        body = request.content.read()
        if request.path.endswith(b"/stream"):
            request.write(b"ok:" + body)
            request.finish()
            return NOT_DONE_YET
        return b"ok:" + body


class _WeakPlan:
    """
    A chain plan that keeps only weak references to each exchange: routes
    whose path starts with C{/kept} get a L{ScriptedChain} reading the
    request body whole, the others no chain.
    """

    def __init__(self):
        self.exchanges = []

    def chainFor(self, exchange):
        self.exchanges.append(weakref.ref(exchange))
        if exchange.route.name != "kept":
            return None
        return ScriptedChain(exchange, wantsRequestBody=True)

    def stop(self):
        pass


class ReferenceCycleTests(SynchronousTestCase):
    """
    A finished request's objects (its exchange, chain run, bodies and the
    upstream response) are freed by reference counting alone, not left
    for the cyclic collector, which may run long after and so keep large
    bodies in memory.
    """

    def setUp(self):
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        self.clock = MemoryReactorClock()
        self.completer = ConnectionCompleter(self.clock)
        self.clock.listenTCP(9999, Site(_EchoUpstream(), reactor=self.clock))
        self.plan = _WeakPlan()
        upstream = UpstreamClient(self.clock)
        self.responses = []
        request = upstream.request

        def recordingRequest(*args, **kwargs):
            return request(*args, **kwargs).addCallback(self._recordResponse)
        upstream.request = recordingRequest
        self.resource = ProxyResource(GatewayState(generationFor(plan=self.plan)), upstream, self.clock)
        self.site = GatewaySite(self.resource, self.clock)
        self.pump = None

    def _recordResponse(self, response):
        self.responses.append(weakref.ref(response))
        return response

    def proxy(self, raw):
        """
        Send C{raw} through a new client connection, connecting and pumping
        the upstream connection until the response is written.

        @return: the bytes written to the client.
        """
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        if self.pump is None:
            self.pump = self.completer.succeedOnce()
        self.pump.flush()
        return transport.value()

    def test_requestObjectsFreedWithoutCyclicCollector(self):
        """
        Requests without a body, with a body streamed upstream, with a body
        read whole for a filter, answered with a whole and a streamed body:
        once each response is finished, nothing refers to its exchange or
        its upstream response.
        """
        answers = [
            self.proxy(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n"),
            self.proxy(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
            self.proxy(b"POST /kept HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nwhole"),
            self.proxy(b"POST /api/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nstream"),
            self.proxy(b"POST /kept/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nread"),
        ]
        for answer, body in zip(answers, [b"ok:", b"ok:hello", b"ok:whole", b"ok:stream", b"ok:read"]):
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
            self.assertIn(body, answer)
        self.assertEqual(len(self.plan.exchanges), 5)
        self.assertEqual(len(self.responses), 5)
        self.assertEqual([ref() for ref in self.plan.exchanges + self.responses], [None] * 10)
