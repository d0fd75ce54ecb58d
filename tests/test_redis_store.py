"""
Tests for L{twistgate.gateway.redis_store} against a real C{redis-server}
on loopback (see L{tests.redis}): the shared-data and queue contracts, CAS
under contention from two processes, queues across processes, Redis down or
hung (statuses, never a hang) and recovery.
"""

import os
import subprocess
import sys
import textwrap
import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.redis import freePort, startRedis
from tests.test_proxywasm_shared import (
    QueuesContractMixin, SharedDataContractMixin)
from twistgate.gateway.redis_store import (
    RedisConnection, RedisSharedData, RedisSharedQueues, sharedStoresFromURL)
from twistgate.proxywasm.constants import Status
from twistgate.proxywasm.shared import InMemorySharedData, InMemorySharedQueues

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A bound on any single call while Redis is down or hung: the socket
#: timeout is 0.25 s, so anything near a second means something waits.
CALL_BOUND = 1.0


def runPython(script, *args, timeout=120):
    """
    Run C{script} in a new Python process with the repository importable.

    @return: the L{subprocess.Popen}.
    """
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)] + [str(a) for a in args],
        env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)


def waitFor(process, timeout=120):
    out, err = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise AssertionError("child failed ({}):\n{}".format(
            process.returncode, err.decode("utf-8", "replace")))
    return out


class RedisTestMixin:
    """
    A fresh redis-server per test and a clock for the circuit breaker.
    """

    def startServer(self):
        self.server = startRedis(self)
        self.clock = Clock()
        self.connection = RedisConnection(
            self.server.url, timeout=0.25, retryInterval=1.0,
            now=self.clock.seconds)
        self.addCleanup(self.connection.close)


class RedisSharedDataTests(RedisTestMixin, SharedDataContractMixin,
                           SynchronousTestCase):
    def setUp(self):
        self.startServer()
        self.store = RedisSharedData(self.connection)

    def test_visibleToOtherClient(self):
        other = RedisConnection(self.server.url)
        self.addCleanup(other.close)
        self.store.set(b"k", b"v", 0)
        self.assertEqual(RedisSharedData(other).get(b"k"),
                         self.store.get(b"k"))

    def test_ttl(self):
        """
        With a TTL, Redis expires keys after their last write.
        """
        store = RedisSharedData(self.connection, ttl=0.05)
        store.set(b"short", b"v", 0)
        self.assertEqual(store.get(b"short")[0], b"v")
        self.assertGreater(
            self.connection.client.pttl(self.connection.key(b"kv:short")), 0)
        self.assertLessEqual(
            self.connection.client.pttl(self.connection.key(b"kv:short")), 50)
        self.assertEqual(
            self.connection.client.pttl(self.connection.key(b"kv:k")), -2)

    def test_noTtlPersists(self):
        self.store.set(b"k", b"v", 0)
        self.assertEqual(
            self.connection.client.pttl(self.connection.key(b"kv:k")), -1)

    def test_prefixesSeparate(self):
        other = RedisConnection(self.server.url, prefix="other:")
        self.addCleanup(other.close)
        self.store.set(b"k", b"mine", 0)
        self.assertIsNone(RedisSharedData(other).get(b"k"))


class RedisQueuesTests(RedisTestMixin, QueuesContractMixin,
                       SynchronousTestCase):
    def setUp(self):
        self.startServer()
        self.queues = RedisSharedQueues(self.connection)

    def deliver(self):
        while self.queues.deliverNotifications(timeout=0.3):
            pass

    def test_sameIdsInEveryProcess(self):
        """
        Another client (another process) registering or resolving the same
        name gets the same id.
        """
        other = RedisConnection(self.server.url)
        self.addCleanup(other.close)
        otherQueues = RedisSharedQueues(other)
        mine = self.queues.register(b"vm", b"q")
        self.assertEqual(otherQueues.resolve(b"vm", b"q"), mine)
        self.assertEqual(otherQueues.register(b"vm", b"q"), mine)

    def test_pollOnReactor(self):
        """
        With a reactor, subscribers are called from a poll on it.
        """
        clock = Clock()
        queues = RedisSharedQueues(self.connection, reactor=clock,
                                   pollInterval=0.02)
        self.addCleanup(queues.close)
        queueId = queues.register(b"vm", b"q")
        ready = []
        queues.subscribe(queueId, ready.append)
        self.queues.enqueue(queueId, b"x")
        deadline = time.monotonic() + 5
        while not ready and time.monotonic() < deadline:
            clock.advance(0.02)
        self.assertEqual(ready, [queueId])


