"""
Helpers for the Proxy-Wasm host tests: run real filters from C{filters/}
on both runtimes, through a L{ChainPlan} built from a real C{kong.yml}, over
requests that follow the C{IChainRun} contract exactly as the proxy resource
drives it (C{twistgate/gateway/exchange.py}), on a L{task.Clock}.

HTTP calls made by filters go through treq over an in-memory agent
(L{treq.testing.RequestTraversalAgent}) to a real L{twisted.web} resource.
"""

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from twistgate.config.filters import discoverFilters
from twistgate.config.loader import loadConfigText
from twistgate.gateway.chain import ChainPlanner, ChainSettings
from twistgate.gateway.exchange import Exchange
from twistgate.proxywasm.vm import TrapPolicy
from twistgate.wasm.interfaces import Limits, RuntimeUnavailable
from twistgate.wasm.registry import getRuntime

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILTERS = os.path.join(REPOSITORY, "filters")
CACHE = os.path.join(tempfile.gettempdir(), "twistgate-test-module-cache")

Pairs = List[Tuple[bytes, bytes]]


def quoted(text: str) -> str:
    """
    @return: C{text} as a YAML double-quoted scalar.
    """
    return json.dumps(text)


def routeConfig(*filterEntries: str, serviceEntries: Tuple[str, ...] = (),
                extraServices: str = "") -> str:
    """
    A kong.yml with service C{svc} (route C{r}, path C{/}) whose route chain
    holds C{filterEntries} and whose service chain holds C{serviceEntries}.
    Each entry is YAML for one C{filters[]} item, e.g. C{hostcalls("...")}.
    """
    lines = ['_format_version: "3.0"', "services:", "  - name: svc", "    url: http://upstream.test:80",
             "    routes:", "      - name: r", '        paths: ["/"]']
    if filterEntries:
        lines += ["        filter_chains:", "          - name: route-chain", "            filters:"]
        lines += ["              " + line for entry in filterEntries for line in entry.splitlines()]
    if serviceEntries:
        lines += ["    filter_chains:", "      - name: service-chain", "        filters:"]
        lines += ["          " + line for entry in serviceEntries for line in entry.splitlines()]
    return "\n".join(lines) + "\n" + extraServices


def entry(name: str, config: Optional[str] = None, enabled: bool = True, extra: str = "") -> str:
    """
    @return: YAML for one filter entry; C{config} is passed as a string.
    """
    text = "- name: {}\n".format(name)
    if config is not None:
        text += "  config: {}\n".format(quoted(config))
    if not enabled:
        text += "  enabled: false\n"
    for line in extra.splitlines():
        text += "  {}\n".format(line)
    return text


def hostcalls(config: str, **kwargs) -> str:
    """
    @return: YAML for an entry of the C{hostcalls} test filter.
    """
    return entry("hostcalls", config, **kwargs)


@dataclass
class Upstream:
    """
    What the fake upstream answers, and what it saw.
    """

    status: int = 200
    headers: Pairs = field(default_factory=lambda: [(b"content-type", b"text/plain")])
    chunks: Tuple[bytes, ...] = (b"upstream body",)
    seen: List[Exchange] = field(default_factory=list)
    seenHeaders: List[Pairs] = field(default_factory=list)
    seenBodies: List[Optional[bytes]] = field(default_factory=list)
    seenPaths: List[bytes] = field(default_factory=list)


@dataclass
class Result:
    """
    What the client received.
    """

    status: int
    reason: Optional[bytes]
    headers: Pairs
    body: bytes
    exchange: Exchange

    def header(self, name: bytes) -> Optional[bytes]:
        values = [v for k, v in self.headers if k == name]
        return values[0] if values else None

    def headerValues(self, name: bytes) -> List[bytes]:
        return [v for k, v in self.headers if k == name]


