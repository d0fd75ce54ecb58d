"""
The filter registry: each installed filter's module, compiled once per
runtime (lazily, on first use) with the runtime's on-disk cache.
"""

from time import perf_counter
from typing import Dict, Mapping, Optional, Tuple

from twisted.logger import Logger

from twistgate.config.filters import FilterFile
from twistgate.wasm.interfaces import WasmCompileError

log = Logger(namespace="twistgate.gateway.filters")

#: How the log says what the compiled-module cache did (a module's
#: C{cacheStatus}).
_CACHE_OUTCOMES = {
    "hit": "cache hit",
    "miss": "cache miss, stored",
    "corrupt": "cache entry unusable, recompiled",
    "uncached": "no cache",
}


class UnknownFilter(KeyError):
    """
    No filter of that name is installed.
    """


class FilterRegistry:
    """
    Compiled filter modules by name.

    @ivar runtime: the L{twistgate.wasm.interfaces.IWasmRuntime}.
    @ivar filters: the installed L{FilterFile}s by name.
    """

    def __init__(self, runtime, filters: Mapping[str, FilterFile],
                 cacheDirectory: Optional[str] = None) -> None:
        self.runtime = runtime
        self.filters = dict(filters)
        self.cacheDirectory = cacheDirectory
        self._modules: Dict[Tuple[str, str], object] = {}

    def update(self, filters: Mapping[str, FilterFile]) -> None:
        """
        Replace the installed filters (after a rescan); modules whose file
        did not change stay compiled.
        """
        self.filters = dict(filters)
        live = {(name, f.sha256) for name, f in self.filters.items()}
        for key in list(self._modules):
            if key not in live:
                del self._modules[key]

    def module(self, name: str):
        """
        Get a filter's compiled module, compiling it on first use.

        @return: an L{twistgate.wasm.interfaces.IWasmModule}.
        @raise UnknownFilter: if no such filter is installed.
        @raise WasmCompileError: if its file cannot be read or compiled.
        """
        filterFile = self.filters.get(name)
        if filterFile is None:
            raise UnknownFilter(name)
        key = (name, filterFile.sha256)
        module = self._modules.get(key)
        if module is not None:
            return module
        try:
            with open(filterFile.path, "rb") as f:
                source = f.read()
        except OSError as error:
            raise WasmCompileError("cannot read {}: {}".format(filterFile.path, error.strerror))
        started = perf_counter()
        module = self.runtime.compile(source, cacheDirectory=self.cacheDirectory)
        status = getattr(module, "cacheStatus", "uncached")
        log.info("compiled {filter} ({outcome}) on {runtime} in {seconds:.3f} s", filter=name,
                 outcome=_CACHE_OUTCOMES.get(status, status), runtime=self.runtime.name,
                 seconds=perf_counter() - started)
        self._modules[key] = module
        return module
