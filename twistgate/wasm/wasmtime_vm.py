"""
The wasmtime runtime behind the L{twistgate.wasm.interfaces} interfaces.

Guest exports are called through C{wasmtime_func_call_unchecked} with a
per-function argument buffer and types read once, and host functions are
defined with C{wasmtime_func_new_unchecked}: wasmtime-py's generic
C{Func.__call__} and trampoline re-read types and box every value, which
costs an order of magnitude more per call.

CPU deadlines use epoch interruption: one daemon thread per engine advances
the epoch every L{EPOCH_INTERVAL} seconds, and each outermost guest call sets
its store's deadline before entering the guest, unless it was set at the
same epoch (the ticker's count tells; the deadline has a tick to spare for
that). Calls a host function makes back into the guest run under the outer
call's deadline, so a guest looping over host calls is stopped too. The memory cap is the store's
limiter, so C{memory.grow} past it returns -1.
"""

import ctypes
import weakref
import hashlib
import importlib.metadata
import math
import struct
import threading
import time
from operator import attrgetter
from typing import Callable, Dict, Optional, Sequence

import wasmtime
from wasmtime import _ffi as ffi
from zope.interface import implementer

from twistgate.wasm.cache import compileCached
from twistgate.wasm.interfaces import (
    ExportDesc,
    FuncSig,
    HostFunction,
    ImportDesc,
    IWasmInstance,
    IWasmModule,
    IWasmRuntime,
    Limits,
    WasmCompileError,
    WasmLinkError,
    WasmTrap,
)
from twistgate.wasm.support import (
    MemoryWindow,
    firstLine,
    hostFailure,
    moduleBinary,
    resolveImports,
)

EPOCH_INTERVAL = 0.005
_NO_DEADLINE_TICKS = 2**53

_VOIDP = ctypes.c_void_p
_SIZE = ctypes.c_size_t


def _bind(name: str, restype, *argtypes):
    """
    Bind a C function of wasmtime's library with plain integer argument
    types, independently of wasmtime-py's own prototypes.
    """
    return ctypes.CFUNCTYPE(restype, *argtypes)((name, ffi.dll))


_HostCallback = ctypes.CFUNCTYPE(_VOIDP, _VOIDP, _VOIDP, _VOIDP, _SIZE)
_callUnchecked = _bind(
    "wasmtime_func_call_unchecked", _VOIDP, _VOIDP, _VOIDP, _VOIDP, _SIZE, _VOIDP
)
_funcNewUnchecked = _bind(
    "wasmtime_func_new_unchecked", None, _VOIDP, _VOIDP, _HostCallback, _VOIDP, _VOIDP, _VOIDP
)
_trapNew = _bind("wasmtime_trap_new", _VOIDP, ctypes.c_char_p, _SIZE)
_setEpochDeadline = _bind(
    "wasmtime_context_set_epoch_deadline", None, _VOIDP, ctypes.c_uint64
)
_memoryData = _bind("wasmtime_memory_data", _VOIDP, _VOIDP, _VOIDP)
_memoryDataSize = _bind("wasmtime_memory_data_size", _SIZE, _VOIDP, _VOIDP)

_SLOT_SIZE = ctypes.sizeof(ffi.wasmtime_val_raw)
_VALUE_CTYPES = {
    "i32": ctypes.c_int32,
    "i64": ctypes.c_int64,
    "f32": ctypes.c_float,
    "f64": ctypes.c_double,
}
_VALUE_TYPES = {
    "i32": wasmtime.ValType.i32(),
    "i64": wasmtime.ValType.i64(),
    "f32": wasmtime.ValType.f32(),
    "f64": wasmtime.ValType.f64(),
}

_slotViews: Dict[FuncSig, type] = {}
_funcTypes: Dict[FuncSig, wasmtime.FuncType] = {}


def _slotView(sig: FuncSig) -> type:
    """
    A ctypes union laid over wasmtime's raw value array for one signature:
    parameter I{i} is the field C{a}I{i} and the result is C{result}.
    """
    view = _slotViews.get(sig)
    if view is None:
        fields = []
        for index, valueType in enumerate(sig.params):
            ctype = _VALUE_CTYPES[valueType]
            fields.append(("a{}".format(index), ctype))
            fields.append(
                ("_pad{}".format(index), ctypes.c_char * (_SLOT_SIZE - ctypes.sizeof(ctype)))
            )
        arguments = type("Arguments", (ctypes.Structure,), {"_fields_": fields})
        slotCount = max(len(sig.params), len(sig.results), 1)
        unionFields = [
            ("arguments", arguments),
            ("slots", ffi.wasmtime_val_raw * slotCount),
        ]
        if sig.results:
            unionFields.append(("result", _VALUE_CTYPES[sig.results[0]]))
        view = type(
            "SlotView",
            (ctypes.Union,),
            {"_anonymous_": ("arguments",), "_fields_": unionFields},
        )
        _slotViews[sig] = view
    return view


