"""
Soak: many requests through a 3-filter chain and many reloads, watching the
gateway's memory, file descriptors and live Wasm state stay flat.

    python bench/soak.py                      # 100k requests, 1k reloads (a few minutes)
    python bench/soak.py --requests 5000 --reloads 50 --max-seconds 60

It starts its own nginx upstream and C{twistd -n twistgate} over
C{bench/configs/chain3.yml} (as C{bench/run.py} does), then runs wrk in
short rounds until the request count is reached while another thread posts
the configuration to C{POST /config} (alternating two versions so that every
reload builds a new filter chain). After each round it prints the requests
and reloads so far, the gateway's RSS and open file descriptors (from
C{/proc}) and what C{GET /status} says about live Wasm state. It stops by
itself when both counts are reached or C{--max-seconds} passed, and ends
with the RSS growth after warm-up. It asserts nothing: it reports.
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as harness  # noqa: E402  (bench/run.py, the harness)


def openFds(pid: int) -> int:
    """
    Open file descriptors of a process tree.
    """
    total = 0
    for each in harness.processTree(pid):
        try:
            total += len(os.listdir(f"/proc/{each}/fd"))
        except OSError:
            continue
    return total


def getJson(url: str) -> Dict[str, object]:
    """
    GET a JSON document; an empty dict when it fails.
    """
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ValueError, OSError):
        return {}


def postConfig(adminPort: int, text: str) -> int:
    """
    C{POST /config} with a YAML body.

    @return: the status code (0 when the connection failed).
    """
    request = urllib.request.Request(
        f"http://127.0.0.1:{adminPort}/config", data=text.encode("utf-8"), method="POST",
        headers={"Content-Type": "application/yaml"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def liveState(status: Dict[str, object]) -> str:
    """
    The parts of C{GET /status} that count live Wasm state, as one line:
    every numeric field of its C{wasm} (or C{filters}) section, and the
    configuration generation.
    """
    parts = []
    for section in ("wasm", "filters", "contexts"):
        value = status.get(section)
        if isinstance(value, dict):
            parts += [f"{section}.{key}={item}" for key, item in sorted(value.items())
                      if isinstance(item, (int, float))]
    if "configuration_generation" in status:
        parts.append(f"generation={status['configuration_generation']}")
    return " ".join(parts) or "(no live-state counters in /status)"


class Reloader(threading.Thread):
    """
    Posts two versions of a configuration in turn, C{count} times, spread over
    the expected duration of the load.
    """

    def __init__(self, adminPort: int, versions: List[str], count: int, interval: float):
        super().__init__(daemon=True)
        self.adminPort = adminPort
        self.versions = versions
        self.count = count
        self.interval = interval
        self.done = 0
        self.failed: Dict[int, int] = {}
        self.durations: List[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while self.done < self.count and not self.stopping.is_set():
            started = time.monotonic()
            status = postConfig(self.adminPort, self.versions[self.done % len(self.versions)])
            self.durations.append(time.monotonic() - started)
            if status != 201:
                self.failed[status] = self.failed.get(status, 0) + 1
            self.done += 1
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))


def percentile(values: List[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def configVersions(path: str) -> List[str]:
    """
    Two versions of the soak configuration that differ in a filter's
    configuration, so that each reload builds a new chain.
    """
    with open(path) as f:
        text = f.read()
    if '"second"' not in text:
        raise SystemExit(f"soak: {path} has no greeting configured \"second\" to vary")
    return [text.replace('"second"', '"second, even"'), text]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="twistgate soak: requests and reloads, resources watched")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--reloads", type=int, default=1_000)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop after this long in any case")
    parser.add_argument("--round", type=float, default=5.0, help="seconds of load between two reports")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--vm", default="wasmtime")
    parser.add_argument("--config", default="chain3.yml", help="a file of bench/configs")
    args = parser.parse_args(argv)

    harness.ensureTools()
    workDir = harness.tempfile.mkdtemp(prefix="twistgate-soak-")
    bench = harness.Bench(workDir, args.round, 0, args.connections)
    reloader: Optional[Reloader] = None
    try:
        gateway, url = bench.startGreetingGateway("soak", args.config, args.vm)
        statusUrl = f"http://127.0.0.1:{gateway.adminPort}/status"
        # A first round measures the rate, to spread the reloads over the run.
        output = harness.runWrk(url, min(args.round, 2.0), args.connections, bench.pins["load"])
        first = harness.parseWrk(output)
        rate = max(first["requestsPerSecond"], 1.0)
        expected = min(args.max_seconds, args.requests / rate)
        reloader = Reloader(gateway.adminPort, configVersions(gateway.configPath), args.reloads,
                            expected / max(args.reloads, 1))
        reloader.start()
        requests, errors, non2xx = int(first["requests"]), int(first["errors"]), int(first["non2xx"])
        started = time.monotonic()
        print(f"soak: {args.requests} requests at ~{rate:,.0f}/s and {args.reloads} reloads through "
              f"{args.config} on {args.vm}, {args.connections} connections; stops after "
              f"{args.max_seconds:.0f} s at most", flush=True)
        print(f"{'time s':>7} {'requests':>9} {'failed':>6} {'reloads':>7} {'RSS MiB':>8} {'fds':>5}  live state",
              flush=True)
        samples = []
        while time.monotonic() - started < args.max_seconds:
            if requests >= args.requests and reloader.done >= args.reloads:
                break
            if requests < args.requests:
                figures = harness.parseWrk(harness.runWrk(url, args.round, args.connections, bench.pins["load"]))
                requests += int(figures["requests"])
                errors += int(figures["errors"])
                non2xx += int(figures["non2xx"])
            else:
                time.sleep(args.round)
            rss, fds = harness.rssMiB(gateway.pid), openFds(gateway.pid)
            samples.append((requests, rss, fds))
            print(f"{time.monotonic() - started:7.0f} {requests:9,d} {errors + non2xx:6d} {reloader.done:7d} "
                  f"{rss:8.1f} {fds:5d}  {liveState(getJson(statusUrl))}", flush=True)
        reloader.stopping.set()
        reloader.join(60)
        warm = next((s for s in samples if s[0] >= args.requests * 0.1), samples[0] if samples else None)
        last = samples[-1] if samples else None
        print()
        print(f"soak: {requests:,d} requests ({errors} socket errors, {non2xx} non-2xx), "
              f"{reloader.done} reloads ({sum(reloader.failed.values())} refused: {reloader.failed or 'none'}; "
              f"p50 {percentile(reloader.durations, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(reloader.durations, 0.99) * 1000:.0f} ms each) "
              f"in {time.monotonic() - started:.0f} s", flush=True)
        if warm and last:
            growth = 100 * (last[1] - warm[1]) / warm[1] if warm[1] else 0.0
            print(f"soak: after warm-up ({warm[0]:,d} requests) RSS {warm[1]:.1f} MiB, fds {warm[2]}; "
                  f"at the end RSS {last[1]:.1f} MiB ({growth:+.1f}%), fds {last[2]}", flush=True)
    finally:
        if reloader is not None:
            reloader.stopping.set()
        bench.stopAll()
        harness.shutil.rmtree(workDir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
