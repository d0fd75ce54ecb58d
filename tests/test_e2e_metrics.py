"""
End-to-end observability and scale-out: the real gateway scraped on
C{/metrics} after traffic, its access log, and the rate-limiting filter
enforcing one limit across two gateway processes (and two workers) that
share a real C{redis-server}.

Filter-facing tests run on both runtimes.
"""

import json
import os
import shutil
import tempfile
import time

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.e2e import REPOSITORY, deferLater, fetch, startGateway
from tests.redis import startRedis

FILTERS = os.path.join(REPOSITORY, "filters")

#: The hostcalls test filter counts each request in a counter labelled by
#: service and route, records a gauge and a histogram.
METRICS_DIRECTIVES = ";".join([
    "request_headers define_metric counter hits_s=echo_r=echo-route",
    "request_headers increment_metric hits_s=echo_r=echo-route 1",
    "request_headers define_metric gauge level",
    "request_headers record_metric level 42",
    "request_headers define_metric histogram sizes",
    "request_headers record_metric sizes 3",
])

METRICS_CONFIG = """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:{echoPort}
    routes:
      - name: echo-route
        paths: ["/"]
filter_chains:
  - route: echo-route
    filters:
      - name: hostcalls
        config: %s
""" % (json.dumps(METRICS_DIRECTIVES),)

#: Label patterns as Kong 3.9's documentation writes them (Lua patterns,
#: first capture the labelled part, second the value).
HOSTCALLS_META = {
    "config_schema": {"type": "string"},
    "metrics": {"label_patterns": [
        {"label": "service", "pattern": "(_s=([0-9a-z%-]+))"},
        {"label": "route", "pattern": "(_r=([0-9a-z%-]+))"},
    ]},
}

#: The same filter on two routes (one instance): it traps on demand on
#: C{/trap} and adds a header on C{/ok}.
TRAP_CONFIG = """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:{echoPort}
    routes:
      - name: trapping
        paths: ["/trap"]
        filter_chains:
          - filters:
              - name: hostcalls
                config: "request_headers trap boom"
      - name: fine
        paths: ["/ok"]
        filter_chains:
          - filters:
              - name: hostcalls
                config: "response_headers add_header response x-fine yes"
"""

RATE_LIMIT_CONFIG = """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:{echoPort}
    routes:
      - name: limited
        paths: ["/"]
filter_chains:
  - route: limited
    filters:
      - name: rate-limiting
        config: {"hour": 5}
"""


def filtersWithMeta(testCase, name, meta):
    """
    A filters directory holding a copy of C{filters/<name>.wasm} with
    C{meta} as its C{.meta.json}.
    """
    directory = tempfile.mkdtemp(prefix="twistgate-filters-")
    testCase.addCleanup(shutil.rmtree, directory, True)
    shutil.copy(os.path.join(FILTERS, name + ".wasm"), directory)
    with open(os.path.join(directory, name + ".meta.json"), "w") as f:
        json.dump(meta, f)
    return directory


def samples(text):
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


