"""
Hostile filters against the real C{twistd -n twistgate}, over real HTTP, on
both runtimes: a filter that loops forever (wasmtime), a memory bomb, traps
and panics on demand, out-of-range pointers, sizes and enum values, and
CR/LF injected into headers. Each test proves the gateway keeps answering
healthy requests while the hostile route is hit, and that the hostile
filter's instance is replaced so the same filter serves its next request.
"""

import json
import re
import time

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.e2e import REPOSITORY, TrackingFactory, deferLater, fetch, rawExchange, startGateway

FILTERS = REPOSITORY + "/filters"
DEADLINE = 0.5
MEMORY_LIMIT_MB = 64

HOSTILE = {
    "loop": "request_headers loop",
    "bomb": "request_headers grow_memory 1024",
    "grow": "request_headers grow_memory 16; response_headers report_header",
    "fill": "request_body get_body request; request_body trap filled",
    "trap": "request_headers trap hostile-trap",
    "panic": "request_headers panic hostile-panic",
    "late-trap": "response_body trap hostile-late",
}


def hostcallsRoute(name: str, directives: str) -> str:
    """
    A route C{/<name>} whose chain is the C{hostcalls} filter with
    C{directives}.
    """
    return (
        "      - name: {name}\n"
        "        paths: [\"/{name}\"]\n"
        "        strip_path: false\n"
        "        filter_chains:\n"
        "          - filters:\n"
        "              - name: hostcalls\n"
        "                config: {config}\n"
    ).format(name=name, config=json.dumps(directives).replace("{", "{{").replace("}", "}}"))


def gatewayConfig(routes, upstream: str = "http://127.0.0.1:{echoPort}") -> str:
    """
    One service with a healthy route C{/healthy} (the greeting filter), a
    route C{/fine} on the hostcalls filter that behaves, and C{routes}
    (C{name: directives}).
    """
    return (
        '_format_version: "3.0"\n'
        "services:\n"
        "  - name: upstream\n"
        "    url: " + upstream + "\n"
        "    routes:\n"
        "      - name: healthy\n"
        "        paths: [\"/healthy\"]\n"
        "        filter_chains:\n"
        "          - filters:\n"
        "              - name: greeting\n"
        "                config: {my_greeting: still here}\n"
        + hostcallsRoute("fine", "response_headers add_header response x-served yes")
        + "".join(hostcallsRoute(name, directives) for name, directives in routes.items())
    )


