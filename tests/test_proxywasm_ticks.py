"""
Timers (C{proxy_set_tick_period_milliseconds}) through the C{hostcalls}
test filter on both runtimes, on a L{task.Clock}.
"""

from tests.proxywasm_harness import RuntimeMixin, bothRuntimes, hostcalls, report, routeConfig

READ_ROOT = "response_headers root_report; response_headers report_header"


class TicksMixin(RuntimeMixin):
    """
    Ticks per root context, re-armed after each tick.
    """

    def ticks(self, harness):
        return [item for item in report(self.respond(harness)) if item.startswith("tick=")]

    def test_periodicTicks(self):
        """
        A period set in on_configure makes C{on_tick} run every period.
        """
        harness = self.harness(routeConfig(hostcalls("configure set_tick_period 100; " + READ_ROOT)))
        harness.clock.advance(0.05)
        self.assertEqual(self.ticks(harness), [])
        for _ in range(10):
            harness.clock.advance(0.1)
        self.assertEqual(self.ticks(harness), ["tick={}".format(n) for n in range(1, 11)])

    def test_zeroCancels(self):
        """
        Setting the period to 0 in a tick stops the timer.
        """
        harness = self.harness(routeConfig(hostcalls(
            "configure set_tick_period 100; tick set_tick_period 0; " + READ_ROOT)))
        for _ in range(5):
            harness.clock.advance(0.1)
        self.assertEqual(self.ticks(harness), ["tick=1"])
        self.assertEqual(harness.clock.getDelayedCalls(), [])

    def test_perRootContext(self):
        """
        Two entries of the same filter tick independently, each on its own
        root context.
        """
        harness = self.harness(routeConfig(
            hostcalls("configure set_tick_period 100"), hostcalls("configure set_tick_period 300")))
        vm = harness.vm()
        for _ in range(6):
            harness.clock.advance(0.1)
        harness.clock.advance(0.05)
        self.assertEqual([root.ticks for root in vm.roots], [6, 2])

    def test_stopCancelsTimers(self):
        """
        Stopping the plan cancels its timers.
        """
        harness = self.harness(routeConfig(hostcalls("configure set_tick_period 100")))
        self.assertEqual(len(harness.clock.getDelayedCalls()), 1)
        harness.plan.stop()
        self.assertEqual(harness.clock.getDelayedCalls(), [])

    def test_trapInTickKeepsTicking(self):
        """
        A trap in on_tick is logged, the instance is replaced and ticking
        goes on; requests are unaffected.
        """
        harness = self.harness(routeConfig(hostcalls(
            "configure set_tick_period 100; tick trap tick-trap")))
        vm = harness.vm()
        harness.clock.advance(0.1)
        self.assertIsNotNone(vm.trapped)
        harness.clock.advance(0.1)
        self.assertEqual(vm.generation, 2)
        self.assertEqual(self.respond(harness).status, 200)


bothRuntimes(TicksMixin, globals())
