"""
A WASI preview1 shim for Proxy-Wasm filters, written once above the runtimes.

It offers what filters built with TinyGo, Go (wasip1), Rust, AssemblyScript
and wasi-libc import, under both C{wasi_snapshot_preview1} and
C{wasi_unstable}:
  - C{fd_write} to stdout and stderr goes to a log sink (stdout at level
    C{"info"}, stderr at C{"error"}, one trailing newline stripped);
  - clocks (realtime, monotonic, nanosecond resolution), C{random_get} from
    L{os.urandom}, C{sched_yield}, C{poll_oneoff} (no events);
  - environment variables and arguments only as configured for the filter,
    never the gateway's own;
  - C{proc_exit} ends the guest call with a L{WasiExit} trap;
  - every file system and socket call exists with its preview1 signature
    and is refused with an errno (there are no files and no preopened
    directories).

A pointer outside the guest's memory makes the call return C{EFAULT}; it
never raises.
"""

import os
import struct
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from twistgate.wasm.interfaces import FuncSig, GuestMemoryError, HostFunction, WasmTrap
from twistgate.wasm.memory import GuestMemory, u32

WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")

ESUCCESS = 0
EBADF = 8
EFAULT = 21
EINVAL = 28
ENOENT = 44
ENOSYS = 52
ENOTSUP = 58

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
RIGHT_FD_WRITE = 64
STDOUT = 1
STDERR = 2
MAX_RANDOM_BYTES = 1024 * 1024
_IOVEC = struct.Struct("<II")


class WasiExit(WasmTrap):
    """
    The guest called C{proc_exit}.

    @ivar exitCode: the code it passed.
    """

    def __init__(self, exitCode: int) -> None:
        super().__init__("guest called proc_exit({})".format(exitCode), kind="exit")
        self.exitCode = exitCode


def _discardLog(level: str, text: str) -> None:
    """
    The default log sink: drop guest output.
    """


def _encodeStrings(strings: Sequence[str]) -> List[bytes]:
    return [s.encode("utf-8") + b"\0" for s in strings]


# (name, parameter types, errno returned without looking at the arguments)
_REFUSED = (
    ("fd_advise", ("i32", "i64", "i64", "i32"), EBADF),
    ("fd_allocate", ("i32", "i64", "i64"), EBADF),
    ("fd_close", ("i32",), EBADF),
    ("fd_datasync", ("i32",), EBADF),
    ("fd_fdstat_set_flags", ("i32", "i32"), ENOSYS),
    ("fd_fdstat_set_rights", ("i32", "i64", "i64"), EBADF),
    ("fd_filestat_get", ("i32", "i32"), EBADF),
    ("fd_filestat_set_size", ("i32", "i64"), EBADF),
    ("fd_filestat_set_times", ("i32", "i64", "i64", "i32"), EBADF),
    ("fd_pread", ("i32", "i32", "i32", "i64", "i32"), EBADF),
    ("fd_prestat_get", ("i32", "i32"), EBADF),
    ("fd_prestat_dir_name", ("i32", "i32", "i32"), ENOSYS),
    ("fd_pwrite", ("i32", "i32", "i32", "i64", "i32"), EBADF),
    ("fd_read", ("i32", "i32", "i32", "i32"), ENOSYS),
    ("fd_readdir", ("i32", "i32", "i32", "i64", "i32"), EBADF),
    ("fd_renumber", ("i32", "i32"), EBADF),
    ("fd_seek", ("i32", "i64", "i32", "i32"), EBADF),
    ("fd_sync", ("i32",), EBADF),
    ("fd_tell", ("i32", "i32"), EBADF),
    ("path_create_directory", ("i32", "i32", "i32"), EBADF),
    ("path_filestat_get", ("i32", "i32", "i32", "i32", "i32"), EBADF),
    ("path_filestat_set_times", ("i32", "i32", "i32", "i32", "i64", "i64", "i32"), EBADF),
    ("path_link", ("i32", "i32", "i32", "i32", "i32", "i32", "i32"), EBADF),
    (
        "path_open",
        ("i32", "i32", "i32", "i32", "i32", "i64", "i64", "i32", "i32"),
        ENOENT,
    ),
    ("path_readlink", ("i32", "i32", "i32", "i32", "i32", "i32"), EBADF),
    ("path_remove_directory", ("i32", "i32", "i32"), EBADF),
    ("path_rename", ("i32", "i32", "i32", "i32", "i32", "i32"), EBADF),
    ("path_symlink", ("i32", "i32", "i32", "i32", "i32"), EBADF),
    ("path_unlink_file", ("i32", "i32", "i32"), EBADF),
    ("proc_raise", ("i32",), ENOSYS),
    ("sock_accept", ("i32", "i32", "i32"), EBADF),
    ("sock_recv", ("i32", "i32", "i32", "i32", "i32", "i32"), EBADF),
    ("sock_send", ("i32", "i32", "i32", "i32", "i32"), EBADF),
    ("sock_shutdown", ("i32", "i32"), EBADF),
)


