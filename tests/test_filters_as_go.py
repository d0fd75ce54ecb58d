"""
Tests of the AssemblyScript and Go filters built from C{filters/}
(C{greeting} on @solo-io/proxy-runtime, C{greeting-go} and
C{rate-limiting-go} on twistgate's own Go binding), on both runtimes:
through the chain runner on a L{task.Clock} (so rate-limit windows can
pass), and end to end through a real C{twistd -n twistgate} over real HTTP.

C{rate-limiting-go} must behave exactly as the Rust C{rate-limiting}: one
test drives both through the same requests and compares what clients see.
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


def limitHeaders(result) -> dict:
    """
    @return: the rate-limit headers of a chain result, names lowercased.
    """
    return {name.decode("ascii").lower(): value.decode("ascii") for name, value in result.headers
            if b"ratelimit" in name.lower() or name.lower() == b"retry-after"}


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


class RateLimitingGoMixin(RuntimeMixin):
    """
    The Go rate-limiting filter counts requests per window of the host's
    clock, as Kong's rate-limiting plugin does.
    """

    def rateLimited(self, config: dict, name: str = "rate-limiting-go"):
        return self.harness(routeConfig(filterEntry(name, config)))

    def assertLimits(self, result, expected: dict):
        self.assertEqual(limitHeaders(result), {name.lower(): value for name, value in expected.items()})

    def test_windowsCountAndReset(self):
        """
        Requests pass with Kong's headers until a limit is reached; the next
        gets 429 with C{Retry-After} and does not reach the upstream; a new
        window counts from zero again.
        """
        harness = self.rateLimited({"second": 2, "minute": 3})
        first = self.respond(harness)
        second = self.respond(harness)
        self.assertEqual([first.status, second.status], [200, 200])
        self.assertLimits(first, {
            "X-RateLimit-Limit-Second": "2", "X-RateLimit-Remaining-Second": "1",
            "X-RateLimit-Limit-Minute": "3", "X-RateLimit-Remaining-Minute": "2",
            "RateLimit-Limit": "2", "RateLimit-Remaining": "1", "RateLimit-Reset": "1"})
        self.assertEqual(limitHeaders(second)["x-ratelimit-remaining-second"], "0")
        self.assertEqual(limitHeaders(second)["x-ratelimit-remaining-minute"], "1")

        refused = self.respond(harness)
        self.assertEqual(refused.status, 429)
        self.assertEqual(json.loads(refused.body), {"message": "API rate limit exceeded"})
        self.assertEqual(refused.header(b"content-type"), b"application/json; charset=utf-8")
        self.assertEqual(limitHeaders(refused)["retry-after"], "1")
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
        self.assertEqual(limitHeaders(minuteRefused)["retry-after"], "59")

        harness.clock.advance(59)
        fresh = self.respond(harness)
        self.assertEqual(fresh.status, 200)
        self.assertEqual(limitHeaders(fresh)["x-ratelimit-remaining-minute"], "2")
        self.assertEqual(len(harness.upstream.seen), 4)

    def recordWrites(self, harness) -> list:
        """
        @return: a list that collects the shared-data keys the filters write.
        """
        store = harness.planner.sharedData
        written = []
        original = store.set

        def recording(key, value, cas):
            if value is not None and key not in written:
                written.append(key)
            return original(key, value, cas)

        store.set = recording
        return written

    def test_countersInSharedData(self):
        """
        Counters are shared-data keys C{rl:<config hash>:<route>:<service>:
        <client>:<period>:<window start>} holding the count in decimal.
        """
        harness = self.rateLimited({"hour": 10})
        written = self.recordWrites(harness)
        start = int(harness.clock.seconds()) // 3600 * 3600
        for _ in range(3):
            self.respond(harness)
        self.assertEqual(len(written), 1, written)
        self.assertTrue(written[0].startswith(b"rl:"), written)
        self.assertTrue(written[0].endswith(b":127.0.0.1:hour:%d" % (start,)), written)
        self.assertEqual(harness.planner.sharedData.get(written[0])[0], b"3")

    def test_casRetried(self):
        """
        A counter changed by another writer between read and write (a CAS
        mismatch) is re-read and counted, not lost.
        """
        harness = self.rateLimited({"minute": 10})
        written = self.recordWrites(harness)
        self.respond(harness)
        [key] = written
        store = harness.planner.sharedData
        recording = store.set

        def interfering(setKey, value, cas):
            if setKey == key:
                store.set = recording
                current, currentCas = store.get(key)
                recording(key, b"%d" % (int(current) + 5,), currentCas)
            return recording(setKey, value, cas)

        store.set = interfering
        result = self.respond(harness)
        self.assertEqual(result.status, 200)
        self.assertEqual(store.get(key)[0], b"7")

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
        written = self.recordWrites(harness)
        store = harness.planner.sharedData
        self.respond(harness)
        self.assertEqual(len(written), 2)
        harness.clock.advance(1)
        self.assertTrue(logs.containing("rate-limiting-go: 1 live counters, 1 expired removed"), logs.messages())
        self.assertEqual([key for key in written if store.get(key) is not None], [written[1]])
        harness.clock.advance(60)
        self.assertTrue(logs.containing("rate-limiting-go: 0 live counters, 1 expired removed"), logs.messages())
        self.assertEqual([key for key in written if store.get(key) is not None], [])
        self.assertEqual(limitHeaders(self.respond(harness))["x-ratelimit-remaining-minute"], "4")

    def test_sameAsRust(self):
        """
        The Go and the Rust filters answer the same requests, on the same
        clock, with the same statuses, bodies and rate-limit headers.
        """
        config = {"second": 2, "minute": 4, "hour": 5, "month": 6.5, "limit_by": "header", "header_name": "x-key"}
        seen = {}
        for name in ("rate-limiting", "rate-limiting-go"):
            harness = self.rateLimited(config, name)
            answers = []
            for step, key in enumerate([b"a", b"a", b"a", b"b", b"a", b"a", b"a", b"b", b"a"]):
                if step in (3, 6):
                    harness.clock.advance(1)
                result = self.respond(harness, headers=[(b"x-key", key)])
                answers.append((result.status, result.body if result.status != 200 else b"",
                                limitHeaders(result)))
            seen[name] = answers
        self.assertEqual(seen["rate-limiting-go"], seen["rate-limiting"])
        self.assertIn(429, [status for status, _, _ in seen["rate-limiting-go"]])


bothRuntimes(RateLimitingGoMixin, globals())


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
