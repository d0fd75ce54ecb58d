"""
Traps, recycling, failure policies and hostile hostcall arguments, through
the C{hostcalls} test filter on both runtimes.
"""

from twisted.trial.unittest import SynchronousTestCase

from twistgate.proxywasm.vm import TrapPolicy
from twistgate.wasm.interfaces import Limits

from tests.proxywasm_harness import (
    LogCapture,
    RuntimeMixin,
    bothRuntimes,
    entry,
    hostcalls,
    report,
    routeConfig,
)

GREETING = "- name: greeting\n  config:\n    my_greeting: hi\n"


class TrapsMixin(RuntimeMixin):
    """
    A trapping filter fails its request and is replaced.
    """

    def test_trapGives500AndRecycles(self):
        """
        A trap in on_request_headers answers 500 and logs the filter, the
        phase and the trap; the next request runs on a fresh instance whose
        root context was re-created and re-configured.
        """
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls(
            "configure log info configured; request_headers trap boom")))
        vm = harness.vm()
        first = self.respond(harness)
        self.assertEqual(first.status, 500)
        self.assertEqual(harness.upstream.seen, [])
        failure = logs.containing("trapped in on_request_headers")
        self.assertEqual(len(failure), 1)
        self.assertIn('filter "hostcalls"', failure[0])
        self.assertIn("boom", " ".join(logs.messages("twistgate.filter.hostcalls")))
        self.assertEqual(vm.generation, 1)
        self.respond(harness)
        self.assertEqual(vm.generation, 2)
        self.assertEqual(len(logs.containing("configured")), 2)
        self.assertTrue(logs.containing("replacing the instance that trapped in on_request_headers"))

    def test_otherFiltersUnaffected(self):
        """
        Another filter's instance is untouched by a trap, and a request on
        a route without the trapping filter succeeds.
        """
        harness = self.harness(routeConfig(GREETING, hostcalls("response_headers trap boom")))
        self.assertEqual(self.respond(harness).status, 500)
        self.assertEqual(harness.vm("greeting").generation, 1)
        self.assertIsNone(harness.vm("greeting").trapped)

    def test_failOpen(self):
        """
        Under fail_open a trapping filter is skipped and the request goes on
        through the other filters.
        """
        harness = self.harness(routeConfig(
            entry("hostcalls", "request_headers trap boom", extra="failure_policy: fail_open"), GREETING))
        result = self.respond(harness)
        self.assertEqual(result.status, 200)
        self.assertEqual(result.header(b"x-greeting"), b"hi")
        self.assertEqual(len(harness.upstream.seen), 1)

    def test_backoffFailClosed(self):
        """
        A filter that traps N times within T seconds is in backoff: its
        requests get 503 without calling it, until the backoff ends.
        """
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls("request_headers trap boom")),
                               trapPolicy=TrapPolicy(maxTraps=2, window=10, backoff=30))
        self.assertEqual([self.respond(harness).status for _ in range(3)], [500, 500, 503])
        self.assertEqual(harness.vm().trapCount, 2)
        self.assertTrue(logs.containing("in backoff for 30 s"))
        health = harness.plan.filterHealth()["hostcalls"]
        self.assertEqual((health["traps"], health["backoffUntil"]), (2, 30.0))
        harness.clock.advance(31)
        self.assertEqual(self.respond(harness).status, 500)

    def test_backoffFailOpen(self):
        """
        In backoff, a fail_open filter is skipped.
        """
        harness = self.harness(routeConfig(
            entry("hostcalls", "request_headers trap boom", extra="failure_policy: fail_open"), GREETING),
            trapPolicy=TrapPolicy(maxTraps=1, window=10, backoff=30))
        statuses = [self.respond(harness) for _ in range(2)]
        self.assertEqual([(r.status, r.header(b"x-greeting")) for r in statuses], [(200, b"hi")] * 2)
        self.assertEqual(harness.vm().trapCount, 1)

    def test_trapInResponseBody(self):
        """
        A trap after the response started leaves the body flowing and is
        logged; the instance is replaced for the next request.
        """
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls("response_body trap late")))
        result = self.respond(harness)
        self.assertEqual((result.status, result.body), (200, b"upstream body"))
        self.assertTrue(logs.containing("trapped in on_response_body"))

    def test_memoryCap(self):
        """
        Growing memory past the cap fails inside the guest, which traps;
        the request gets 500.
        """
        harness = self.harness(routeConfig(hostcalls("request_headers grow_memory 64")),
                               limits=Limits(maxMemoryBytes=16 * 1024 * 1024, callDeadline=5.0))
        self.assertEqual(self.respond(harness).status, 500)


class HostileArgumentsMixin(RuntimeMixin):
    """
    Bad pointers, sizes and enums get statuses, never traps.
    """

    CALLS = ("log", "get_header", "add_header", "get_body", "set_body", "get_property", "set_shared",
             "get_shared", "dispatch", "local_response", "get_headers")

    def test_badPointers(self):
        """
        A pointer outside memory is INVALID_MEMORY_ACCESS (6) for every
        hostcall that reads or writes guest memory.
        """
        harness = self.harness(routeConfig(hostcalls(
            "; ".join("request_headers bad_pointer " + call for call in self.CALLS) + ";"
            " response_headers report_header")))
        result = self.respond(harness)
        self.assertEqual(result.status, 200)
        self.assertEqual(report(result), ["bad_pointer {}=status:6".format(c) for c in self.CALLS])

    def test_badSizes(self):
        """
        A huge length from a valid pointer is INVALID_MEMORY_ACCESS too
        (except for C{get_body}, where it is the C{max_size} the spec
        clips: there the missing body answers NOT_FOUND).
        """
        harness = self.harness(routeConfig(hostcalls(
            "; ".join("request_headers bad_size " + call for call in self.CALLS) + ";"
            " response_headers report_header")))
        result = self.respond(harness)
        self.assertEqual(report(result), ["bad_size {}=status:{}".format(c, 1 if c == "get_body" else 6)
                                          for c in self.CALLS])

    def test_badEnums(self):
        """
        Unknown enumeration values are BAD_ARGUMENT (2).
        """
        calls = ("get_header", "get_body", "log", "define_metric", "continue_stream")
        harness = self.harness(routeConfig(hostcalls(
            "; ".join("request_headers bad_enum " + call for call in calls) + "; response_headers report_header")))
        self.assertEqual(report(self.respond(harness)), ["bad_enum {}=status:2".format(c) for c in calls])


class DeadlineTests(RuntimeMixin, SynchronousTestCase):
    """
    A runaway guest call is interrupted by the CPU deadline (wasmtime; wasmer
    cannot interrupt a guest) and handled as a trap.
    """

    runtimeName = "wasmtime"

    def test_loopInterrupted(self):
        """
        A filter looping forever in on_request_headers is stopped after the
        deadline; the request gets 500 and the next request runs on a fresh
        instance.
        """
        logs = LogCapture(self)
        harness = self.harness(routeConfig(
            entry("hostcalls", "request_headers loop"), GREETING),
            limits=Limits(callDeadline=0.2))
        self.assertEqual(self.respond(harness).status, 500)
        self.assertTrue(logs.containing("CPU deadline"))
        self.assertEqual(harness.vm().trapped.kind, "deadline")


bothRuntimes(TrapsMixin, globals())
bothRuntimes(HostileArgumentsMixin, globals())
