"""
The runtime-neutral WebAssembly VM interface.

Everything above C{twistgate.wasm} talks to a Wasm runtime only through the
interfaces, value types and errors defined here; only C{wasmtime_vm} and
C{wasmer_vm} import a runtime.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from zope.interface import Attribute, Interface

I32 = "i32"
I64 = "i64"
F32 = "f32"
F64 = "f64"


@dataclass(frozen=True)
class FuncSig:
    """
    A function's WebAssembly type.

    @ivar params: value types of the parameters, e.g. C{("i32", "i64")}.
    @ivar results: value types of the results (empty or one element).
    """

    params: Tuple[str, ...]
    results: Tuple[str, ...] = ()

    def __str__(self) -> str:
        return "({}) -> ({})".format(", ".join(self.params), ", ".join(self.results))


@dataclass(frozen=True)
class ImportDesc:
    """
    A function a module imports. C{sig} is L{None} for imports that are not
    functions (memories, tables, globals).
    """

    module: str
    name: str
    sig: Optional[FuncSig]


@dataclass(frozen=True)
class ExportDesc:
    """
    Something a module exports: C{kind} is C{"func"}, C{"memory"}, C{"table"}
    or C{"global"}; C{sig} is set for functions only.
    """

    name: str
    kind: str
    sig: Optional[FuncSig] = None


@dataclass(frozen=True)
class HostFunction:
    """
    A host function offered to a guest.

    C{callable} takes and returns plain Python ints (no runtime objects).
    Arguments declared C{i32} arrive as signed ints, as Wasm passes them; use
    L{twistgate.wasm.memory.u32} to read pointers and sizes as unsigned.
    Raising any exception traps the guest; the trap surfaces as L{WasmTrap}.
    """

    module: str
    name: str
    sig: FuncSig
    callable: Callable[..., Optional[int]]


@dataclass(frozen=True)
class Limits:
    """
    Resource limits applied to one instance.

    @ivar maxMemoryBytes: cap on the guest's linear memory; growing past it
        fails (C{memory.grow} returns -1), which most guests turn into a trap.
    @ivar callDeadline: seconds of wall-clock CPU one guest call may run
        before it is interrupted with a trap, or L{None} for no deadline.
        Runtimes that cannot interrupt a guest report
        C{supportsDeadline = False}. The default matches C{twistd twistgate
        --filter-deadline}.
    """

    maxMemoryBytes: int = 256 * 1024 * 1024
    callDeadline: Optional[float] = 1.0


class WasmError(Exception):
    """
    Base class of every error the Wasm layer raises.
    """


class WasmCompileError(WasmError):
    """
    The bytes are not a valid module (or WAT text) for this runtime.
    """


class WasmLinkError(WasmError):
    """
    Instantiation failed: a missing import, a type mismatch, or a start
    function that trapped.
    """


class WasmTrap(WasmError):
    """
    A guest call ended abnormally: a Wasm trap, a host function exception,
    an exceeded deadline, or C{proc_exit}.

    @ivar message: the trap message, as the runtime or host function gave it.
    @ivar kind: a short machine-readable kind: C{"trap"}, C{"host"},
        C{"deadline"}, C{"exit"}, C{"memory"}.
    """

    def __init__(self, message: str, kind: str = "trap") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


class GuestMemoryError(WasmError):
    """
    A guest memory access out of bounds.
    """


class RuntimeUnavailable(WasmError):
    """
    The named runtime cannot be used in this interpreter; the message says
    what to install.
    """


class IWasmRuntime(Interface):
    """
    A WebAssembly runtime: compiles modules.
    """

    name = Attribute("The runtime's name: 'wasmtime' or 'wasmer'.")
    version = Attribute("The runtime package's version string.")
    supportsDeadline = Attribute("True if L{Limits.callDeadline} is enforced.")

    def compile(source, cacheDirectory=None):
        """
        Compile a module from Wasm bytes or WAT text.

        @param source: the module, binary or text.
        @type source: L{bytes}
        @param cacheDirectory: a directory for compiled code, or L{None}.
        @return: an L{IWasmModule}.
        @raise WasmCompileError: if the module is invalid.
        """


class IWasmModule(Interface):
    """
    A compiled module, instantiated any number of times.
    """

    sha256 = Attribute("Hex SHA-256 of the module's bytes.")

    def imports():
        """
        @return: a sequence of L{ImportDesc}.
        """

    def exports():
        """
        @return: a sequence of L{ExportDesc}.
        """

    def instantiate(hostFunctions, limits):
        """
        Link and instantiate. Imports without a host function fail the link,
        naming each missing import.

        @param hostFunctions: a sequence of L{HostFunction}.
        @param limits: the L{Limits} for this instance.
        @return: an L{IWasmInstance}.
        @raise WasmLinkError: if an import is missing or mistyped, or the
            module's start function traps.
        """


class IWasmInstance(Interface):
    """
    A live instance: its exports can be called and its memory accessed.
    """

    def call(name, *args):
        """
        Call an exported function with int arguments.

        @return: the result as an int, or L{None} for no result.
        @raise WasmTrap: on any abnormal end, whatever the runtime.
        @raise KeyError: if there is no such exported function.
        """

    def function(name):
        """
        Get a pre-bound callable for an exported function: the fast path for
        calls made many times. C{instance.function(name)(*args)} behaves as
        C{instance.call(name, *args)}.

        @return: a callable taking and returning ints as L{call} does.
        @raise KeyError: if there is no such exported function.
        """

    def release():
        """
        Drop what the instance holds on to (its host functions and the
        objects they reach) once it will not be used again. Calls made
        afterwards trap or raise L{KeyError}; nothing crashes.
        """

    def hasExport(name):
        """
        @return: whether a function of this name is exported.
        """

    def memorySize():
        """
        @return: the size of the exported memory in bytes (0 if none).
        """

    def readMemory(offset, length):
        """
        @return: L{bytes} read from the guest's memory.
        @raise GuestMemoryError: if the range is out of bounds.
        """

    def writeMemory(offset, data):
        """
        Write bytes into the guest's memory.

        @raise GuestMemoryError: if the range is out of bounds.
        """
