"""
One Proxy-Wasm instance of a filter module: linking (hostcalls and WASI),
ABI detection, start functions, the guest allocator, the current and
effective context, the after-call queue, traps and recycling.

A guest is never re-entered while it runs: work that would call it (HTTP
call responses, queue notifications, ticks, resuming a paused stream) waits
in the after-call queue until the running call returns. Nor does a guest
start while another guest runs (a filter enqueueing into another filter's
queue): that work waits until no guest of the L{GuestActivity} runs, so a
guest call's CPU deadline counts only its own time.
"""

import itertools
from collections import deque
from time import perf_counter
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger, LogLevel as TwistedLogLevel
from zope.interface import Interface

from twistgate.proxywasm.constants import (
    ABI_0_1_0,
    ABI_0_2_0,
    ABI_0_2_1,
    ABI_MARKERS,
    LogLevel,
    Status,
)
from twistgate.proxywasm.contexts import RootContext, StreamContext
from twistgate.proxywasm.metrics import MetricStore
from twistgate.proxywasm.shared import InMemorySharedData, InMemorySharedQueues
from twistgate.proxywasm.hostcalls import Hostcalls, bindHostcalls
from twistgate.proxywasm.httpcalls import HttpCall, HttpCaller, parseTarget, validateCall
from twistgate.wasm.interfaces import HostFunction, Limits, WasmLinkError, WasmTrap
from twistgate.wasm.memory import GuestMemory, u32
from twistgate.wasm.wasi import WasiShim

WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")
WASI_NOSYS = 52

_TWISTED_LEVELS = {
    LogLevel.TRACE: TwistedLogLevel.debug,
    LogLevel.DEBUG: TwistedLogLevel.debug,
    LogLevel.INFO: TwistedLogLevel.info,
    LogLevel.WARN: TwistedLogLevel.warn,
    LogLevel.ERROR: TwistedLogLevel.error,
    LogLevel.CRITICAL: TwistedLogLevel.critical,
}
_HOST_LEVELS = {
    "debug": TwistedLogLevel.debug,
    "info": TwistedLogLevel.info,
    "warn": TwistedLogLevel.warn,
    "error": TwistedLogLevel.error,
    "critical": TwistedLogLevel.critical,
}


class VMStartError(Exception):
    """
    An instance or a root context could not be started; the message says
    why in one line.
    """


class IFilterObserver(Interface):
    """
    Told what filters' instances do, for metrics (implemented by
    C{twistgate.web.metrics.GatewayMetrics}). Calls must be cheap: they are
    made on every guest callback.
    """

    def observeFilterPhase(filter, phase, seconds):
        """
        One callback of C{filter} took C{seconds}.

        @param phase: the callback's export name (C{"proxy_on_request_headers"}).
        """

    def filterTrapped(filter, kind):
        """
        An instance of C{filter} trapped.

        @param kind: the L{WasmTrap} kind: C{"trap"}, C{"host"},
            C{"deadline"} (stopped at the CPU deadline), C{"memory"},
            C{"exit"}, or C{"start"} (a replacement instance failed to start).
        """

    def filterRecycled(filter):
        """
        A trapped instance of C{filter} was replaced by a fresh one.
        """

    def setInstanceMemory(filter, size):
        """
        The linear memory of C{filter}'s instance is C{size} bytes (reported
        once each instance started its first root context or replaced a
        trapped one, then when a root context started or a request ended
        with the memory grown).
        """


class TrapPolicy:
    """
    When a filter that keeps trapping is put in backoff.

    @ivar maxTraps: traps within C{window} seconds that start a backoff.
    @ivar window: seconds over which traps are counted.
    @ivar backoff: seconds the filter stays in backoff.
    """

    def __init__(self, maxTraps: int = 5, window: float = 60.0, backoff: float = 30.0) -> None:
        self.maxTraps = maxTraps
        self.window = window
        self.backoff = backoff