_PACK_FORMATS = {"i32": "i", "i64": "q", "f32": "f", "f64": "d"}
_packers: Dict[FuncSig, Callable[..., None]] = {}


def _argumentPacker(sig: FuncSig) -> Callable[..., None]:
    """
    The C{pack_into} of a L{struct.Struct} that stores a signature's
    arguments in the slots of its L{_slotView}, all in one call. It raises
    L{struct.error} for a value out of its type's range (or of another type)
    and for a wrong number of arguments; L{_setArguments} handles those.
    """
    packer = _packers.get(sig)
    if packer is None:
        layout = "".join(
            "{}{}x".format(code, _SLOT_SIZE - struct.calcsize("=" + code))
            for code in (_PACK_FORMATS[valueType] for valueType in sig.params)
        )
        packer = _packers[sig] = struct.Struct("=" + layout).pack_into
    return packer


def _setArguments(view, fields: Sequence[str], args: Sequence[object]) -> None:
    """
    Store arguments in a L{_slotView} field by field, as ctypes converts
    them: integers wrap to their type's width, the wrong type raises
    L{TypeError}.

    @raise TypeError: for a wrong number of arguments.
    """
    if len(args) != len(fields):
        raise TypeError(
            "guest function takes {} arguments, {} given".format(len(fields), len(args))
        )
    for field, value in zip(fields, args):
        setattr(view, field, value)


def _funcType(sig: FuncSig) -> wasmtime.FuncType:
    funcType = _funcTypes.get(sig)
    if funcType is None:
        funcType = wasmtime.FuncType(
            [_VALUE_TYPES[t] for t in sig.params],
            [_VALUE_TYPES[t] for t in sig.results],
        )
        _funcTypes[sig] = funcType
    return funcType


def _funcSig(funcType: wasmtime.FuncType) -> FuncSig:
    return FuncSig(
        tuple(str(t) for t in funcType.params), tuple(str(t) for t in funcType.results)
    )


