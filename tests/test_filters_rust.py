"""
Tests of the Rust filters built from C{filters/} (C{greeting-rust} and
C{rate-limiting}), on both runtimes: through the chain runner on a
L{task.Clock} (so rate-limit windows can pass), and end to end through a real
C{twistd -n twistgate} over real HTTP.
"""

import json
import time

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.e2e import deferLater, fetch, startGateway
from tests.proxywasm_harness import FILTERS, LogCapture, RuntimeMixin, bothRuntimes, entry, routeConfig


def filterEntry(name: str, config: dict) -> str:
    """
    @return: YAML for a filter entry whose config is the JSON object C{config}.
    """
    return entry(name, extra="config: " + json.dumps(config))


class RateLimitingWindowsMixin(RuntimeMixin):
    """
    The rate-limiting filter counts requests per window of the host's clock.
    """

    def rateLimited(self, config: dict):
        harness = self.harness(routeConfig(filterEntry("rate-limiting", config)))
        return harness

    def limits(self, result):
        """
        @return: the rate-limit headers of C{result}, names lowercased.
        """
        return {name.decode("ascii").lower(): value.decode("ascii") for name, value in result.headers
                if b"ratelimit" in name.lower() or name.lower() == b"retry-after"}

    def assertLimits(self, result, expected: dict):
        """
        Assert the rate-limit headers of C{result} are C{expected} (names in
        any case).
        """
        self.assertEqual(self.limits(result), {name.lower(): value for name, value in expected.items()})

    def test_windowsCountAndReset(self):
        """
        Requests pass with Kong's headers until a limit is reached; the next
        gets 429 with C{Retry-After}; a new window counts from zero again.
        """
        harness = self.rateLimited({"second": 2, "minute": 3})
        first = self.respond(harness)
        second = self.respond(harness)
        self.assertEqual([first.status, second.status], [200, 200])
        self.assertLimits(first, {
            "X-RateLimit-Limit-Second": "2", "X-RateLimit-Remaining-Second": "1",
            "X-RateLimit-Limit-Minute": "3", "X-RateLimit-Remaining-Minute": "2",
            "RateLimit-Limit": "2", "RateLimit-Remaining": "1", "RateLimit-Reset": "1"})
        self.assertEqual(self.limits(second)["x-ratelimit-remaining-second"], "0")
        self.assertEqual(self.limits(second)["x-ratelimit-remaining-minute"], "1")

        refused = self.respond(harness)
        self.assertEqual(refused.status, 429)
        self.assertEqual(json.loads(refused.body), {"message": "API rate limit exceeded"})
        self.assertEqual(self.limits(refused)["retry-after"], "1")
        self.assertEqual(len(harness.upstream.seen), 2)

        harness.clock.advance(1)
        third = self.respond(harness)
        self.assertEqual(third.status, 200)
        self.assertLimits(third, {
            "X-RateLimit-Limit-Second": "2", "X-RateLimit-Remaining-Second": "1",
            "X-RateLimit-Limit-Minute": "3", "X-RateLimit-Remaining-Minute": "0",
            "RateLimit-Limit": "3", "RateLimit-Remaining": "0", "RateLimit-Reset": "59"})
        minuteRefused = self.respond(harness)
        self.assertEqual(minuteRefused.status, 429)
        self.assertEqual(self.limits(minuteRefused)["retry-after"], "59")

        harness.clock.advance(59)
        fresh = self.respond(harness)
        self.assertEqual(fresh.status, 200)
        self.assertEqual(self.limits(fresh)["x-ratelimit-remaining-minute"], "2")
        self.assertEqual(len(harness.upstream.seen), 4)

    def test_limitByHeader(self):
        """
        With C{limit_by: header}, each value of the header has its own counter.
        """
        harness = self.rateLimited({"minute": 1, "limit_by": "header", "header_name": "X-Key"})
        statuses = [self.respond(harness, headers=[(b"x-key", key)]).status for key in (b"a", b"a", b"b")]
        self.assertEqual(statuses, [200, 429, 200])

    def test_customErrorHiddenHeaders(self):
        """
        C{error_code} and C{error_message} shape the refusal;
        C{hide_client_headers} leaves out the limit headers but not
        C{Retry-After}.
        """
        harness = self.rateLimited({"minute": 1, "error_code": 503, "error_message": "slow down",
                                    "hide_client_headers": True})
        allowed = self.respond(harness)
        refused = self.respond(harness)
        self.assertLimits(allowed, {})
        self.assertEqual(refused.status, 503)
        self.assertEqual(json.loads(refused.body), {"message": "slow down"})
        self.assertLimits(refused, {"Retry-After": "60"})

    def test_tickRemovesEndedWindows(self):
        """
        Every second a tick deletes the counters of windows that have ended
        and logs how many are left.
        """
        logs = LogCapture(self)
        harness = self.rateLimited({"second": 5, "minute": 5})
        self.respond(harness)
        harness.clock.advance(1)
        self.assertTrue(logs.containing("rate-limiting: 1 live counters, 1 expired removed"), logs.messages())
        harness.clock.advance(60)
        self.assertTrue(logs.containing("rate-limiting: 0 live counters, 1 expired removed"), logs.messages())
        self.assertEqual(self.limits(self.respond(harness))["x-ratelimit-remaining-minute"], "4")


bothRuntimes(RateLimitingWindowsMixin, globals())


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
