"""
The wasmer runtime (wasmer-python 1.1.0, Cranelift compiler) behind the
L{twistgate.wasm.interfaces} interfaces.

What wasmer-python does not offer, and how this module copes:
  - No way to interrupt a running guest (no epoch, fuel or interrupt handle
    in its API: C{Store}, C{Instance} and C{Function} expose none), so
    L{WasmerRuntime.supportsDeadline} is C{False} and C{Limits.callDeadline}
    is ignored.
  - No memory limiter (C{Store} takes no tunables). But wasmer honours the
    maximum of a memory the host creates, so a module's own memory is
    rewritten into an import (L{twistgate.wasm.binary.importDefinedMemory})
    and each instance gets a memory whose maximum is the cap:
    C{memory.grow} past the cap returns -1, as on wasmtime. Modules that
    import their memory are refused at link time on both runtimes, and
    wasmer 2 rejects shared, 64-bit and multiple memories, so every memory
    an instance can have is capped this way.
"""

import dataclasses
import hashlib
import importlib.metadata
from typing import Callable, Dict, List, Optional, Sequence

import wasmer
import wasmer_compiler_cranelift
from zope.interface import implementer

from twistgate.wasm.binary import ImportedMemory, importDefinedMemory
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

_VALUE_TYPES = {
    "i32": wasmer.Type.I32,
    "i64": wasmer.Type.I64,
    "f32": wasmer.Type.F32,
    "f64": wasmer.Type.F64,
}
_ARGUMENT_MISMATCH = "Parameters of type "
_MEMORY_MODULE = "twistgate:instance-memory"
_MEMORY_NAME = "memory"
PAGE_SIZE = 65536
MAX_PAGES = 65536
_VALUE_NAMES = {valueType: name for name, valueType in _VALUE_TYPES.items()}


def _funcSig(functionType: wasmer.FunctionType) -> FuncSig:
    return FuncSig(
        tuple(_VALUE_NAMES[t] for t in functionType.params),
        tuple(_VALUE_NAMES[t] for t in functionType.results),
    )


def _trapMessage(error: BaseException) -> str:
    """
    @return: the cause of a wasmer trap without its backtrace, e.g.
        C{"integer divide by zero"}.
    """
    text = str(error)
    newline = text.find("\n")
    line = (text if newline < 0 else text[:newline]).strip()
    prefix = "RuntimeError: "
    return line[len(prefix):] if line.startswith(prefix) else line


@implementer(IWasmRuntime)
class WasmerRuntime:
    """
    The wasmer runtime: one store on the universal engine with Cranelift.
    """

    name = "wasmer"
    supportsDeadline = False

    def __init__(self) -> None:
        self.store = wasmer.Store(wasmer.engine.Universal(wasmer_compiler_cranelift.Compiler))
        self.version = importlib.metadata.version("wasmer")
        self.cacheVersion = "{}+cranelift-{}+imported-memory".format(
            self.version, importlib.metadata.version("wasmer_compiler_cranelift")
        )

    def compile(self, source, cacheDirectory=None):
        binary = moduleBinary(source, wasmer.wat2wasm)
        sha256 = hashlib.sha256(binary).hexdigest()
        importedMemory = importDefinedMemory(
            binary, _MEMORY_MODULE.encode("ascii"), _MEMORY_NAME.encode("ascii")
        )

        def compileNative() -> wasmer.Module:
            try:
                return wasmer.Module(
                    self.store, binary if importedMemory is None else importedMemory.binary
                )
            except RuntimeError as error:
                raise WasmCompileError(firstLine(str(error))) from None

        native, cacheStatus = compileCached(
            cacheDirectory,
            self.name,
            self.cacheVersion,
            sha256,
            compileNative,
            wasmer.Module.serialize,
            lambda payload: wasmer.Module.deserialize(self.store, payload),
        )
        return WasmerModule(self, native, sha256, cacheStatus, importedMemory)


def _exportDesc(export) -> ExportDesc:
    kind = export.type
    if isinstance(kind, wasmer.FunctionType):
        return ExportDesc(export.name, "func", _funcSig(kind))
    if isinstance(kind, wasmer.MemoryType):
        return ExportDesc(export.name, "memory")
    if isinstance(kind, wasmer.TableType):
        return ExportDesc(export.name, "table")
    return ExportDesc(export.name, "global")


@implementer(IWasmModule)
class WasmerModule:
    """
    A module compiled by wasmer.

    @ivar cacheStatus: what the compiled-module cache did when this module
        was compiled: C{"hit"}, C{"miss"}, C{"corrupt"} or C{"uncached"}.
    """

    def __init__(
        self,
        runtime: WasmerRuntime,
        native: wasmer.Module,
        sha256: str,
        cacheStatus: str,
        importedMemory: Optional[ImportedMemory],
    ) -> None:
        """
        @param importedMemory: how the module's memory was made an import,
            or L{None} if it was not.
        """
        self.runtime = runtime
        self.native = native
        self.sha256 = sha256
        self.cacheStatus = cacheStatus
        self.importedMemory = importedMemory
        self._imports = tuple(
            ImportDesc(
                i.module,
                i.name,
                _funcSig(i.type) if isinstance(i.type, wasmer.FunctionType) else None,
            )
            for i in native.imports
            if i.module != _MEMORY_MODULE
        )
        self._exports = tuple(_exportDesc(e) for e in native.exports)

    def imports(self):
        return self._imports

    def exports(self):
        return self._exports

    def instantiate(self, hostFunctions, limits):
        return WasmerInstance(self, resolveImports(self._imports, hostFunctions), limits)


