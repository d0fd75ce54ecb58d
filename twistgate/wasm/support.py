"""
Runtime-neutral helpers shared by the runtime modules: reading a module's
source, matching its imports to host functions, and turning a host
function's failure into a L{WasmTrap}.
"""

from typing import Callable, Dict, List, Sequence, Tuple, Union

from twistgate.wasm.interfaces import (
    GuestMemoryError,
    HostFunction,
    ImportDesc,
    WasmCompileError,
    WasmLinkError,
    WasmTrap,
)
from twistgate.wasm.memory import checkBounds

WASM_MAGIC = b"\0asm"


def firstLine(text: str) -> str:
    """
    @return: the first non-empty line of C{text}, stripped, or C{text}
        itself if it has none.
    """
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text


def moduleBinary(
    source: Union[bytes, str], watToWasm: Callable[[str], bytes]
) -> bytes:
    """
    Get a module's binary form from Wasm bytes or WAT text.

    @param source: Wasm bytes, or WAT as L{str} or UTF-8 L{bytes}.
    @param watToWasm: the runtime's WAT parser; it raises on bad text.
    @return: the Wasm binary.
    @raise WasmCompileError: if the text is not valid WAT.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = bytes(source)
        if source.startswith(WASM_MAGIC):
            return source
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError:
            raise WasmCompileError(
                "module is neither Wasm (no \\0asm header) nor UTF-8 WAT text"
            ) from None
    try:
        return bytes(watToWasm(source))
    except Exception as error:
        raise WasmCompileError(
            "invalid WAT: {}".format(firstLine(str(error)))
        ) from None


def resolveImports(
    imports: Sequence[ImportDesc], hostFunctions: Sequence[HostFunction]
) -> List[HostFunction]:
    """
    Pick the host function for each import, in import order. When several
    host functions share a module and name, the last one wins.

    @return: one L{HostFunction} per import.
    @raise WasmLinkError: naming every import that is missing, has another
        type than its host function, or is not a function.
    """
    byName: Dict[Tuple[str, str], HostFunction] = {}
    for hostFunction in hostFunctions:
        byName[(hostFunction.module, hostFunction.name)] = hostFunction
    resolved = []
    problems = []
    for wanted in imports:
        qualified = "{}.{}".format(wanted.module, wanted.name)
        if wanted.sig is None:
            problems.append("unsupported non-function import {}".format(qualified))
            continue
        offered = byName.get((wanted.module, wanted.name))
        if offered is None:
            problems.append("missing import {} {}".format(qualified, wanted.sig))
        elif offered.sig != wanted.sig:
            problems.append(
                "import {} has type {} but the host function has {}".format(
                    qualified, wanted.sig, offered.sig
                )
            )
        else:
            resolved.append(offered)
    if problems:
        raise WasmLinkError("; ".join(problems))
    return resolved


def hostFailure(hostFunction: HostFunction, error: BaseException) -> WasmTrap:
    """
    Describe a host function's exception as the trap the guest call ends with.

    @param hostFunction: the function that raised.
    @param error: what it raised; a L{WasmTrap} (e.g. C{proc_exit}) is kept
        as it is.
    @return: the L{WasmTrap} to raise from the guest call.
    """
    if isinstance(error, WasmTrap):
        return error
    trap = WasmTrap(
        "host function {}.{} raised {}: {}".format(
            hostFunction.module, hostFunction.name, type(error).__name__, error
        ),
        kind="host",
    )
    trap.__cause__ = error
    return trap


def _releasedMemory() -> memoryview:
    raise GuestMemoryError("guest memory access after the instance was released")


class MemoryWindow:
    """
    Bounds-checked access to a linear memory through a cached
    L{memoryview}.

    The view is reopened only when an access falls past its end, which
    happens after the guest grew its memory. This relies on the runtime never
    moving a memory's base address (wasmtime with C{memory_may_move}
    disabled; wasmer's static 4 GiB reservations for 32-bit memories), so a
    view stays valid for as long as the memory is not grown.
    """

    def __init__(self, openView: Callable[[], memoryview]) -> None:
        """
        @param openView: returns a writable byte view of the whole memory as
            it is now.
        """
        self._openView = openView
        self._view = memoryview(bytearray())
        self._size = 0

    def close(self) -> None:
        """
        Forget the memory: the instance was released. Later accesses raise
        L{GuestMemoryError}. This also drops the reference back to the
        instance that C{openView} holds.
        """
        self._openView = _releasedMemory
        self._view = memoryview(bytearray())
        self._size = 0

    def _reopen(self, offset: int, length: int) -> memoryview:
        self._view = self._openView()
        self._size = len(self._view)
        checkBounds(offset, length, self._size)
        return self._view

    def read(self, offset: int, length: int) -> bytes:
        """
        @return: C{length} bytes at C{offset}.
        @raise GuestMemoryError: if the range is out of bounds.
        """
        view = self._view
        end = offset + length
        if offset < 0 or length < 0 or end > self._size:
            view = self._reopen(offset, length)
        return view[offset:end].tobytes()

    def write(self, offset: int, data: bytes) -> None:
        """
        Write C{data} at C{offset}.

        @raise GuestMemoryError: if the range is out of bounds.
        """
        view = self._view
        end = offset + len(data)
        if offset < 0 or end > self._size:
            view = self._reopen(offset, len(data))
        view[offset:end] = data
