"""
The gateway as a Twisted service: the proxy, admin and echo listeners
around one L{GatewayState}, configuration reloads (C{POST /config},
SIGHUP) and graceful stop.
"""

import os
import signal
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout, inlineCallbacks
from twisted.logger import Logger
from twisted.web.server import Site

from twistgate.config.errors import ConfigError
from twistgate.config.filters import FilterFile, discoverFilters
from twistgate.config.loader import loadConfigText, readConfigFile
from twistgate.config.model import GatewayConfig
from twistgate.gateway.router import Router
from twistgate.gateway.state import GatewayState, Generation
from twistgate.gateway.upstream import UpstreamClient
from twistgate.heap import HeapFreezer
from twistgate.web.admin import AdminResource
from twistgate.web.echo import EchoResource
from twistgate.web.http1server import GatewaySite
from twistgate.web.proxy import ProxyResource
from twistgate.workers import isWorker, postedConfigActive, shareConfig, sharedConfigText

PlanBuilder = Callable[[GatewayConfig], object]


@dataclass
class GatewaySettings:
    """
    What the command line (or Kong's environment variables) chose.

    @ivar configPath: the declarative configuration file.
    @ivar filtersPath: the directory of C{.wasm} filters.
    @ivar filtersPathRequired: an error when C{filtersPath} is missing
        (it was given explicitly), else no filters are installed.
    @ivar proxyListen: endpoint strings of the proxy listeners.
    @ivar adminListen: endpoint strings of the admin API listeners.
    @ivar echoListen: endpoint strings of the built-in echo upstream.
    @ivar wasmEnabled: C{False} makes filter chains a configuration error.
    @ivar vm: the Wasm runtime's name.
    @ivar maxBodySize: largest request body accepted, bytes.
    @ivar headerTimeout: seconds a client has to send its headers.
    @ivar bodyTimeout: seconds of silence allowed while a request body
        arrives, between requests, and while a client does not take its
        response.
    @ivar drainTimeout: seconds in-flight requests get on stop.
    """

    configPath: str
    filtersPath: str = "filters"
    filtersPathRequired: bool = False
    proxyListen: tuple = ("tcp:8000",)
    adminListen: tuple = ("tcp:8001:interface=127.0.0.1",)
    echoListen: tuple = ("tcp:8080:interface=127.0.0.1",)
    wasmEnabled: bool = True
    vm: str = "wasmtime"
    maxBodySize: int = 8 * 1024 * 1024
    headerTimeout: float = 60.0
    bodyTimeout: float = 60.0
    drainTimeout: float = 10.0


class _QuietSite(Site):
    """
    A site that logs neither its start nor its requests (the built-in echo
    upstream: the proxy's access log already shows its traffic).
    """

    noisy = False

    def log(self, request):
        pass


def discoverInstalledFilters(settings: GatewaySettings) -> Dict[str, FilterFile]:
    """
    The filters installed in C{settings.filtersPath}; none when the default
    directory does not exist.

    @raise ConfigError: the directory was given but is missing, or a
        filter's metadata is invalid.
    """
    if not os.path.isdir(settings.filtersPath) and not settings.filtersPathRequired:
        return {}
    return discoverFilters(settings.filtersPath)


