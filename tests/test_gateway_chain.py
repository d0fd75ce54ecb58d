"""
Tests for L{twistgate.gateway.chain}: plans from configurations (combined
service and route chains, disabled filters, the same filter twice, rejected
configurations) with real filters on both runtimes.
"""

import gc
import os
import shutil
import weakref

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistgate.config.errors import ConfigError
from twistgate.config.filters import discoverFilters
from twistgate.config.loader import loadConfigText
from twistgate.gateway.chain import ChainPlanner
from twistgate.gateway.filters import FilterRegistry, UnknownFilter
from twistgate.proxywasm.constants import LogLevel
from twistgate.proxywasm.metrics import MetricStore
from twistgate.proxywasm.vm import IFilterObserver
from twistgate.wasm.interfaces import Limits
from twistgate.wasm.registry import getRuntime
from twistgate.web.metrics import GatewayMetrics

from tests.proxywasm_harness import (
    FILTERS,
    RuntimeMixin,
    bothRuntimes,
    entry,
    hostcalls,
    routeConfig,
)

MIB = 1024 * 1024
GREETING_YAML = "- name: greeting\n  config:\n    my_greeting: Hello from Kong using WebAssembly!\n"


def appends(value: str, **kwargs) -> str:
    """
    A hostcalls entry that appends C{X-Proxy-Wasm: value} to responses.
    """
    return hostcalls("response_headers add_header response x-proxy-wasm " + value, **kwargs)


class CompositionMixin(RuntimeMixin):
    """
    Which filters run, in which order.
    """

    def test_serviceThenRoute(self):
        """
        The service chain runs before the route chain; a disabled filter
        does not run.
        """
        harness = self.harness(routeConfig(appends("route"), appends("off", enabled=False),
                                           serviceEntries=(appends("service"),)))
        result = self.respond(harness)
        self.assertEqual(result.headerValues(b"x-proxy-wasm"), [b"service", b"route"])

    def test_disabledChain(self):
        """
        A disabled chain contributes nothing; the other chain still runs.
        """
        text = routeConfig(appends("route"), serviceEntries=(appends("service"),)).replace(
            "      - name: service-chain\n", "      - name: service-chain\n        enabled: false\n")
        harness = self.harness(text)
        self.assertFalse(harness.config.filterChains[-1].enabled and harness.config.filterChains[0].enabled)
        self.assertEqual(self.respond(harness).headerValues(b"x-proxy-wasm"), [b"route"])

    def test_sameFilterTwice(self):
        """
        One filter used twice with different configurations gets two root
        contexts on one instance, each with its own configuration.
        """
        harness = self.harness(routeConfig(appends("one"), appends("two")))
        result = self.respond(harness)
        self.assertEqual(result.headerValues(b"x-proxy-wasm"), [b"one", b"two"])
        vm = harness.vm()
        self.assertEqual(len(vm.roots), 2)
        self.assertEqual(list(harness.plan.vms), ["hostcalls"])

    def test_noFilters(self):
        """
        A request whose route and service have no enabled filters gets no
        chain.
        """
        harness = self.harness(routeConfig(appends("off", enabled=False)))
        exchange, _ = harness.exchange()
        self.assertIsNone(harness.plan.chainFor(exchange))

    def test_seedWalkthrough(self):
        """
        The greeting filter configured with C{my_greeting} adds
        C{X-Greeting} to responses.
        """
        harness = self.harness(routeConfig(GREETING_YAML))
        result = self.respond(harness)
        self.assertEqual(result.header(b"x-greeting"), b"Hello from Kong using WebAssembly!")

    def test_lifecycleOrder(self):
        """
        Per request: context creation, request headers, response headers,
        response body ending with end of stream, then done, log, delete.
        """
        from tests.proxywasm_harness import LogCapture
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls(
            "request_headers log info step:request_headers; response_headers log info step:response_headers;"
            " response_body log info step:response_body; done log info step:done; log log info step:log;"
            " delete log info step:delete")))
        self.respond(harness)
        steps = [m.split("step:")[1] for m in logs.messages("twistgate.filter.hostcalls") if "step:" in m]
        self.assertEqual(steps, ["request_headers", "response_headers", "response_body", "done", "log",
                                 "delete"])

    def test_logLevel(self):
        """
        Guest logs below the planner's log level are dropped (C{proxy_log}
        still answers OK); C{proxy_get_log_level} answers the level.
        """
        from tests.proxywasm_harness import LogCapture, report
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls(
            "request_headers log debug quiet-debug; request_headers log info quiet-info;"
            " request_headers log warn loud-warn; request_headers log critical loud-critical;"
            " request_headers get_log_level; response_headers report_header")))
        harness.plan.stop()
        harness.planner.logLevel = LogLevel.WARN
        harness.plan = harness.planner.build(harness.config)
        self.addCleanup(harness.plan.stop)
        result = self.respond(harness)
        self.assertEqual(report(result), ["log debug=ok", "log info=ok", "log warn=ok", "log critical=ok",
                                          "get_log_level=3"])
        messages = " ".join(logs.messages("twistgate.filter.hostcalls"))
        self.assertIn("loud-warn", messages)
        self.assertIn("loud-critical", messages)
        self.assertNotIn("quiet", messages)

    def test_phaseObserver(self):
        """
        The planner's phase observer is told the time of each callback.
        """
        observed = []
        harness = self.harness(routeConfig(appends("x")))
        harness.planner.phaseObserver = lambda *args: observed.append(args)
        harness.plan = harness.planner.build(harness.config)
        self.addCleanup(harness.plan.stop)
        self.respond(harness)
        names = [name for filterName, name, seconds in observed if filterName == "hostcalls"]
        self.assertIn("proxy_on_request_headers", names)
        self.assertIn("proxy_on_log", names)
        self.assertTrue(all(seconds >= 0 for _, _, seconds in observed))

    def test_stopEndsRootContexts(self):
        """
        Stopping a plan ends each root context with on_done and on_delete.
        """
        observed = []
        harness = self.harness(routeConfig(appends("a"), appends("b")))
        harness.planner.phaseObserver = lambda name, callback, seconds: observed.append(callback)
        plan = harness.planner.build(harness.config)
        del observed[:]
        plan.stop()
        self.assertEqual(observed, ["proxy_on_done", "proxy_on_delete"] * 2)
        plan.stop()
        self.assertEqual(len(observed), 4)

    def test_rejectedConfiguration(self):
        """
        A filter whose on_configure returns false fails the plan with a
        line naming the filter and its place in the configuration.
        """
        error = self.assertRaises(ConfigError, self.harness, routeConfig(
            appends("fine"), hostcalls("configure return 0")))
        self.assertEqual(error.errors, [
            'test.yml: filter_chains[0].filters[1]: filter "hostcalls" rejected its configuration'
            ' (on_configure returned false)'])


