"""
Tests for L{twistgate.proxywasm.shared}: CAS rules of shared data, queues
and their notifications.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twistgate.proxywasm.constants import Status
from twistgate.proxywasm.shared import (
    MAX_CAS, ISharedData, ISharedQueues, InMemorySharedData,
    InMemorySharedQueues, nextCas)


class SharedDataContractMixin:
    """
    The CAS rules every L{ISharedData} follows. Subclasses set
    C{self.store} in C{setUp}.
    """

    def test_interface(self):
        self.assertTrue(verifyObject(ISharedData, self.store))

    def test_missingKey(self):
        self.assertIsNone(self.store.get(b"absent"))

    def test_setThenGet(self):
        self.assertEqual(self.store.set(b"k", b"v", 0), Status.OK)
        value, cas = self.store.get(b"k")
        self.assertEqual(value, b"v")
        self.assertNotEqual(cas, 0)

    def test_emptyValueIsStored(self):
        self.assertEqual(self.store.set(b"k", b"", 0), Status.OK)
        self.assertEqual(self.store.get(b"k")[0], b"")

    def test_binaryKeysAndValues(self):
        key, value = bytes(range(256)), bytes(range(255, -1, -1))
        self.assertEqual(self.store.set(key, value, 0), Status.OK)
        self.assertEqual(self.store.get(key)[0], value)

    def test_casZeroOverwritesExisting(self):
        self.store.set(b"k", b"one", 0)
        self.assertEqual(self.store.set(b"k", b"two", 0), Status.OK)
        self.assertEqual(self.store.get(b"k")[0], b"two")

    def test_everyWriteGetsNewCas(self):
        self.store.set(b"k", b"one", 0)
        first = self.store.get(b"k")[1]
        self.store.set(b"k", b"two", first)
        second = self.store.get(b"k")[1]
        self.store.set(b"k", b"three", 0)
        third = self.store.get(b"k")[1]
        self.assertEqual(len({first, second, third}), 3)

    def test_matchingCasWrites(self):
        self.store.set(b"k", b"one", 0)
        cas = self.store.get(b"k")[1]
        self.assertEqual(self.store.set(b"k", b"two", cas), Status.OK)
        self.assertEqual(self.store.get(b"k")[0], b"two")

    def test_staleCasMismatches(self):
        self.store.set(b"k", b"one", 0)
        stale = self.store.get(b"k")[1]
        self.store.set(b"k", b"two", stale)
        self.assertEqual(self.store.set(b"k", b"three", stale),
                         Status.CAS_MISMATCH)
        self.assertEqual(self.store.get(b"k")[0], b"two")

    def test_casOnAbsentKeyWrites(self):
        """
        As in the spec and Envoy, a nonzero CAS is not checked when the key
        does not exist.
        """
        self.assertEqual(self.store.set(b"new", b"v", 12345), Status.OK)
        self.assertEqual(self.store.get(b"new")[0], b"v")

    def test_deleteWithNone(self):
        self.store.set(b"k", b"v", 0)
        self.assertEqual(self.store.set(b"k", None, 0), Status.OK)
        self.assertIsNone(self.store.get(b"k"))

    def test_deleteChecksCas(self):
        self.store.set(b"k", b"one", 0)
        stale = self.store.get(b"k")[1]
        self.store.set(b"k", b"two", 0)
        self.assertEqual(self.store.set(b"k", None, stale), Status.CAS_MISMATCH)
        self.assertEqual(self.store.get(b"k")[0], b"two")

    def test_deleteAbsent(self):
        self.assertEqual(self.store.set(b"absent", None, 0), Status.OK)

    def test_keysAreIndependent(self):
        self.store.set(b"a", b"1", 0)
        self.store.set(b"b", b"2", 0)
        self.assertEqual(self.store.get(b"a")[0], b"1")
        self.assertEqual(self.store.get(b"b")[0], b"2")

    def test_incrementLoopWithCas(self):
        """
        The read-modify-write loop filters use for counters (rate limiting)
        converges.
        """
        for _ in range(20):
            while True:
                current = self.store.get(b"n")
                count, cas = (0, 0) if current is None else (
                    int(current[0]), current[1])
                if self.store.set(b"n", b"%d" % (count + 1,), cas) == Status.OK:
                    break
        self.assertEqual(self.store.get(b"n")[0], b"20")


class QueuesContractMixin:
    """
    The behaviour every L{ISharedQueues} follows. Subclasses set
    C{self.queues} in C{setUp} and define C{deliver()}, which runs whatever
    delivers notifications (nothing for the in-memory queues).
    """

    def deliver(self):
        pass

    def test_interface(self):
        self.assertTrue(verifyObject(ISharedQueues, self.queues))

    def test_registerTwiceOpens(self):
        first = self.queues.register(b"vm", b"q")
        self.assertEqual(self.queues.register(b"vm", b"q"), first)

    def test_distinctQueues(self):
        ids = {self.queues.register(b"vm", b"a"),
               self.queues.register(b"vm", b"b"),
               self.queues.register(b"other", b"a")}
        self.assertEqual(len(ids), 3)

    def test_resolve(self):
        queueId = self.queues.register(b"vm", b"q")
        self.assertEqual(self.queues.resolve(b"vm", b"q"), queueId)
        self.assertIsNone(self.queues.resolve(b"vm", b"missing"))
        self.assertIsNone(self.queues.resolve(b"other", b"q"))

    def test_fifo(self):
        queueId = self.queues.register(b"vm", b"q")
        for item in (b"1", b"", b"3"):
            self.assertEqual(self.queues.enqueue(queueId, item), Status.OK)
        self.assertEqual(self.queues.dequeue(queueId), (Status.OK, b"1"))
        self.assertEqual(self.queues.dequeue(queueId), (Status.OK, b""))
        self.assertEqual(self.queues.dequeue(queueId), (Status.OK, b"3"))
        self.assertEqual(self.queues.dequeue(queueId), (Status.EMPTY, None))

    def test_unknownQueue(self):
        self.assertEqual(self.queues.enqueue(987654, b"x"), Status.NOT_FOUND)
        self.assertEqual(self.queues.dequeue(987654), (Status.NOT_FOUND, None))

    def test_subscriberNotified(self):
        queueId = self.queues.register(b"vm", b"q")
        ready = []
        self.queues.subscribe(queueId, ready.append)
        self.queues.enqueue(queueId, b"a")
        self.queues.enqueue(queueId, b"b")
        self.deliver()
        self.assertEqual(ready, [queueId, queueId])

    def test_unsubscribe(self):
        queueId = self.queues.register(b"vm", b"q")
        ready = []
        self.queues.subscribe(queueId, ready.append)
        self.queues.unsubscribe(queueId, ready.append)
        self.queues.unsubscribe(queueId, ready.append)
        self.queues.enqueue(queueId, b"a")
        self.deliver()
        self.assertEqual(ready, [])
        self.assertEqual(self.queues.dequeue(queueId), (Status.OK, b"a"))

    def test_otherQueueNotNotified(self):
        watched = self.queues.register(b"vm", b"watched")
        other = self.queues.register(b"vm", b"other")
        ready = []
        self.queues.subscribe(watched, ready.append)
        self.queues.enqueue(other, b"x")
        self.deliver()
        self.assertEqual(ready, [])


class InMemorySharedDataTests(SharedDataContractMixin, SynchronousTestCase):
    def setUp(self):
        self.store = InMemorySharedData()


class InMemorySharedDataTTLTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = InMemorySharedData(ttl=10, now=self.clock.seconds)

    def test_expires(self):
        self.store.set(b"k", b"v", 0)
        self.clock.advance(9.9)
        self.assertEqual(self.store.get(b"k")[0], b"v")
        self.clock.advance(0.1)
        self.assertIsNone(self.store.get(b"k"))

    def test_writeRefreshes(self):
        self.store.set(b"k", b"v", 0)
        self.clock.advance(8)
        self.store.set(b"k", b"w", 0)
        self.clock.advance(8)
        self.assertEqual(self.store.get(b"k")[0], b"w")

    def test_expiredKeyIgnoresCas(self):
        self.store.set(b"k", b"v", 0)
        cas = self.store.get(b"k")[1]
        self.clock.advance(11)
        self.assertEqual(self.store.set(b"k", b"new", cas + 1), Status.OK)

    def test_ttlNeedsClock(self):
        self.assertRaises(ValueError, InMemorySharedData, ttl=5)


class NextCasTests(SynchronousTestCase):
    def test_wrapsSkippingZero(self):
        self.assertEqual(nextCas(1), 1)
        self.assertEqual(nextCas(MAX_CAS), MAX_CAS)
        self.assertEqual(nextCas(MAX_CAS + 1), 1)


class InMemorySharedQueuesTests(QueuesContractMixin, SynchronousTestCase):
    def setUp(self):
        self.queues = InMemorySharedQueues()

    def test_notifiedSynchronouslyAfterEnqueue(self):
        """
        The item is in the queue when the subscriber is called, so the
        callback can dequeue it.
        """
        queueId = self.queues.register(b"vm", b"q")
        seen = []
        self.queues.subscribe(
            queueId, lambda qid: seen.append(self.queues.dequeue(qid)))
        self.queues.enqueue(queueId, b"payload")
        self.assertEqual(seen, [(Status.OK, b"payload")])
