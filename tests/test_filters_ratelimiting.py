"""
Tests of the rate-limiting filters built from C{filters/}, the Rust one
(C{rate-limiting}) and the Go one (C{rate-limiting-go}): the same tests for
each, on both runtimes, through the chain runner on a L{task.Clock} (so
windows can pass), plus a comparison of the two on the same requests.
"""

import json

from tests.proxywasm_harness import LogCapture, RuntimeMixin, bothRuntimes, entry, routeConfig


def filterEntry(name: str, config: dict) -> str:
    """
    @return: YAML for a filter entry whose config is the JSON object C{config}.
    """
    return entry(name, extra="config: " + json.dumps(config))


def limitHeaders(result) -> dict:
    """
    @return: the rate-limit headers of a chain result, names lowercased.
    """
    return {name.decode("ascii").lower(): value.decode("ascii") for name, value in result.headers
            if b"ratelimit" in name.lower() or name.lower() == b"retry-after"}


class RateLimitingMixin(RuntimeMixin):
    """
    A rate-limiting filter counts requests per window of the host's clock,
    as Kong's rate-limiting plugin does. Subclasses name the filter: every
    language variant must pass the same tests.
    """

    filterName: str

    def rateLimited(self, config: dict):
        return self.harness(routeConfig(filterEntry(self.filterName, config)))

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
        self.assertTrue(logs.containing(self.filterName + ": 1 live counters, 1 expired removed"), logs.messages())
        self.assertEqual([key for key in written if store.get(key) is not None], [written[1]])
        harness.clock.advance(60)
        self.assertTrue(logs.containing(self.filterName + ": 0 live counters, 1 expired removed"), logs.messages())
        self.assertEqual([key for key in written if store.get(key) is not None], [])
        self.assertEqual(limitHeaders(self.respond(harness))["x-ratelimit-remaining-minute"], "4")


class RustRateLimitingMixin(RateLimitingMixin):
    """
    The Rust filter (no crates).
    """

    filterName = "rate-limiting"


class GoRateLimitingMixin(RateLimitingMixin):
    """
    The Go filter (wasip1), which must also answer exactly as the Rust one.
    """

    filterName = "rate-limiting-go"

    def test_sameAsRust(self):
        """
        The Go and the Rust filters answer the same requests, on the same
        clock, with the same statuses, bodies and rate-limit headers.
        """
        config = {"second": 2, "minute": 4, "hour": 5, "month": 6.5, "limit_by": "header", "header_name": "x-key"}
        seen = {}
        for name in ("rate-limiting", "rate-limiting-go"):
            harness = self.harness(routeConfig(filterEntry(name, config)))
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




bothRuntimes(RustRateLimitingMixin, globals())
bothRuntimes(GoRateLimitingMixin, globals())