class GuestActivity:
    """
    Whether any guest call of a set of VMs runs (those of every plan a
    planner builds, as plans share queues), and the work waiting for none
    to run.

    @ivar depth: guest calls in progress, nested ones included.
    @ivar waiting: the work waiting for no guest call to run.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.waiting: Deque[Callable[[], None]] = deque()

    def runWhenNoGuest(self, work: Callable[[], None]) -> None:
        """
        Run C{work} once no guest call runs (now if none does).
        """
        if self.depth == 0:
            work()
        else:
            self.waiting.append(work)

    def guestReturned(self) -> None:
        """
        Run the waiting work if no guest call runs any more.
        """
        while self.waiting and self.depth == 0:
            self.waiting.popleft()()


class LiveCounts:
    """
    How much Wasm state is alive in the VMs that share it (those of every
    plan a planner builds), for C{GET /status}.

    @ivar instances: VMs started and not stopped.
    @ivar rootContexts: root contexts of those VMs.
    @ivar streamContexts: stream contexts (one per filter per request) not
        yet deleted.
    """

    def __init__(self) -> None:
        self.instances = 0
        self.rootContexts = 0
        self.streamContexts = 0


class HostEnvironment:
    """
    What the VMs of one chain plan share: the reactor, the HTTP call client,
    the shared data, queues and metrics, the services HTTP calls may name,
    the WASI shim, and the trap policy.
    """

    def __init__(self, reactor, agent=None, sharedData=None, sharedQueues=None, metrics=None,
                 services: Optional[Callable[[str], Optional[Tuple[str, str, int]]]] = None,
                 wasi: Optional[Callable[["ProxyWasmVM"], Sequence[HostFunction]]] = None,
                 trapPolicy: Optional[TrapPolicy] = None, logLevel: LogLevel = LogLevel.TRACE,
                 phaseObserver: Optional[Callable[[str, str, float], None]] = None,
                 observer: Optional[IFilterObserver] = None,
                 activity: Optional[GuestActivity] = None,
                 live: Optional[LiveCounts] = None) -> None:
        """
        @param reactor: an C{IReactorTime}: timers, timeouts and the clock.
        @param agent: the C{IAgent} HTTP calls go through (none: calls fail
            with INTERNAL_FAILURE).
        @param services: looks up a service name for HTTP calls, giving
            C{(protocol, host, port)}.
        @param wasi: makes the WASI host functions for a VM (default:
            L{wasiFunctions}).
        @param logLevel: the lowest L{LogLevel} guests' logs (C{proxy_log},
            WASI output) are kept at; C{proxy_get_log_level} answers it.
        @param phaseObserver: called as C{(filterName, callbackName,
            seconds)} after each callback the host makes; by default the
            C{observeFilterPhase} of C{observer}.
        @param observer: the L{IFilterObserver} told of phases, traps,
            recycles and instance memory.
        @param activity: the L{GuestActivity} shared with the VMs of other
            environments whose filters may notify these (default: this
            environment's own).
        @param live: the L{LiveCounts} the VMs count themselves in (default:
            this environment's own).
        """
        self.reactor = reactor
        self.httpCaller = HttpCaller(reactor, agent) if agent is not None else None
        self.sharedData = sharedData if sharedData is not None else InMemorySharedData()
        self.sharedQueues = sharedQueues if sharedQueues is not None else InMemorySharedQueues()
        self.metrics = metrics if metrics is not None else MetricStore()
        self.services = services or (lambda name: None)
        self.wasi = wasi
        self.trapPolicy = trapPolicy or TrapPolicy()
        self.logLevel = logLevel
        self.observer = observer
        self.activity = activity if activity is not None else GuestActivity()
        self.live = live if live is not None else LiveCounts()
        if phaseObserver is None and observer is not None:
            phaseObserver = observer.observeFilterPhase
        self.phaseObserver = phaseObserver

    def now(self) -> float:
        """
        @return: the reactor's current time in seconds.
        """
        return self.reactor.seconds()


def detectAbiVersion(exportSigs: Dict[str, object]) -> Tuple[str, str]:
    """
    Find a module's ABI version: from its marker export, corrected by the
    real signatures of its header callbacks (3 parameters since 0.2.0).

    @param exportSigs: exported function names and their L{FuncSig}.
    @return: the version and a description of how it was found.
    """
    marked = None
    for marker, version in ABI_MARKERS.items():
        if marker in exportSigs:
            marked = version
            break
    arity = None
    for callback in ("proxy_on_request_headers", "proxy_on_response_headers"):
        sig = exportSigs.get(callback)
        if sig is not None:
            arity = len(sig.params)
            break
    if arity == 2:
        return ABI_0_1_0, ("marker" if marked == ABI_0_1_0 else "2-argument header callbacks")
    if arity == 3 and (marked is None or marked == ABI_0_1_0):
        if marked == ABI_0_1_0:
            return ABI_0_2_0, "0.1.0 marker but 3-argument header callbacks"
        return ABI_0_2_1, "no marker; 3-argument header callbacks"
    if marked is not None:
        return marked, "marker"
    if "proxy_get_configuration" in exportSigs:
        return ABI_0_1_0, "no marker"
    return ABI_0_2_1, "no marker; assumed"


class ProxyWasmVM:
    """
    The instance of one filter module, shared by the root contexts of every
    entry that uses the filter in a plan (Kong's isolation C{none}).

    @ivar filterName: the filter's name (its file name without C{.wasm}).
    @ivar abiVersion: C{"0.1.0"}, C{"0.2.0"} or C{"0.2.1"}.
    @ivar generation: incremented each time the instance is (re)created.
    @ivar trapped: the L{WasmTrap} that killed the instance, until it is
        replaced.
    @ivar effectiveContext: the context hostcalls act on.
    @ivar deliveringCall: the L{HttpCall} whose response the guest is
        reading, during C{on_http_call_response}.
    @ivar unsupportedImports: descriptions of the imports the host does not
        implement (they answer UNIMPLEMENTED).
    @ivar depth: guest calls of this instance in progress, nested ones
        included (nonzero: the instance is busy).
    """

    def __init__(self, module, filterName: str, environment: HostEnvironment,
                 limits: Optional[Limits] = None, env: Optional[Dict[str, str]] = None) -> None:
        self.module = module
        self.filterName = filterName
        self.vmId = filterName.encode("utf-8")
        self.environment = environment
        self.limits = limits or Limits()
        self.env = dict(env or {})
        self.log = Logger(namespace="twistgate.filter." + filterName)
        self.exportSigs = {e.name: e.sig for e in module.exports() if e.kind == "func"}
        self.abiVersion, self.abiReason = detectAbiVersion(self.exportSigs)
        self.hostcalls = Hostcalls(self)
        self.unsupportedImports: List[str] = []
        self._hostFunctions = self._linkImports()
        self.instance = None
        self.memory: Optional[GuestMemory] = None
        self._reportedMemory: Optional[int] = None
        self.generation = 0
        self.trapped: Optional[WasmTrap] = None
        self.trapPhase: Optional[str] = None
        self.currentContext = None
        self.effectiveContext = None
        self.deliveringCall: Optional[HttpCall] = None
        self.startingVm = False
        self.vmConfiguration = b""
        self.contexts: Dict[int, object] = {}
        self.roots: List[RootContext] = []
        self.pendingCalls: Dict[int, HttpCall] = {}
        self.stopped = False
        self._counted = False
        self._contextIds = itertools.count(1)
        self._tokens = itertools.count(1)
        self.depth = 0
        self._afterCall: Deque[Callable[[], None]] = deque()
        self._exports: Dict[str, Tuple[Optional[Callable], int]] = {}
        self._allocator: Optional[str] = None
        self._trapTimes: Deque[float] = deque()
        self.backoffUntil = 0.0
        self.trapCount = 0

    # Linking and starting.

    def _linkImports(self) -> List[HostFunction]:
        imports = self.module.imports()
        functions, unknown = bindHostcalls(imports, self.hostcalls)
        self.unsupportedImports.extend(unknown)
        makeWasi = self.environment.wasi or wasiFunctions
        wasi = list(makeWasi(self))
        offered = {(f.module, f.name): f for f in wasi}
        for wanted in imports:
            if wanted.module == "env" or wanted.sig is None:
                continue
            function = offered.get((wanted.module, wanted.name))
            if function is None and wanted.module in WASI_MODULES:
                function = offered.get((WASI_MODULES[0], wanted.name))
                if function is not None:
                    function = HostFunction(wanted.module, wanted.name, function.sig, function.callable)
            if function is not None and function.sig == wanted.sig:
                functions.append(function)
                continue
            self.unsupportedImports.append("{}.{} {}".format(wanted.module, wanted.name, wanted.sig))
            functions.append(HostFunction(wanted.module, wanted.name, wanted.sig,
                                          _unsupported(wanted.sig, wanted.module in WASI_MODULES)))
        for description in self.unsupportedImports:
            self.log.warn("filter {filter}: import {import_} is not implemented by the host;"
                          " calls to it answer UNIMPLEMENTED", filter=self.filterName,
                          import_=description)
        return functions

    def start(self) -> None:
        """
        Instantiate the module (releasing the instance it replaces) and run
        its start function.

        @raise VMStartError: if linking or the start function fails.
        """
        if self.instance is not None:
            self.instance.release()
        try:
            self.instance = self.module.instantiate(self._hostFunctions, self.limits)
        except WasmLinkError as error:
            raise VMStartError("cannot instantiate: {}".format(error))
        self.memory = GuestMemory(self.instance)
        self._reportedMemory = None
        self.generation += 1
        self.trapped = None
        self.trapPhase = None
        self._exports = {}
        self._allocator = next((name for name in ("proxy_on_memory_allocate", "malloc")
                                if name in self.exportSigs), None)
        try:
            if "_initialize" in self.exportSigs:
                self.callGuest("_initialize")
                main = self.exportSigs.get("main")
                if main is not None and len(main.params) == 2:
                    self.callGuest("main", 0, 0)
            elif "_start" in self.exportSigs:
                self._runStart()
        except WasmTrap as trap:
            raise VMStartError("start function trapped: {}".format(trap.message))
        if not self._counted and not self.stopped:
            self._counted = True
            self.environment.live.instances += 1

    def _runStart(self) -> None:
        try:
            self.callGuest("_start")
        except WasmTrap as trap:
            if getattr(trap, "exitCode", None) != 0:
                raise
            self.trapped = None
            self.trapPhase = None

    def addRoot(self, rootIdName: str, configuration: Optional[bytes], location: str,
                failurePolicy: str = "fail_closed") -> RootContext:
        """
        Create and start the root context of one filter entry:
        C{on_context_create(R, 0)}, C{on_vm_start}, C{on_configure}.

        @raise VMStartError: if a callback fails, traps or returns false.
        """
        root = RootContext(self, next(self._contextIds), rootIdName, configuration, location,
                           failurePolicy)
        self.roots.append(root)
        self.contexts[root.contextId] = root
        self.environment.live.rootContexts += 1
        self._startRoot(root)
        self.reportMemory()
        return root

    def _startRoot(self, root: RootContext) -> None:
        step = "on_context_create"
        try:
            self.callWithContext(root, "proxy_on_context_create", root.contextId, 0)
            step = "on_vm_start"
            self.startingVm = True
            try:
                started = self.callWithContext(root, "proxy_on_vm_start", root.contextId,
                                               len(self.vmConfiguration))
            finally:
                self.startingVm = False
            if started == 0:
                raise VMStartError("failed to start (on_vm_start returned false)")
            step = "on_configure"
            configured = self.callWithContext(root, "proxy_on_configure", root.contextId,
                                              len(root.configuration or b""))
            if configured == 0:
                raise VMStartError("rejected its configuration (on_configure returned false)")
        except WasmTrap as trap:
            raise VMStartError("trapped in {}: {}".format(step, trap.message))

    def ensureReady(self) -> bool:
        """
        Replace a trapped instance (fresh start, root contexts re-created and
        re-configured) unless the filter is in backoff.

        @return: whether the instance can be called (never once stopped).
        """
        if self.stopped:
            return False
        if self.trapped is None:
            return True
        if self.inBackoff():
            return False
        previous = self.trapped
        self.log.info("filter {filter}: replacing the instance that trapped in {phase} ({trap})",
                      filter=self.filterName, phase=self.trapPhase, trap=previous.message)
        for call in list(self.pendingCalls.values()):
            call.cancel()
        self.pendingCalls.clear()
        self._dropStreams("lost")
        try:
            self.start()
            for root in self.roots:
                self._startRoot(root)
        except VMStartError as error:
            self.log.error("filter {filter}: the replacement instance failed: {error}",
                           filter=self.filterName, error=error)
            self.trapped = WasmTrap(str(error), kind="start")
            self.trapPhase = "restart"
            self._recordTrap("start")
            return False
        self._tellObserver("filterRecycled")
        self.reportMemory()
        return True

    def stop(self) -> None:
        """
        Stop timers, queue notifications and pending HTTP calls, end the
        root contexts (C{on_done}, C{on_delete}) of a live instance, then
        release the instance.
        """
        if self.stopped:
            return
        for root in self.roots:
            root.stop()
        for call in list(self.pendingCalls.values()):
            call.cancel()
        self.pendingCalls.clear()
        if self.instance is not None and self.trapped is None and not self.busy:
            for root in self.roots:
                try:
                    for name in ("proxy_on_done", "proxy_on_delete"):
                        self.callWithContext(root, name, root.contextId)
                except WasmTrap as trap:
                    self.log.error("filter {filter} trapped ending root context #{contextId}: {trap}",
                                   filter=self.filterName, contextId=root.contextId, trap=trap.message)
                    break
        self.stopped = True
        live = self.environment.live
        live.rootContexts -= len(self.roots)
        if self._counted:
            self._counted = False
            live.instances -= 1
        self.runWhenIdle(self._release)

    def _dropStreams(self, reason: str) -> None:
        """
        Forget every stream context, releasing their waiting steps with
        C{reason}.
        """
        for contextId, context in list(self.contexts.items()):
            if context.isStream:
                del self.contexts[contextId]
                self.environment.live.streamContexts -= 1
                context.abandon(reason)

    def _release(self) -> None:
        """
        Release the instance (see L{IWasmInstance.release}) so that it and
        this VM can be collected.
        """
        self._exports = {}
        if self.instance is not None:
            self.instance.release()

    # Traps and backoff.

    def _recordTrap(self, kind: str) -> None:
        self._tellObserver("filterTrapped", kind)
        now = self.environment.now()
        policy = self.environment.trapPolicy
        self.trapCount += 1
        self._trapTimes.append(now)
        while self._trapTimes and self._trapTimes[0] <= now - policy.window:
            self._trapTimes.popleft()
        if len(self._trapTimes) >= policy.maxTraps:
            self.backoffUntil = now + policy.backoff
            self._trapTimes.clear()
            self.log.error("filter {filter}: {count} traps within {window:g} s; in backoff for"
                           " {backoff:g} s", filter=self.filterName, count=policy.maxTraps,
                           window=policy.window, backoff=policy.backoff)

    def inBackoff(self) -> bool:
        """
        @return: whether the filter is in backoff after repeated traps.
        """
        return self.backoffUntil > 0.0 and self.environment.now() < self.backoffUntil

    # Observation.

    def _tellObserver(self, event: str, *args) -> None:
        """
        Call C{event} (an L{IFilterObserver} method) of the environment's
        observer, if any, with this filter's name first.
        """
        observer = self.environment.observer
        if observer is None:
            return
        try:
            getattr(observer, event)(self.filterName, *args)
        except Exception:
            self.log.failure("filter {filter}: observer failed on {event}", filter=self.filterName,
                             event=event)

    def reportMemory(self) -> None:
        """
        Tell the observer the size of the live instance's linear memory, if
        it changed since it was last told of this instance.
        """
        if self.environment.observer is not None and self.instance is not None and self.trapped is None:
            size = self.instance.memorySize()
            if size != self._reportedMemory:
                self._reportedMemory = size
                self._tellObserver("setInstanceMemory", size)

    # Calling the guest.

    def _export(self, name: str) -> Tuple[Optional[Callable], int]:
        """
        Bind an export of the live instance, once per instance.

        @return: its callable (L{None} if the module does not export it)
            and its number of parameters.
        """
        try:
            return self._exports[name]
        except KeyError:
            pass
        sig = self.exportSigs.get(name)
        if sig is None:
            entry: Tuple[Optional[Callable], int] = (None, 0)
        else:
            entry = (self.instance.function(name), len(sig.params))
        self._exports[name] = entry
        return entry

    @property
    def busy(self) -> bool:
        """
        Whether a guest call of this instance is running.
        """
        return self.depth > 0

    def callGuest(self, name: str, *args: int) -> Optional[int]:
        """
        Call an export outside any callback (start functions), untimed, as
        L{callWithContext} does.
        """
        return self.callWithContext(self.effectiveContext, name, *args, timed=False)

    def callWithContext(self, context, name: str, *args: int, timed: bool = True) -> Optional[int]:
        """
        Call an export with C{context} as the current and effective context
        (nothing happens if the module does not export it); arguments past
        the export's parameters are dropped. A trap marks the instance as
        trapped (it is replaced before its next use) and is re-raised. When
        the outermost call returns, the work queued for it runs (see
        L{runWhenIdle}); then the phase observer is told the call's time.

        @param timed: whether to tell the phase observer.
        @return: the result, or L{None} when the export is missing or has no
            result.
        @raise WasmTrap: if the guest traps.
        """
        function, arity = self._exports.get(name) or self._export(name)
        if function is None:
            return None
        if len(args) > arity:
            args = args[:arity]
        previousCurrent = self.currentContext
        previousEffective = self.effectiveContext
        self.currentContext = self.effectiveContext = context
        environment = self.environment
        observer = environment.phaseObserver if timed else None
        if observer is not None:
            started = perf_counter()
        activity = environment.activity
        self.depth += 1
        activity.depth += 1
        try:
            return function(*args)
        except WasmTrap as trap:
            self._trappedIn(name, trap)
            raise
        finally:
            self.depth -= 1
            activity.depth -= 1
            if self._afterCall and self.depth == 0:
                self._drain()
            if activity.waiting and activity.depth == 0:
                activity.guestReturned()
            self.currentContext = previousCurrent
            self.effectiveContext = previousEffective
            if observer is not None:
                try:
                    observer(self.filterName, name, perf_counter() - started)
                except Exception:
                    self.log.failure("phase observer failed")

    def _trappedIn(self, name: str, trap: WasmTrap) -> None:
        """
        The guest trapped in export C{name}: the instance is trapped, unless
        it already was (a trap of a nested call unwinding).
        """
        if self.trapped is None:
            self.trapped = trap
            self.trapPhase = name[len("proxy_"):] if name.startswith("proxy_") else name
            self._recordTrap(trap.kind)

    def callRootCallback(self, root: RootContext, name: str, *args: int) -> Optional[int]:
        """
        Call a root-context callback outside a request (ticks, queues),
        replacing a trapped instance first; a trap is logged.
        """
        if self.stopped or not self.ensureReady():
            return None
        try:
            return self.callWithContext(root, name, *args)
        except WasmTrap as trap:
            self.log.error("filter {filter} trapped in {phase} (root context #{contextId}): {trap}",
                           filter=self.filterName, phase=name[len("proxy_"):],
                           contextId=root.contextId, trap=trap.message)
            return None

    def runWhenIdle(self, work: Callable[[], None]) -> None:
        """
        Run C{work} now if no guest call is running, else right after the
        running call of this instance returns, or once no guest of another
        instance runs.
        """
        if self.depth > 0:
            self._afterCall.append(work)
        elif self.environment.activity.depth > 0:
            self.environment.activity.runWhenNoGuest(lambda: self.runWhenIdle(work))
        else:
            self._runQueued(work)

    def whenIdle(self) -> Deferred:
        """
        @return: a Deferred firing when no guest call of this instance runs.
        """
        if self.depth == 0:
            return succeed(None)
        idle = Deferred()
        self._afterCall.append(lambda: idle.callback(None))
        return idle

    def _drain(self) -> None:
        while self._afterCall and self.depth == 0:
            self._runQueued(self._afterCall.popleft())

    def _runQueued(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:
            self.log.failure("filter {filter}: deferred work failed", filter=self.filterName)

    def allocate(self, size: int) -> int:
        """
        Allocate C{size} bytes in the guest (C{proxy_on_memory_allocate},
        else C{malloc}).

        @return: the address, or 0 when the guest has no allocator or it
            failed.
        @raise WasmTrap: if the allocator traps.
        """
        if self._allocator is None:
            return 0
        address = self._export(self._allocator)[0](size)
        return u32(address or 0)

    def setEffectiveContext(self, contextId: int) -> int:
        """
        C{proxy_set_effective_context}.

        @return: OK, or BAD_ARGUMENT for an unknown context.
        """
        context = self.contexts.get(contextId)
        if context is None:
            return Status.BAD_ARGUMENT
        self.effectiveContext = context
        return Status.OK

    # Stream contexts.

    def createStream(self, root: RootContext, exchange, run) -> StreamContext:
        """
        Create a stream context: C{on_context_create(H, R)}.

        @raise WasmTrap: if the guest traps.
        """
        context = StreamContext(self, next(self._contextIds), root, exchange, run)
        self.contexts[context.contextId] = context
        self.environment.live.streamContexts += 1
        self.callWithContext(context, "proxy_on_context_create", context.contextId, root.contextId)
        return context

    def forgetStream(self, context: StreamContext) -> None:
        """
        Drop a stream context after C{on_delete} (or when it is lost).
        """
        context.deleted = True
        if self.contexts.get(context.contextId) is context:
            del self.contexts[context.contextId]
            self.environment.live.streamContexts -= 1
        context.abandon("finished")
        self.reportMemory()

    # HTTP calls.

    def dispatchHttpCall(self, context, target: bytes, headers, body: bytes, trailers,
                         timeoutMs: int) -> Tuple[int, int]:
        """
        C{proxy_http_call}: validate and send an HTTP call; its response is
        delivered to C{on_http_call_response} of the root context.

        @return: C{(status, token)}.
        """
        caller = self.environment.httpCaller
        if caller is None:
            self.logHost("error", "proxy_http_call: HTTP calls are not available", context.contextId)
            return Status.INTERNAL_FAILURE, 0
        problem, pseudo, plain = validateCall(headers)
        scheme = pseudo.get(b":scheme", b"http")
        if problem is None and scheme not in (b"http", b"https"):
            problem = "unsupported :scheme {!r}".format(scheme)
        callTarget = None
        if problem is None:
            callTarget = parseTarget(target, scheme.decode("ascii"), self.environment.services)
            if callTarget is None:
                problem = "unknown upstream {!r} (neither a service name nor host[:port])".format(target)
        if problem is not None:
            self.logHost("warn", "proxy_http_call refused: {}".format(problem), context.contextId)
            return Status.BAD_ARGUMENT, 0
        token = next(self._tokens) & 0xFFFFFFFF
        while token == 0 or token in self.pendingCalls:
            token = next(self._tokens) & 0xFFFFFFFF
        stream = context if context.isStream else None
        call = HttpCall(token, context.root, stream)
        call.generation = self.generation
        self.pendingCalls[token] = call
        if stream is not None:
            stream.pendingCalls[token] = call
        sent = caller.send(call, pseudo[b":method"], callTarget.url(pseudo[b":path"]),
                           pseudo[b":authority"], plain, body, timeoutMs)
        sent.addCallback(lambda answered: self.runWhenIdle(lambda: self._deliverCall(answered)))
        return Status.OK, token

    def _deliverCall(self, call: HttpCall) -> None:
        if self.pendingCalls.get(call.token) is call:
            del self.pendingCalls[call.token]
        stream = call.stream
        if stream is not None:
            stream.pendingCalls.pop(call.token, None)
        if call.cancelled or self.stopped or call.root.stopped:
            return
        if call.generation != self.generation or self.trapped is not None:
            if stream is not None:
                stream.callsSettled()
            return
        target = stream if stream is not None and not stream.deleted else call.root
        self.deliveringCall = call
        try:
            self.callWithContext(target, "proxy_on_http_call_response", call.root.contextId,
                                 call.token, len(call.headers), len(call.body or b""), len(call.trailers))
        except WasmTrap as trap:
            if stream is not None and not stream.deleted:
                stream.run.filterTrapped(stream, "on_http_call_response", trap)
            else:
                self.log.error("filter {filter} trapped in on_http_call_response: {trap}",
                               filter=self.filterName, trap=trap.message)
            return
        finally:
            self.deliveringCall = None
        if stream is not None:
            stream.callsSettled()

    # Logs.

    def logFromGuest(self, level: LogLevel, message: bytes) -> None:
        """
        Log a message from C{proxy_log} or WASI output, with the filter name
        and the context id (callers skip messages below the environment's
        C{logLevel}).
        """
        context = self.effectiveContext
        self.log.emit(_TWISTED_LEVELS[level], "[{filter} #{contextId}] {text}",
                      filter=self.filterName, contextId=context.contextId if context else 0,
                      text=message.decode("utf-8", "replace"), proxyWasmLevel=level.name)

    def logWasi(self, level: str, text: str) -> None:
        """
        Log a line the guest wrote to stdout (C{"info"}) or stderr
        (C{"error"}) through WASI, unless below the environment's log level.
        """
        proxyWasmLevel = LogLevel.ERROR if level == "error" else LogLevel.INFO
        if proxyWasmLevel >= self.environment.logLevel:
            self.logFromGuest(proxyWasmLevel, text.encode("utf-8", "replace"))

    def logHost(self, level: str, message: str, contextId: Optional[int] = None) -> None:
        """
        Log something the host noticed about this filter.
        """
        if contextId is None:
            context = self.effectiveContext
            contextId = context.contextId if context else 0
        self.log.emit(_HOST_LEVELS[level], "filter {filter} #{contextId}: {text}",
                      filter=self.filterName, contextId=contextId, text=message)


def wasiFunctions(vm: ProxyWasmVM) -> List[HostFunction]:
    """
    The WASI preview1 functions of a VM: output to the filter's log, the
    environment configured for the filter only.
    """
    shim = WasiShim(memoryProvider=lambda: vm.memory, log=vm.logWasi, environ=vm.env)
    return shim.hostFunctions()


def _unsupported(sig, wasi: bool) -> Callable[..., Optional[int]]:
    result = (WASI_NOSYS if wasi else int(Status.UNIMPLEMENTED)) if sig.results else None

    def unsupported(*args):
        return result

    return unsupported