class _RecordingUpstream(Protocol):
    """
    A raw HTTP/1.1 server: records each request head exactly as received
    and answers C{200 ok}.
    """

    def connectionMade(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.factory.heads.append(head)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")


_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def headerLines(head: bytes):
    """
    Split a request or response head; fail on anything that is not a
    well-formed header line.

    @return: the start line and C{(lower-case name, value)} pairs.
    """
    if b"\n" in head.replace(b"\r\n", b""):
        raise AssertionError("bare LF in head: %r" % (head,))
    lines = head.split(b"\r\n")
    pairs = []
    for line in lines[1:]:
        name, separator, value = line.partition(b":")
        if not separator or not _TOKEN.match(name) or b"\r" in value:
            raise AssertionError("malformed header line %r in %r" % (line, head))
        pairs.append((name.lower(), value.strip()))
    return lines[0], pairs


class HostileFiltersMixin:
    """
    Hostile filters on one runtime (C{vm}). The infinite loop is tested on
    wasmtime only, in L{HostileFiltersWasmtime}.
    """

    vm = ""
    timeout = 180

    def start(self, routes, upstream: str = "http://127.0.0.1:{echoPort}"):
        return startGateway(self, gatewayConfig(routes, upstream), filtersPath=FILTERS, vm=self.vm, extraArgs=(
            "--filter-deadline", str(DEADLINE), "--filter-memory-limit", "%dm" % (MEMORY_LIMIT_MB,),
            "--filter-max-traps", "1000"))

    @defer.inlineCallbacks
    def whileHostile(self, gateway, hostileRequests, spacing: float = 0.05, minimumHealthy: int = 10):
        """
        Send the hostile requests, and healthy ones every C{spacing} seconds
        until every hostile one was answered (and at least
        C{minimumHealthy}); every healthy one must succeed.

        @param hostileRequests: C{(method, path, body)} tuples.
        @return: a Deferred firing with the hostile responses, in order, and
            the healthy requests' latencies.
        """
        hostile = [fetch(method, gateway.proxyURL + path, body=body) for method, path, body in hostileRequests]
        pending = defer.gatherResults(hostile, consumeErrors=True)
        done = []
        pending.addBoth(lambda result: done.append(result) or result)
        healthy = []

        def timed(started, response):
            return response, time.monotonic() - started

        while not done or len(healthy) < minimumHealthy:
            healthy.append(fetch("GET", gateway.proxyURL + "/healthy/%d" % (len(healthy),))
                           .addCallback(lambda response, started=time.monotonic(): timed(started, response)))
            yield deferLater(spacing)
        hostileResponses = yield pending
        healthyResults = yield defer.gatherResults(healthy, consumeErrors=True)
        for response, _ in healthyResults:
            self.assertEqual((response.status, response.header("X-Greeting")), (200, "still here"))
        return hostileResponses, [latency for _, latency in healthyResults]

    @defer.inlineCallbacks
    def assertRecycled(self, gateway):
        """
        The hostcalls filter, which misbehaved, serves its next request on
        another route normally.
        """
        response = yield fetch("GET", gateway.proxyURL + "/fine")
        self.assertEqual((response.status, response.header("x-served")), (200, "yes"))
        self.assertTrue(gateway.running)

    @defer.inlineCallbacks
    def test_trapAndPanicOnDemand(self):
        """
        A filter that traps, or panics as Rust filters do, fails only its
        own request (500) while other requests go on; a trap after the
        response started leaves that response whole. Each trapped instance
        is replaced and logged with the filter, phase and message.
        """
        gateway = yield self.start({name: HOSTILE[name] for name in ("trap", "panic", "late-trap")})
        responses, _ = yield self.whileHostile(gateway, [("GET", "/trap", None), ("GET", "/panic", None),
                                                         ("GET", "/late-trap", None), ("GET", "/trap", None)])
        self.assertEqual([response.status for response in responses[:2] + responses[3:]], [500, 500, 500])
        self.assertEqual(responses[2].status, 200)
        self.assertEqual(responses[2].json()["path"], "/late-trap")
        yield self.assertRecycled(gateway)
        log = gateway.logText()
        self.assertIn("hostile-trap", log)
        self.assertIn("panicked at 'hostile-panic'", log)
        self.assertIn("trapped in on_request_headers", log)
        self.assertIn("trapped in on_response_body", log)
        self.assertIn("replacing the instance that trapped", log)
        self.assertNotIn("Traceback", log)

    @defer.inlineCallbacks
    def test_memoryBomb(self):
        """
        A filter growing its memory by 1 GiB past the 64 MiB cap fails to
        grow (the guest sees the failure and traps: 500) while other
        requests go on; growing within the cap works.
        """
        gateway = yield self.start({name: HOSTILE[name] for name in ("bomb", "grow")})
        responses, _ = yield self.whileHostile(gateway, [("GET", "/bomb", None)] * 3)
        self.assertEqual([response.status for response in responses], [500] * 3)
        grown = yield fetch("GET", gateway.proxyURL + "/grow")
        self.assertEqual((grown.status, grown.header("x-hostcalls-report")), (200, "grow_memory 16=ok"))
        yield self.assertRecycled(gateway)
        log = gateway.logText()
        self.assertIn("hostcalls: grow_memory failed", log)
        self.assertNotIn("Traceback", log)

    @defer.inlineCallbacks
    def test_trappedInstancesFreed(self):
        """
        Filters that fill their memory with a 4 MiB request body and trap,
        again and again, leave the gateway's memory flat: each trapped
        instance is freed when it is replaced (keeping the 8 of them would
        cost over 64 MiB).
        """
        gateway = yield self.start({"fill": HOSTILE["fill"]})
        body = b"x" * (4 * 1024 * 1024)
        for _ in range(2):
            yield fetch("POST", gateway.proxyURL + "/fill", body=body)
        before = gateway.rss()
        responses, _ = yield self.whileHostile(gateway, [("POST", "/fill", body)] * 8)
        self.assertEqual([response.status for response in responses], [500] * 8)
        growth = gateway.rss() - before
        self.assertLess(growth, 32 * 1024 * 1024, "RSS grew by %d bytes" % (growth,))
        yield self.assertRecycled(gateway)
        self.assertIn("filled", gateway.logText())

    @defer.inlineCallbacks
    def test_badPointersSizesAndEnums(self):
        """
        Out-of-range pointers, huge sizes, unknown enum values and malformed
        pair bytes from a filter get statuses, not crashes: the request
        completes (200) with every status reported.
        """
        calls = ("log", "get_header", "add_header", "get_body", "set_body", "get_property", "set_shared",
                 "get_shared", "dispatch", "local_response", "get_headers")
        enums = ("get_header", "get_body", "log", "define_metric", "continue_stream")
        directives = "; ".join(["request_headers bad_pointer " + call for call in calls]
                               + ["request_headers bad_size " + call for call in calls]
                               + ["request_headers bad_enum " + call for call in enums]
                               + ["request_headers bad_pairs", "response_headers report_header"])
        gateway = yield self.start({"bad": directives})
        responses, _ = yield self.whileHostile(gateway, [("GET", "/bad", None)] * 3)
        expected = (["bad_pointer {}=status:6".format(call) for call in calls]
                    + ["bad_size {}=status:{}".format(call, 1 if call == "get_body" else 6) for call in calls]
                    + ["bad_enum {}=status:2".format(call) for call in enums]
                    + ["bad_pairs=status:2"])
        for response in responses:
            self.assertEqual(response.status, 200)
            self.assertEqual(response.header("x-hostcalls-report").split("|"), expected)
        yield self.assertRecycled(gateway)
        self.assertNotIn("Traceback", gateway.logText())

    @defer.inlineCallbacks
    def test_crlfInjection(self):
        """
        Header names and values with CR/LF, reasons with CR/LF, and HTTP
        calls with CR/LF in the path or a header are refused with
        BAD_ARGUMENT; nothing reaches the upstream, the called host or the
        client that breaks HTTP framing, and the valid changes made beside
        them arrive.
        """
        upstreamHeads = []
        factory = Factory.forProtocol(_RecordingUpstream)
        factory.heads = upstreamHeads
        tracking = TrackingFactory(factory)
        port = reactor.listenTCP(0, tracking, interface="127.0.0.1")
        self.addCleanup(lambda: port.stopListening().addCallback(lambda _: tracking.closeAll()))
        upstream = "127.0.0.1:%d" % (port.getHost().port,)
        injections = [
            "request_headers add_header request x-inj a\\r\\nInjected:\\s1",
            "request_headers replace_header request x-rep b\\r\\nInjected:\\s2",
            "request_headers add_header request x-bad\\r\\nInjected:\\s3 v",
            "request_headers add_header request x-lf a\\nInjected:\\s4",
            "request_headers add_header request x-colon:\\sInjected v",
            "request_headers local_response 200 OK\\r\\nInjected:\\s5 body",
            "request_headers local_response 403 Forbidden denied x-h=a\\r\\nInjected:\\s6",
            "request_headers dispatch {} GET /call\\r\\nInjected:\\s7".format(upstream),
            "request_headers dispatch {} GET /call 1000 host.test - x-c=v\\r\\nInjected:\\s8".format(upstream),
            "response_headers add_header response x-resp a\\r\\nInjected:\\s9",
        ]
        valid = ["request_headers add_header request x-ok fine",
                 "response_headers add_header response x-ok-resp fine",
                 "response_headers report_header"]
        gateway = yield self.start({"crlf": "; ".join(injections + valid)}, upstream="http://" + upstream)
        _, healthyLatencies = yield self.whileHostile(gateway, [("GET", "/crlf", None)])
        raw = yield threads.deferToThread(
            rawExchange, gateway.proxyPort, b"GET /crlf HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        statusLine, headers = headerLines(head)
        self.assertTrue(statusLine.startswith(b"HTTP/1.1 200 "), statusLine)
        names = [name for name, _ in headers]
        self.assertNotIn(b"injected", names)
        self.assertEqual(dict(headers)[b"x-ok-resp"], b"fine")
        self.assertEqual(int(dict(headers)[b"content-length"]), len(body))
        self.assertEqual(body, b"ok")
        report = dict(headers)[b"x-hostcalls-report"].decode("ascii").split("|")
        self.assertEqual(report, ["add_header request=status:2", "replace_header request=status:2",
                                  "add_header request=status:2", "add_header request=status:2",
                                  "add_header request=status:2", "local_response 200=status:2",
                                  "local_response 403=status:2", "dispatch {}=status:2".format(upstream),
                                  "dispatch {}=status:2".format(upstream), "add_header request=ok",
                                  "add_header response=status:2", "add_header response=ok"])
        self.assertEqual(len(upstreamHeads), 2 + len(healthyLatencies))
        for received in upstreamHeads:
            requestLine, received = headerLines(received)
            self.assertNotIn(b"injected", [name for name, _ in received])
            self.assertNotIn(b"/call", requestLine)
        crlfHeads = [dict(headerLines(received)[1]) for received in upstreamHeads
                     if headerLines(received)[0].startswith(b"GET /crlf ")]
        self.assertEqual([each[b"x-ok"] for each in crlfHeads], [b"fine", b"fine"])
        yield self.assertRecycled(gateway)
        self.assertNotIn("Traceback", gateway.logText())


class HostileFiltersWasmtime(HostileFiltersMixin, TestCase):
    vm = "wasmtime"

    @defer.inlineCallbacks
    def test_infiniteLoop(self):
        """
        A filter looping forever is stopped at the CPU deadline: its request
        gets 500, the trap is logged, and the requests sent meanwhile all
        succeed, each delayed by at most about a deadline per looping
        request. The filter's next request runs on a fresh instance.
        """
        gateway = yield self.start({"loop": HOSTILE["loop"]})
        started = time.monotonic()
        responses, latencies = yield self.whileHostile(gateway, [("GET", "/loop", None)] * 2, minimumHealthy=20)
        elapsed = time.monotonic() - started
        self.assertEqual([response.status for response in responses], [500, 500])
        self.assertLess(max(latencies), 2 * DEADLINE + 1.5)
        self.assertLess(elapsed, 2 * DEADLINE + 10)
        yield self.assertRecycled(gateway)
        log = gateway.logText()
        self.assertIn("CPU deadline", log)
        self.assertIn("trapped in on_request_headers", log)
        self.assertNotIn("Traceback", log)


class HostileFiltersWasmer(HostileFiltersMixin, TestCase):
    """
    wasmer-python cannot interrupt a running guest, so a filter looping
    forever would hold the gateway's only thread for good: the infinite
    loop test runs on wasmtime only (the gateway warns at start-up that
    C{--filter-deadline} is not enforced on wasmer).
    """

    vm = "wasmer"
