"""
C{twistd twistgate}: command-line options (with Kong's environment
variables as fallbacks) and the service they make.
"""

import math
import os
import sys
from typing import Mapping, Optional, Tuple

from twisted.logger import Logger
from twisted.python import usage

from twistgate.config.errors import ConfigError

DEFAULT_PROXY_LISTEN = "tcp:8000"
DEFAULT_ADMIN_LISTEN = "tcp:8001:interface=127.0.0.1"
DEFAULT_ECHO_LISTEN = "tcp:8080:interface=127.0.0.1"
DEFAULT_FILTERS_PATH = "filters"
DEFAULT_MAX_BODY_SIZE = 8 * 1024 * 1024
DEFAULT_FILTER_MEMORY_LIMIT = "256m"
DEFAULT_FILTER_DEADLINE = 1.0
#: The largest linear memory a 32-bit Wasm guest can have.
WASM32_MAX_MEMORY = 4 * 1024 ** 3
VMS = ("wasmtime", "wasmer")

log = Logger(namespace="twistgate.tap")

_ENDPOINT_TYPES = frozenset(["tcp", "tcp6", "ssl", "tls", "unix", "systemd", "ssl6", "tor", "onion", "stdio"])
_DISABLED = frozenset(["off", "none"])


def kongListenToEndpoints(value: str, option: str) -> Tuple[str, ...]:
    """
    Convert a listen setting to Twisted endpoint strings.

    Accepts Twisted endpoint descriptions (C{tcp:8000:interface=0.0.0.0},
    C{ssl:8443:privateKey=...}) and Kong's C{host:port [flags]} form
    (C{0.0.0.0:8000, 127.0.0.1:8001 reuseport}), several separated by commas;
    C{off} (or C{none}) disables the listener.

    @param option: the option or variable name, for messages.
    @raise usage.UsageError: a Kong entry asks for C{ssl} (give a Twisted
        C{ssl:} endpoint with the certificate instead) or has no port.
    """
    value = value.strip()
    if value.lower() in _DISABLED:
        return ()
    if value.split(":", 1)[0].lower() in _ENDPOINT_TYPES:
        return (value,)
    endpoints = []
    for entry in value.split(","):
        words = entry.split()
        if not words:
            continue
        address, flags = words[0], words[1:]
        if "ssl" in flags:
            raise usage.UsageError(
                "%s: %r: Kong's ssl flag needs a certificate; use a Twisted endpoint such as"
                " ssl:8443:privateKey=key.pem:certKey=cert.pem" % (option, entry.strip()))
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise usage.UsageError("%s: %r: expected host:port or a Twisted endpoint" % (option, entry.strip()))
        host = host.strip("[]")
        if host in ("", "*", "0.0.0.0"):
            endpoints.append("tcp:%s" % (port,))
        elif ":" in host:
            endpoints.append("tcp6:%s:interface=%s" % (port, host.replace(":", "\\:")))
        else:
            endpoints.append("tcp:%s:interface=%s" % (port, host))
    return tuple(endpoints)


def _size(value: str) -> int:
    """
    Parse a byte size: C{1048576}, C{512k}, C{8m}, C{1g} (Kong's
    C{client_max_body_size} style); C{0} means unlimited.
    """
    text = value.strip().lower()
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    if not number.isdigit():
        raise ValueError("not a size: %r (e.g. 8m, 512k, 1048576)" % (value,))
    return int(number) * factor


def _seconds(value: str, option: str) -> float:
    """
    Parse a finite, non-negative number of seconds.

    @param option: the option's name, for the message.
    @raise usage.UsageError: naming the option and the value.
    """
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise usage.UsageError("%s: %r is not a number of seconds (0 or more)" % (option, value))
    return seconds


_LOG_LEVELS = {name: name.upper() for name in ("trace", "debug", "info", "warn", "error", "critical")}
_KONG_LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "notice": "INFO", "warn": "WARN", "error": "ERROR",
                    "crit": "CRITICAL"}


