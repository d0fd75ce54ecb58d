"""
The Proxy-Wasm host end to end: the real C{twistd -n twistgate} on loopback
ports, real HTTP, the C{hostcalls} test filter and the greeting filters, on
both runtimes.
"""

import json
import os

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.e2e import REPOSITORY, fetch, freePort, rawExchange, startGateway

FILTERS = os.path.join(REPOSITORY, "filters")


def config(*filterEntries: str) -> str:
    """
    The echo service (route C{/}) with the given route filter chain.
    """
    lines = ['_format_version: "3.0"', "services:", "  - name: echo", "    url: http://127.0.0.1:{echoPort}",
             "    routes:", "      - name: r", '        paths: ["/"]', "        filter_chains:",
             "          - filters:"]
    for entry in filterEntries:
        lines += ["              " + line for line in entry.splitlines()]
    return "\n".join(lines) + "\n"


def hostcalls(directives: str, extra: str = "") -> str:
    text = "- name: hostcalls\n  config: {}\n".format(json.dumps(directives).replace("{", "{{").replace("}", "}}"))
    return text + "".join("  {}\n".format(line) for line in extra.splitlines())


TRAP_ROUTE = """\
      - name: trap
        paths: ["/trap"]
        filter_chains:
          - filters:
              - name: hostcalls
                config: "request_headers trap e2e-boom"
"""


class ProxyWasmEndToEndMixin:
    """
    Filters over real HTTP.
    """

    vm = ""
    timeout = 120

    def start(self, text):
        return startGateway(self, text, filtersPath=FILTERS, vm=self.vm)

    @defer.inlineCallbacks
    def test_seedWalkthrough(self):
        """
        The AssemblyScript greeting filter on a route adds C{X-Greeting}.
        """
        gateway = yield self.start(config(
            "- name: greeting\n  config:\n    my_greeting: Hello from Kong using WebAssembly!\n"))
        response = yield fetch("GET", gateway.proxyURL + "/anything")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("X-Greeting"), "Hello from Kong using WebAssembly!")

    @defer.inlineCallbacks
    def test_localResponseAndHeaders(self):
        """
        A local response reaches the client with its status, reason, body and
        headers; header changes reach the upstream.
        """
        gateway = yield self.start(config(
            hostcalls("request_headers add_header request x-from-filter yes"),
            hostcalls("request_headers get_header request x-deny; request_headers local_response 403"
                      " Forbidden\\sby\\sfilter denied x-r=1")))
        denied = yield fetch("GET", gateway.proxyURL + "/deny")
        self.assertEqual((denied.status, denied.reason, denied.body), (403, "Forbidden by filter", b"denied"))
        self.assertEqual(denied.header("x-r"), "1")

    @defer.inlineCallbacks
    def test_dispatchToServiceAndRefused(self):
        """
        An HTTP call to a configured service by name answers; a call to a
        closed port calls back with C{broken connection}; the request goes on
        with the headers the callbacks added.
        """
        closed = freePort()
        gateway = yield self.start(config(hostcalls(
            "request_headers dispatch echo GET /called 2000 echo.test;"
            " request_headers dispatch 127.0.0.1:{} GET /refused 2000; request_headers return pause;"
            " http_call_response get_header call_response :status;"
            " http_call_response get_header call_response :dispatch_status;"
            " http_call_response report_log; http_call_response add_header request x-called done".format(closed))))
        response = yield fetch("GET", gateway.proxyURL + "/after")
        self.assertEqual(response.status, 200)
        echoed = response.json()
        self.assertEqual(echoed["path"], "/after")
        self.assertIn("done", json.dumps(echoed["headers"]))
        log = gateway.logText()
        self.assertIn("get_header call_response=200", log)
        self.assertIn("get_header call_response=broken connection", log)

    @defer.inlineCallbacks
    def test_trapThenRecovery(self):
        """
        A trapping filter answers 500 with the filter, phase and trap in the
        log; the next request is served by a fresh instance.
        """
        text = config(hostcalls("response_headers add_header response x-served yes")).replace(
            "          - filters:", "          - filters:", 1) + TRAP_ROUTE
        gateway = yield self.start(text)
        first = yield fetch("GET", gateway.proxyURL + "/trap")
        self.assertEqual(first.status, 500)
        second = yield fetch("GET", gateway.proxyURL + "/fine")
        self.assertEqual((second.status, second.header("x-served")), (200, "yes"))
        log = gateway.logText()
        self.assertIn('filter "hostcalls"', log)
        self.assertIn("trapped in on_request_headers", log)
        self.assertIn("e2e-boom", log)
        self.assertIn("replacing the instance that trapped in on_request_headers", log)

    @defer.inlineCallbacks
    def test_crlfNeverOnTheWire(self):
        """
        A response header value with CR/LF from a filter is refused: the
        raw response has no injected header line.
        """
        gateway = yield self.start(config(hostcalls(
            "response_headers add_header response x-bad a\\r\\nInjected:\\s1;"
            " response_headers add_header response x-good ok")))
        raw = yield threads.deferToThread(
            rawExchange, gateway.proxyPort, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = raw.split(b"\r\n\r\n", 1)[0].lower()
        self.assertIn(b"x-good: ok", head)
        self.assertNotIn(b"injected", head)


class ProxyWasmEndToEndWasmtime(ProxyWasmEndToEndMixin, TestCase):
    vm = "wasmtime"


class ProxyWasmEndToEndWasmer(ProxyWasmEndToEndMixin, TestCase):
    vm = "wasmer"
