"""
End-to-end tests of the filter limit options of C{twistd twistgate}: the
compiled-module cache across starts (C{--cache-dir}), the memory cap
(C{--filter-memory-limit}) and the CPU deadline (C{--filter-deadline}),
on both runtimes (the deadline is enforced on wasmtime only; wasmer warns).
"""

import os
import shutil
import tempfile
import time

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.e2e import fetch, startGateway
from tests.test_e2e_metrics import samples

HOSTCALLS_CONFIG = """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:{echoPort}
    routes:
      - name: greeted
        paths: ["/"]
        filter_chains:
          - filters:
              - name: hostcalls
                config: "response_headers add_header response x-cached yes"
"""

#: One instance of the hostcalls filter on three routes: C{/small} grows
#: its memory by 2 MiB, C{/big} by 32 MiB, C{/loop} loops forever.
LIMITS_CONFIG = """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:{echoPort}
    routes:
      - name: small
        paths: ["/small"]
        filter_chains:
          - filters:
              - name: hostcalls
                config: "request_headers grow_memory 2"
      - name: big
        paths: ["/big"]
        filter_chains:
          - filters:
              - name: hostcalls
                config: "request_headers grow_memory 32"
      - name: loop
        paths: ["/loop"]
        filter_chains:
          - filters:
              - name: hostcalls
                config: "request_headers loop"
"""

MIB = 1024 * 1024


class LimitsEndToEndMixin:
    """
    Set C{vm} in subclasses.
    """

    vm = None

    def cacheDirectory(self):
        directory = tempfile.mkdtemp(prefix="twistgate-cache-")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    @defer.inlineCallbacks
    def startServing(self, extraArgs):
        """
        Start a gateway with the hostcalls filter, check that the filter
        runs, stop it, and return its log.
        """
        gateway = yield startGateway(self, HOSTCALLS_CONFIG, vm=self.vm, extraArgs=extraArgs)
        response = yield fetch("GET", gateway.proxyURL + "/")
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.header("x-cached"), "yes")
        yield gateway.stop()
        return gateway.logText()

    @defer.inlineCallbacks
    def test_cacheAcrossStarts(self):
        """
        The first start with a cache directory compiles the filter and
        stores it there; a second start with the same directory loads it
        from the cache; with C{--cache-dir off} nothing is cached.
        """
        directory = self.cacheDirectory()
        first = yield self.startServing(["--cache-dir", directory])
        self.assertIn("compiled hostcalls (cache miss, stored) on %s" % (self.vm,), first)
        self.assertEqual(len(os.listdir(directory)), 1, os.listdir(directory))
        second = yield self.startServing(["--cache-dir", directory])
        self.assertIn("compiled hostcalls (cache hit) on %s" % (self.vm,), second)
        self.assertNotIn("cache miss", second)
        uncached = yield self.startServing(["--cache-dir", "off"])
        self.assertIn("compiled hostcalls (no cache) on %s" % (self.vm,), uncached)

    @defer.inlineCallbacks
    def test_memoryLimit(self):
        """
        With C{--filter-memory-limit 16m}, growing the filter's memory by
        2 MiB works, by 32 MiB fails (the filter traps: 500), and the
        instance's memory stays under the cap.
        """
        gateway = yield startGateway(self, LIMITS_CONFIG, vm=self.vm,
                                     extraArgs=["--filter-memory-limit", "16m", "--cache-dir", "off"])
        small = yield fetch("GET", gateway.proxyURL + "/small")
        self.assertEqual(small.status, 200, small.body)
        big = yield fetch("GET", gateway.proxyURL + "/big")
        self.assertEqual(big.status, 500, big.body)
        again = yield fetch("GET", gateway.proxyURL + "/small")
        self.assertEqual(again.status, 200, again.body)
        scrape = yield fetch("GET", gateway.adminURL + "/metrics")
        found = samples(scrape.body.decode("utf-8"))
        hostcalls = frozenset({("filter", "hostcalls")})
        self.assertEqual(found[("twistgate_filter_traps_total", hostcalls | {("kind", "trap")})], 1)
        memory = found[("twistgate_filter_instance_memory_bytes", hostcalls)]
        self.assertGreater(memory, 2 * MIB)
        self.assertLessEqual(memory, 16 * MIB)


class WasmtimeLimitsEndToEndTests(LimitsEndToEndMixin, TestCase):
    vm = "wasmtime"
    timeout = 120

    @defer.inlineCallbacks
    def test_deadline(self):
        """
        With C{--filter-deadline 0.2}, a filter looping forever is stopped:
        its request gets a 500 at once, counted as a CPU-deadline hit, and
        the next request is served.
        """
        gateway = yield startGateway(self, LIMITS_CONFIG, vm=self.vm,
                                     extraArgs=["--filter-deadline", "0.2", "--cache-dir", "off"])
        started = time.monotonic()
        looped = yield fetch("GET", gateway.proxyURL + "/loop", timeout=10)
        self.assertEqual(looped.status, 500, looped.body)
        self.assertLess(time.monotonic() - started, 2.0)
        small = yield fetch("GET", gateway.proxyURL + "/small")
        self.assertEqual(small.status, 200, small.body)
        scrape = yield fetch("GET", gateway.adminURL + "/metrics")
        found = samples(scrape.body.decode("utf-8"))
        hostcalls = frozenset({("filter", "hostcalls")})
        self.assertEqual(found[("twistgate_filter_cpu_deadline_hits_total", hostcalls)], 1)
        self.assertEqual(found[("twistgate_filter_traps_total", hostcalls | {("kind", "deadline")})], 1)
        self.assertEqual(found[("twistgate_filter_recycles_total", hostcalls)], 1)
        self.assertNotIn("not enforced", gateway.logText())


class WasmerLimitsEndToEndTests(LimitsEndToEndMixin, TestCase):
    vm = "wasmer"
    timeout = 120

    @defer.inlineCallbacks
    def test_deadlineWarning(self):
        """
        wasmer cannot stop a running guest: the gateway says once, at
        start-up, that the CPU deadline is not enforced.
        """
        gateway = yield startGateway(self, LIMITS_CONFIG, vm=self.vm,
                                     extraArgs=["--filter-deadline", "0.2", "--cache-dir", "off"])
        small = yield fetch("GET", gateway.proxyURL + "/small")
        self.assertEqual(small.status, 200, small.body)
        self.assertEqual(gateway.logText().count("CPU deadline (--filter-deadline 0.2) is not enforced"), 1,
                         gateway.logText())
