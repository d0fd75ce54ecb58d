"""
Reloads under load: wrk keeps 32 connections busy on the gateway while the
configuration is replaced through C{POST /config} every few milliseconds;
every request must still be answered with a 2xx.

    python bench/reload_load.py                   # 20 s of load, a reload every 50 ms
    python bench/reload_load.py --seconds 5 --interval 0.1 --vm wasmer

It starts its own nginx upstream and gateway (as C{bench/run.py} does),
measures a baseline without reloads, then the same load with reloads, and
prints both: requests, failed requests (socket errors and non-2xx, as wrk
counts them), latency, reloads done and refused, and how long a reload
took. At the end it checks that the last configuration posted is the one
serving. Exit status 1 when a request failed or a reload was refused.
"""

import argparse
import os
import sys
import threading
import urllib.request
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as harness  # noqa: E402
from soak import Reloader, configVersions, percentile  # noqa: E402


def greetings(url: str) -> List[str]:
    """
    The X-Greeting values of one response.
    """
    with urllib.request.urlopen(url, timeout=10) as response:
        response.read()
        return response.headers.get_all("x-greeting") or []


def describe(name: str, figures: dict) -> str:
    return (f"{name:16s} {figures['requests']:9,d} requests  {figures['requestsPerSecond']:9,.0f} req/s  "
            f"p50 {figures['p50Ms']:6.2f} ms  p99 {figures['p99Ms']:7.2f} ms  "
            f"failed {figures['errors'] + figures['non2xx']} "
            f"(socket errors {figures['errors']}, non-2xx {figures['non2xx']})")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="twistgate: zero failed requests during reloads")
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration of each phase")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between two reloads")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--vm", default="wasmtime")
    parser.add_argument("--config", default="chain3.yml", help="a file of bench/configs")
    args = parser.parse_args(argv)

    harness.ensureTools()
    workDir = harness.tempfile.mkdtemp(prefix="twistgate-reload-")
    bench = harness.Bench(workDir, args.seconds, 0, args.connections)
    reloader: Optional[Reloader] = None
    try:
        gateway, url = bench.startGreetingGateway("reload", args.config, args.vm)
        versions = configVersions(gateway.configPath)
        harness.runWrk(url, 1, args.connections, bench.pins["load"])
        baseline = harness.parseWrk(harness.runWrk(url, args.seconds, args.connections, bench.pins["load"]))
        rssBefore = harness.rssMiB(gateway.pid)
        reloader = Reloader(gateway.adminPort, versions, 10 ** 9, args.interval)
        loaded: dict = {}

        def load() -> None:
            loaded.update(harness.parseWrk(harness.runWrk(url, args.seconds, args.connections,
                                                           bench.pins["load"])))

        loadThread = threading.Thread(target=load)
        loadThread.start()
        reloader.start()
        loadThread.join()
        reloader.stopping.set()
        reloader.join(60)
        # The last version posted must be the one serving.
        lastPosted = versions[(reloader.done - 1) % len(versions)]
        expected = "second, even" if "second, even" in lastPosted else "second"
        serving = greetings(url)
        print(f"reload under load: {args.config} on {args.vm}, {args.connections} connections, "
              f"{args.seconds:.0f} s per phase, a reload every {args.interval * 1000:.0f} ms")
        print(describe("without reloads", baseline))
        print(describe("with reloads", loaded))
        print(f"reloads: {reloader.done} done, {sum(reloader.failed.values())} refused "
              f"{reloader.failed or ''}; each took p50 {percentile(reloader.durations, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(reloader.durations, 0.99) * 1000:.0f} ms; gateway RSS "
              f"{rssBefore:.0f} -> {harness.rssMiB(gateway.pid):.0f} MiB")
        serves = expected in serving
        print(f"last configuration posted is serving: {'yes' if serves else 'NO'} (X-Greeting: {serving})")
        failed = loaded["errors"] + loaded["non2xx"] + sum(reloader.failed.values())
        print(f"result: {'zero failed requests' if failed == 0 and serves else 'FAILURES'}")
        return 0 if failed == 0 and serves else 1
    finally:
        if reloader is not None:
            reloader.stopping.set()
        bench.stopAll()
        harness.shutil.rmtree(workDir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
