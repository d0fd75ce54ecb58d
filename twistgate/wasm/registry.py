"""
The runtime registry: find an L{IWasmRuntime} by name.

Runtime modules are imported on first use, so a gateway running on wasmtime
never needs wasmer installed, and the reverse.
"""

import importlib
import sys
from typing import Dict, List

from twistgate.wasm.interfaces import IWasmRuntime, RuntimeUnavailable

_INSTALL_HINTS = {
    "wasmtime": "wasmtime-py is not usable here; install it with "
    "'pip install wasmtime' (twistgate is tested with wasmtime 50.0.1)",
    "wasmer": "wasmer-python 1.1.0 needs CPython <= 3.10 with wasmer and "
    "wasmer-compiler-cranelift installed; run with python3.10 (make run does)",
}
_MODULES = {
    "wasmtime": ("twistgate.wasm.wasmtime_vm", "WasmtimeRuntime"),
    "wasmer": ("twistgate.wasm.wasmer_vm", "WasmerRuntime"),
}
_runtimes: Dict[str, IWasmRuntime] = {}


def runtimeNames() -> List[str]:
    """
    @return: the names L{getRuntime} knows, usable here or not.
    """
    return sorted(_MODULES)


def getRuntime(name: str) -> IWasmRuntime:
    """
    Get the runtime called C{name}, created once per process.

    @param name: C{"wasmtime"} or C{"wasmer"}.
    @return: the L{IWasmRuntime}.
    @raise RuntimeUnavailable: if the name is unknown or the runtime cannot
        be imported in this interpreter; the one-line message says what to
        install.
    """
    runtime = _runtimes.get(name)
    if runtime is not None:
        return runtime
    if name not in _MODULES:
        raise RuntimeUnavailable(
            "unknown Wasm runtime {!r}; choose one of: {}".format(
                name, ", ".join(runtimeNames())
            )
        )
    moduleName, className = _MODULES[name]
    try:
        module = importlib.import_module(moduleName)
        runtime = getattr(module, className)()
    except Exception as error:
        raise RuntimeUnavailable(
            "Wasm runtime {} unavailable on Python {}.{} ({}: {}); {}".format(
                name,
                sys.version_info[0],
                sys.version_info[1],
                type(error).__name__,
                str(error).strip().replace("\n", " "),
                _INSTALL_HINTS[name],
            )
        ) from error
    _runtimes[name] = runtime
    return runtime


def availableRuntimes() -> List[str]:
    """
    @return: the names of the runtimes usable in this interpreter.
    """
    available = []
    for name in runtimeNames():
        try:
            getRuntime(name)
        except RuntimeUnavailable:
            continue
        available.append(name)
    return available
