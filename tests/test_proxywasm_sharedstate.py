"""
Shared data (with CAS), shared queues (with C{on_queue_ready}) and metrics
through the C{hostcalls} test filter on both runtimes.
"""

from twistgate.proxywasm.constants import MetricType

from tests.proxywasm_harness import RuntimeMixin, bothRuntimes, hostcalls, report, routeConfig

SHOW = "; response_headers report_header"


class SharedDataMixin(RuntimeMixin):
    """
    C{proxy_get_shared_data} / C{proxy_set_shared_data}.
    """

    def test_casSemantics(self):
        """
        As the spec says: cas 0 writes unconditionally, a matching cas
        writes, a stale cas is CAS_MISMATCH (8), a null value deletes.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers set_shared ns/k a 0; request_headers get_shared ns/k;"
            " request_headers set_shared ns/k b 0; request_headers get_shared ns/k;"
            " request_headers set_shared ns/k c 1; request_headers set_shared ns/k c 2;"
            " request_headers get_shared ns/k; request_headers set_shared ns/k - 3;"
            " request_headers get_shared ns/k" + SHOW)))
        self.assertEqual(report(self.respond(harness)), [
            "set_shared ns/k=ok", "get_shared ns/k=a,1", "set_shared ns/k=ok", "get_shared ns/k=b,2",
            "set_shared ns/k=status:8", "set_shared ns/k=ok", "get_shared ns/k=c,3",
            "set_shared ns/k=ok", "get_shared ns/k=status:1"])

    def test_sharedAcrossRequestsAndFilters(self):
        """
        Data written by one request is read by the next, and by another
        filter entry.
        """
        harness = self.harness(routeConfig(
            hostcalls("request_headers incr_shared counter"),
            hostcalls("request_headers get_shared counter" + SHOW)))
        self.respond(harness)
        self.assertEqual(report(self.respond(harness)), ["get_shared counter=2,2"])

    def test_emptyValue(self):
        """
        An empty value is stored (not a delete) and read back as empty.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers set_shared k \\0; request_headers get_shared k" + SHOW)))
        self.assertEqual(report(self.respond(harness))[1], "get_shared k=\\x00,1")


class QueuesMixin(RuntimeMixin):
    """
    Shared queues and C{on_queue_ready}.
    """

    def test_enqueueDequeue(self):
        """
        Items come out in order; an empty queue is EMPTY (7).
        """
        harness = self.harness(routeConfig(hostcalls(
            "configure register_queue q; request_headers enqueue q one; request_headers enqueue q two;"
            " request_headers dequeue q; request_headers dequeue q; request_headers dequeue q" + SHOW)))
        self.assertEqual(report(self.respond(harness)), [
            "enqueue q=ok", "enqueue q=ok", "dequeue q=one", "dequeue q=two", "dequeue q=status:7"])

    def test_queueReady(self):
        """
        Enqueueing calls C{on_queue_ready} on the root context that
        registered the queue, after the enqueueing call returned.
        """
        harness = self.harness(routeConfig(hostcalls(
            "configure register_queue q; request_headers enqueue q item; queue_ready dequeue q;"
            " response_headers root_report; response_headers report_header")))
        items = report(self.respond(harness))
        self.assertIn("enqueue q=ok", items)
        ready = [item for item in items if item.startswith("on_queue_ready=")]
        self.assertEqual(len(ready), 1)
        self.assertIn("dequeue q=item", items)

    def test_resolve(self):
        """
        A queue registered by a filter resolves by its vm id (the filter
        name); an unknown one is NOT_FOUND.
        """
        harness = self.harness(routeConfig(hostcalls(
            "configure register_queue q; request_headers resolve_queue hostcalls q;"
            " request_headers resolve_queue hostcalls nope" + SHOW)))
        items = report(self.respond(harness))
        self.assertRegex(items[0], r"^resolve_queue hostcalls=\d+$")
        self.assertEqual(items[1], "resolve_queue hostcalls=status:1")


class MetricsMixin(RuntimeMixin):
    """
    C{proxy_define_metric} and friends, readable back.
    """

    def test_counterGaugeHistogram(self):
        """
        Counters add, gauges take values, histograms record; counters and
        gauges read back, and the store keeps them under the filter's name.
        """
        harness = self.harness(routeConfig(hostcalls(
            "configure define_metric counter hits; configure define_metric gauge level;"
            " configure define_metric histogram sizes;"
            " request_headers increment_metric hits 2; request_headers get_metric hits;"
            " request_headers record_metric level 42; request_headers get_metric level;"
            " request_headers record_metric sizes 100; request_headers get_metric sizes" + SHOW)))
        items = report(self.respond(harness))
        self.assertEqual(items, ["increment_metric hits=ok", "get_metric hits=2", "record_metric level=ok",
                                 "get_metric level=42", "record_metric sizes=ok", "get_metric sizes=status:2"])
        metrics = harness.planner.metrics
        self.assertEqual(metrics.find("hostcalls", "hits").value, 2)
        self.assertEqual(metrics.find("hostcalls", "level").metricType, MetricType.GAUGE)
        self.assertEqual(metrics.find("hostcalls", "sizes").count, 1)

    def test_negativeCounterDelta(self):
        """
        Decrementing a counter is BAD_ARGUMENT; an unknown type is too.
        """
        harness = self.harness(routeConfig(hostcalls(
            "configure define_metric counter hits; request_headers increment_metric hits -1;"
            " request_headers bad_enum define_metric" + SHOW)))
        self.assertEqual(report(self.respond(harness)), ["increment_metric hits=status:2",
                                                         "bad_enum define_metric=status:2"])


bothRuntimes(SharedDataMixin, globals())
bothRuntimes(QueuesMixin, globals())
bothRuntimes(MetricsMixin, globals())