bothRuntimes(CompositionMixin, globals())


@implementer(IFilterObserver)
class RecordingObserver:
    """
    Records what it is told, as C{(event, filter, *arguments)}.
    """

    def __init__(self):
        self.events = []

    def observeFilterPhase(self, filter, phase, seconds):
        self.events.append(("phase", filter, phase))

    def filterTrapped(self, filter, kind):
        self.events.append(("trapped", filter, kind))

    def filterRecycled(self, filter):
        self.events.append(("recycled", filter))

    def setInstanceMemory(self, filter, size):
        self.events.append(("memory", filter, size))

    def named(self, event):
        return [e[1:] for e in self.events if e[0] == event]


class ObserverMixin(RuntimeMixin):
    """
    The planner's L{IFilterObserver} hears of phases, traps, recycles and
    instance memory.
    """

    def observedHarness(self, configText, **kwargs):
        observer = RecordingObserver()
        harness = self.harness(configText, **kwargs)
        harness.planner.observer = observer
        harness.plan.stop()
        harness.plan = harness.planner.build(harness.config)
        self.addCleanup(harness.plan.stop)
        return harness, observer

    def test_metricsAreAnObserver(self):
        """
        L{GatewayMetrics} provides L{IFilterObserver}.
        """
        self.assertTrue(verifyObject(IFilterObserver, GatewayMetrics(MetricStore())))

    def test_memoryAfterStart(self):
        """
        The instance's memory size is reported once it starts, not again
        after requests that leave it as it is; callbacks are reported as
        phases.
        """
        harness, observer = self.observedHarness(routeConfig(appends("x")))
        memory = observer.named("memory")
        self.assertEqual(len(memory), 1)
        self.assertEqual(memory[0][0], "hostcalls")
        self.assertGreater(memory[0][1], 0)
        self.assertEqual(memory[0][1], harness.vm().instance.memorySize())
        self.respond(harness)
        self.respond(harness)
        self.assertEqual(observer.named("memory"), memory)
        self.assertIn(("hostcalls", "proxy_on_request_headers"), observer.named("phase"))

    def test_memoryAfterGrowingRequests(self):
        """
        A request that grows the instance's memory reports its new size.
        """
        harness, observer = self.observedHarness(routeConfig(hostcalls("request_headers grow_memory 1")))
        [(_, started)] = observer.named("memory")
        self.respond(harness)
        self.respond(harness)
        self.assertEqual(observer.named("memory"), [("hostcalls", started),
                                                    ("hostcalls", started + MIB),
                                                    ("hostcalls", started + 2 * MIB)])

    def test_trapAndRecycle(self):
        """
        A trap is reported with its kind; the replacement instance, made
        before the next request, is reported as a recycle, and its memory.
        """
        harness, observer = self.observedHarness(routeConfig(hostcalls("request_headers trap boom")))
        self.assertEqual(self.respond(harness).status, 500)
        self.assertEqual(observer.named("trapped"), [("hostcalls", "trap")])
        self.assertEqual(observer.named("recycled"), [])
        del observer.events[:]
        self.assertEqual(self.respond(harness).status, 500)
        self.assertEqual(observer.named("recycled"), [("hostcalls",)])
        self.assertEqual(observer.named("trapped"), [("hostcalls", "trap")])
        self.assertEqual(len(observer.named("memory")), 1)

    def test_observerFailureIsLogged(self):
        """
        An observer that raises does not fail the request.
        """
        from tests.proxywasm_harness import LogCapture
        logs = LogCapture(self)
        harness, observer = self.observedHarness(routeConfig(
            hostcalls("request_headers grow_memory 1; response_headers add_header response x-proxy-wasm x")))

        def broken(filter, size):
            raise RuntimeError("observer broke")

        observer.setInstanceMemory = broken
        self.assertEqual(self.respond(harness).headerValues(b"x-proxy-wasm"), [b"x"])
        self.assertTrue(logs.containing("observer failed on setInstanceMemory"))
        self.flushLoggedErrors(RuntimeError)


