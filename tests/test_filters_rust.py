"""
Tests of the Rust filters built from C{filters/} (C{greeting-rust} and
C{rate-limiting}), on both runtimes: the greeting through the chain runner,
and both end to end through a real C{twistd -n twistgate} over real HTTP.
The rate-limiting windows are tested for every language variant in
L{tests.test_filters_ratelimiting}.
"""

import json
import time

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.e2e import deferLater, fetch, startGateway
from tests.proxywasm_harness import FILTERS, RuntimeMixin, bothRuntimes, entry, routeConfig


def filterEntry(name: str, config: dict) -> str:
    """
    @return: YAML for a filter entry whose config is the JSON object C{config}.
    """
    return entry(name, extra="config: " + json.dumps(config))




class GreetingRustChainMixin(RuntimeMixin):
    """
    The Rust greeting filter through the chain runner.
    """

    def test_configuredAndDefault(self):
        """
        C{my_greeting} becomes C{X-Greeting}; without it the filter says
        "Hello, World!".
        """
        configured = self.harness(routeConfig(filterEntry("greeting-rust", {"my_greeting": "Grüß dich"})))
        unset = self.harness(routeConfig(filterEntry("greeting-rust", {})))
        self.assertEqual(self.respond(configured).header(b"x-greeting"), "Grüß dich".encode("utf-8"))
        self.assertEqual(self.respond(unset).header(b"x-greeting"), b"Hello, World!")


bothRuntimes(GreetingRustChainMixin, globals())


END_TO_END_CONFIG = """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:{echoPort}
    routes:
      - name: greet
        paths: ["/greet"]
        filter_chains:
          - filters:
              - name: greeting-rust
                config:
                  my_greeting: "Hello from Rust"
      - name: default-greet
        paths: ["/default"]
        filter_chains:
          - filters:
              - name: greeting-rust
                config: {}
      - name: limited
        paths: ["/limited"]
        filter_chains:
          - filters:
              - name: rate-limiting
                config:
                  hour: 3
"""


class RustFiltersEndToEndMixin:
    """
    The Rust filters in a real gateway, over real HTTP, on runtime C{vm}.
    """

    vm = None
    timeout = 90

    @defer.inlineCallbacks
    def test_greeting(self):
        """
        The configured greeting, and the default one, reach the client.
        """
        gateway = yield startGateway(self, END_TO_END_CONFIG, filtersPath=FILTERS, vm=self.vm)
        greeted = yield fetch("GET", gateway.proxyURL + "/greet")
        default = yield fetch("GET", gateway.proxyURL + "/default")
        self.assertEqual(greeted.status, 200, greeted.body)
        self.assertEqual(greeted.header("X-Greeting"), "Hello from Rust")
        self.assertEqual(default.header("X-Greeting"), "Hello, World!")

    @defer.inlineCallbacks
    def test_rateLimit(self):
        """
        Three requests an hour pass with the remaining count going down; the
        fourth gets Kong's 429.
        """
        secondsIntoHour = time.time() % 3600
        if secondsIntoHour > 3590:
            yield deferLater(3601 - secondsIntoHour)
        gateway = yield startGateway(self, END_TO_END_CONFIG, filtersPath=FILTERS, vm=self.vm)
        responses = []
        for _ in range(4):
            responses.append((yield fetch("GET", gateway.proxyURL + "/limited")))
        self.assertEqual([r.status for r in responses], [200, 200, 200, 429])
        self.assertEqual([r.header("X-RateLimit-Remaining-Hour") for r in responses], ["2", "1", "0", "0"])
        self.assertEqual(responses[0].header("X-RateLimit-Limit-Hour"), "3")
        refused = responses[3]
        self.assertEqual(refused.json(), {"message": "API rate limit exceeded"})
        self.assertEqual(refused.header("Retry-After"), refused.header("RateLimit-Reset"))
        self.assertTrue(1 <= int(refused.header("Retry-After")) <= 3600, refused.header("Retry-After"))

    @defer.inlineCallbacks
    def test_badConfigRefused(self):
        """
        A configuration the filter's schema refuses is rejected with the
        field's location; the running configuration stays.
        """
        gateway = yield startGateway(self, END_TO_END_CONFIG, filtersPath=FILTERS, vm=self.vm)
        bad = END_TO_END_CONFIG.replace('my_greeting: "Hello from Rust"', "my_greeting: 3").replace(
            "{echoPort}", str(gateway.echoPort))
        refused = yield fetch("POST", gateway.adminURL + "/config", headers=[("Content-Type", "application/yaml")],
                              body=bad.encode("utf-8"))
        self.assertEqual(refused.status, 400, refused.body)
        self.assertIn("filter_chains[0].filters[0].config.my_greeting: 3 is not of type 'string'",
                      "\n".join(refused.json()["errors"]))
        still = yield fetch("GET", gateway.proxyURL + "/greet")
        self.assertEqual(still.header("X-Greeting"), "Hello from Rust")


class WasmtimeRustFiltersEndToEndTests(RustFiltersEndToEndMixin, TestCase):
    vm = "wasmtime"


class WasmerRustFiltersEndToEndTests(RustFiltersEndToEndMixin, TestCase):
    vm = "wasmer"
