"""
Tests for the hostcall table of L{twistgate.proxywasm.hostcalls}: it lists
every hostcall of the Proxy-Wasm specification (0.1.0, 0.2.0, 0.2.1) with
its signature, and binds modules' imports.
"""

from twisted.trial.unittest import SynchronousTestCase

from twistgate.proxywasm.constants import Status
from twistgate.proxywasm.hostcalls import HOSTCALLS, HOSTCALLS_BY_NAME, Hostcalls, bindHostcalls
from twistgate.wasm.interfaces import FuncSig, ImportDesc

# The hostcall names of the specification's v0.1.0, v0.2.0 and v0.2.1
# READMEs, with their parameter counts (all results are one i32).
SPEC_HOSTCALLS = {
    "proxy_log": 3, "proxy_get_log_level": 1, "proxy_get_current_time_nanoseconds": 1,
    "proxy_set_tick_period_milliseconds": 1, "proxy_set_effective_context": 1, "proxy_done": 0,
    "proxy_call_foreign_function": 6, "proxy_get_buffer_bytes": 5, "proxy_set_buffer_bytes": 5,
    "proxy_get_buffer_status": 3, "proxy_get_header_map_pairs": 3, "proxy_set_header_map_pairs": 3,
    "proxy_get_header_map_size": 2, "proxy_get_header_map_value": 5,
    "proxy_add_header_map_value": 5, "proxy_replace_header_map_value": 5,
    "proxy_remove_header_map_value": 3, "proxy_get_property": 4, "proxy_set_property": 4,
    "proxy_continue_stream": 1, "proxy_close_stream": 1, "proxy_continue_request": 0,
    "proxy_continue_response": 0, "proxy_clear_route_cache": 0, "proxy_get_configuration": 2,
    "proxy_get_status": 3, "proxy_send_local_response": 8, "proxy_http_call": 10,
    "proxy_grpc_call": 12, "proxy_grpc_stream": 9, "proxy_grpc_send": 4, "proxy_grpc_cancel": 1,
    "proxy_grpc_close": 1, "proxy_get_shared_data": 5, "proxy_set_shared_data": 5,
    "proxy_register_shared_queue": 3, "proxy_resolve_shared_queue": 5,
    "proxy_enqueue_shared_queue": 3, "proxy_dequeue_shared_queue": 3, "proxy_define_metric": 4,
    "proxy_increment_metric": 2, "proxy_record_metric": 2, "proxy_get_metric": 2,
}


class TableTests(SynchronousTestCase):
    """
    The table is complete and consistent.
    """

    def test_everySpecHostcall(self):
        """
        Every spec hostcall has exactly one row, and no row is invented.
        """
        names = [hostcall.name for hostcall in HOSTCALLS]
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(set(names), set(SPEC_HOSTCALLS))

    def test_signatures(self):
        """
        Each row's signature has the spec's parameter count and one i32
        result; only the metric values are i64.
        """
        for name, count in SPEC_HOSTCALLS.items():
            sig = HOSTCALLS_BY_NAME[name].sig
            self.assertEqual(len(sig.params), count, name)
            self.assertEqual(sig.results, ("i32",), name)
            wide = [i for i, kind in enumerate(sig.params) if kind == "i64"]
            expected = [1] if name in ("proxy_increment_metric", "proxy_record_metric") else []
            self.assertEqual(wide, expected, name)

    def test_implementations(self):
        """
        Each row names an existing method, or says what it answers instead
        (gRPC and foreign functions).
        """
        unsupported = set()
        for hostcall in HOSTCALLS:
            if hostcall.method is None:
                unsupported.add(hostcall.name)
                self.assertNotEqual(hostcall.unsupportedStatus, Status.OK)
            else:
                self.assertTrue(callable(getattr(Hostcalls, hostcall.method)), hostcall.name)
        self.assertEqual(unsupported, {"proxy_grpc_call", "proxy_grpc_stream", "proxy_grpc_send",
                                       "proxy_grpc_cancel", "proxy_grpc_close",
                                       "proxy_call_foreign_function"})

    def test_versions(self):
        """
        The 0.1.0-only and 0.2.x-only hostcalls are marked so.
        """
        self.assertEqual(HOSTCALLS_BY_NAME["proxy_get_configuration"].versions, {"0.1.0"})
        self.assertEqual(HOSTCALLS_BY_NAME["proxy_continue_stream"].versions, {"0.2.0", "0.2.1"})
        self.assertEqual(HOSTCALLS_BY_NAME["proxy_get_log_level"].versions, {"0.2.1"})
        self.assertEqual(HOSTCALLS_BY_NAME["proxy_log"].versions, {"0.1.0", "0.2.0", "0.2.1"})


class CapabilityTableTests(SynchronousTestCase):
    """
    The README's capability table names every hostcall of the table.
    """

    def test_everyHostcallDocumented(self):
        import os
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        missing = [hostcall.name for hostcall in HOSTCALLS if "`{}`".format(hostcall.name) not in text]
        self.assertEqual(missing, [])


class _FakeVM:
    filterName = "fake"


class BindTests(SynchronousTestCase):
    """
    L{bindHostcalls} makes one host function per C{env} import.
    """

    def bind(self, *imports):
        return bindHostcalls(imports, Hostcalls(_FakeVM()))

    def test_unknownImportAnswersUnimplemented(self):
        """
        An C{env} import the host does not know still gets a function, which
        answers UNIMPLEMENTED, and is reported by name.
        """
        functions, unknown = self.bind(ImportDesc("env", "proxy_frobnicate", FuncSig(("i32",), ("i32",))))
        self.assertEqual([f.name for f in functions], ["proxy_frobnicate"])
        self.assertEqual(functions[0].callable(1), Status.UNIMPLEMENTED)
        self.assertEqual(len(unknown), 1)
        self.assertIn("env.proxy_frobnicate", unknown[0])

    def test_mismatchedSignature(self):
        """
        A known hostcall imported with another type is linked with the
        declared type and answers UNIMPLEMENTED.
        """
        sig = FuncSig(("i32", "i32"), ("i32",))
        functions, unknown = self.bind(ImportDesc("env", "proxy_log", sig))
        self.assertEqual(functions[0].sig, sig)
        self.assertEqual(functions[0].callable(1, 2), Status.UNIMPLEMENTED)
        self.assertIn("expected", unknown[0])

    def test_continueRequestWithoutResult(self):
        """
        0.1.0 modules may import C{proxy_continue_request} without a result.
        """
        sig = FuncSig((), ())
        functions, unknown = self.bind(ImportDesc("env", "proxy_continue_request", sig))
        self.assertEqual(unknown, [])
        self.assertEqual(functions[0].sig, sig)

    def test_grpcAnswersAcceptedStatus(self):
        """
        gRPC hostcalls answer statuses the Rust SDK accepts for them.
        """
        call = HOSTCALLS_BY_NAME["proxy_grpc_call"]
        cancel = HOSTCALLS_BY_NAME["proxy_grpc_cancel"]
        functions, _ = self.bind(ImportDesc("env", call.name, call.sig),
                                 ImportDesc("env", cancel.name, cancel.sig))
        self.assertEqual(functions[0].callable(*range(12)), Status.INTERNAL_FAILURE)
        self.assertEqual(functions[1].callable(1), Status.NOT_FOUND)

    def test_otherModulesIgnored(self):
        functions, unknown = self.bind(ImportDesc("wasi_snapshot_preview1", "fd_write",
                                                  FuncSig(("i32",) * 4, ("i32",))))
        self.assertEqual((functions, unknown), ([], []))
