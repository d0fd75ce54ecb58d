"""
Tests for L{twistgate.web.metrics}: the Prometheus exposition of the
gateway's metrics and of filter metrics labelled by C{label_patterns}.
"""

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from twistgate.proxywasm.constants import MetricType
from twistgate.proxywasm.metrics import MetricStore
from twistgate.web.metrics import (
    GatewayMetrics, MetricsResource, compileLabelPatterns, luaEscapesToRegex,
    splitFilterMetricName)

#: Kong's own example (spec 26-prometheus/09-wasmx): Lua patterns, the
#: first capture the labelled part, the second the value.
KONG_PATTERNS = (("service", "(_s_id=([0-9a-z%-]+))"),
                 ("route", "(_r_id=([0-9a-z%-]+))"))


def samples(text):
    """
    @return: C{{(sample name, frozenset of labels): value}} of an exposition.
    """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def types(text):
    return {family.name: family.type
            for family in text_string_to_metric_families(text)}


class LabelPatternTests(SynchronousTestCase):
    def test_kongForm(self):
        patterns = compileLabelPatterns(KONG_PATTERNS)
        self.assertEqual(
            splitFilterMetricName("tests", "a_labeled_counter_s_id=mock2_r_id=mock2-route",
                                  patterns),
            ("pw_tests_a_labeled_counter",
             {"service": "mock2", "route": "mock2-route"}))

    def test_noMatch(self):
        patterns = compileLabelPatterns(KONG_PATTERNS)
        self.assertEqual(splitFilterMetricName("tests", "a_counter", patterns),
                         ("pw_tests_a_counter", {}))

    def test_singleGroupRegex(self):
        patterns = compileLabelPatterns([("method", r"\.method_(\w+)$")])
        self.assertEqual(
            splitFilterMetricName("limiter", "hits.method_GET", patterns),
            ("pw_limiter_hits", {"method": "GET"}))

    def test_namedGroup(self):
        patterns = compileLabelPatterns([("user", r"_u:(?<other>x)?(?<user>\w+)")])
        self.assertEqual(
            splitFilterMetricName("auth", "logins_u:alice", patterns),
            ("pw_auth_logins", {"user": "alice"}))

    def test_luaEscapes(self):
        self.assertEqual(luaEscapesToRegex("%d+%.%a"), r"[0-9]+\.[A-Za-z]")
        self.assertEqual(luaEscapesToRegex("[%w%-]+"), r"[A-Za-z0-9\-]+")
        patterns = compileLabelPatterns([("code", "(_code=(%d+))")])
        self.assertEqual(splitFilterMetricName("f", "calls_code=503", patterns),
                         ("pw_f_calls", {"code": "503"}))

    def test_invalidCharactersInNames(self):
        self.assertEqual(splitFilterMetricName("my-filter", "a/b c", ()),
                         ("pw_my_filter_a_b_c", {}))

    def test_badLabel(self):
        error = self.assertRaises(ValueError, compileLabelPatterns,
                                  [("bad-label", "(x)")], "f.meta.json")
        self.assertEqual(str(error), "f.meta.json[0].label: 'bad-label' is not"
                                     " a Prometheus label name")

    def test_badPattern(self):
        error = self.assertRaises(ValueError, compileLabelPatterns,
                                  [("ok", "(unclosed")])
        self.assertIn("[0].pattern: invalid pattern '(unclosed'", str(error))

    def test_patternWithoutGroup(self):
        error = self.assertRaises(ValueError, compileLabelPatterns,
                                  [("ok", "_s_id=x")])
        self.assertIn("no capture group", str(error))

    def test_gatewayNamesTheFilter(self):
        error = self.assertRaises(ValueError, GatewayMetrics, MetricStore(),
                                  {"tests": [("ok", "(")]})
        self.assertTrue(str(error).startswith(
            "tests.meta.json: metrics.label_patterns[0].pattern"))


