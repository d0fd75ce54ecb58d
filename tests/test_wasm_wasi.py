"""
Tests for L{twistgate.wasm.wasi} that do not depend on a runtime: the set of
functions and their signatures. The shim's behaviour through real guests is
tested on both runtimes in C{tests/test_wasm_runtime.py}.
"""

from twisted.trial.unittest import SkipTest, TestCase

from twistgate.wasm.interfaces import FuncSig
from twistgate.wasm.wasi import EFAULT, WASI_MODULES, WasiShim

PREVIEW1 = {
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get",
    "clock_time_get", "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get",
    "fd_fdstat_set_flags", "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size",
    "fd_filestat_set_times", "fd_pread", "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite",
    "fd_read", "fd_readdir", "fd_renumber", "fd_seek", "fd_sync", "fd_tell", "fd_write",
    "path_create_directory", "path_filestat_get", "path_filestat_set_times", "path_link",
    "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
    "path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get",
    "sock_accept", "sock_recv", "sock_send", "sock_shutdown",
}


class WasiFunctionSetTests(TestCase):
    """
    The shim offers all of preview1 under both module names.
    """

    def test_everyFunctionUnderBothNames(self):
        """
        Each preview1 function is offered once under each WASI module name.
        """
        functions = WasiShim().hostFunctions()
        for module in WASI_MODULES:
            names = [f.name for f in functions if f.module == module]
            self.assertEqual(sorted(names), sorted(PREVIEW1))

    def test_signaturesMatchWasmtime(self):
        """
        Every signature is the one wasmtime's own preview1 implementation
        declares.
        """
        try:
            import wasmtime
        except ImportError:
            raise SkipTest("wasmtime is not installed")
        engine = wasmtime.Engine()
        store = wasmtime.Store(engine)
        store.set_wasi(wasmtime.WasiConfig())
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        for function in WasiShim().hostFunctions():
            if function.module != "wasi_snapshot_preview1":
                continue
            funcType = linker.get(store, function.module, function.name).type(store)
            expected = FuncSig(
                tuple(str(t) for t in funcType.params), tuple(str(t) for t in funcType.results)
            )
            self.assertEqual(function.sig, expected, function.name)

    def test_unboundMemoryFaults(self):
        """
        A call that needs memory before the shim is bound returns EFAULT.
        """
        [fdWrite] = [
            f for f in WasiShim().hostFunctions()
            if (f.module, f.name) == ("wasi_snapshot_preview1", "fd_write")
        ]
        self.assertEqual(fdWrite.callable(1, 0, 1, 8), EFAULT)
