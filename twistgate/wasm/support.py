"""
Runtime-neutral helpers shared by the runtime modules: reading a module's
source, matching its imports to host functions, and turning a host
function's failure into a L{WasmTrap}.
"""

from typing import Callable, Dict, List, Sequence, Tuple, Union

from twistgate.wasm.interfaces import (
    HostFunction,
    ImportDesc,
    WasmCompileError,
    WasmLinkError,
    WasmTrap,
)

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