class GatewayMetricsTests(SynchronousTestCase):
    def setUp(self):
        self.store = MetricStore()
        self.metrics = GatewayMetrics(self.store, {"tests": KONG_PATTERNS})

    def text(self):
        return self.metrics.render().decode("utf-8")

    def test_requests(self):
        self.metrics.observeRequest("mock", "mock-route", 200, 0.003, 0.002)
        self.metrics.observeRequest("mock", "mock-route", 200, 0.2, 0.1)
        self.metrics.observeRequest("mock", "mock-route", 502, 0.004, None)
        self.metrics.observeRequest(None, None, 404, 0.0005)
        found = samples(self.text())
        route = {("service", "mock"), ("route", "mock-route")}
        self.assertEqual(found[("twistgate_http_requests_total",
                                frozenset(route | {("code", "200")}))], 2)
        self.assertEqual(found[("twistgate_http_requests_total",
                                frozenset(route | {("code", "502")}))], 1)
        self.assertEqual(found[("twistgate_http_requests_total", frozenset(
            {("service", ""), ("route", ""), ("code", "404")}))], 1)
        self.assertEqual(found[("twistgate_request_latency_seconds_count",
                                frozenset(route))], 3)
        self.assertAlmostEqual(found[("twistgate_request_latency_seconds_sum",
                                      frozenset(route))], 0.207)
        self.assertEqual(found[("twistgate_request_latency_seconds_bucket",
                                frozenset(route | {("le", "0.005")}))], 2)
        self.assertEqual(found[("twistgate_request_latency_seconds_bucket",
                                frozenset(route | {("le", "+Inf")}))], 3)
        self.assertEqual(found[("twistgate_upstream_latency_seconds_count",
                                frozenset(route))], 2)
        self.assertEqual(found[("twistgate_upstream_latency_seconds_bucket",
                                frozenset(route | {("le", "0.0025")}))], 1)

    def test_filterHealth(self):
        self.metrics.observeFilterPhase("limiter", "request_headers", 0.0003)
        self.metrics.observeFilterPhase("limiter", "on_request_headers", 0.002)
        self.metrics.observeFilterPhase("limiter", "proxy_on_log", 0.002)
        self.metrics.filterTrapped("limiter", "trap")
        self.metrics.filterTrapped("limiter", "deadline")
        self.metrics.filterTrapped("limiter", "deadline")
        self.metrics.filterRecycled("limiter")
        self.metrics.setInstanceMemory("limiter", 1114112)
        found = samples(self.text())
        phase = {("filter", "limiter"), ("phase", "request_headers")}
        self.assertEqual(found[("twistgate_filter_phase_seconds_bucket",
                                frozenset(phase | {("le", "0.0005")}))], 1)
        self.assertEqual(found[("twistgate_filter_phase_seconds_bucket",
                                frozenset(phase | {("le", "0.00025")}))], 0)
        self.assertEqual(found[("twistgate_filter_phase_seconds_count",
                                frozenset(phase))], 2)
        self.assertEqual(found[("twistgate_filter_phase_seconds_count", frozenset(
            {("filter", "limiter"), ("phase", "log")}))], 1)
        self.assertEqual(found[("twistgate_filter_traps_total", frozenset(
            {("filter", "limiter"), ("kind", "deadline")}))], 2)
        self.assertEqual(found[("twistgate_filter_traps_total", frozenset(
            {("filter", "limiter"), ("kind", "trap")}))], 1)
        self.assertEqual(found[("twistgate_filter_cpu_deadline_hits_total",
                                frozenset({("filter", "limiter")}))], 2)
        self.assertEqual(found[("twistgate_filter_recycles_total",
                                frozenset({("filter", "limiter")}))], 1)
        self.assertEqual(found[("twistgate_filter_instance_memory_bytes",
                                frozenset({("filter", "limiter")}))], 1114112)

    def test_filterMetricsLabelled(self):
        """
        Metrics a filter defined under labelled names are one family with a
        series per label set; an unlabelled one keeps its name.
        """
        for suffix, amount in (("_s_id=mock_r_id=mock-route", 1),
                               ("_s_id=mock2_r_id=mock2-route", 4)):
            counter = self.store.define(MetricType.COUNTER,
                                        "a_labeled_counter" + suffix, "tests")
            self.store.increment(counter, amount)
            gauge = self.store.define(MetricType.GAUGE,
                                      "a_labeled_gauge" + suffix, "tests")
            self.store.record(gauge, -amount)
        plain = self.store.define(MetricType.COUNTER, "a_counter", "tests")
        self.store.increment(plain, 2)
        text = self.text()
        found = samples(text)
        kinds = types(text)
        self.assertEqual(kinds["pw_tests_a_labeled_counter"], "counter")
        self.assertEqual(kinds["pw_tests_a_labeled_gauge"], "gauge")
        self.assertEqual(found[("pw_tests_a_labeled_counter_total", frozenset(
            {("service", "mock"), ("route", "mock-route")}))], 1)
        self.assertEqual(found[("pw_tests_a_labeled_counter_total", frozenset(
            {("service", "mock2"), ("route", "mock2-route")}))], 4)
        self.assertEqual(found[("pw_tests_a_labeled_gauge", frozenset(
            {("service", "mock2"), ("route", "mock2-route")}))], -4)
        self.assertEqual(found[("pw_tests_a_counter_total", frozenset())], 2)

    def test_filterHistogramAsKong(self):
        """
        A filter histogram has Kong's power-of-two buckets; recording
        1, 2, 4, ..., 2^17 twice gives Kong's published exposition.
        """
        histogram = self.store.define(MetricType.HISTOGRAM, "a_histogram",
                                      "tests")
        for _ in range(2):
            for power in range(18):
                self.store.record(histogram, 2 ** power)
        text = self.text()
        expected = ["# TYPE pw_tests_a_histogram histogram"]
        for power in range(17):
            expected.append('pw_tests_a_histogram_bucket{le="%d"} %d.0'
                            % (2 ** power, 2 * (power + 1)))
        expected += ['pw_tests_a_histogram_bucket{le="+Inf"} 36.0',
                     "pw_tests_a_histogram_sum 524286.0",
                     "pw_tests_a_histogram_count 36.0"]
        start = text.index(expected[0])
        self.assertEqual(text[start:].splitlines()[:len(expected)], expected)

    def test_typeConflictSkipped(self):
        counter = self.store.define(MetricType.COUNTER, "x_s_id=a", "tests")
        gauge = self.store.define(MetricType.GAUGE, "x_s_id=b", "tests")
        self.store.increment(counter, 1)
        self.store.record(gauge, 5)
        found = samples(self.text())
        self.assertEqual(found[("pw_tests_x_total",
                                frozenset({("service", "a")}))], 1)
        self.assertNotIn(("pw_tests_x", frozenset({("service", "b")})), found)
        self.flushLoggedErrors()


    def test_sameSeriesAddedUp(self):
        """
        Two metrics whose names give one name and one label set are
        exported as one series with their values added (a repeated series
        would make Prometheus reject the scrape).
        """
        metrics = GatewayMetrics(self.store, {"f": [("code", "_code=(%d+)")]})
        for raw, amount in (("calls_code=200", 2), ("calls_code=200x", 3)):
            counter = self.store.define(MetricType.COUNTER, raw, "f")
            self.store.increment(counter, amount)
            histogram = self.store.define(MetricType.HISTOGRAM, "t" + raw, "f")
            self.store.record(histogram, amount)
        text = metrics.render().decode("utf-8")
        self.assertEqual(text.count('pw_f_calls_total{code="200"}'), 1)
        found = samples(text)
        self.assertEqual(found[("pw_f_calls_total",
                                frozenset({("code", "200")}))], 5)
        self.assertEqual(found[("pw_f_tcalls_count",
                                frozenset({("code", "200")}))], 2)
        self.assertEqual(found[("pw_f_tcalls_sum",
                                frozenset({("code", "200")}))], 5)
        self.assertEqual(found[("pw_f_tcalls_bucket",
                                frozenset({("code", "200"), ("le", "2")}))], 1)


class MetricsResourceTests(SynchronousTestCase):
    def test_scrape(self):
        store = MetricStore()
        metrics = GatewayMetrics(store)
        metrics.observeRequest("s", "r", 201, 0.01, 0.005)
        counter = store.define(MetricType.COUNTER, "hits", "f")
        store.increment(counter, 7)
        client = StubTreq(MetricsResource(metrics))
        response = self.successResultOf(client.get("http://gw/metrics"))
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0]
                        .startswith("text/plain; version=0.0.4"))
        body = self.successResultOf(response.text()).strip()
        found = samples(body)
        self.assertEqual(found[("twistgate_http_requests_total", frozenset(
            {("service", "s"), ("route", "r"), ("code", "201")}))], 1)
        self.assertEqual(found[("pw_f_hits_total", frozenset())], 7)