class Options(usage.Options):
    """
    C{twistd twistgate} options. Kong's environment variables fill in
    what the command line leaves out.
    """

    synopsis = "[options]"
    longdesc = (
        "Run the twistgate API gateway over a Kong-style declarative kong.yml. Listen addresses are"
        " Twisted endpoint strings (tcp:8000, ssl:8443:privateKey=key.pem:certKey=cert.pem) or Kong's"
        " host:port form; 'off' disables a listener. Environment fallbacks: KONG_DECLARATIVE_CONFIG,"
        " KONG_WASM_FILTERS_PATH, KONG_PROXY_LISTEN, KONG_ADMIN_LISTEN, KONG_WASM (on/off), KONG_LOG_LEVEL."
    )
    optParameters = [
        ["config", "c", None, "Declarative configuration file (kong.yml) [env: KONG_DECLARATIVE_CONFIG]"],
        ["vm", None, None, "Wasm runtime: wasmtime or wasmer [default: wasmtime]"],
        ["proxy-listen", None, None, "Proxy listen endpoint [env: KONG_PROXY_LISTEN; default: %s]"
         % DEFAULT_PROXY_LISTEN],
        ["admin-listen", None, None, "Admin API listen endpoint [env: KONG_ADMIN_LISTEN; default: %s]"
         % DEFAULT_ADMIN_LISTEN],
        ["echo-listen", None, None, "Built-in echo upstream endpoint, or none [default: %s]" % DEFAULT_ECHO_LISTEN],
        ["filters-path", None, None, "Directory of .wasm filters [env: KONG_WASM_FILTERS_PATH; default: %s]"
         % DEFAULT_FILTERS_PATH],
        ["max-body-size", None, None, "Largest request body accepted (e.g. 8m, 0 = unlimited) [default: 8m]"],
        ["header-timeout", None, 60.0, "Seconds a client has to send its request headers", float],
        ["body-timeout", None, 60.0, "Seconds of silence allowed while a request body arrives, between"
         " requests, and while a client does not take its response", float],
        ["drain-timeout", None, 10.0, "Seconds in-flight requests get to finish on SIGTERM", float],
        ["access-log", None, "off", "Access log destination: off, stdout, stderr or a file path"],
        ["access-log-format", None, "json", "Access log format: json (Kong's log serializer) or combined"],
        ["shared-data", None, None, "Where filters' shared data and queues live: memory or redis://host:port/db"
         " [env: TWISTGATE_SHARED_DATA; default: memory]"],
        ["workers", None, 0, "Run N worker processes sharing the listening sockets (0: serve in this process)",
         int],
        ["workers-balance", None, "shared", "How workers share a port: shared (one accept queue) or reuseport"],
        ["filter-memory-limit", None, DEFAULT_FILTER_MEMORY_LIMIT,
         "Cap on each filter instance's linear memory (e.g. 64m, 1g; at most 4g); growing past it fails"],
        ["filter-deadline", None, str(DEFAULT_FILTER_DEADLINE),
         "Seconds of CPU one guest call may run before it is stopped as a trap (0: no deadline;"
         " enforced on wasmtime only)"],
        ["filter-max-traps", None, "5", "Traps within --filter-trap-window that put a filter in backoff"],
        ["filter-trap-window", None, "60", "Seconds over which a filter's traps are counted"],
        ["filter-backoff", None, "30",
         "Seconds a filter stays in backoff (its requests get 503, or skip it when fail_open)"],
        ["log-level", None, None, "Lowest level of filters' logs kept: trace, debug, info, warn, error or"
         " critical [env: KONG_LOG_LEVEL (debug, info, notice, warn, error, crit); default: info]"],
        ["cache-dir", None, None, "Directory caching compiled filter modules, or off"
         " [default: $XDG_CACHE_HOME/twistgate or ~/.cache/twistgate]"],
    ]

    environ: Mapping[str, str] = os.environ

    def postOptions(self) -> None:
        env = self.environ
        configPath = self["config"] or env.get("KONG_DECLARATIVE_CONFIG")
        if not configPath:
            raise usage.UsageError("--config is required (or set KONG_DECLARATIVE_CONFIG)")
        self["config"] = configPath
        vm = self["vm"] or "wasmtime"
        if vm not in VMS:
            raise usage.UsageError("--vm: %r is not one of %s" % (vm, ", ".join(VMS)))
        self["vm"] = vm
        self["filters-path-required"] = bool(self["filters-path"] or env.get("KONG_WASM_FILTERS_PATH"))
        self["filters-path"] = self["filters-path"] or env.get("KONG_WASM_FILTERS_PATH") or DEFAULT_FILTERS_PATH
        self["proxy-endpoints"] = self._listen("proxy-listen", "KONG_PROXY_LISTEN", DEFAULT_PROXY_LISTEN)
        self["admin-endpoints"] = self._listen("admin-listen", "KONG_ADMIN_LISTEN", DEFAULT_ADMIN_LISTEN)
        self["echo-endpoints"] = self._listen("echo-listen", None, DEFAULT_ECHO_LISTEN)
        wasm = env.get("KONG_WASM", "on").strip().lower()
        if wasm not in ("on", "off", "true", "false", "1", "0"):
            raise usage.UsageError("KONG_WASM: %r is not on or off" % (wasm,))
        self["wasm"] = wasm in ("on", "true", "1")
        try:
            self["max-body-size"] = _size(self["max-body-size"] or str(DEFAULT_MAX_BODY_SIZE))
        except ValueError as error:
            raise usage.UsageError("--max-body-size: %s" % (error,))
        self["shared-data"] = self["shared-data"] or env.get("TWISTGATE_SHARED_DATA") or "memory"
        if self["access-log-format"] not in ("json", "combined"):
            raise usage.UsageError("--access-log-format: %r is not json or combined" % (self["access-log-format"],))
        if self["workers"] < 0:
            raise usage.UsageError("--workers: must be 0 or more, not %d" % (self["workers"],))
        if self["workers-balance"] not in ("shared", "reuseport"):
            raise usage.UsageError("--workers-balance: %r is not shared or reuseport" % (self["workers-balance"],))
        if self["workers"]:
            for option in ("proxy-endpoints", "admin-endpoints", "echo-endpoints"):
                if len(self[option]) > 1:
                    raise usage.UsageError("--workers: one endpoint per listener, not %s" % (", ".join(self[option]),))
        self["filter-log-level"] = self._logLevel()
        self._filterLimits()

    def _logLevel(self):
        """
        @return: the L{twistgate.proxywasm.constants.LogLevel} of
            C{--log-level}, else of C{KONG_LOG_LEVEL} (Kong's names), else
            info.
        """
        from twistgate.proxywasm.constants import LogLevel

        if self["log-level"] is not None:
            names, option, value = _LOG_LEVELS, "--log-level", self["log-level"]
        elif self.environ.get("KONG_LOG_LEVEL"):
            names, option, value = _KONG_LOG_LEVELS, "KONG_LOG_LEVEL", self.environ["KONG_LOG_LEVEL"]
        else:
            return LogLevel.INFO
        name = names.get(value.strip().lower())
        if name is None:
            raise usage.UsageError("%s: %r is not one of %s" % (option, value, ", ".join(names)))
        return LogLevel[name]

    def _filterLimits(self) -> None:
        """
        Parse the filter limits, trap policy and cache options into
        C{limits} (a L{Limits}), C{trap-policy} (a L{TrapPolicy}) and
        C{cache-directory} (L{None} when off).
        """
        from twistgate.proxywasm.vm import TrapPolicy
        from twistgate.wasm.interfaces import Limits

        try:
            memory = _size(self["filter-memory-limit"])
        except ValueError as error:
            raise usage.UsageError("--filter-memory-limit: %s" % (error,))
        if not 0 < memory <= WASM32_MAX_MEMORY:
            raise usage.UsageError("--filter-memory-limit: %r must be more than 0 and at most 4g"
                                   % (self["filter-memory-limit"],))
        deadline = _seconds(self["filter-deadline"], "--filter-deadline")
        maxTraps = self["filter-max-traps"].strip()
        if not maxTraps.isdigit() or int(maxTraps) < 1:
            raise usage.UsageError("--filter-max-traps: %r is not a whole number of 1 or more"
                                   % (self["filter-max-traps"],))
        window = _seconds(self["filter-trap-window"], "--filter-trap-window")
        if window == 0:
            raise usage.UsageError("--filter-trap-window: %r must be more than 0" % (self["filter-trap-window"],))
        self["limits"] = Limits(maxMemoryBytes=memory, callDeadline=deadline or None)
        self["trap-policy"] = TrapPolicy(int(maxTraps), window,
                                         _seconds(self["filter-backoff"], "--filter-backoff"))
        self["cache-directory"] = self._cacheDirectory()

    def _cacheDirectory(self) -> Optional[str]:
        value = self["cache-dir"]
        if value is None:
            home = self.environ.get("HOME") or os.path.expanduser("~")
            base = self.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
            return os.path.join(base, "twistgate")
        if value.strip().lower() in _DISABLED:
            return None
        if not value.strip():
            raise usage.UsageError("--cache-dir: give a directory or off")
        return value

    def _listen(self, option: str, variable: Optional[str], default: str) -> Tuple[str, ...]:
        if self[option]:
            return kongListenToEndpoints(self[option], "--" + option)
        if variable and self.environ.get(variable):
            return kongListenToEndpoints(self.environ[variable], variable)
        return (default,)