bothRuntimes(ObserverMixin, globals())


class GuestIsolationMixin(RuntimeMixin):
    """
    One guest never starts while another guest runs, so a guest call's CPU
    deadline counts only its own time.
    """

    def test_queueReadyAfterTheEnqueueingFilter(self):
        """
        A filter enqueueing into another filter's queue finishes its
        callback before the other filter's C{on_queue_ready} runs.
        """
        from tests.proxywasm_harness import LogCapture
        directory = self.mktemp()
        os.makedirs(directory)
        for suffix in (".wasm", ".meta.json"):
            shutil.copy(os.path.join(FILTERS, "hostcalls" + suffix),
                        os.path.join(directory, "producer" + suffix))
            shutil.copy(os.path.join(FILTERS, "hostcalls" + suffix), directory)
        logs = LogCapture(self)
        harness = self.harness(routeConfig(
            hostcalls("configure register_queue q; queue_ready dequeue q; queue_ready log info step:ready"),
            entry("producer", "request_headers resolve_queue hostcalls q; request_headers enqueue q item;"
                  " request_headers log info step:enqueued")),
            filtersPath=directory)
        self.assertEqual(self.respond(harness).status, 200)
        steps = [m.split("step:")[1] for m in logs.messages("twistgate.filter.") if "step:" in m]
        self.assertEqual(steps, ["enqueued", "ready"])


bothRuntimes(GuestIsolationMixin, globals())


class StepMixin(RuntimeMixin):
    """
    When a step ends: at once when no filter pauses and no instance is
    busy, else after the guest call in progress returns.
    """

    STEPS = ("request_headers log info step:headers; response_headers log info step:response;"
             " response_body log info step:body; done log info step:done; log log info step:log;"
             " delete log info step:delete")

    def steps(self, logs):
        return [m.split("step:")[1] for m in logs.messages("twistgate.filter.") if "step:" in m]

    def whileLogging(self, text, work):
        """
        Call C{work()} once, from within the guest call that logs C{text}
        (its instance is then busy).
        """
        from twisted.logger import globalLogPublisher

        called = []

        def observe(event):
            if not called and text in event.get("text", ""):
                called.append(True)
                work()

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_stepsEndAtOnce(self):
        """
        Each step of filters that neither pause nor wait has ended when it
        returns; C{finish} has run C{on_done}, C{on_log} and C{on_delete}
        when it returns.
        """
        from tests.proxywasm_harness import LogCapture
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls(self.STEPS)))
        exchange, _ = harness.exchange()
        run = harness.plan.chainFor(exchange)
        self.assertIsNone(self.successResultOf(run.requestHeaders()))
        exchange.responseStatus, exchange.responseHeaders = 200, [(b"content-length", b"2")]
        self.assertIsNone(self.successResultOf(run.responseHeaders()))
        self.assertEqual(self.successResultOf(run.responseBody(b"ok", True)), b"ok")
        run.finish()
        self.assertEqual(self.steps(logs), ["headers", "response", "body", "done", "log", "delete"])

    def test_busyInstanceDelaysStep(self):
        """
        A step reaching an instance busy with another request's guest call
        goes on once that call returns.
        """
        from tests.proxywasm_harness import LogCapture
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls("request_headers log info step:headers")))
        first = harness.plan.chainFor(harness.exchange()[0])
        second = harness.plan.chainFor(harness.exchange()[0])
        harness.runs.extend([first, second])
        started = []
        self.whileLogging("step:headers", lambda: started.append(second.requestHeaders()))
        self.successResultOf(first.requestHeaders())
        [step] = started
        self.assertIsNone(self.successResultOf(step))
        self.assertEqual(self.steps(logs), ["headers", "headers"])
        self.assertIsNot(second.members[0].context, first.members[0].context)

    def test_finishDuringGuestCall(self):
        """
        C{finish} called while the instance runs a guest call ends the
        request's contexts once that call returns.
        """
        from tests.proxywasm_harness import LogCapture
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls(
            "request_headers log info step:headers; request_headers log info step:after;"
            " done log info step:done; delete log info step:delete")))
        first = harness.plan.chainFor(harness.exchange()[0])
        second = harness.plan.chainFor(harness.exchange()[0])
        harness.runs.append(first)
        self.successResultOf(second.requestHeaders())
        del logs.events[:]
        seen = []
        self.whileLogging("step:headers", lambda: (second.finish(), seen.extend(self.steps(logs))))
        self.successResultOf(first.requestHeaders())
        self.assertEqual(seen, ["headers"])
        self.assertEqual(self.steps(logs), ["headers", "after", "done", "delete"])
        self.assertIsNone(second.members[0].context)