class CrossProcessTests(RedisTestMixin, SynchronousTestCase):
    def setUp(self):
        self.startServer()

    def test_casUnderContention(self):
        """
        Two processes incrementing one counter with the CAS loop filters
        use lose no update.
        """
        script = """
            import sys
            from twistgate.gateway.redis_store import sharedStoresFromURL
            data, queues = sharedStoresFromURL(sys.argv[1])
            mismatches = 0
            print("ready", flush=True)
            sys.stdin.readline()
            for _ in range(int(sys.argv[2])):
                while True:
                    current = data.get(b"counter")
                    count, cas = (0, 0) if current is None else (
                        int(current[0]), current[1])
                    if data.set(b"counter", b"%d" % (count + 1,), cas) == 0:
                        break
                    mismatches += 1
            print(mismatches)
        """
        # Seeded: with the spec's rules two first writes with CAS 0 both
        # succeed, so the race is only exact on an existing key.
        RedisSharedData(self.connection).set(b"counter", b"0", 0)
        count = 500
        children = [runPython(script, self.server.url, count)
                    for _ in range(2)]
        for child in children:
            self.assertEqual(child.stdout.readline(), b"ready\n")
        for child in children:
            child.stdin.write(b"go\n")
            child.stdin.flush()
        mismatches = [int(waitFor(child)) for child in children]
        data = RedisSharedData(self.connection)
        self.assertEqual(data.get(b"counter")[0], b"%d" % (2 * count,))
        # Both really raced: at least one CAS write was refused somewhere.
        self.assertGreater(sum(mismatches), 0)

    def test_queueAcrossProcesses(self):
        """
        A process that registered and subscribed to a queue is notified of
        every item another process enqueues, and dequeues them in order.
        """
        queues = RedisSharedQueues(self.connection)
        queueId = queues.register(b"vm", b"jobs")
        ready = []
        queues.subscribe(queueId, ready.append)
        script = """
            import sys
            from twistgate.gateway.redis_store import sharedStoresFromURL
            data, queues = sharedStoresFromURL(sys.argv[1])
            queueId = queues.resolve(b"vm", b"jobs")
            for i in range(5):
                assert queues.enqueue(queueId, b"job-%d" % (i,)) == 0
            print(queueId)
        """
        self.assertEqual(int(waitFor(runPython(script, self.server.url))),
                         queueId)
        deadline = time.monotonic() + 10
        while len(ready) < 5 and time.monotonic() < deadline:
            queues.deliverNotifications(timeout=0.5)
        self.assertEqual(ready, [queueId] * 5)
        items = [queues.dequeue(queueId) for _ in range(6)]
        self.assertEqual(items, [(Status.OK, b"job-%d" % (i,)) for i in range(5)]
                         + [(Status.EMPTY, None)])


