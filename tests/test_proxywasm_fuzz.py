"""
Random arguments thrown at every implemented hostcall (hypothesis), on both
runtimes, with a real instance of the C{hostcalls} filter inside a request:
every outcome is a status code; nothing raises and nothing traps.
"""

from hypothesis import HealthCheck, given, settings, strategies as st

from twistgate.proxywasm.constants import Status
from twistgate.proxywasm.hostcalls import HOSTCALLS, bindHostcalls

from tests.proxywasm_harness import LogCapture, RuntimeMixin, bothRuntimes, hostcalls, routeConfig

_I32 = st.one_of(
    st.integers(min_value=-2 ** 31, max_value=2 ** 31 - 1),
    st.sampled_from([0, 1, 2, 7, 8, 99, 1024, 65536, 0x7FFFFFFF, -1, -16]),
    st.integers(min_value=0, max_value=70000),
)
_I64 = st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1)
_STATUSES = {int(status) for status in Status}
_IMPLEMENTED = [hostcall for hostcall in HOSTCALLS if hostcall.method is not None]


class FuzzMixin(RuntimeMixin):
    """
    Hostcalls under random arguments.
    """

    def setUp(self):
        super().setUp()
        self.logs = LogCapture(self)
        self.addCleanup(self.assertNoHostBug)
        harness = self.harness(routeConfig(hostcalls("response_headers get_headers response")))
        exchange, _ = harness.exchange()
        exchange.requestBody = b"body"
        run = harness.plan.chainFor(exchange)
        self.successResultOf(run.requestHeaders())
        self.vm = harness.vm()
        self.context = run.members[0].context
        self.addCleanup(run.finish)
        functions, _ = bindHostcalls(self.vm.module.imports(), self.vm.hostcalls)
        imported = {f.name: f for f in functions}
        self.functions = {}
        for hostcall in _IMPLEMENTED:
            function = imported.get(hostcall.name)
            if function is None:
                from twistgate.wasm.interfaces import HostFunction
                from twistgate.proxywasm.hostcalls import _guard
                function = HostFunction("env", hostcall.name, hostcall.sig, _guard(
                    hostcall.name, getattr(self.vm.hostcalls, hostcall.method), True, self.vm))
            self.functions[hostcall.name] = function

    def assertNoHostBug(self):
        """
        No hostcall hit an unexpected host error (those answer
        INTERNAL_FAILURE and log a traceback).
        """
        self.assertEqual([m for m in self.logs.messages("twistgate.proxywasm.hostcalls")], [])

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([hostcall.name for hostcall in _IMPLEMENTED]), st.data())
    def test_randomArguments(self, name, data):
        """
        Whatever the arguments, the hostcall returns a known status.
        """
        if name in ("proxy_http_call", "proxy_set_tick_period_milliseconds", "proxy_close_stream",
                    "proxy_continue_stream", "proxy_continue_request", "proxy_continue_response",
                    "proxy_send_local_response"):
            return
        function = self.functions[name]
        args = [data.draw(_I64 if kind == "i64" else _I32) for kind in function.sig.params]
        previous = (self.vm.currentContext, self.vm.effectiveContext)
        self.vm.currentContext = self.vm.effectiveContext = self.context
        try:
            result = function.callable(*args)
        finally:
            self.vm.currentContext, self.vm.effectiveContext = previous
        self.assertIn(result, _STATUSES, "{}{}".format(name, tuple(args)))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(["proxy_http_call", "proxy_send_local_response", "proxy_continue_stream",
                            "proxy_close_stream", "proxy_set_tick_period_milliseconds"]), st.data())
    def test_flowHostcalls(self, name, data):
        """
        The hostcalls that change the request's flow answer a status for
        random arguments too (out-of-range pointers dominate).
        """
        function = self.functions[name]
        args = [data.draw(_I32) for _ in function.sig.params]
        if name == "proxy_set_tick_period_milliseconds":
            args = [data.draw(st.integers(min_value=0, max_value=2 ** 31 - 1))]
        previous = (self.vm.currentContext, self.vm.effectiveContext)
        self.vm.currentContext = self.vm.effectiveContext = self.context
        try:
            result = function.callable(*args)
        finally:
            self.vm.currentContext, self.vm.effectiveContext = previous
            self.context.root.setTickPeriod(0)
        self.assertIn(result, _STATUSES, "{}{}".format(name, tuple(args)))


bothRuntimes(FuzzMixin, globals())