def _settingsFrom(options: Options):
    from twistgate.service import GatewaySettings
    return GatewaySettings(
        configPath=options["config"],
        filtersPath=options["filters-path"],
        filtersPathRequired=options["filters-path-required"],
        proxyListen=options["proxy-endpoints"],
        adminListen=options["admin-endpoints"],
        echoListen=options["echo-endpoints"],
        wasmEnabled=options["wasm"],
        vm=options["vm"],
        maxBodySize=options["max-body-size"] or None,
        headerTimeout=options["header-timeout"],
        bodyTimeout=options["body-timeout"],
        drainTimeout=options["drain-timeout"],
    )


def chainPlanBuilder(vm: str, filters, reactor, metricStore=None, sharedData=None, sharedQueues=None,
                     observer=None, limits=None, trapPolicy=None, cacheDirectory: Optional[str] = None,
                     logLevel=None, live=None):
    """
    The filter chain plan builder over the Wasm runtime C{vm}. The runtime
    is loaded on the first configuration that has filter chains; if it
    cannot enforce C{limits.callDeadline}, a warning says so then, once.

    @param metricStore: the filters' metrics (a
        L{twistgate.proxywasm.metrics.MetricStore}).
    @param sharedData: the filters' shared data store.
    @param sharedQueues: the filters' shared queues.
    @param observer: the L{twistgate.proxywasm.vm.IFilterObserver} told of
        filter phases, traps, recycles and instance memory (the
        L{twistgate.web.metrics.GatewayMetrics}).
    @param limits: each instance's L{twistgate.wasm.interfaces.Limits}.
    @param trapPolicy: the L{twistgate.proxywasm.vm.TrapPolicy}.
    @param cacheDirectory: where compiled modules are cached, L{None} for
        no cache.
    @param logLevel: the lowest L{twistgate.proxywasm.constants.LogLevel}
        of filters' logs kept (default: info).
    @param live: the L{twistgate.proxywasm.vm.LiveCounts} the filters'
        VMs count themselves in.
    @return: a callable from a L{GatewayConfig} to its chain plan; it
        raises L{ConfigError} when the runtime is unavailable or a filter
        rejects its configuration.
    """
    from twisted.web.client import Agent, HTTPConnectionPool

    from twistgate.gateway.chain import ChainPlanner
    from twistgate.proxywasm.constants import LogLevel
    from twistgate.wasm.interfaces import Limits, RuntimeUnavailable
    from twistgate.wasm.registry import getRuntime

    limits = limits if limits is not None else Limits()
    logLevel = logLevel if logLevel is not None else LogLevel.INFO
    planners = []

    def build(config):
        if not planners:
            try:
                runtime = getRuntime(vm)
            except RuntimeUnavailable as error:
                raise ConfigError(["--vm %s: %s" % (vm, error)])
            if limits.callDeadline is not None and not runtime.supportsDeadline:
                log.warn("--vm {vm}: {vm} cannot interrupt a running guest, so the CPU deadline"
                         " (--filter-deadline {deadline:g}) is not enforced; a filter that loops"
                         " blocks the gateway. Use --vm wasmtime to enforce it.",
                         vm=vm, deadline=limits.callDeadline)
            agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))
            planners.append(ChainPlanner(runtime, filters, reactor, agent, limits=limits,
                                         cacheDirectory=cacheDirectory, metrics=metricStore,
                                         sharedData=sharedData, sharedQueues=sharedQueues,
                                         trapPolicy=trapPolicy, observer=observer, logLevel=logLevel,
                                         live=live))
        return planners[0].build(config)

    return build