class RedisDownTests(RedisTestMixin, SynchronousTestCase):
    """
    Redis stopped or hung: every call returns an accepted status within a
    bound, and everything works again when Redis is back.
    """

    def setUp(self):
        self.startServer()
        self.data = RedisSharedData(self.connection)
        self.queues = RedisSharedQueues(self.connection)
        self.data.set(b"k", b"v", 0)
        self.queueId = self.queues.register(b"vm", b"q")
        self.ready = []
        self.queues.subscribe(self.queueId, self.ready.append)

    def timed(self, call, *args):
        started = time.monotonic()
        result = call(*args)
        self.assertLess(time.monotonic() - started, CALL_BOUND)
        return result

    def assertDegraded(self):
        self.assertIsNone(self.timed(self.data.get, b"k"))
        self.assertEqual(self.timed(self.data.set, b"k", b"w", 0),
                         Status.CAS_MISMATCH)
        self.assertEqual(self.timed(self.queues.enqueue, self.queueId, b"x"),
                         Status.NOT_FOUND)
        self.assertEqual(self.timed(self.queues.dequeue, self.queueId),
                         (Status.EMPTY, None))
        self.assertEqual(self.timed(self.queues.register, b"vm", b"q"),
                         self.queueId)
        self.assertEqual(self.timed(self.queues.resolve, b"vm", b"q"),
                         self.queueId)
        self.assertEqual(self.timed(self.queues.deliverNotifications, 0.0), 0)

    def test_stopped(self):
        self.server.stop()
        self.assertDegraded()
        self.assertFalse(self.connection.available)

    def test_hung(self):
        """
        A Redis that accepts connections but never answers costs one
        socket timeout, then calls fail fast.
        """
        self.server.pause()
        self.addCleanup(self.server.resume)
        started = time.monotonic()
        self.assertDegraded()
        self.assertLess(time.monotonic() - started, 2 * CALL_BOUND)

    def test_failFastDuringRetryInterval(self):
        """
        After a failure, calls do not touch Redis until the retry interval
        has passed, even if Redis is back meanwhile.
        """
        self.server.stop()
        self.assertIsNone(self.data.get(b"k"))
        self.server.start()
        self.clock.advance(0.5)
        self.assertIsNone(self.data.get(b"k"))
        self.clock.advance(0.6)
        self.assertEqual(self.data.set(b"k", b"again", 0), Status.OK)
        self.assertEqual(self.data.get(b"k")[0], b"again")
        self.assertTrue(self.connection.available)

    def test_recovery(self):
        """
        When Redis comes back (empty, as after a restart), data, queues and
        notifications work again, including an item enqueued by another
        client before this process re-subscribed.
        """
        self.server.stop()
        self.assertDegraded()
        self.server.start()
        self.clock.advance(1.5)
        self.assertIsNone(self.data.get(b"k"))
        self.assertEqual(self.data.set(b"k", b"w", 0), Status.OK)
        self.assertEqual(self.data.get(b"k")[0], b"w")
        other = RedisConnection(self.server.url)
        self.addCleanup(other.close)
        otherQueues = RedisSharedQueues(other)
        self.assertEqual(otherQueues.register(b"vm", b"q"), self.queueId)
        self.assertEqual(otherQueues.enqueue(self.queueId, b"during"),
                         Status.OK)
        while self.queues.deliverNotifications(timeout=0.3):
            pass
        self.assertEqual(self.ready, [self.queueId])
        self.assertEqual(self.queues.dequeue(self.queueId),
                         (Status.OK, b"during"))
        self.assertEqual(otherQueues.enqueue(self.queueId, b"after"),
                         Status.OK)
        while self.queues.deliverNotifications(timeout=0.3):
            pass
        self.assertEqual(self.ready, [self.queueId] * 2)

    def test_registerWhileDownThenRegisteredOnReturn(self):
        """
        A queue registered while Redis is down gets its id at once and
        exists in Redis once it is back.
        """
        self.server.stop()
        queueId = self.queues.register(b"vm", b"late")
        self.server.start()
        self.clock.advance(1.5)
        self.assertEqual(self.queues.enqueue(queueId, b"x"), Status.OK)
        other = RedisConnection(self.server.url)
        self.addCleanup(other.close)
        self.assertEqual(RedisSharedQueues(other).resolve(b"vm", b"late"),
                         queueId)


class SharedStoresFromURLTests(SynchronousTestCase):
    def test_memory(self):
        for url in (None, "", "memory"):
            data, queues = sharedStoresFromURL(url)
            self.assertIsInstance(data, InMemorySharedData)
            self.assertIsInstance(queues, InMemorySharedQueues)

    def test_unsupported(self):
        error = self.assertRaises(ValueError, sharedStoresFromURL,
                                  "mysql://localhost/x")
        self.assertIn("'mysql://localhost/x'", str(error))
        self.assertEqual(len(str(error).splitlines()), 1)

    def test_badTTL(self):
        error = self.assertRaises(ValueError, sharedStoresFromURL,
                                  "redis://127.0.0.1:1/0?ttl=soon")
        self.assertIn("ttl", str(error))
        self.assertIn("'soon'", str(error))

    def test_redisDownAtStartIsNotFatal(self):
        """
        Redis need not be up when the gateway starts: the stores answer
        degraded statuses, fast.
        """
        url = "redis://127.0.0.1:{}/0?timeout=0.1".format(freePort())
        started = time.monotonic()
        data, queues = sharedStoresFromURL(url)
        self.addCleanup(queues.close)
        self.assertEqual(data.set(b"k", b"v", 0), Status.CAS_MISMATCH)
        self.assertIsNone(data.get(b"k"))
        self.assertLess(time.monotonic() - started, CALL_BOUND)

    def test_redisOptions(self):
        server = startRedis(self)
        data, queues = sharedStoresFromURL(
            server.url + "?prefix=gw1:&ttl=30&timeout=0.5&retry_interval=2")
        self.addCleanup(queues.close)
        self.assertIsInstance(data, RedisSharedData)
        self.assertIsInstance(queues, RedisSharedQueues)
        self.assertEqual(data.ttl, 30)
        data.set(b"k", b"v", 0)
        probe = RedisConnection(server.url)
        self.addCleanup(probe.close)
        self.assertEqual(probe.client.hget(b"gw1:kv:k", "v"), b"v")
        self.assertGreater(probe.client.ttl(b"gw1:kv:k"), 0)
