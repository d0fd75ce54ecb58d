"""
Micro-benchmarks of the Wasm runtime layer, for wasmtime and wasmer.

    python bench/bench_wasm.py [--quick] [--json FILE]

For each runtime it prints:
  - the cost of one guest export call through L{IWasmInstance.function} and
    L{IWasmInstance.call}, next to the runtime's own generic path
    (wasmtime-py's C{Func.__call__}, wasmer-python's C{exports.f(...)});
  - the cost of one guest-to-host call through our host functions, next to
    the runtime's generic host function path;
  - cold compile, compile with an empty cache (compile and store) and
    compile from the cache of the largest filter in C{filters/} (or a large
    generated module);
  - instance creation time and resident memory per instance of that module.

Figures are printed and written as JSON; nothing is asserted.
"""

import argparse
import gc
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from twistgate.wasm.interfaces import FuncSig, HostFunction, Limits, RuntimeUnavailable  # noqa: E402
from twistgate.wasm.registry import getRuntime, runtimeNames  # noqa: E402
from twistgate.wasm.wasi import WasiShim  # noqa: E402

GUEST = """
(module
  (import "env" "host_add" (func $host_add (param i32 i32) (result i32)))
  (func (export "add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "call_host") (param $n i32) (result i32)
    (local $sum i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $sum (call $host_add (local.get $sum) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $sum))
)
"""
ADD_SIG = FuncSig(("i32", "i32"), ("i32",))


def perCall(function: Callable[[], object], calls: int) -> float:
    """
    @return: microseconds per call of C{function}, best of three runs.
    """
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def hostCallCost(callGuest: Callable[[int], object], hostCalls: int) -> float:
    """
    @return: microseconds per guest-to-host call, from a guest loop making
        C{hostCalls} calls, without the one export call around them.
    """
    started = time.perf_counter()
    callGuest(hostCalls)
    loop = time.perf_counter() - started
    started = time.perf_counter()
    callGuest(0)
    empty = time.perf_counter() - started
    return (loop - empty) / hostCalls * 1e6


def nativeWasmtime(calls: int, hostCalls: int) -> Dict[str, float]:
    """
    wasmtime-py's generic paths: C{Func.__call__} and C{Linker.define_func}.
    """
    import wasmtime

    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    linker = wasmtime.Linker(engine)
    i32 = wasmtime.ValType.i32()
    linker.define_func("env", "host_add", wasmtime.FuncType([i32, i32], [i32]), lambda a, b: a + b)
    instance = linker.instantiate(store, wasmtime.Module(engine, GUEST))
    add = instance.exports(store)["add"]
    callHost = instance.exports(store)["call_host"]
    return {
        "exportCallUs": perCall(lambda: add(store, 1, 2), calls),
        "hostCallUs": hostCallCost(lambda n: callHost(store, n), hostCalls),
    }


def nativeWasmer(calls: int, hostCalls: int) -> Dict[str, float]:
    """
    wasmer-python's generic paths: C{exports.f(...)} and C{Function}.
    """
    import wasmer
    import wasmer_compiler_cranelift

    store = wasmer.Store(wasmer.engine.Universal(wasmer_compiler_cranelift.Compiler))
    imports = wasmer.ImportObject()
    imports.register(
        "env",
        {
            "host_add": wasmer.Function(
                store,
                lambda a, b: a + b,
                wasmer.FunctionType([wasmer.Type.I32, wasmer.Type.I32], [wasmer.Type.I32]),
            )
        },
    )
    instance = wasmer.Instance(wasmer.Module(store, GUEST), imports)
    return {
        "exportCallUs": perCall(lambda: instance.exports.add(1, 2), calls),
        "hostCallUs": hostCallCost(instance.exports.call_host, hostCalls),
    }


NATIVE = {"wasmtime": nativeWasmtime, "wasmer": nativeWasmer}


def largestModule() -> bytes:
    """
    @return: the largest C{.wasm} in C{filters/}, or a generated module of
        a few thousand functions when there is none.
    """
    candidates = sorted(glob.glob(os.path.join(ROOT, "filters", "*.wasm")), key=os.path.getsize)
    if candidates:
        with open(candidates[-1], "rb") as module:
            return module.read()
    functions = "\n".join(
        "(func (export \"f{0}\") (param i32) (result i32) "
        "(i32.add (i32.mul (local.get 0) (i32.const {0})) (i32.const 7)))".format(index)
        for index in range(20000)
    )
    return "(module {})".format(functions).encode("ascii")


def stubImports(module) -> List[HostFunction]:
    """
    Host functions for every import of C{module}: WASI from the shim, the
    rest returning zero.
    """
    wasi = {(f.module, f.name): f for f in WasiShim().hostFunctions()}
    stubs = []
    for wanted in module.imports():
        offered = wasi.get((wanted.module, wanted.name))
        if offered is None:
            zero = 0 if wanted.sig.results else None
            offered = HostFunction(wanted.module, wanted.name, wanted.sig, lambda *args, zero=zero: zero)
        stubs.append(offered)
    return stubs


def residentBytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measureRuntime(name: str, quick: bool) -> Dict[str, object]:
    runtime = getRuntime(name)
    calls = 20000 if quick else 200000
    hostCalls = 20000 if quick else 200000
    module = runtime.compile(GUEST)
    instance = module.instantiate(
        [HostFunction("env", "host_add", ADD_SIG, lambda a, b: a + b)], Limits()
    )
    add = instance.function("add")
    callHost = instance.function("call_host")
    figures: Dict[str, object] = {
        "version": runtime.version,
        "exportCallUs": perCall(lambda: add(1, 2), calls),
        "exportCallViaCallUs": perCall(lambda: instance.call("add", 1, 2), calls),
        "hostCallUs": hostCallCost(callHost, hostCalls),
        "native": NATIVE[name](calls, hostCalls),
    }
    if runtime.supportsDeadline:
        limited = module.instantiate(
            [HostFunction("env", "host_add", ADD_SIG, lambda a, b: a + b)], Limits(callDeadline=5.0)
        ).function("add")
        figures["exportCallWithDeadlineUs"] = perCall(lambda: limited(1, 2), calls)

    source = largestModule()
    figures["largeModuleBytes"] = len(source)
    started = time.perf_counter()
    large = runtime.compile(source)
    figures["coldCompileS"] = time.perf_counter() - started
    cacheDirectory = tempfile.mkdtemp(prefix="twistgate-bench-cache-")
    try:
        started = time.perf_counter()
        runtime.compile(source, cacheDirectory=cacheDirectory)
        figures["compileAndStoreS"] = time.perf_counter() - started
        started = time.perf_counter()
        cached = runtime.compile(source, cacheDirectory=cacheDirectory)
        figures["cachedCompileS"] = time.perf_counter() - started
        figures["cacheStatus"] = cached.cacheStatus
    finally:
        shutil.rmtree(cacheDirectory, ignore_errors=True)
    figures["cachedSpeedup"] = figures["coldCompileS"] / figures["cachedCompileS"]

    imports = stubImports(large)
    large.instantiate(imports, Limits())
    count = 5 if quick else 20
    gc.collect()
    before = residentBytes()
    started = time.perf_counter()
    instances = [large.instantiate(imports, Limits()) for _ in range(count)]
    figures["instantiateMs"] = (time.perf_counter() - started) / count * 1e3
    figures["residentPerInstanceKiB"] = (residentBytes() - before) / count / 1024
    figures["memoryPerInstanceKiB"] = instances[0].memorySize() / 1024
    return figures


def report(results: Dict[str, Dict[str, object]]) -> str:
    names = [n for n in results if "error" not in results[n]]
    lines = []
    for n in results:
        if "error" in results[n]:
            lines.append("{}: unavailable: {}".format(n, results[n]["error"]))
    if not names:
        return "\n".join(lines)

    def row(label, render):
        return "{:<48}".format(label) + "".join("{:>16}".format(render(results[n])) for n in names)

    lines.append("{:<48}".format("Wasm runtime layer") + "".join("{:>16}".format(n) for n in names))
    lines.append(row("runtime version", lambda r: r["version"]))
    lines.append(row("export call, instance.function(name)  us", lambda r: "{:.2f}".format(r["exportCallUs"])))
    lines.append(row("export call, instance.call(name, ...) us", lambda r: "{:.2f}".format(r["exportCallViaCallUs"])))
    lines.append(row("export call with a CPU deadline        us", lambda r: "{:.2f}".format(r["exportCallWithDeadlineUs"]) if "exportCallWithDeadlineUs" in r else "n/a"))
    lines.append(row("export call, runtime's generic path    us", lambda r: "{:.2f}".format(r["native"]["exportCallUs"])))
    lines.append(row("guest->host call, ours                 us", lambda r: "{:.2f}".format(r["hostCallUs"])))
    lines.append(row("guest->host call, runtime's generic    us", lambda r: "{:.2f}".format(r["native"]["hostCallUs"])))
    lines.append(row("large module size                   bytes", lambda r: r["largeModuleBytes"]))
    lines.append(row("cold compile                            s", lambda r: "{:.3f}".format(r["coldCompileS"])))
    lines.append(row("compile + store in empty cache          s", lambda r: "{:.3f}".format(r["compileAndStoreS"])))
    lines.append(row("compile from cache                      s", lambda r: "{:.4f}".format(r["cachedCompileS"])))
    lines.append(row("cached speed-up                         x", lambda r: "{:.0f}".format(r["cachedSpeedup"])))
    lines.append(row("instantiate (large module)             ms", lambda r: "{:.2f}".format(r["instantiateMs"])))
    lines.append(row("resident memory per instance          KiB", lambda r: "{:.0f}".format(r["residentPerInstanceKiB"])))
    lines.append(row("linear memory per instance            KiB", lambda r: "{:.0f}".format(r["memoryPerInstanceKiB"])))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Wasm runtime layer micro-benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    results: Dict[str, Dict[str, object]] = {}
    for name in runtimeNames():
        try:
            results[name] = measureRuntime(name, args.quick)
        except RuntimeUnavailable as error:
            results[name] = {"error": str(error)}
    print(report(results), flush=True)
    if args.json:
        with open(args.json, "w") as output:
            json.dump(results, output, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