def makeService(options: Options, reactor=None):
    """
    Make the gateway service (or, with C{--workers}, the supervisor of its
    worker processes). A bad configuration prints every problem on stderr,
    one per line, and exits with status 1 before anything listens.
    """
    if reactor is None:
        from twisted.internet import reactor
    settings = _settingsFrom(options)
    try:
        if options["workers"]:
            return _supervisor(options, settings, reactor)
        return _gateway(options, settings, reactor)
    except ConfigError as error:
        _exitWithErrors(error)


def _gateway(options: Options, settings, reactor):
    """
    The gateway serving in this process.

    @raise ConfigError: the configuration, the filters or an option's value
        is invalid.
    """
    from twistgate.dispatch import leanDispatch
    from twistgate.gateway.redis_store import sharedStoresFromURL
    from twistgate.proxywasm.metrics import MetricStore
    from twistgate.proxywasm.vm import LiveCounts
    from twistgate.service import GatewayService, discoverInstalledFilters
    from twistgate.web.accesslog import AccessLog
    from twistgate.web.metrics import GatewayMetrics

    filters = discoverInstalledFilters(settings)
    metricStore = MetricStore()
    try:
        metrics = GatewayMetrics(metricStore, {name: f.labelPatterns for name, f in filters.items()})
        sharedData, sharedQueues = sharedStoresFromURL(options["shared-data"], reactor)
        accessLog = AccessLog.open(options["access-log"], options["access-log-format"])
    except ValueError as error:
        raise ConfigError([str(error)])
    planBuilder = None
    live = LiveCounts()
    if settings.wasmEnabled:
        planBuilder = chainPlanBuilder(settings.vm, filters, reactor, metricStore, sharedData, sharedQueues,
                                       observer=metrics, limits=options["limits"],
                                       trapPolicy=options["trap-policy"],
                                       cacheDirectory=options["cache-directory"],
                                       logLevel=options["filter-log-level"], live=live)
    gateway = GatewayService(settings, reactor, planBuilder=planBuilder, filters=filters, handleSignals=True,
                             metrics=metrics, accessLog=accessLog, live=live, freezeHeap=True)
    leanDispatch(reactor)
    for store in (sharedData, sharedQueues):
        if hasattr(store, "close"):
            gateway.addCloser(store.close)
    return gateway


def _supervisor(options: Options, settings, reactor):
    """
    The supervisor of C{--workers} worker processes; the configuration is
    checked here first so that a bad file fails before anything listens.
    """
    from twistgate.config.loader import loadConfigFile
    from twistgate.service import discoverInstalledFilters
    from twistgate.workers import Listener, WorkerSupervisor, pluginArguments

    loadConfigFile(settings.configPath, discoverInstalledFilters(settings))
    listeners = [Listener(name, endpoints[0]) for name, endpoints in (
        ("proxy", settings.proxyListen), ("admin", settings.adminListen), ("echo", settings.echoListen))
        if endpoints]
    try:
        return WorkerSupervisor(reactor, pluginArguments(sys.argv), options["workers"], listeners,
                                balance=options["workers-balance"], killTime=settings.drainTimeout + 5)
    except ValueError as error:
        raise ConfigError([str(error)])


def _exitWithErrors(error: ConfigError) -> None:
    sys.stderr.write("twistgate: the configuration is invalid:\n")
    for line in error.errors:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()
    raise SystemExit(1)