class MetricsEndToEndMixin:
    """
    Set C{vm} in subclasses.
    """

    vm = None

    @defer.inlineCallbacks
    def test_scrapeAfterTraffic(self):
        """
        After three requests, C{/metrics} on the admin listener has the
        gateway's request count and latencies by service and route, the
        filter's phase timings, and the filter's own metrics labelled by its
        C{label_patterns}.
        """
        filters = filtersWithMeta(self, "hostcalls", HOSTCALLS_META)
        gateway = yield startGateway(self, METRICS_CONFIG, filtersPath=filters,
                                     vm=self.vm)
        for _ in range(3):
            response = yield fetch("GET", gateway.proxyURL + "/anything")
            self.assertEqual(response.status, 200, response.body)
        scrape = yield fetch("GET", gateway.adminURL + "/metrics")
        self.assertEqual(scrape.status, 200)
        self.assertTrue(scrape.header("content-type").startswith("text/plain"))
        found = samples(scrape.body.decode("utf-8"))
        route = {("service", "echo"), ("route", "echo-route")}
        self.assertEqual(found[("twistgate_http_requests_total",
                                frozenset(route | {("code", "200")}))], 3)
        self.assertEqual(found[("twistgate_request_latency_seconds_count",
                                frozenset(route))], 3)
        self.assertEqual(found[("twistgate_upstream_latency_seconds_count",
                                frozenset(route))], 3)
        phases = {dict(labels).get("phase"): value
                  for (name, labels), value in found.items()
                  if name == "twistgate_filter_phase_seconds_count"
                  and dict(labels).get("filter") == "hostcalls"}
        self.assertEqual(phases.get("request_headers"), 3, phases)
        self.assertEqual(found[("pw_hostcalls_hits_total", frozenset(route))], 3)
        self.assertEqual(found[("pw_hostcalls_level", frozenset())], 42)
        self.assertEqual(found[("pw_hostcalls_sizes_count", frozenset())], 3)
        self.assertEqual(found[("pw_hostcalls_sizes_bucket",
                                frozenset({("le", "4")}))], 3)
        self.assertEqual(found[("pw_hostcalls_sizes_bucket",
                                frozenset({("le", "2")}))], 0)

    @defer.inlineCallbacks
    def test_trapAndRecycle(self):
        """
        After a filter traps on one route and its instance is replaced for
        the next request, C{/metrics} counts the trap (by kind) and the
        recycle for that filter, and its instance's memory.
        """
        gateway = yield startGateway(self, TRAP_CONFIG, vm=self.vm)
        trapped = yield fetch("GET", gateway.proxyURL + "/trap")
        self.assertEqual(trapped.status, 500, trapped.body)
        fine = yield fetch("GET", gateway.proxyURL + "/ok")
        self.assertEqual(fine.status, 200, fine.body)
        self.assertEqual(fine.header("x-fine"), "yes")
        scrape = yield fetch("GET", gateway.adminURL + "/metrics")
        found = samples(scrape.body.decode("utf-8"))
        hostcalls = frozenset({("filter", "hostcalls")})
        self.assertEqual(found[("twistgate_filter_traps_total",
                                hostcalls | {("kind", "trap")})], 1)
        self.assertEqual(found[("twistgate_filter_recycles_total", hostcalls)], 1)
        self.assertNotIn(("twistgate_filter_cpu_deadline_hits_total", hostcalls), found)
        self.assertGreater(found[("twistgate_filter_instance_memory_bytes", hostcalls)], 0)

    @defer.inlineCallbacks
    def test_accessLog(self):
        """
        Each request writes one JSON line naming route, service, status,
        latencies and the filters that ran.
        """
        filters = filtersWithMeta(self, "hostcalls", HOSTCALLS_META)
        logPath = os.path.join(tempfile.mkdtemp(prefix="twistgate-log-"),
                               "access.log")
        gateway = yield startGateway(
            self, METRICS_CONFIG, filtersPath=filters, vm=self.vm,
            extraArgs=["--access-log", logPath,
                       "--access-log-format", "json"])
        response = yield fetch("GET", gateway.proxyURL + "/logged?x=1")
        self.assertEqual(response.status, 200)
        second = yield fetch("POST", gateway.proxyURL + "/again", body=b"abc")
        self.assertEqual(second.status, 200)
        # As in nginx, a request's line is written once its response is
        # sent, which the client may see first.
        records = []
        deadline = time.monotonic() + 10
        while len(records) < 2 and time.monotonic() < deadline:
            yield deferLater(0.05)
            with open(logPath) as f:
                records = [json.loads(line) for line in f.read().splitlines()]
        self.assertEqual(len(records), 2, records)
        first = records[0]
        self.assertEqual(first["request"]["method"], "GET")
        self.assertEqual(first["request"]["uri"], "/logged?x=1")
        self.assertEqual(first["response"]["status"], 200)
        self.assertEqual(first["route"]["name"], "echo-route")
        self.assertEqual(first["service"]["name"], "echo")
        self.assertEqual(first["filters"], ["hostcalls"])
        self.assertGreaterEqual(first["latencies"]["request"], 0)
        self.assertGreaterEqual(first["latencies"]["proxy"], 0)
        self.assertEqual(records[1]["request"]["method"], "POST")
        self.assertEqual(records[1]["request"]["uri"], "/again")
        # Sizes as Kong logs them: head and body, on both sides.
        self.assertGreater(records[1]["request"]["size"], len("POST /again HTTP/1.1\r\n\r\nabc"))
        self.assertGreater(first["response"]["size"], len(response.body) + len("HTTP/1.1 200 OK\r\n\r\n"))

    @defer.inlineCallbacks
    def test_rateLimitAcrossGateways(self):
        """
        Two gateway processes sharing Redis enforce one limit: of eight
        requests alternating between them, five pass.
        """
        redis = startRedis(self)
        args = ["--shared-data", redis.url]
        first = yield startGateway(self, RATE_LIMIT_CONFIG, vm=self.vm,
                                   extraArgs=args)
        second = yield startGateway(self, RATE_LIMIT_CONFIG, vm=self.vm,
                                    extraArgs=args)
        statuses = []
        for i in range(8):
            gateway = (first, second)[i % 2]
            response = yield fetch("GET", gateway.proxyURL + "/")
            statuses.append(response.status)
        self.assertEqual(statuses, [200] * 5 + [429] * 3)

    @defer.inlineCallbacks
    def test_redisOutage(self):
        """
        While Redis is down, requests are still answered at once (the
        filter is fault tolerant, as Kong's default is); when Redis is back
        (empty, as after a restart), the limit holds again.
        """
        redis = startRedis(self)
        gateway = yield startGateway(
            self, RATE_LIMIT_CONFIG, vm=self.vm,
            extraArgs=["--shared-data", redis.url + "?retry_interval=0.2"])
        for _ in range(2):
            response = yield fetch("GET", gateway.proxyURL + "/")
            self.assertEqual(response.status, 200)
        redis.stop()
        started = time.monotonic()
        for _ in range(3):
            response = yield fetch("GET", gateway.proxyURL + "/", timeout=10)
            self.assertEqual(response.status, 200)
        self.assertLess(time.monotonic() - started, 3.0)
        redis.start()
        yield deferLater(0.5)
        statuses = []
        for _ in range(7):
            response = yield fetch("GET", gateway.proxyURL + "/")
            statuses.append(response.status)
        self.assertEqual(statuses, [200] * 5 + [429] * 2)
        self.assertIn("Redis", gateway.logText())

    @defer.inlineCallbacks
    def test_rateLimitAcrossWorkers(self):
        """
        Two workers of one gateway sharing Redis (selected by the
        environment variable) enforce one limit.
        """
        redis = startRedis(self)
        gateway = yield startGateway(
            self, RATE_LIMIT_CONFIG, vm=self.vm, extraArgs=["--workers", "2"],
            env={"TWISTGATE_SHARED_DATA": redis.url})
        statuses = []
        for _ in range(8):
            response = yield fetch("GET", gateway.proxyURL + "/")
            statuses.append(response.status)
        self.assertEqual(statuses, [200] * 5 + [429] * 3)


class WasmtimeMetricsEndToEndTests(MetricsEndToEndMixin, TestCase):
    vm = "wasmtime"
    timeout = 120


class WasmerMetricsEndToEndTests(MetricsEndToEndMixin, TestCase):
    vm = "wasmer"
    timeout = 120