def _trapSummary(message: str) -> str:
    """
    @return: the cause of a wasmtime trap without its backtrace, e.g.
        C{"integer divide by zero"}.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in reversed(lines):
        cause = line.partition("wasm trap: ")[2]
        if cause:
            return cause
    return lines[-1] if lines else message


def _address(pointer) -> int:
    return ctypes.cast(pointer, _VOIDP).value


class _EpochTicker:
    """
    Advances an engine's epoch from a daemon thread, started on first use.

    @ivar epoch: the ticks made so far, counted just before the engine's
        epoch advances: the engine's epoch is this or one less.
    """

    def __init__(self, engine: wasmtime.Engine, interval: float) -> None:
        self._engine = engine
        self._interval = interval
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.epoch = 0

    def ticksFor(self, seconds: float) -> int:
        """
        @return: the epoch deadline that leaves a call at least C{seconds},
            even when it was set at an earlier call of the same L{epoch} (a
            tick may have been under way then).
        """
        return max(1, math.ceil(seconds / self._interval)) + 2

    def ensureRunning(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="twistgate-wasmtime-epoch", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            self.epoch += 1
            self._engine.increment_epoch()


@implementer(IWasmRuntime)
class WasmtimeRuntime:
    """
    The wasmtime runtime: one engine with epoch interruption enabled.
    """

    name = "wasmtime"
    supportsDeadline = True

    def __init__(self) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.memory_may_move = False
        self.engine = wasmtime.Engine(config)
        self.version = importlib.metadata.version("wasmtime")
        self.cacheVersion = "{}+epoch+fixed-memory".format(self.version)
        self.ticker = _EpochTicker(self.engine, EPOCH_INTERVAL)

    def compile(self, source, cacheDirectory=None):
        binary = moduleBinary(source, wasmtime.wat2wasm)
        sha256 = hashlib.sha256(binary).hexdigest()

        def compileNative() -> wasmtime.Module:
            try:
                return wasmtime.Module(self.engine, binary)
            except wasmtime.WasmtimeError as error:
                raise WasmCompileError(firstLine(str(error))) from None

        native, cacheStatus = compileCached(
            cacheDirectory,
            self.name,
            self.cacheVersion,
            sha256,
            compileNative,
            wasmtime.Module.serialize,
            lambda payload: wasmtime.Module.deserialize(self.engine, payload),
        )
        return WasmtimeModule(self, native, sha256, cacheStatus)


@implementer(IWasmModule)
class WasmtimeModule:
    """
    A module compiled by wasmtime.

    @ivar cacheStatus: what the compiled-module cache did when this module
        was compiled: C{"hit"}, C{"miss"}, C{"corrupt"} or C{"uncached"}.
    """

    def __init__(
        self, runtime: WasmtimeRuntime, native: wasmtime.Module, sha256: str, cacheStatus: str
    ) -> None:
        self.runtime = runtime
        self.native = native
        self.sha256 = sha256
        self.cacheStatus = cacheStatus
        self._imports = tuple(
            ImportDesc(
                i.module,
                i.name,
                _funcSig(i.type) if isinstance(i.type, wasmtime.FuncType) else None,
            )
            for i in native.imports
        )
        self._exports = tuple(_exportDesc(e) for e in native.exports)

    def imports(self):
        return self._imports

    def exports(self):
        return self._exports

    def instantiate(self, hostFunctions, limits):
        return WasmtimeInstance(self, resolveImports(self._imports, hostFunctions), limits)


def _exportDesc(export: wasmtime.ExportType) -> ExportDesc:
    kind = export.type
    if isinstance(kind, wasmtime.FuncType):
        return ExportDesc(export.name, "func", _funcSig(kind))
    if isinstance(kind, wasmtime.MemoryType):
        return ExportDesc(export.name, "memory")
    if isinstance(kind, wasmtime.TableType):
        return ExportDesc(export.name, "table")
    return ExportDesc(export.name, "global")


@implementer(IWasmInstance)
class WasmtimeInstance:
    """
    An instance in its own store.
    """

    def __init__(
        self, module: WasmtimeModule, imports: Sequence[HostFunction], limits: Limits
    ) -> None:
        runtime = module.runtime
        self._limits = limits
        self._store = wasmtime.Store(runtime.engine)
        self._context = _address(self._store._context())
        self._store.set_limits(memory_size=limits.maxMemoryBytes)
        self._ticker = runtime.ticker
        self._deadlineEpoch: Optional[int] = None
        if limits.callDeadline is None:
            self._deadlineTicks = 0
            self._store.set_epoch_deadline(_NO_DEADLINE_TICKS)
        else:
            runtime.ticker.ensureRunning()
            self._deadlineTicks = runtime.ticker.ticksFor(limits.callDeadline)
            self._store.set_epoch_deadline(self._deadlineTicks)
        self._pendingFailure: Optional[BaseException] = None
        self._guestDepth = 0
        self._callbacks = []
        externs = [self._defineHostFunction(hostFunction) for hostFunction in imports]
        try:
            native = wasmtime.Instance(self._store, module.native, externs)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as error:
            failure, self._pendingFailure = self._pendingFailure, None
            reason = failure if failure is not None else _trapSummary(str(error))
            raise WasmLinkError("instantiation failed: {}".format(reason)) from None
        exports = native.exports(self._store)
        self._funcs = {}
        self._memory = None
        for desc in module.exports():
            if desc.kind == "func":
                self._funcs[desc.name] = (exports[desc.name]._func, desc.sig)
            elif desc.kind == "memory" and (self._memory is None or desc.name == "memory"):
                self._memory = exports[desc.name]._memory
        self._memoryAddress = None if self._memory is None else ctypes.addressof(self._memory)
        self._nativeContext = _VOIDP(self._context)
        self._nativeMemory = _VOIDP(self._memoryAddress)
        self._window = MemoryWindow(self._openMemoryView)
        # readMemory and writeMemory are the window's own methods: one
        # Python call less per access.
        self.readMemory = self._window.read
        self.writeMemory = self._window.write
        self._callables: Dict[str, Callable[..., Optional[int]]] = {}

    def _defineHostFunction(self, hostFunction: HostFunction) -> wasmtime.Func:
        sig = hostFunction.sig
        fromAddress = _slotView(sig).from_address
        target = hostFunction.callable
        arity = len(sig.params)
        hasResult = bool(sig.results)
        readArguments = (
            attrgetter(*["a{}".format(i) for i in range(arity)]) if arity else None
        )
        # A weak reference: the store keeps this trampoline alive, and a
        # strong one back to the instance would make a cycle that only the
        # cyclic collector frees (a trapped filter's memory lingering).
        fail = weakref.WeakMethod(self._hostFailed)

        def trampoline(environment, caller, slots, slotCount):
            try:
                view = fromAddress(slots)
                if arity == 0:
                    result = target()
                elif arity == 1:
                    result = target(readArguments(view))
                else:
                    result = target(*readArguments(view))
                if hasResult:
                    view.result = result
            except BaseException as error:
                return fail()(hostFunction, error)
            return None

        callback = _HostCallback(trampoline)
        self._callbacks.append(callback)
        func = ffi.wasmtime_func_t()
        _funcNewUnchecked(
            self._context,
            _address(_funcType(sig).ptr()),
            callback,
            None,
            None,
            ctypes.addressof(func),
        )
        return wasmtime.Func._from_raw(func)

    def _hostFailed(self, hostFunction: HostFunction, error: BaseException) -> int:
        """
        Remember why a host function failed, and make the trap that unwinds
        the guest.
        """
        failure = hostFailure(hostFunction, error) if isinstance(error, Exception) else error
        self._pendingFailure = failure
        message = str(failure).encode("utf-8")
        return _trapNew(message, len(message))

    def _raiseFailure(self, error: Optional[int], trapHolder: _VOIDP) -> None:
        """
        Raise the L{WasmTrap} for a guest call that ended abnormally; the
        next call sets the deadline afresh.
        """
        failure, self._pendingFailure = self._pendingFailure, None
        self._deadlineEpoch = None
        code = None
        if trapHolder.value:
            trap = wasmtime.Trap._from_ptr(
                ctypes.cast(trapHolder.value, ctypes.POINTER(ffi.wasm_trap_t))
            )
            trapHolder.value = None
            message = trap.message
            code = trap.trap_code
        else:
            message = str(
                wasmtime.WasmtimeError._from_ptr(
                    ctypes.cast(error, ctypes.POINTER(ffi.wasmtime_error_t))
                )
            )
        if failure is not None:
            raise failure
        if code == wasmtime.TrapCode.INTERRUPT:
            raise WasmTrap(
                "guest call exceeded its CPU deadline of {:g} s".format(
                    self._limits.callDeadline
                ),
                kind="deadline",
            )
        raise WasmTrap(_trapSummary(message), kind="trap")

    def release(self):
        """
        Forget the pre-bound export callables, which refer back to the
        instance: with them gone, nothing makes a cycle through it and the
        store (with the guest's memory) is freed as soon as the last
        reference goes.
        """
        self._callables.clear()
        self._funcs = {}
        self._window.close()

    def function(self, name):
        callable = self._callables.get(name)
        if callable is None:
            func, sig = self._funcs[name]
            callable = self._callables[name] = self._makeCallable(func, sig)
        return callable

    def _makeCallable(self, func, sig: FuncSig) -> Callable[..., Optional[int]]:
        view = _slotView(sig)()
        packArguments = _argumentPacker(sig)
        fields = ["a{}".format(i) for i in range(len(sig.params))]
        # The native call's arguments never change: made into ctypes
        # objects once, they are not converted on each call.
        context = self._nativeContext
        funcAddress = _VOIDP(ctypes.addressof(func))
        viewAddress = _VOIDP(ctypes.addressof(view))
        slotCount = _SIZE(max(len(sig.params), len(sig.results), 1))
        trapHolder = _VOIDP()
        trapAddress = _VOIDP(ctypes.addressof(trapHolder))
        ticks = ctypes.c_uint64(self._deadlineTicks) if self._deadlineTicks else None
        ticker = self._ticker
        hasResult = bool(sig.results)
        raiseFailure = self._raiseFailure
        instance = self

        def call(*args):
            try:
                packArguments(view, 0, *args)
            except struct.error:
                _setArguments(view, fields, args)
            depth = instance._guestDepth
            if ticks is not None and not depth:
                epoch = ticker.epoch
                if epoch != instance._deadlineEpoch:
                    instance._deadlineEpoch = epoch
                    _setEpochDeadline(context, ticks)
            instance._guestDepth = depth + 1
            error = _callUnchecked(context, funcAddress, viewAddress, slotCount, trapAddress)
            instance._guestDepth = depth
            if error or trapHolder.value:
                raiseFailure(error, trapHolder)
            return view.result if hasResult else None

        return call

    def call(self, name, *args):
        return self.function(name)(*args)

    def hasExport(self, name):
        return name in self._funcs

    def memorySize(self):
        if self._memoryAddress is None:
            return 0
        return _memoryDataSize(self._nativeContext, self._nativeMemory)

    def _openMemoryView(self) -> memoryview:
        size = self.memorySize()
        if not size:
            return memoryview(bytearray())
        base = _memoryData(self._context, self._memoryAddress)
        return memoryview((ctypes.c_char * size).from_address(base)).cast("B")
