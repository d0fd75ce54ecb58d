"""
The twistgate benchmark harness: one command, one run, every figure.

    python bench/run.py            # full run (about 3 minutes), writes bench/results/
    python bench/run.py --quick    # a tiny load, a few seconds per row (used by the tests)

It installs what it lacks (nginx and wrk from apt, matplotlib into this
interpreter's environment; matplotlib is a bench-only dependency), starts
everything on free loopback ports from its own temporary directory (nginx
with its own prefix and configuration, never the system service), and
measures with wrk (requests/s, p50 and p99 latency) every row of L{rows}:
nginx as a reverse proxy, the Python peer (C{twisted.web.proxy.ReverseProxyResource}
in its own process) and twistgate without and with filters, all in front of
the same nginx upstream serving a small static response. The CPU time each
proxy spent per request is read from C{/proc} around the wrk run.

On a machine with two or more cores the proxy under test is pinned to core 0
and wrk plus the upstream to core 1 (C{taskset}), so that the proxy has a
core of its own; the C{--workers} row lets the workers use every core.

Results: a table on stdout, C{bench/results/latest.json}, C{latest.md} (the
table for the README) and C{latest.png} (a chart). The runtime
micro-benchmarks of C{bench/bench_wasm.py} run last and are stored in the
same JSON.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIGS = os.path.join(HERE, "configs")
RESULTS = os.path.join(HERE, "results")
FILTERS = os.path.join(ROOT, "filters")

#: The upstream's response body: small and static.
UPSTREAM_BODY = "hello from the nginx upstream\n"

APT_PACKAGES = {"nginx": "nginx", "wrk": "wrk"}

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: C{twistd -n} with no pid file, run by this interpreter.
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
          "-n", "--pidfile="]


@dataclass
class Row:
    """
    One measured setup.

    @ivar key: a stable identifier (JSON and tests).
    @ivar label: what the table shows.
    @ivar kind: C{"nginx"}, C{"peer"} or C{"twistgate"}.
    @ivar config: for twistgate, the C{bench/configs} file.
    @ivar vm: for twistgate, the runtime.
    @ivar workers: for twistgate, C{--workers} (1: the option is not given).
    @ivar path: the request path.
    @ivar expectHeader: a response header that proves the filters ran.
    @ivar extraArgs: more twistgate options.
    """

    key: str
    label: str
    kind: str
    config: str = ""
    vm: str = "wasmtime"
    workers: int = 1
    path: str = "/bench"
    expectHeader: str = ""
    extraArgs: Tuple[str, ...] = ()


@dataclass
class Measurement:
    """
    What wrk and C{/proc} said about one row.
    """

    key: str
    label: str
    requestsPerSecond: float = 0.0
    p50Ms: float = 0.0
    p99Ms: float = 0.0
    requests: int = 0
    errors: int = 0
    non2xx: int = 0
    cpuSeconds: float = 0.0
    cpuMicrosPerRequest: float = 0.0
    rssMiB: float = 0.0
    pinned: str = ""
    ratioToPeer: Optional[float] = None
    ratioToNginx: Optional[float] = None
    note: str = ""


def rows() -> List[Row]:
    """
    Every setup the harness measures, in table order.
    """
    return [
        Row("nginx", "nginx reverse proxy (C, practical limit)", "nginx"),
        Row("peer", "twisted.web.proxy.ReverseProxyResource", "peer"),
        Row("nofilter", "twistgate, no filters", "twistgate", config="nofilter.yml"),
        Row("greeting-wasmtime", "twistgate + greeting, AssemblyScript (wasmtime)", "twistgate",
            config="greeting.yml", vm="wasmtime", expectHeader="x-greeting"),
        Row("greeting-wasmer", "twistgate + greeting, AssemblyScript (wasmer)", "twistgate",
            config="greeting.yml", vm="wasmer", expectHeader="x-greeting"),
        Row("greeting-rust-wasmtime", "twistgate + greeting, Rust SDK (wasmtime)", "twistgate",
            config="greeting-rust.yml", vm="wasmtime", expectHeader="x-greeting"),
        Row("greeting-go-wasmtime", "twistgate + greeting, Go SDK (wasmtime)", "twistgate",
            config="greeting-go.yml", vm="wasmtime", expectHeader="x-greeting"),
        Row("ratelimit-wasmtime", "twistgate + rate-limiting (wasmtime)", "twistgate",
            config="ratelimit.yml", vm="wasmtime", expectHeader="x-ratelimit-limit-minute"),
        Row("chain3-wasmtime", "twistgate + 3-filter chain (wasmtime)", "twistgate",
            config="chain3.yml", vm="wasmtime", expectHeader="x-greeting"),
        Row("chain3-wasmer", "twistgate + 3-filter chain (wasmer)", "twistgate",
            config="chain3.yml", vm="wasmer", expectHeader="x-greeting"),
        Row("greeting-wasmtime-workers2", "twistgate --workers 2 (reuseport) + greeting (wasmtime)",
            "twistgate", config="greeting.yml", vm="wasmtime", workers=2, expectHeader="x-greeting",
            extraArgs=("--workers-balance", "reuseport")),
        Row("greeting-wasmtime-workers2-shared", "twistgate --workers 2 (shared socket) + greeting (wasmtime)",
            "twistgate", config="greeting.yml", vm="wasmtime", workers=2, expectHeader="x-greeting",
            extraArgs=("--workers-balance", "shared")),
    ]


# -- tools -------------------------------------------------------------------


def ensureTools() -> None:
    """
    Install nginx and wrk from apt, and matplotlib with pip, when missing.

    @raise SystemExit: a tool is missing and cannot be installed.
    """
    missing = [APT_PACKAGES[tool] for tool in APT_PACKAGES if not findExecutable(tool)]
    if missing:
        if os.geteuid() != 0:
            raise SystemExit(f"bench: missing {', '.join(missing)}; install them: sudo apt-get install -y {' '.join(missing)}")
        print(f"bench: installing {' '.join(missing)} from apt", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("bench: installing matplotlib (bench-only dependency)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"], check=True)


def findExecutable(name: str) -> Optional[str]:
    """
    Find a program on C{PATH} or in C{/usr/sbin} (nginx lives there and
    C{/usr/sbin} is not always on a user's C{PATH}).
    """
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")


def freePort() -> int:
    """
    A TCP port that was free on 127.0.0.1 a moment ago.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpuLayout() -> Dict[str, List[str]]:
    """
    The C{taskset} prefixes: the proxy under test on core 0, the load
    generator and the upstream on the last core; nothing pinned on one core.
    """
    cores = os.cpu_count() or 1
    if cores < 2 or not shutil.which("taskset"):
        return {"proxy": [], "load": [], "workers": []}
    last = str(cores - 1)
    return {
        "proxy": ["taskset", "-c", "0"],
        "load": ["taskset", "-c", last],
        "workers": [],
    }


# -- processes ---------------------------------------------------------------


class Process:
    """
    A child process the harness started, stopped at the end however the run
    ends.
    """

    def __init__(self, name: str, argv: Sequence[str], logDir: str, cwd: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None):
        self.name = name
        self.logPath = os.path.join(logDir, f"{name}.log")
        self.log = open(self.logPath, "wb")
        self.popen = subprocess.Popen(
            list(argv), stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd, env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 15.0) -> None:
        """
        SIGTERM the process group, then SIGKILL whatever is left.
        """
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()

    def tail(self, lines: int = 15) -> str:
        self.log.flush()
        with open(self.logPath, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")


def processTree(pid: int) -> List[int]:
    """
    A process and all its descendants (from C{/proc/PID/task/*/children}).
    """
    found = [pid]
    for each in found:
        try:
            for task in os.listdir(f"/proc/{each}/task"):
                with open(f"/proc/{each}/task/{task}/children") as f:
                    found.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return found


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of a process tree, in seconds.
    """
    total = 0
    for each in processTree(pid):
        try:
            with open(f"/proc/{each}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rssMiB(pid: int) -> float:
    """
    Resident memory of a process tree, in MiB.
    """
    total = 0
    for each in processTree(pid):
        try:
            with open(f"/proc/{each}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def waitForHttp(url: str, process: Process, timeout: float = 60.0,
                expectHeader: str = "") -> None:
    """
    Poll C{url} until it answers 200 (and carries C{expectHeader}).

    @raise RuntimeError: the process died, the deadline passed or the header
        never showed; the message carries the process's last log lines.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited ({process.popen.returncode}):\n{process.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
                if expectHeader and response.headers.get(expectHeader) is None:
                    raise RuntimeError(
                        f"{process.name}: {url} answered without {expectHeader}: the filter did not run\n"
                        f"headers: {dict(response.headers)}\n{process.tail()}")
                return
        except (urllib.error.URLError, ConnectionError, socket.timeout) as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"{process.name}: {url} not ready after {timeout}s ({last}):\n{process.tail()}")


# -- configurations ----------------------------------------------------------

NGINX_COMMON = """\
worker_processes 1;
daemon off;
pid ${prefix}/${name}.pid;
error_log ${prefix}/${name}.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path ${prefix}/tmp/${name}-body;
    proxy_temp_path ${prefix}/tmp/${name}-proxy;
    fastcgi_temp_path ${prefix}/tmp/${name}-fastcgi;
    uwsgi_temp_path ${prefix}/tmp/${name}-uwsgi;
    scgi_temp_path ${prefix}/tmp/${name}-scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
${body}
}
"""

NGINX_UPSTREAM = """\
    server {
        listen 127.0.0.1:${port} backlog=4096;
        location / {
            default_type text/plain;
            return 200 "${response}";
        }
    }
"""

NGINX_PROXY = """\
    upstream backend {
        server 127.0.0.1:${upstreamPort};
        keepalive 64;
    }
    server {
        listen 127.0.0.1:${port} backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
"""


def writeNginxConfig(prefix: str, name: str, body: str, **values) -> str:
    """
    Write C{PREFIX/NAME.conf} from L{NGINX_COMMON} around C{body}.

    @return: the file's path.
    """
    os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
    text = string.Template(NGINX_COMMON).substitute(
        prefix=prefix, name=name, body=string.Template(body).substitute(**values))
    path = os.path.join(prefix, f"{name}.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def writeGatewayConfig(workDir: str, name: str, upstreamPort: int) -> str:
    """
    Copy C{bench/configs/NAME} into the run's directory with the upstream's
    port filled in (C{${upstream_port}}).

    @return: the file's path.
    """
    with open(os.path.join(CONFIGS, name)) as f:
        text = string.Template(f.read()).substitute(upstream_port=upstreamPort)
    path = os.path.join(workDir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# -- the load generator ------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parseDuration(text: str) -> float:
    """
    A wrk duration (C{"812.00us"}, C{"1.20ms"}, C{"2.01s"}) in milliseconds.
    """
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"wrk: unreadable duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parseWrk(output: str) -> Dict[str, float]:
    """
    Read requests/s, p50, p99, the request count and errors from wrk's
    C{--latency} output.

    @raise ValueError: the output lacks a figure.
    """
    figures: Dict[str, float] = {"errors": 0, "non2xx": 0}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rate and count and p50 and p99):
        raise ValueError(f"wrk: unexpected output:\n{output}")
    figures["requestsPerSecond"] = float(rate.group(1))
    figures["requests"] = int(count.group(1))
    figures["p50Ms"] = parseDuration(p50.group(1))
    figures["p99Ms"] = parseDuration(p99.group(1))
    socketErrors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socketErrors:
        figures["errors"] = sum(int(n) for n in socketErrors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        figures["non2xx"] = int(non2xx.group(1))
    return figures


def runWrk(url: str, seconds: float, connections: int, pin: Sequence[str]) -> str:
    """
    Run wrk against C{url} and return its output.
    """
    argv = [*pin, findExecutable("wrk"), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "--latency", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


# -- the run -----------------------------------------------------------------


class Bench:
    """
    One harness run: the upstream, then each row in turn.
    """

    def __init__(self, workDir: str, seconds: float, warmup: float, connections: int):
        self.workDir = workDir
        self.seconds = seconds
        self.warmup = warmup
        self.connections = connections
        self.pins = cpuLayout()
        self.nginx = findExecutable("nginx")
        self.processes: List[Process] = []
        self.upstreamPort = freePort()

    def start(self, name: str, argv: Sequence[str], **kwargs) -> Process:
        process = Process(name, argv, self.workDir, **kwargs)
        self.processes.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        self.processes.remove(process)

    def stopAll(self) -> None:
        for process in list(self.processes):
            self.stop(process)

    def startNginx(self, name: str, body: str, port: int, pin: Sequence[str], **values) -> Process:
        conf = writeNginxConfig(self.workDir, name, body, port=port, **values)
        process = self.start(name, [*pin, self.nginx, "-p", self.workDir, "-c", conf,
                                    "-e", os.path.join(self.workDir, f"{name}.error.log")])
        waitForHttp(f"http://127.0.0.1:{port}/", process, timeout=20)
        return process

    def startUpstream(self) -> None:
        self.startNginx("upstream", NGINX_UPSTREAM, self.upstreamPort, self.pins["load"],
                        response=UPSTREAM_BODY.replace("\n", "\\n"))

    def startRow(self, row: Row, port: int) -> Process:
        """
        Start the proxy of C{row} on C{port} and wait until it proxies.
        """
        pin = self.pins["workers"] if row.workers > 1 else self.pins["proxy"]
        if row.kind == "nginx":
            return self.startNginx("nginx-proxy", NGINX_PROXY, port, pin, upstreamPort=self.upstreamPort)
        if row.kind == "peer":
            process = self.start("peer", [*pin, sys.executable, os.path.abspath(__file__),
                                          "--serve-peer", str(port), str(self.upstreamPort)])
        else:
            process = self.startGateway(row.key, row.config, port, row.vm, row.workers, pin, row.extraArgs)
        waitForHttp(f"http://127.0.0.1:{port}{row.path}", process, expectHeader=row.expectHeader)
        return process

    def startGreetingGateway(self, name: str, configName: str, vm: str) -> Tuple["Process", str]:
        """
        Start the upstream and, on a free port pinned like the proxy under
        test, a gateway over C{bench/configs/CONFIGNAME} whose filters add
        C{X-Greeting}; wait until they answer.

        @return: the gateway process and the URL of C{/NAME} on it.
        """
        self.startUpstream()
        port = freePort()
        gateway = self.startGateway(name, configName, port, vm, pin=self.pins["proxy"])
        url = f"http://127.0.0.1:{port}/{name}"
        waitForHttp(url, gateway, expectHeader="x-greeting")
        return gateway, url

    def startGateway(self, name: str, configName: str, port: int, vm: str = "wasmtime", workers: int = 1,
                     pin: Sequence[str] = (), extraArgs: Sequence[str] = ()) -> Process:
        """
        Start C{twistd -n twistgate} over C{bench/configs/CONFIGNAME} (pointed
        at the upstream) with its proxy on C{port}; it does not wait.

        @return: the process; its C{adminPort} and C{configPath} attributes
            say where its admin API listens and which file it reads.
        """
        config = writeGatewayConfig(self.workDir, configName, self.upstreamPort)
        adminPort = freePort()
        argv = [*pin, *TWISTD, "twistgate",
                "--config", config,
                "--proxy-listen", f"tcp:{port}:interface=127.0.0.1",
                "--admin-listen", f"tcp:{adminPort}:interface=127.0.0.1",
                "--echo-listen", f"tcp:{freePort()}:interface=127.0.0.1",
                "--filters-path", FILTERS, "--vm", vm]
        if workers > 1:
            argv += ["--workers", str(workers)]
        argv += list(extraArgs)
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        process = self.start(name, argv, cwd=ROOT, env=env)
        process.adminPort = adminPort
        process.configPath = config
        return process

    def measure(self, row: Row) -> Measurement:
        """
        Start C{row}'s proxy, warm it up, run wrk and read C{/proc}.
        """
        port = freePort()
        process = self.startRow(row, port)
        url = f"http://127.0.0.1:{port}{row.path}"
        try:
            if self.warmup:
                runWrk(url, self.warmup, self.connections, self.pins["load"])
            before = cpuSeconds(process.pid)
            output = runWrk(url, self.seconds, self.connections, self.pins["load"])
            spent = cpuSeconds(process.pid) - before
            rss = rssMiB(process.pid)
        finally:
            self.stop(process)
        figures = parseWrk(output)
        pin = self.pins["workers"] if row.workers > 1 else self.pins["proxy"]
        return Measurement(
            key=row.key, label=row.label,
            requestsPerSecond=figures["requestsPerSecond"], p50Ms=figures["p50Ms"],
            p99Ms=figures["p99Ms"], requests=int(figures["requests"]), errors=int(figures["errors"]),
            non2xx=int(figures["non2xx"]), cpuSeconds=round(spent, 3),
            cpuMicrosPerRequest=round(spent / figures["requests"] * 1e6, 1) if figures["requests"] else 0.0,
            rssMiB=round(rss, 1), pinned=" ".join(pin[2:]) if pin else "any",
        )


def servePeer(port: int, upstreamPort: int) -> None:
    """
    The Python peer: C{twisted.web.proxy.ReverseProxyResource} as it ships,
    in front of the upstream.
    """
    from twisted.internet import reactor
    from twisted.web.proxy import ReverseProxyResource
    from twisted.web.server import Site

    site = Site(ReverseProxyResource("127.0.0.1", upstreamPort, b""))
    site.noisy = False
    reactor.listenTCP(port, site, interface="127.0.0.1", backlog=4096)
    reactor.run()


def addRatios(measurements: List[Measurement]) -> None:
    byKey = {m.key: m for m in measurements}
    peer = byKey.get("peer")
    nginx = byKey.get("nginx")
    for m in measurements:
        if peer and peer.requestsPerSecond:
            m.ratioToPeer = round(m.requestsPerSecond / peer.requestsPerSecond, 2)
        if nginx and nginx.requestsPerSecond:
            m.ratioToNginx = round(m.requestsPerSecond / nginx.requestsPerSecond, 3)


def filterCosts(measurements: List[Measurement]) -> Dict[str, Dict[str, float]]:
    """
    What each filter setup costs over twistgate without filters: throughput
    lost and CPU microseconds added per request.
    """
    byKey = {m.key: m for m in measurements}
    base = byKey.get("nofilter")
    costs: Dict[str, Dict[str, float]] = {}
    if base is None or not base.requestsPerSecond:
        return costs
    for m in measurements:
        if m.key in ("nginx", "peer", "nofilter") or "workers" in m.key or not m.requestsPerSecond:
            continue
        costs[m.key] = {
            "throughputLossPercent": round(100 * (1 - m.requestsPerSecond / base.requestsPerSecond), 1),
            "addedCpuMicrosPerRequest": round(m.cpuMicrosPerRequest - base.cpuMicrosPerRequest, 1),
        }
    return costs


def targets(measurements: List[Measurement]) -> List[Dict[str, object]]:
    """
    The issue's targets, each with the measured figure and whether it is met
    (reported, not asserted).
    """
    byKey = {m.key: m for m in measurements}

    def ratio(a: str, b: str) -> Optional[float]:
        if a in byKey and b in byKey and byKey[b].requestsPerSecond:
            return round(byKey[a].requestsPerSecond / byKey[b].requestsPerSecond, 2)
        return None

    found = []
    value = ratio("greeting-wasmtime", "peer")
    found.append({"target": "greeting on wasmtime >= 2.0x ReverseProxyResource", "value": value,
                  "met": value is not None and value >= 2.0})
    for vm in ("wasmtime", "wasmer"):
        value = ratio(f"greeting-{vm}", "nofilter")
        loss = None if value is None else round(100 * (1 - value), 1)
        found.append({"target": f"greeting costs <= 10% of no-filter throughput ({vm})",
                      "value": loss, "met": loss is not None and loss <= 10.0})
    value = ratio("greeting-wasmtime-workers2", "greeting-wasmtime")
    found.append({"target": "--workers 2 (reuseport) >= 1.5x one worker (greeting, wasmtime)", "value": value,
                  "met": value is not None and value >= 1.5})
    return found


def machine() -> Dict[str, object]:
    """
    What the figures were measured on.
    """
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in ("twisted", "wasmtime", "wasmer", "wasmer_compiler_cranelift"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    nginx = subprocess.run([findExecutable("nginx"), "-v"], capture_output=True, text=True)
    wrk = subprocess.run([findExecutable("wrk"), "-v"], capture_output=True, text=True)
    return {
        "cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "nginx": (nginx.stderr or nginx.stdout).strip().split("/")[-1],
        "wrk": (wrk.stdout or wrk.stderr).split("\n")[0].split(" [")[0].replace("wrk ", ""),
        **versions,
    }


def table(measurements: List[Measurement]) -> str:
    """
    The results as a Markdown table.
    """
    lines = [
        "| setup | req/s | p50 ms | p99 ms | × peer | × nginx | CPU µs/req | RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        if m.note:
            lines.append(f"| {m.label} | — | — | — | — | — | — | — | {m.note} |")
            continue
        lines.append(
            f"| {m.label} | {m.requestsPerSecond:,.0f} | {m.p50Ms:.2f} | {m.p99Ms:.2f} | "
            f"{m.ratioToPeer if m.ratioToPeer is not None else '—'} | "
            f"{m.ratioToNginx if m.ratioToNginx is not None else '—'} | "
            f"{m.cpuMicrosPerRequest:,.0f} | {m.rssMiB:.0f} | {m.errors + m.non2xx} |")
    return "\n".join(lines)


def chart(measurements: List[Measurement], path: str, title: str) -> None:
    """
    Two horizontal bar charts side by side: requests/s (with p99 latency)
    and the proxy's CPU time per request; C{title} describes the machine
    and the load.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    shown = [m for m in measurements if not m.note]
    figure, (throughput, cpu) = pyplot.subplots(
        1, 2, figsize=(13, 0.45 * len(shown) + 1.8), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    labels = [m.label for m in shown]
    colours = ["#888888" if m.key in ("nginx", "peer") else "#2a7ab0" for m in shown]
    panels = (
        (throughput, [m.requestsPerSecond for m in shown], "requests/s (higher is better)",
         [f"{m.requestsPerSecond:,.0f}/s  p99 {m.p99Ms:.0f} ms" for m in shown]),
        (cpu, [m.cpuMicrosPerRequest for m in shown], "proxy CPU µs per request (lower is better)",
         [f"{m.cpuMicrosPerRequest:,.0f} µs" for m in shown]),
    )
    for axes, values, xlabel, texts in panels:
        bars = axes.barh(labels, values, color=colours)
        axes.set_xlabel(xlabel)
        top = max(values or [1]) or 1
        for bar, text in zip(bars, texts):
            gap = bar.get_width() * 0.08 if axes is throughput else top * 0.01
            axes.text(bar.get_width() + gap, bar.get_y() + bar.get_height() / 2, text,
                      va="center", fontsize=7)
        axes.set_xlim(right=top * 1.45)
    rates = [m.requestsPerSecond for m in shown if m.requestsPerSecond > 0]
    if rates:
        throughput.set_xscale("log")
        throughput.set_xlim(left=min(rates) / 4, right=max(rates) * 6)
        throughput.set_xlabel("requests/s, log scale (higher is better)")
    throughput.invert_yaxis()
    figure.suptitle("\n".join(textwrap.wrap(title, 150)), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def microBenchmarks(quick: bool) -> Dict[str, object]:
    """
    Run C{bench/bench_wasm.py} (the runtime micro-benchmarks) and return its
    JSON (C{--json FILE}), or its printed output when it does not take
    C{--json}, or the error.
    """
    script = os.path.join(HERE, "bench_wasm.py")
    if not os.path.exists(script):
        return {"error": "bench/bench_wasm.py is missing"}
    output = os.path.join(tempfile.mkdtemp(prefix="twistgate-micro-"), "micro.json")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    quickArgs = ["--quick"] if quick else []
    for extra in (["--json", output] + quickArgs, quickArgs, []):
        done = subprocess.run([sys.executable, script, *extra], capture_output=True, text=True, cwd=ROOT,
                              env=env, timeout=900)
        if done.returncode == 2 and "unrecognized arguments" in done.stderr:
            continue
        break
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        return {"error": f"bench_wasm.py exited {done.returncode}: {done.stderr.strip()[-2000:]}"}
    try:
        with open(output) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"text": done.stdout}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="twistgate benchmark harness")
    parser.add_argument("--quick", action="store_true", help="a tiny load (1 s per row), for the tests")
    parser.add_argument("--seconds", type=float, help="wrk duration per row (default 10, quick 1)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", help="comma-separated row keys to run")
    parser.add_argument("--results", default=RESULTS, help="directory for latest.json/.md/.png")
    parser.add_argument("--no-micro", action="store_true", help="skip bench/bench_wasm.py")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--serve-peer", nargs=2, type=int, metavar=("PORT", "UPSTREAM_PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_peer:
        servePeer(*args.serve_peer)
        return 0

    ensureTools()
    seconds = args.seconds or (1.0 if args.quick else 10.0)
    warmup = 1.0 if args.quick else 3.0
    selected = rows()
    if args.only:
        keys = set(args.only.split(","))
        selected = [row for row in selected if row.key in keys]
    workDir = tempfile.mkdtemp(prefix="twistgate-bench-")
    bench = Bench(workDir, seconds, warmup, args.connections)
    loadBefore = os.getloadavg()
    measurements: List[Measurement] = []
    pins = bench.pins
    print(f"bench: {len(selected)} setups, {seconds:.0f} s each, {args.connections} connections; "
          f"proxy pinned to {' '.join(pins['proxy'][2:]) or 'any core'}, wrk and upstream to "
          f"{' '.join(pins['load'][2:]) or 'any core'}; work dir {workDir}", flush=True)
    try:
        bench.startUpstream()
        for row in selected:
            try:
                m = bench.measure(row)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                lines = [line.strip() for line in str(e).splitlines() if line.strip()]
                summary = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"
                m = Measurement(key=row.key, label=row.label, note="failed: " + summary[:300])
                print(f"bench: {row.key}: {e}", file=sys.stderr, flush=True)
            measurements.append(m)
            print(f"  {row.label:48s} {m.requestsPerSecond:10,.0f} req/s  p50 {m.p50Ms:7.2f} ms  "
                  f"p99 {m.p99Ms:7.2f} ms  {m.cpuMicrosPerRequest:7,.0f} CPU µs/req  {m.note}", flush=True)
    finally:
        bench.stopAll()
        if not args.keep:
            shutil.rmtree(workDir, ignore_errors=True)
    addRatios(measurements)
    micro = {} if args.no_micro else microBenchmarks(args.quick)
    described = machine()
    described["loadAverage"] = {"before": [round(x, 2) for x in loadBefore],
                                "after": [round(x, 2) for x in os.getloadavg()]}
    result = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "seconds": seconds,
        "connections": args.connections,
        "pinning": {"proxy": " ".join(pins["proxy"]) or "none", "load": " ".join(pins["load"]) or "none",
                    "workers": "none (all cores)"},
        "machine": described,
        "rows": [asdict(m) for m in measurements],
        "filterCosts": filterCosts(measurements),
        "targets": targets(measurements),
        "micro": micro,
    }
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "latest.json"), "w") as f:
        json.dump(result, f, indent=2)
    machineLine = (f"{described['cpu']}, {described['cores']} cores, Linux {described['kernel']}, "
                   f"Python {described['python']}, Twisted {described['twisted']}, wasmtime "
                   f"{described['wasmtime']}, wasmer {described['wasmer']}, nginx {described['nginx']}, "
                   f"wrk {described['wrk']}")
    markdown = (f"{table(measurements)}\n\n{machineLine}; load average {loadBefore[0]:.2f} before the run; wrk -c{args.connections}, {seconds:.0f} s per "
                f"setup; proxy on core {' '.join(pins['proxy'][2:]) or 'any'}, wrk and upstream on core "
                f"{' '.join(pins['load'][2:]) or 'any'}, --workers rows unpinned.\n")
    with open(os.path.join(args.results, "latest.md"), "w") as f:
        f.write(markdown)
    chart(measurements, os.path.join(args.results, "latest.png"),
          f"{machineLine}; wrk -c{args.connections}, {seconds:.0f} s per setup")
    print()
    print(markdown)
    for target in result["targets"]:
        print(f"target: {target['target']}: {target['value']} ({'met' if target['met'] else 'NOT met'})")
    for key, cost in result["filterCosts"].items():
        print(f"filter cost: {key}: -{cost['throughputLossPercent']}% throughput, "
              f"+{cost['addedCpuMicrosPerRequest']} CPU µs/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