def _released(*args):
    raise WasmTrap("the instance was released", kind="trap")


@implementer(IWasmInstance)
class WasmerInstance:
    """
    An instance in the runtime's store.
    """

    def __init__(
        self, module: WasmerModule, imports: Sequence[HostFunction], limits: Limits
    ) -> None:
        store = module.runtime.store
        self._targets: List[HostFunction] = []
        importObject = wasmer.ImportObject()
        namespaces: Dict[str, Dict[str, wasmer.Function]] = {}
        for hostFunction in imports:
            namespaces.setdefault(hostFunction.module, {})[hostFunction.name] = wasmer.Function(
                store,
                self._guardHostFunction(hostFunction),
                wasmer.FunctionType(
                    [_VALUE_TYPES[t] for t in hostFunction.sig.params],
                    [_VALUE_TYPES[t] for t in hostFunction.sig.results],
                ),
            )
        for namespace, functions in namespaces.items():
            importObject.register(namespace, functions)
        if module.importedMemory is not None:
            importObject.register(
                _MEMORY_MODULE,
                {_MEMORY_NAME: self._createMemory(store, module.importedMemory, limits)},
            )
        try:
            native = wasmer.Instance(module.native, importObject)
        except WasmTrap as failure:
            raise WasmLinkError("instantiation failed: {}".format(failure)) from None
        except RuntimeError as error:
            raise WasmLinkError(
                "instantiation failed: {}".format(_trapMessage(error))
            ) from None
        self._exports = native.exports
        self._funcs = {d.name: d.sig for d in module.exports() if d.kind == "func"}
        memories = [d.name for d in module.exports() if d.kind == "memory"]
        if "memory" in memories:
            memories.insert(0, "memory")
        self._memory = getattr(native.exports, memories[0]) if memories else None
        self._window = MemoryWindow(self._openMemoryView)
        # readMemory and writeMemory are the window's own methods: one
        # Python call less per access.
        self.readMemory = self._window.read
        self.writeMemory = self._window.write
        self._native = native
        self._callables: Dict[str, Callable[..., Optional[int]]] = {}

    @staticmethod
    def _createMemory(
        store: wasmer.Store, declared: ImportedMemory, limits: Limits
    ) -> wasmer.Memory:
        """
        Create the instance's memory with the cap as its maximum.

        @raise WasmLinkError: if the module's initial memory exceeds the cap.
        """
        capPages = min(limits.maxMemoryBytes // PAGE_SIZE, MAX_PAGES)
        if declared.minimumPages > capPages:
            raise WasmLinkError(
                "instantiation failed: initial memory of {} bytes exceeds the cap of {} "
                "bytes".format(declared.minimumPages * PAGE_SIZE, limits.maxMemoryBytes)
            )
        maximum = capPages if declared.maximumPages is None else min(declared.maximumPages, capPages)
        return wasmer.Memory(
            store, wasmer.MemoryType(minimum=declared.minimumPages, maximum=maximum, shared=False)
        )

    def _guardHostFunction(self, hostFunction: HostFunction) -> Callable[..., Optional[int]]:
        """
        Wrap a host function so that whatever it raises reaches the guest
        call as a L{WasmTrap}.
        """
        targets = self._targets
        index = len(targets)
        targets.append(hostFunction)

        def guarded(*args):
            try:
                return targets[index].callable(*args)
            except Exception as error:
                raise hostFailure(targets[index], error)

        return guarded

    def release(self):
        """
        Drop the host functions: wasmer keeps them in Rust, out of sight of
        Python's cycle collector, so a host function that refers back to
        this instance (through the Proxy-Wasm VM) would keep both alive
        forever. Calls into the instance trap afterwards.
        """
        self._targets[:] = [dataclasses.replace(hostFunction, callable=_released) for hostFunction in self._targets]
        self._callables.clear()
        self._window.close()

    def function(self, name):
        callable = self._callables.get(name)
        if callable is None:
            if name not in self._funcs:
                raise KeyError(name)
            callable = self._callables[name] = self._makeCallable(
                getattr(self._exports, name)
            )
        return callable

    def _makeCallable(self, native: wasmer.Function) -> Callable[..., Optional[int]]:
        def invoke(*args):
            try:
                return native(*args)
            except WasmTrap:
                raise
            except RuntimeError as error:
                message = _trapMessage(error)
                if message.startswith(_ARGUMENT_MISMATCH):
                    raise TypeError(message) from None
                raise WasmTrap(message, kind="trap") from None

        return invoke

    def call(self, name, *args):
        return self.function(name)(*args)

    def hasExport(self, name):
        return name in self._funcs

    def memorySize(self):
        return 0 if self._memory is None else self._memory.data_size

    def _openMemoryView(self) -> memoryview:
        if self._memory is None:
            return memoryview(bytearray())
        return memoryview(self._memory.buffer)