class WasiShim:
    """
    The WASI functions for one instance.

    The instance's memory exists only once the instance does, so the shim
    reaches it through C{memoryProvider}, or through L{bindInstance} after
    instantiation.

    @ivar environ: the environment variables the guest sees.
    @ivar args: the arguments the guest sees.
    """

    def __init__(
        self,
        memoryProvider: Optional[Callable[[], GuestMemory]] = None,
        log: Callable[[str, str], None] = _discardLog,
        environ: Optional[Mapping[str, str]] = None,
        args: Sequence[str] = (),
        realtime: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """
        @param memoryProvider: returns the guest's L{GuestMemory}.
        @param log: called as C{log(level, text)} for each C{fd_write} to
            stdout (C{"info"}) or stderr (C{"error"}).
        @param environ: the filter's configured environment (default none).
        @param args: the filter's configured arguments (default none).
        @param realtime: nanoseconds since the epoch.
        @param monotonic: nanoseconds on a monotonic clock.
        """
        self._memoryProvider = memoryProvider
        self._log = log
        self.environ = dict(environ or {})
        self.args = list(args)
        self._clocks: Dict[int, Callable[[], int]] = {
            CLOCK_REALTIME: realtime,
            CLOCK_MONOTONIC: monotonic,
        }

    def bindInstance(self, instance) -> None:
        """
        Use C{instance}'s memory from now on.

        @param instance: an L{twistgate.wasm.interfaces.IWasmInstance}.
        """
        memory = GuestMemory(instance)
        self._memoryProvider = lambda: memory

    def _memory(self) -> GuestMemory:
        if self._memoryProvider is None:
            raise GuestMemoryError("WASI call before the shim was bound to an instance")
        return self._memoryProvider()

    def hostFunctions(self) -> List[HostFunction]:
        """
        @return: every preview1 function, once per WASI module name.
        """
        implemented = [
            ("args_get", ("i32", "i32"), self.argsGet),
            ("args_sizes_get", ("i32", "i32"), self.argsSizesGet),
            ("environ_get", ("i32", "i32"), self.environGet),
            ("environ_sizes_get", ("i32", "i32"), self.environSizesGet),
            ("clock_res_get", ("i32", "i32"), self.clockResGet),
            ("clock_time_get", ("i32", "i64", "i32"), self.clockTimeGet),
            ("fd_fdstat_get", ("i32", "i32"), self.fdFdstatGet),
            ("fd_write", ("i32", "i32", "i32", "i32"), self.fdWrite),
            ("poll_oneoff", ("i32", "i32", "i32", "i32"), self.pollOneoff),
            ("random_get", ("i32", "i32"), self.randomGet),
            ("sched_yield", (), self.schedYield),
        ]
        functions = []
        for module in WASI_MODULES:
            for name, params, implementation in implemented:
                functions.append(
                    HostFunction(module, name, FuncSig(params, ("i32",)), _faultSafe(implementation))
                )
            for name, params, errno in _REFUSED:
                functions.append(
                    HostFunction(module, name, FuncSig(params, ("i32",)), _refusal(errno))
                )
            functions.append(HostFunction(module, "proc_exit", FuncSig(("i32",)), self.procExit))
        return functions

    def fdWrite(self, fd: int, iovs: int, iovsLength: int, writtenPointer: int) -> int:
        """
        C{fd_write}: log what the guest writes to stdout or stderr.
        """
        if fd not in (STDOUT, STDERR):
            return EBADF
        memory = self._memory()
        vectors = memory.readBytes(u32(iovs), 8 * u32(iovsLength))
        data = b"".join(
            memory.readBytes(pointer, length) for pointer, length in _IOVEC.iter_unpack(vectors)
        )
        memory.writeU32(u32(writtenPointer), len(data))
        if data:
            text = data.decode("utf-8", errors="replace")
            if text.endswith("\n"):
                text = text[:-1]
            self._log("info" if fd == STDOUT else "error", text)
        return ESUCCESS

    def _sizesGet(self, strings: Sequence[bytes], countPointer: int, sizePointer: int) -> int:
        memory = self._memory()
        memory.writeU32(u32(countPointer), len(strings))
        memory.writeU32(u32(sizePointer), sum(len(s) for s in strings))
        return ESUCCESS

    def _stringsGet(self, strings: Sequence[bytes], pointers: int, buffer: int) -> int:
        memory = self._memory()
        pointer, position = u32(pointers), u32(buffer)
        for value in strings:
            memory.writeU32(pointer, position)
            memory.writeBytes(position, value)
            pointer += 4
            position += len(value)
        return ESUCCESS

    def _environStrings(self) -> List[bytes]:
        return _encodeStrings(["{}={}".format(k, v) for k, v in self.environ.items()])

    def environSizesGet(self, countPointer: int, sizePointer: int) -> int:
        """
        C{environ_sizes_get}: the configured environment's size.
        """
        return self._sizesGet(self._environStrings(), countPointer, sizePointer)

    def environGet(self, pointers: int, buffer: int) -> int:
        """
        C{environ_get}: the configured environment as C{KEY=VALUE} strings.
        """
        return self._stringsGet(self._environStrings(), pointers, buffer)

    def argsSizesGet(self, countPointer: int, sizePointer: int) -> int:
        """
        C{args_sizes_get}: the configured arguments' size.
        """
        return self._sizesGet(_encodeStrings(self.args), countPointer, sizePointer)

    def argsGet(self, pointers: int, buffer: int) -> int:
        """
        C{args_get}: the configured arguments.
        """
        return self._stringsGet(_encodeStrings(self.args), pointers, buffer)

    def clockResGet(self, clockId: int, resolutionPointer: int) -> int:
        """
        C{clock_res_get}: 1 ns for the realtime and monotonic clocks.
        """
        if clockId not in self._clocks:
            return ENOTSUP
        self._memory().writeU64(u32(resolutionPointer), 1)
        return ESUCCESS

    def clockTimeGet(self, clockId: int, precision: int, timePointer: int) -> int:
        """
        C{clock_time_get}: realtime or monotonic nanoseconds.
        """
        clock = self._clocks.get(clockId)
        if clock is None:
            return ENOTSUP
        self._memory().writeU64(u32(timePointer), clock())
        return ESUCCESS

    def randomGet(self, buffer: int, length: int) -> int:
        """
        C{random_get}: bytes from L{os.urandom}.
        """
        length = u32(length)
        if length > MAX_RANDOM_BYTES:
            return EINVAL
        self._memory().writeBytes(u32(buffer), os.urandom(length))
        return ESUCCESS

    def fdFdstatGet(self, fd: int, statPointer: int) -> int:
        """
        C{fd_fdstat_get}: stdout and stderr are writable; nothing else is
        open.
        """
        if fd not in (STDOUT, STDERR):
            return EBADF
        memory = self._memory()
        memory.writeBytes(u32(statPointer), bytes(24))
        memory.writeU64(u32(statPointer) + 8, RIGHT_FD_WRITE)
        return ESUCCESS

    def pollOneoff(self, subscriptions: int, events: int, count: int, eventCountPointer: int) -> int:
        """
        C{poll_oneoff}: report no events at once; a filter never blocks the
        gateway.
        """
        self._memory().writeU32(u32(eventCountPointer), 0)
        return ESUCCESS

    def schedYield(self) -> int:
        """
        C{sched_yield}: nothing to yield to.
        """
        return ESUCCESS

    def procExit(self, exitCode: int) -> None:
        """
        C{proc_exit}: end the guest call.

        @raise WasiExit: always.
        """
        raise WasiExit(exitCode)


def _faultSafe(implementation: Callable[..., int]) -> Callable[..., int]:
    """
    Make a WASI function return C{EFAULT} for pointers outside memory.
    """

    def call(*args: int) -> int:
        try:
            return implementation(*args)
        except GuestMemoryError:
            return EFAULT

    return call


def _refusal(errno: int) -> Callable[..., int]:
    """
    A WASI function that refuses whatever it is asked.
    """

    def refuse(*args: int) -> int:
        return errno

    return refuse
