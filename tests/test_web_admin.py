"""
Tests for L{twistgate.web.admin}: the admin API over a real
L{GatewayService} (on a L{MemoryReactorClock}), driven with L{StubTreq}.
"""

import json

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twistgate.config.filters import FilterFile, defaultConfigSchema, discoverFilters
from twistgate.gateway.chain import ChainPlanner
from twistgate.gateway.exchange import Exchange
from twistgate.proxywasm.vm import LiveCounts
from twistgate.service import GatewayService, GatewaySettings
from twistgate.wasm.registry import getRuntime
from twistgate.web.admin import AdminResource

from tests.proxywasm_harness import FILTERS, RuntimeMixin, bothRuntimes, hostcalls, routeConfig

CONFIG = """\
_format_version: "3.0"
services:
  - name: up
    url: http://127.0.0.1:9999/base
    routes:
      - name: first
        paths: ["/a"]
        filter_chains:
          - name: route-chain
            filters:
              - name: plain
                config: "hello"
              - name: schemed
                enabled: false
                config: {"n": 1}
      - name: second
        paths: ["/b"]
    filter_chains:
      - name: service-chain
        filters:
          - name: schemed
            config: {"n": 2}
  - name: other
    host: other.example
    port: 8081
"""

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}


class AdminTests(SynchronousTestCase):
    """
    Kong's admin endpoints over the current configuration.
    """

    def setUp(self):
        path = self.mktemp()
        with open(path, "w") as configFile:
            configFile.write(CONFIG)
        self.reactor = MemoryReactorClock()
        filters = {"plain": FilterFile("plain", "/f/plain.wasm", "ab" * 32, 10, None, ()),
                   "schemed": FilterFile("schemed", "/f/schemed.wasm", "cd" * 32, 20, SCHEMA, ())}
        self.gateway = GatewayService(GatewaySettings(configPath=path), self.reactor, planBuilder=lambda c: None,
                                      filters=filters)
        self.client = StubTreq(AdminResource(self.gateway, self.reactor))

    def request(self, method, path, data=None, headers=None):
        d = self.client.request(method, "http://admin" + path, data=data, headers=headers)
        self.client.flush()
        response = self.successResultOf(d)
        body = self.client.content(response)
        self.client.flush()
        return response.code, self.successResultOf(body)

    def get(self, path):
        code, body = self.request("GET", path)
        return code, json.loads(body)

    def test_root(self):
        code, root = self.get("/")
        self.assertEqual(code, 200)
        self.assertEqual(root["configuration"]["database"], "off")
        self.assertEqual([m["name"] for m in root["configuration"]["wasm_modules_parsed"]], ["plain", "schemed"])

    def test_services(self):
        """
        C{/services} lists in Kong's paging shape; one service is found by
        name or id; its routes and chains are nested listings.
        """
        code, listing = self.get("/services")
        self.assertEqual((code, listing["next"]), (200, None))
        self.assertEqual([s["name"] for s in listing["data"]], ["up", "other"])
        up = listing["data"][0]
        self.assertEqual(self.get("/services/up")[1], up)
        self.assertEqual(self.get("/services/" + up["id"])[1], up)
        self.assertEqual([r["name"] for r in self.get("/services/up/routes")[1]["data"]], ["first", "second"])
        self.assertEqual([c["name"] for c in self.get("/services/up/filter-chains")[1]["data"]], ["service-chain"])
        self.assertEqual(self.get("/services/missing"), (404, {"message": "Not found"}))

    def test_routes(self):
        code, route = self.get("/routes/first")
        self.assertEqual((code, route["paths"]), (200, ["/a"]))
        self.assertEqual([r["name"] for r in self.get("/routes")[1]["data"]], ["first", "second"])
        self.assertEqual([c["name"] for c in self.get("/routes/first/filter-chains")[1]["data"]], ["route-chain"])
        self.assertEqual(self.get("/routes/second/filter-chains")[1]["data"], [])

    def test_routeFilters(self):
        """
        C{/routes/{id}/filters/...} lists the service's filters first, each
        with C{from}; C{enabled} and C{disabled} split them.
        """
        _, every = self.get("/routes/first/filters/all")
        self.assertEqual([(f["name"], f["from"], f["enabled"]) for f in every["filters"]],
                         [("schemed", "service", True), ("plain", "route", True), ("schemed", "route", False)])
        _, enabled = self.get("/routes/first/filters/enabled")
        self.assertEqual([f["name"] for f in enabled["filters"]], ["schemed", "plain"])
        _, disabled = self.get("/routes/first/filters/disabled")
        self.assertEqual([(f["name"], f["config"]) for f in disabled["filters"]], [("schemed", {"n": 1})])
        _, inherited = self.get("/routes/second/filters/all")
        self.assertEqual([f["from"] for f in inherited["filters"]], ["service"])

    def test_filterChains(self):
        _, chains = self.get("/filter-chains")
        self.assertEqual([c["name"] for c in chains["data"]], ["route-chain", "service-chain"])
        _, chain = self.get("/filter-chains/route-chain")
        self.assertEqual([f["name"] for f in chain["filters"]], ["plain", "schemed"])

    def test_installedFiltersAndSchemas(self):
        """
        C{/filters} lists installed filters; C{/schemas/filters/{name}}
        gives the filter's schema or the default one.
        """
        _, installed = self.get("/filters")
        self.assertEqual(installed["data"][0], {"name": "plain", "file": "/f/plain.wasm", "sha256": "ab" * 32,
                                                "size": 10})
        self.assertEqual(self.get("/schemas/filters/schemed"), (200, SCHEMA))
        self.assertEqual(self.get("/schemas/filters/plain"), (200, defaultConfigSchema))
        self.assertEqual(self.get("/schemas/filters/nope"), (404, {"message": "Filter 'nope' not found"}))

    def test_postConfig(self):
        """
        C{POST /config} replaces the configuration; C{GET /config} returns
        its text.
        """
        text = CONFIG.replace('["/b"]', '["/new"]')
        code, body = self.request("POST", "/config", data=text.encode(), headers={"Content-Type": ["text/yaml"]})
        self.assertEqual(code, 201, body)
        self.assertEqual(self.gateway.state.current.config.routes[1].paths, ("/new",))
        code, current = self.request("GET", "/config")
        self.assertEqual((code, current.decode()), (200, text))

    def test_postConfigJSONWrapped(self):
        """
        A JSON body with a C{config} string is accepted as Kong does.
        """
        text = CONFIG.replace('["/b"]', '["/json"]')
        code, _ = self.request("POST", "/config", data=json.dumps({"config": text}).encode(),
                               headers={"Content-Type": ["application/json"]})
        self.assertEqual(code, 201)
        self.assertEqual(self.gateway.state.current.config.routes[1].paths, ("/json",))

    def test_postInvalidConfig(self):
        """
        An invalid configuration is refused with every error; the old one
        stays.
        """
        before = self.gateway.state.current
        bad = CONFIG.replace('["/b"]', '["b"]').replace('{"n": 2}', '{"n": "two"}')
        code, body = self.request("POST", "/config", data=bad.encode())
        document = json.loads(body)
        self.assertEqual((code, document["message"]), (400, "declarative config is invalid"))
        self.assertEqual(len(document["errors"]), 2, document["errors"])
        self.assertIs(self.gateway.state.current, before)

    def test_status(self):
        _, status = self.get("/status")
        self.assertEqual(status["database"], {"reachable": True})
        self.assertEqual(status["configuration_generation"], 1)
        self.assertEqual(status["wasm"], {"instances": 0, "root_contexts": 0, "stream_contexts": 0,
                                          "configuration_generations": 1})

    def test_unknownAndMethods(self):
        self.assertEqual(self.get("/nothing")[0], 404)
        self.assertEqual(self.request("DELETE", "/services/up")[0], 405)