class GatewayService(MultiService):
    """
    The whole gateway. The first configuration is loaded when this is
    constructed, so a bad file fails before anything listens.

    @ivar state: the configuration generations.
    @ivar upstream: the upstream client.
    @ivar filters: the installed filters, by name.
    """

    _log = Logger()

    def __init__(self, settings: GatewaySettings, reactor, planBuilder: Optional[PlanBuilder] = None,
                 filters: Optional[Dict[str, FilterFile]] = None, handleSignals: bool = False,
                 metrics=None, accessLog=None, environ: Mapping[str, str] = os.environ,
                 live=None, freezeHeap: bool = False) -> None:
        """
        @param reactor: the reactor to listen and time with.
        @param planBuilder: builds the filter chain plan of a configuration
            (may raise L{ConfigError}); L{None} runs no filters.
        @param filters: the installed filters; discovered from
            C{settings.filtersPath} when L{None}.
        @param handleSignals: reload the configuration file on SIGHUP (and,
            in a worker of C{--workers}, a posted one on SIGUSR2).
        @param metrics: the L{twistgate.web.metrics.GatewayMetrics} the
            proxy counts requests in and the admin API serves, or L{None}.
        @param accessLog: the L{twistgate.web.accesslog.AccessLog}, or
            L{None}.
        @param environ: the environment (tells whether this is a worker).
        @param live: the L{twistgate.proxywasm.vm.LiveCounts} of the
            filters' VMs (shown by C{GET /status}), or L{None}.
        @param freezeHeap: keep the steady heap out of the cyclic
            collector's full collections once started (L{HeapFreezer}); for
            a gateway process, not for one sharing its process with others.
        @raise ConfigError: the configuration file is invalid.
        """
        super().__init__()
        self.settings = settings
        self._reactor = reactor
        self._planBuilder = planBuilder
        self._handleSignals = handleSignals
        self._environ = environ
        self._previousHandlers: Dict[int, object] = {}
        self._closers: List[Callable[[], object]] = []
        self._retired: List[Generation] = []
        self.heap = HeapFreezer(reactor, lambda: self.liveGenerations() == 1) if freezeHeap else None
        self.live = live
        self.filters = filters if filters is not None else discoverInstalledFilters(settings)
        self.upstream = UpstreamClient(reactor)
        self.state = GatewayState(self.loadFile(settings.configPath, number=1))
        self.metrics = metrics
        self.accessLog = accessLog
        if accessLog is not None:
            self.addCloser(accessLog.close)
        self.proxySite = GatewaySite(
            ProxyResource(self.state, self.upstream, reactor, metrics=metrics, accessLog=accessLog), reactor,
            maxBodySize=settings.maxBodySize, headerTimeout=settings.headerTimeout,
            bodyTimeout=settings.bodyTimeout)
        self.adminSite = Site(AdminResource(self, reactor, metrics=metrics), reactor=reactor)
        self.adminSite.noisy = False
        self.echoSite = _QuietSite(EchoResource(reactor), reactor=reactor)
        # The echo upstream is started first and stopped last, after the
        # requests in flight (which may be going to it) finished.
        self.echoListeners = MultiService()
        for description in settings.echoListen:
            strports.service(description, self.echoSite, reactor=reactor).setServiceParent(self.echoListeners)
        for endpoints, site in ((settings.proxyListen, self.proxySite), (settings.adminListen, self.adminSite)):
            for description in endpoints:
                strports.service(description, site, reactor=reactor).setServiceParent(self)

    def loadText(self, text: str, source: str, number: int) -> Generation:
        """
        Check a configuration and build everything that serves it.

        @raise ConfigError: it is invalid, or a filter rejected its
            configuration.
        """
        config = loadConfigText(text, source, self.filters)
        if config.filterChains and not self.settings.wasmEnabled:
            raise ConfigError(["%s: filter_chains: wasm support is not enabled" % (source,)])
        router = Router(config)
        plan = self._planBuilder(config) if self._planBuilder is not None and config.filterChains else None
        return Generation(config, router, plan, self.filters, number)

    def loadFile(self, path: str, number: int) -> Generation:
        """
        L{loadText} over a file's contents.

        @raise ConfigError: it cannot be read or is invalid.
        """
        return self.loadText(readConfigFile(path), path, number)

    def reloadText(self, text: str, source: str = "<POST /config>") -> Generation:
        """
        Replace the configuration atomically; requests in flight finish on
        the old one.

        @return: the new generation.
        @raise ConfigError: the new configuration is invalid; the old one
            keeps serving.
        """
        generation = self.loadText(text, source, self.state.current.number + 1)
        self._swap(generation)
        self._log.info("configuration {number} loaded from {source}: {services} services, {routes} routes,"
                       " {chains} filter chains", number=generation.number, source=source,
                       services=len(generation.config.services), routes=len(generation.config.routes),
                       chains=len(generation.config.filterChains))
        return generation

    def _swap(self, generation: Generation) -> None:
        """
        Make C{generation} current, keeping the one it replaces in sight
        until its last request ended.
        """
        self._retired.append(self.state.swap(generation))
        self.liveGenerations()
        if self.heap is not None:
            self.heap.thaw()

    def liveGenerations(self) -> int:
        """
        @return: the configuration generations alive: the current one and
            the replaced ones whose requests have not all finished.
        """
        self._retired = [generation for generation in self._retired if generation.inFlight > 0]
        return 1 + len(self._retired)

    def applyPostedConfig(self, text: str) -> Generation:
        """
        L{reloadText} for C{POST /config}; in a worker of C{--workers}, the
        accepted text then goes to every other worker.

        @raise ConfigError: the configuration is invalid.
        """
        generation = self.reloadText(text, "<POST /config>")
        shareConfig(text, self._environ)
        return generation

    def _loadShared(self) -> None:
        """
        Load the configuration another worker accepted (SIGUSR2).
        """
        text = sharedConfigText(self._environ)
        if text is None or text == self.state.current.config.text:
            return
        try:
            self.reloadText(text, "<shared POST /config>")
        except ConfigError as error:
            for line in error.errors:
                self._log.error("shared configuration refused: {line}", line=line)

    def addCloser(self, closer: Callable[[], object]) -> None:
        """
        Call C{closer} (it may return a Deferred) when the service stopped.
        """
        self._closers.append(closer)

    def reloadFile(self) -> Optional[Generation]:
        """
        Re-read the configuration file (SIGHUP); errors are logged and the
        old configuration keeps serving.
        """
        try:
            generation = self.loadFile(self.settings.configPath, self.state.current.number + 1)
        except ConfigError as error:
            for line in error.errors:
                self._log.error("reload refused: {line}", line=line)
            return None
        self._swap(generation)
        self._log.info("configuration {number} reloaded from {source}", number=generation.number,
                       source=self.settings.configPath)
        return generation

    def startService(self) -> None:
        self.echoListeners.startService()
        super().startService()
        if self._handleSignals and hasattr(signal, "SIGHUP"):
            self._previousHandlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._sighup)
            if isWorker(self._environ):
                self._previousHandlers[signal.SIGUSR2] = signal.signal(signal.SIGUSR2, self._sigusr2)
                if postedConfigActive(self._environ):
                    self._loadShared()
        if self.heap is not None:
            self.heap.freeze()

    def _sighup(self, signum, frame) -> None:
        self._reactor.callFromThread(self.reloadFile)

    def _sigusr2(self, signum, frame) -> None:
        self._reactor.callFromThread(self._loadShared)

    @inlineCallbacks
    def stopService(self):
        """
        Stop listening, let in-flight requests finish (at most
        C{drainTimeout} seconds), then stop the echo upstream and release
        the configuration.
        """
        for signum, handler in self._previousHandlers.items():
            signal.signal(signum, handler)
        self._previousHandlers = {}
        if self.heap is not None:
            self.heap.stop()
        yield super().stopService()
        self.proxySite.closeIdleConnections()
        inFlight = self.state.inFlight
        if inFlight:
            self._log.info("waiting for {count} requests in flight", count=inFlight)
            drained: Deferred = self.state.drained()
            drained.addTimeout(self.settings.drainTimeout, self._reactor)
            try:
                yield drained
            except DeferredTimeout:
                self._log.warn("{count} requests still in flight after {seconds} s; stopping anyway",
                               count=self.state.inFlight, seconds=self.settings.drainTimeout)
        yield self.echoListeners.stopService()
        yield self.upstream.close()
        self.state.stop()
        for closer in self._closers:
            try:
                yield closer()
            except Exception:
                self._log.failure("closing {closer}", closer=closer)
        if self._handleSignals and getattr(self._reactor, "_exitSignal", None) == signal.SIGTERM:
            # A graceful stop on SIGTERM is a success: exit 0 rather than let
            # twistd re-raise the signal on itself once the reactor stopped.
            self._reactor._exitSignal = None