bothRuntimes(StepMixin, globals())


class ReleaseMixin(RuntimeMixin):
    """
    Instances are released, so that they are collected (on wasmer, whose
    host functions live in Rust, an unreleased instance leaks).
    """

    def assertCollected(self, references):
        gc.collect()
        alive = [reference for reference in references if reference() is not None]
        self.assertEqual(alive, [])

    def test_reloadedPlansCollected(self):
        """
        The instances of plans that were stopped (as after each reload) are
        collected.
        """
        harness = self.harness(routeConfig(appends("x"), GREETING_YAML))
        references = []
        for reload in range(20):
            plan = harness.planner.build(harness.config)
            references.extend(weakref.ref(vm.instance) for vm in plan.vms.values())
            run = plan.chainFor(harness.exchange()[0])
            self.successResultOf(run.requestHeaders())
            run.finish()
            plan.stop()
            del plan, run
        self.assertEqual(len(references), 40)
        self.assertCollected(references)
        self.assertEqual(self.respond(harness).headerValues(b"x-proxy-wasm"), [b"x"])

    def test_trappedInstanceCollected(self):
        """
        An instance replaced after a trap is collected.
        """
        harness = self.harness(routeConfig(hostcalls("request_headers trap boom")))
        references = []
        for request in range(5):
            references.append(weakref.ref(harness.vm().instance))
            self.assertEqual(self.respond(harness).status, 500)
        self.assertEqual(harness.vm().generation, 5)
        self.assertCollected(references[:-1])


bothRuntimes(ReleaseMixin, globals())


class DeadlineObserverTests(RuntimeMixin, SynchronousTestCase):
    """
    A guest call stopped at the CPU deadline (wasmtime) is reported as a
    trap of kind C{deadline}.
    """

    runtimeName = "wasmtime"

    def test_deadlineKind(self):
        harness = self.harness(routeConfig(hostcalls("request_headers loop")),
                               limits=Limits(callDeadline=0.05))
        observer = RecordingObserver()
        harness.planner.observer = observer
        harness.plan.stop()
        harness.plan = harness.planner.build(harness.config)
        self.addCleanup(harness.plan.stop)
        self.assertEqual(self.respond(harness).status, 500)
        self.assertEqual(observer.named("trapped"), [("hostcalls", "deadline")])


class RegistryTests(SynchronousTestCase):
    """
    L{FilterRegistry} compiles each module once.
    """

    def setUp(self):
        self.filters = discoverFilters(FILTERS)
        self.registry = FilterRegistry(getRuntime("wasmtime"), self.filters)

    def test_compiledOnce(self):
        self.assertIs(self.registry.module("greeting"), self.registry.module("greeting"))

    def test_unknown(self):
        self.assertRaises(UnknownFilter, self.registry.module, "nope")

    def test_unknownFilterInPlan(self):
        """
        A chain naming a filter that is not installed fails the plan, with a
        line per entry.
        """
        from twisted.internet import task
        config = loadConfigText(routeConfig(appends("x"), appends("y")), "test.yml", self.filters)
        filters = {name: f for name, f in self.filters.items() if name != "hostcalls"}
        planner = ChainPlanner(getRuntime("wasmtime"), filters, task.Clock(), None)
        error = self.assertRaises(ConfigError, planner.build, config)
        self.assertEqual(error.errors, ['test.yml: filter_chains[0].filters[0]: no such filter "hostcalls"',
                                        'test.yml: filter_chains[0].filters[1]: no such filter "hostcalls"'])
