"""
Tests for L{twistgate.proxywasm.metrics.MetricStore}.
"""

from twisted.trial.unittest import SynchronousTestCase

from twistgate.proxywasm.constants import MetricType, Status
from twistgate.proxywasm.metrics import HISTOGRAM_BOUNDS, MetricStore


class MetricStoreTests(SynchronousTestCase):
    def setUp(self):
        self.store = MetricStore()

    def test_defineSameNameSameId(self):
        first = self.store.define(MetricType.COUNTER, "hits", "f")
        self.assertEqual(self.store.define(MetricType.COUNTER, "hits", "f"),
                         first)

    def test_ownersSeparate(self):
        a = self.store.define(MetricType.COUNTER, "hits", "a")
        b = self.store.define(MetricType.COUNTER, "hits", "b")
        self.assertNotEqual(a, b)
        self.store.increment(a, 3)
        self.assertEqual(self.store.get(b), (Status.OK, 0))

    def test_redefineKeepsValue(self):
        """
        A recycled instance defining its metrics again keeps counting.
        """
        first = self.store.define(MetricType.COUNTER, "hits", "f")
        self.store.increment(first, 5)
        again = self.store.define(MetricType.COUNTER, "hits", "f")
        self.store.increment(again, 1)
        self.assertEqual(self.store.get(first), (Status.OK, 6))

    def test_unknownType(self):
        self.assertRaises(ValueError, self.store.define, 7, "x", "f")

    def test_counter(self):
        counter = self.store.define(MetricType.COUNTER, "c", "f")
        self.assertEqual(self.store.increment(counter, 2), Status.OK)
        self.assertEqual(self.store.increment(counter, 0), Status.OK)
        self.assertEqual(self.store.record(counter, 3), Status.OK)
        self.assertEqual(self.store.get(counter), (Status.OK, 5))

    def test_counterRejectsNegativeIncrement(self):
        counter = self.store.define(MetricType.COUNTER, "c", "f")
        self.store.increment(counter, 4)
        self.assertEqual(self.store.increment(counter, -1), Status.BAD_ARGUMENT)
        self.assertEqual(self.store.get(counter), (Status.OK, 4))

    def test_counterIgnoresNegativeRecord(self):
        counter = self.store.define(MetricType.COUNTER, "c", "f")
        self.store.increment(counter, 4)
        self.assertEqual(self.store.record(counter, -2), Status.OK)
        self.assertEqual(self.store.get(counter), (Status.OK, 4))

    def test_gauge(self):
        gauge = self.store.define(MetricType.GAUGE, "g", "f")
        self.assertEqual(self.store.record(gauge, 10), Status.OK)
        self.assertEqual(self.store.increment(gauge, -15), Status.OK)
        self.assertEqual(self.store.get(gauge), (Status.OK, -5))
        self.assertEqual(self.store.record(gauge, 7), Status.OK)
        self.assertEqual(self.store.get(gauge), (Status.OK, 7))

    def test_histogram(self):
        histogram = self.store.define(MetricType.HISTOGRAM, "h", "f")
        for value in (0, 1, 2, 3, 1000, 70000):
            self.assertEqual(self.store.record(histogram, value), Status.OK)
        self.assertEqual(self.store.get(histogram), (Status.BAD_ARGUMENT, 0))
        self.assertEqual(self.store.increment(histogram, 1),
                         Status.BAD_ARGUMENT)
        snapshot = self.store.find("f", "h")
        self.assertEqual(snapshot.count, 6)
        self.assertEqual(snapshot.sum, 71006)
        counts = dict(zip(HISTOGRAM_BOUNDS + (float("inf"),),
                          snapshot.bucketCounts))
        self.assertEqual(counts[1], 2)
        self.assertEqual(counts[2], 1)
        self.assertEqual(counts[4], 1)
        self.assertEqual(counts[1024], 1)
        self.assertEqual(counts[float("inf")], 1)
        self.assertEqual(sum(snapshot.bucketCounts), 6)

    def test_unknownId(self):
        self.assertEqual(self.store.increment(99, 1), Status.NOT_FOUND)
        self.assertEqual(self.store.record(99, 1), Status.NOT_FOUND)
        self.assertEqual(self.store.get(99), (Status.NOT_FOUND, 0))

    def test_metricsIteration(self):
        counter = self.store.define(MetricType.COUNTER, "c", "one")
        gauge = self.store.define(MetricType.GAUGE, "g", "two")
        self.store.increment(counter, 3)
        self.store.record(gauge, 9)
        everything = [(m.owner, m.name, m.metricType, m.value)
                      for m in self.store.metrics()]
        self.assertEqual(everything, [("one", "c", MetricType.COUNTER, 3),
                                      ("two", "g", MetricType.GAUGE, 9)])
        self.assertEqual([m.name for m in self.store.metrics(owner="two")],
                         ["g"])

    def test_findMissing(self):
        self.assertIsNone(self.store.find("f", "nothing"))