class CallTarget(Resource):
    """
    The server filters' HTTP calls reach: it records each request and
    answers C{/echo...} with a body describing it, C{/slow} never, and
    anything else 404.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[Tuple[bytes, bytes, Pairs, bytes]] = []
        self.stalled = []

    def render(self, request):
        body = request.content.read()
        headers = [(k.lower(), v) for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs]
        self.requests.append((request.method, request.uri, headers, body))
        if request.uri.startswith(b"/slow"):
            self.stalled.append(request)
            return NOT_DONE_YET
        if request.uri.startswith(b"/echo"):
            request.setHeader(b"x-call-target", b"yes")
            return b"echo " + request.method + b" " + request.uri + (b" " + body if body else b"")
        request.setResponseCode(404)
        return b"nothing here"


class LogCapture:
    """
    Collects log events while a test runs.
    """

    def __init__(self, testCase) -> None:
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testCase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def messages(self, namespacePrefix: str = "") -> List[str]:
        from twisted.logger import formatEvent
        return [formatEvent(e) for e in self.events
                if e.get("log_namespace", "").startswith(namespacePrefix)]

    def containing(self, text: str) -> List[str]:
        return [m for m in self.messages() if text in m]


class ChainHarness:
    """
    A chain plan of real filters on one runtime, and requests through it.
    """

    def __init__(self, testCase, runtimeName: str, configText: str, agent=None,
                 settings: ChainSettings = ChainSettings(), trapPolicy: Optional[TrapPolicy] = None,
                 limits: Limits = Limits(callDeadline=5.0), filtersPath: str = FILTERS) -> None:
        self.clock = task.Clock()
        self.runtime = getRuntime(runtimeName)
        self.filters = discoverFilters(filtersPath)
        self.config = loadConfigText(configText, "test.yml", self.filters)
        self.planner = ChainPlanner(self.runtime, self.filters, self.clock, agent, limits=limits,
                                    cacheDirectory=CACHE, settings=settings, trapPolicy=trapPolicy)
        self.plan = self.planner.build(self.config)
        testCase.addCleanup(self.plan.stop)
        self.runs = []
        testCase.addCleanup(self._finishRuns)
        self.upstream = Upstream()

    def _finishRuns(self) -> None:
        """
        End the requests a test left pending, as the proxy does when the
        client goes away.
        """
        for run in self.runs:
            run.finish()

    def vm(self, name: str = "hostcalls"):
        return self.plan.vms[name]

    def exchange(self, method: bytes = b"GET", path: bytes = b"/", headers: Pairs = (),
                 body: Optional[bytes] = None) -> Exchange:
        route = self.config.routes[0]
        service = self.config.services[0]
        requestHeaders = [(b"host", b"gateway.test")] + [(k.lower(), v) for k, v in headers]
        if body:
            requestHeaders.append((b"content-length", b"%d" % len(body)))
        return Exchange(method=method, path=path, originalUri=path, scheme=b"http",
                        authority=b"gateway.test", requestHeaders=requestHeaders,
                        clientAddress=("127.0.0.1", 40000), serverAddress=("127.0.0.1", 8000),
                        route=route, service=service, startedAt=self.clock.seconds(),
                        connectionId=7), body

    def request(self, method: bytes = b"GET", path: bytes = b"/", headers: Pairs = (),
                body: Optional[bytes] = None) -> Deferred:
        """
        Send a request through the chain as the proxy resource does.

        @return: a Deferred firing with a L{Result}.
        """
        exchange, content = self.exchange(method, path, headers, body)
        return self._drive(exchange, content)

    @inlineCallbacks
    def _drive(self, exchange: Exchange, content: Optional[bytes]):
        run = self.plan.chainFor(exchange)
        if run is not None:
            self.runs.append(run)
        try:
            if run is not None:
                yield run.requestHeaders()
                if exchange.localResponse is None and run.wantsRequestBody:
                    exchange.requestBody = content or b""
                    yield run.requestBody()
            if exchange.localResponse is not None:
                local, exchange.localResponse = exchange.localResponse, None
                result = yield self._local(run, exchange, local)
                return result
            upstream = self.upstream
            upstream.seen.append(exchange)
            upstream.seenHeaders.append(list(exchange.requestHeaders))
            upstream.seenPaths.append(exchange.path)
            upstream.seenBodies.append(exchange.requestBody if exchange.requestBody is not None else content)
            exchange.responseStatus = upstream.status
            exchange.responseHeaders = list(upstream.headers)
            if run is not None:
                yield run.responseHeaders()
                if exchange.localResponse is not None:
                    local, exchange.localResponse = exchange.localResponse, None
                    result = yield self._local(run, exchange, local)
                    return result
            body = b""
            chunks = upstream.chunks
            for index, chunk in enumerate(chunks):
                last = index == len(chunks) - 1
                if run is not None:
                    chunk = yield run.responseBody(chunk, last)
                body += chunk
            if not chunks and run is not None:
                body += yield run.responseBody(b"", True)
            return Result(exchange.responseStatus, exchange.responseReason, exchange.responseHeaders,
                          body, exchange)
        finally:
            if run is not None:
                run.finish()

    @inlineCallbacks
    def _local(self, run, exchange: Exchange, local):
        exchange.responseStatus = local.status
        exchange.responseReason = local.reason
        exchange.responseHeaders = list(local.headers)
        body = local.body
        if run is not None:
            yield run.responseHeaders()
            if exchange.localResponse is not None:
                local, exchange.localResponse = exchange.localResponse, None
                exchange.responseStatus = local.status
                exchange.responseReason = local.reason
                exchange.responseHeaders = list(local.headers)
                body = local.body
            body = yield run.responseBody(body, True)
        return Result(exchange.responseStatus, exchange.responseReason, exchange.responseHeaders,
                      body, exchange)


def report(result: Result, name: bytes = b"x-hostcalls-report") -> List[str]:
    """
    @return: the items of the hostcalls filter's report header.
    """
    value = result.header(name)
    if value is None:
        return []
    return value.decode("latin-1").split("|")


class RuntimeMixin:
    """
    Mixed into a test case with one subclass per runtime; C{runtimeName}
    names it. A wasmer test never skips when C{CI} is set.
    """

    runtimeName: str = ""

    def setUp(self) -> None:
        try:
            getRuntime(self.runtimeName)
        except RuntimeUnavailable as error:
            if os.environ.get("CI"):
                raise
            self.skipTest(str(error))

    def harness(self, configText: str, **kwargs) -> ChainHarness:
        return ChainHarness(self, self.runtimeName, configText, **kwargs)

    def respond(self, harness: ChainHarness, method: bytes = b"GET", path: bytes = b"/",
                headers: Pairs = (), body: Optional[bytes] = None) -> Result:
        """
        Send a request and require it to complete without waiting.
        """
        return self.successResultOf(harness.request(method, path, headers, body))


def bothRuntimes(mixin, globalsDict) -> None:
    """
    Define C{<Mixin>Wasmtime} and C{<Mixin>Wasmer} test cases in a module.
    """
    from twisted.trial.unittest import SynchronousTestCase

    base = mixin.__name__.replace("Mixin", "")
    for runtimeName in ("wasmtime", "wasmer"):
        name = base + runtimeName.capitalize()
        globalsDict[name] = type(name, (mixin, SynchronousTestCase), {"runtimeName": runtimeName,
                                                                     "__module__": globalsDict["__name__"]})


class HttpHarness:
    """
    Real filters behind the real proxy resource, in memory: a
    L{treq.testing.StubTreq} client talks HTTP to
    L{twistgate.web.proxy.ProxyResource}, whose upstream is the built-in
    echo resource (or another) reached through a
    L{treq.testing.RequestTraversalAgent}; filters' HTTP calls go through
    C{callAgent}.
    """

    def __init__(self, testCase, runtimeName: str, configText: str, callAgent=None,
                 upstreamResource=None) -> None:
        from treq.testing import RequestTraversalAgent, StubTreq
        from twistgate.gateway.router import Router
        from twistgate.gateway.state import GatewayState, Generation
        from twistgate.gateway.upstream import UpstreamClient
        from twistgate.web.echo import EchoResource
        from twistgate.web.proxy import ProxyResource

        self.testCase = testCase
        self.clock = task.Clock()
        filters = discoverFilters(FILTERS)
        self.config = loadConfigText(configText, "test.yml", filters)
        self.planner = ChainPlanner(getRuntime(runtimeName), filters, self.clock, callAgent,
                                    cacheDirectory=CACHE)
        self.plan = self.planner.build(self.config)
        testCase.addCleanup(self.plan.stop)
        self.callAgent = callAgent
        self.upstreamAgent = RequestTraversalAgent(upstreamResource or EchoResource(self.clock))
        state = GatewayState(Generation(self.config, Router(self.config), self.plan))
        upstream = UpstreamClient(self.clock, agentFactory=lambda timeout: self.upstreamAgent)
        self.client = StubTreq(ProxyResource(state, upstream, self.clock))

    def settle(self) -> None:
        for _ in range(6):
            self.client.flush()
            self.upstreamAgent.flush()
            if hasattr(self.callAgent, "flush"):
                self.callAgent.flush()

    def request(self, method: str, url: str, **kwargs):
        """
        @return: C{(response, body)} once the exchange completed.
        """
        pending = self.client.request(method, "http://gateway.test" + url, **kwargs)
        self.settle()
        response = self.testCase.successResultOf(pending)
        body = self.client.content(response)
        self.settle()
        return response, self.testCase.successResultOf(body)