GREETING = "- name: greeting\n  config:\n    my_greeting: hi\n"


class WasmStatusMixin(RuntimeMixin):
    """
    C{GET /status} counts live Wasm state: instances, root and stream
    contexts, configuration generations.
    """

    def setUp(self):
        super().setUp()
        self.reactor = MemoryReactorClock()
        filters = discoverFilters(FILTERS)
        live = LiveCounts()
        planner = ChainPlanner(getRuntime(self.runtimeName), filters, self.reactor, None, live=live)
        path = self.mktemp()
        with open(path, "w") as configFile:
            configFile.write(routeConfig(GREETING, hostcalls("")))
        self.gateway = GatewayService(GatewaySettings(configPath=path), self.reactor,
                                      planBuilder=planner.build, filters=filters, live=live)
        self.addCleanup(self.gateway.state.stop)
        self.client = StubTreq(AdminResource(self.gateway, self.reactor))

    def wasm(self):
        response = self.successResultOf(self.client.get("http://admin/status"))
        return json.loads(self.successResultOf(self.client.content(response)))["wasm"]

    def test_counts(self):
        """
        A request in flight has a stream context per filter; a replaced
        configuration stays alive (with its instances) until its last
        request ended.
        """
        self.assertEqual(self.wasm(), {"instances": 2, "root_contexts": 2, "stream_contexts": 0,
                                       "configuration_generations": 1})
        state = self.gateway.state
        generation = state.acquire()
        config = generation.config
        exchange = Exchange(method=b"GET", path=b"/", originalUri=b"/", scheme=b"http", authority=b"gw",
                            requestHeaders=[(b"host", b"gw")], clientAddress=("127.0.0.1", 1),
                            serverAddress=("127.0.0.1", 2), route=config.routes[0],
                            service=config.services[0], startedAt=0.0, connectionId=1)
        run = generation.plan.chainFor(exchange)
        self.successResultOf(run.requestHeaders())
        self.assertEqual(self.wasm()["stream_contexts"], 2)
        self.gateway.reloadText(routeConfig(hostcalls("")))
        self.assertEqual(self.wasm(), {"instances": 3, "root_contexts": 3, "stream_contexts": 2,
                                       "configuration_generations": 2})
        run.finish()
        state.release(generation)
        self.assertEqual(self.wasm(), {"instances": 1, "root_contexts": 1, "stream_contexts": 0,
                                       "configuration_generations": 1})


bothRuntimes(WasmStatusMixin, globals())
