"""
Tests of the AssemblyScript and Go filters built from C{filters/}
(C{greeting} on @solo-io/proxy-runtime, C{greeting-go} and
C{rate-limiting-go} on twistgate's own Go binding), on both runtimes:
through the chain runner, and end to end through a real C{twistd -n
twistgate} over real HTTP. The rate-limiting windows, and the comparison of
C{rate-limiting-go} with the Rust C{rate-limiting}, are in
L{tests.test_filters_ratelimiting}.
"""

import json
import time

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.e2e import deferLater, fetch, startGateway
from tests.proxywasm_harness import FILTERS, LogCapture, RuntimeMixin, bothRuntimes, entry, routeConfig
from twistgate.config.errors import ConfigError

GREETINGS = ("greeting", "greeting-go")


def filterEntry(name: str, config: dict, extra: str = "") -> str:
    """
    @return: YAML for a filter entry whose config is the JSON object C{config}.
    """
    return entry(name, extra="config: " + json.dumps(config, ensure_ascii=False) + ("\n" + extra if extra else ""))


class GreetingFiltersMixin(RuntimeMixin):
    """
    Both greeting filters put C{my_greeting} into C{X-Greeting}.
    """

    def greet(self, name: str, config: dict):
        harness = self.harness(routeConfig(filterEntry(name, config)))
        return self.respond(harness)

    def test_configuredGreeting(self):
        """
        The configured greeting, UTF-8 included, is the response's
        C{X-Greeting}, once, on every request.
        """
        for name in GREETINGS:
            harness = self.harness(routeConfig(filterEntry(name, {"my_greeting": "Grüß dich"})))
            for _ in range(3):
                result = self.respond(harness)
                self.assertEqual(result.status, 200, name)
                self.assertEqual(result.headerValues(b"x-greeting"), ["Grüß dich".encode("utf-8")], name)

    def test_defaultGreeting(self):
        """
        Without C{my_greeting} the filters say "Hello, World!".
        """
        for name in GREETINGS:
            self.assertEqual(self.greet(name, {}).header(b"x-greeting"), b"Hello, World!", name)

    def test_escapedGreeting(self):
        """
        Quotes, tabs and characters beyond ASCII (and beyond the BMP) reach
        the header as configured.
        """
        greeting = 'say "hi"\tnow \u00e9 \U0001f600'
        for name in GREETINGS:
            self.assertEqual(self.greet(name, {"my_greeting": greeting}).header(b"x-greeting"),
                             greeting.encode("utf-8"), name)

    def test_rootIdNamesTheSdkFactory(self):
        """
        The AssemblyScript SDK picks its root context by C{plugin_root_id}:
        an entry whose C{root_id} the filter did not register cannot start.
        """
        harness = self.harness(routeConfig(filterEntry("greeting", {"my_greeting": "hi"}, "root_id: greeting")))
        self.assertEqual(self.respond(harness).header(b"x-greeting"), b"hi")
        logs = LogCapture(self)
        error = self.assertRaises(ConfigError, self.harness,
                                  routeConfig(filterEntry("greeting", {}, "root_id: elsewhere")))
        self.assertIn('filter "greeting" trapped in on_context_create', str(error))
        self.assertTrue(logs.containing("Missing root context factory for root id: elsewhere"), logs.messages())


bothRuntimes(GreetingFiltersMixin, globals())


END_TO_END_CONFIG = """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:{echoPort}
    routes:
      - name: greet-as
        paths: ["/as"]
        filter_chains:
          - filters:
              - name: greeting
                config:
                  my_greeting: "Hello from AssemblyScript"
      - name: greet-go
        paths: ["/go"]
        filter_chains:
          - filters:
              - name: greeting-go
                config:
                  my_greeting: "Hello from Go"
      - name: limited
        paths: ["/limited"]
        filter_chains:
          - filters:
              - name: rate-limiting-go
                config:
                  hour: 3
              - name: greeting-go
                config: {}
"""


class AsGoFiltersEndToEndMixin:
    """
    The AssemblyScript and Go filters in a real gateway, over real HTTP, on
    runtime C{vm}.
    """

    vm = None
    timeout = 120

    @defer.inlineCallbacks
    def test_greetings(self):
        """
        Each language's configured greeting reaches the client.
        """
        gateway = yield startGateway(self, END_TO_END_CONFIG, filtersPath=FILTERS, vm=self.vm)
        fromAs = yield fetch("GET", gateway.proxyURL + "/as")
        fromGo = yield fetch("GET", gateway.proxyURL + "/go")
        self.assertEqual(fromAs.status, 200, fromAs.body)
        self.assertEqual(fromAs.headerValues("X-Greeting"), ["Hello from AssemblyScript"])
        self.assertEqual(fromGo.headerValues("X-Greeting"), ["Hello from Go"])

    @defer.inlineCallbacks
    def test_rateLimit(self):
        """
        Three requests an hour pass with the remaining count going down; the
        fourth gets Kong's 429, and the next filter of the chain still adds
        its header to it.
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
        self.assertEqual([r.header("X-RateLimit-Limit-Hour") for r in responses], ["3"] * 4)
        refused = responses[3]
        self.assertEqual(refused.json(), {"message": "API rate limit exceeded"})
        self.assertEqual(refused.header("Retry-After"), refused.header("RateLimit-Reset"))
        self.assertTrue(1 <= int(refused.header("Retry-After")) <= 3600, refused.header("Retry-After"))
        self.assertEqual([r.header("X-Greeting") for r in responses], ["Hello, World!"] * 4)

    @defer.inlineCallbacks
    def test_badConfigRefused(self):
        """
        Configurations the filters' schemas refuse are rejected with the
        field's location and the schema's message; the running configuration
        stays.
        """
        gateway = yield startGateway(self, END_TO_END_CONFIG, filtersPath=FILTERS, vm=self.vm)
        good = END_TO_END_CONFIG.replace("{echoPort}", str(gateway.echoPort))
        cases = [
            (good.replace("hour: 3", "hour: -1"),
             "filter_chains[0].filters[0].config.hour: -1 is less than or equal to the minimum of 0"),
            (good.replace('my_greeting: "Hello from Go"', "my_greeting: 3"),
             "filter_chains[0].filters[0].config.my_greeting: 3 is not of type 'string'"),
            (good.replace('my_greeting: "Hello from AssemblyScript"', "my_greting: hi"),
             "filter_chains[0].filters[0].config: Additional properties are not allowed ('my_greting' was unexpected)"),
        ]
        for bad, message in cases:
            refused = yield fetch("POST", gateway.adminURL + "/config",
                                  headers=[("Content-Type", "application/yaml")], body=bad.encode("utf-8"))
            self.assertEqual(refused.status, 400, refused.body)
            self.assertIn(message, "\n".join(refused.json()["errors"]))
        still = yield fetch("GET", gateway.proxyURL + "/go")
        self.assertEqual(still.header("X-Greeting"), "Hello from Go")


class WasmtimeAsGoFiltersEndToEndTests(AsGoFiltersEndToEndMixin, TestCase):
    vm = "wasmtime"


class WasmerAsGoFiltersEndToEndTests(AsGoFiltersEndToEndMixin, TestCase):
    vm = "wasmer"
