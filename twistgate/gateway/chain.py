"""
The chain runner: a L{ChainPlanner} turns a configuration into a
L{ChainPlan} (one Proxy-Wasm instance per filter module, one root context
per filter entry); the plan gives each request its L{ChainRun}, which runs
the request's filters (the service chain, then the route chain) step by
step over the request's L{Exchange}, as C{IChainRun} specifies.
"""

from dataclasses import dataclass
from functools import partial
from typing import Dict, List, Mapping, Optional, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from twistgate.config.errors import ConfigError
from twistgate.config.filters import FilterFile
from twistgate.gateway.exchange import IChainRun, LocalResponse
from twistgate.gateway.filters import FilterRegistry, UnknownFilter
from twistgate.proxywasm.constants import Action, LogLevel
from twistgate.proxywasm.contexts import spliceBody
from twistgate.proxywasm.metrics import MetricStore
from twistgate.proxywasm.shared import InMemorySharedData, InMemorySharedQueues
from twistgate.proxywasm.vm import (
    GuestActivity, HostEnvironment, IFilterObserver, LiveCounts, ProxyWasmVM, TrapPolicy, VMStartError)
from twistgate.wasm.interfaces import Limits, WasmCompileError, WasmTrap

log = Logger(namespace="twistgate.gateway.chain")

_JSON = [(b"content-type", b"application/json; charset=utf-8")]
_FAILED_BODY = b'{"message":"An unexpected error occurred"}\n'
_UNAVAILABLE_BODY = b'{"message":"Service unavailable: a filter is in backoff after repeated failures"}\n'


@dataclass(frozen=True)
class ChainSettings:
    """
    Limits of the chain runner.

    @ivar pauseTimeout: seconds a filter may keep a request paused (waiting
        for its HTTP calls or C{proxy_continue_stream}) before the request
        fails.
    @ivar maxBufferedResponseBody: bytes of response body a filter may
        buffer by returning PAUSE from C{on_response_body}.
    """

    pauseTimeout: float = 60.0
    maxBufferedResponseBody: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class FilterSlot:
    """
    One filter entry of a plan: its entry, VM and root context.
    """

    entry: object
    vm: ProxyWasmVM
    root: object
    location: str


class ChainPlanner:
    """
    Builds L{ChainPlan}s from configurations, compiling each filter module
    once.
    """

    def __init__(self, runtime, filters: Mapping[str, FilterFile], reactor, agent,
                 limits: Limits = Limits(), cacheDirectory: Optional[str] = None,
                 sharedData=None, sharedQueues=None, metrics=None,
                 trapPolicy: Optional[TrapPolicy] = None,
                 settings: ChainSettings = ChainSettings(), wasi=None,
                 phaseObserver=None, observer: Optional[IFilterObserver] = None,
                 logLevel: LogLevel = LogLevel.TRACE, live: Optional[LiveCounts] = None) -> None:
        """
        @param runtime: the L{twistgate.wasm.interfaces.IWasmRuntime}.
        @param filters: the installed filters by name.
        @param reactor: an C{IReactorTime} for timers and timeouts.
        @param agent: the C{IAgent} filters' HTTP calls go through.
        @param trapPolicy: when a filter that keeps trapping goes in backoff.
        @param wasi: makes the WASI host functions of a VM (default:
            L{twistgate.proxywasm.vm.wasiFunctions}).
        @param limits: each instance's memory cap and CPU deadline.
        @param cacheDirectory: where compiled modules are cached (L{None}:
            no cache).
        @param phaseObserver: called as C{(filterName, callbackName,
            seconds)} after each filter callback; by default C{observer}'s
            C{observeFilterPhase}.
        @param observer: the L{IFilterObserver} (the Prometheus metrics)
            told of phases, traps, recycles and instance memory.
        @param logLevel: the lowest L{LogLevel} of filters' logs that is
            kept (lower ones cost nothing).
        @param live: the L{LiveCounts} every VM of every plan counts itself
            in (default: the planner's own).
        """
        self.registry = FilterRegistry(runtime, filters, cacheDirectory)
        self.reactor = reactor
        self.agent = agent
        self.limits = limits
        self.sharedData = sharedData if sharedData is not None else InMemorySharedData()
        self.sharedQueues = sharedQueues if sharedQueues is not None else InMemorySharedQueues()
        self.metrics = metrics if metrics is not None else MetricStore()
        self.trapPolicy = trapPolicy or TrapPolicy()
        self.settings = settings
        self.wasi = wasi
        self.phaseObserver = phaseObserver
        self.observer = observer
        self.logLevel = logLevel
        self.activity = GuestActivity()
        self.live = live if live is not None else LiveCounts()

    def build(self, config) -> "ChainPlan":
        """
        Instantiate every filter the configuration uses and start a root
        context per enabled filter entry.

        @param config: a L{twistgate.config.model.GatewayConfig}.
        @return: the L{ChainPlan}.
        @raise ConfigError: one line per filter entry that cannot run (no
            such filter, invalid module, failed start, rejected
            configuration), with its location.
        """
        services = {}
        for service in config.services:
            if service.name:
                services[service.name] = (service.protocol if service.protocol in ("http", "https")
                                          else "http", service.host, service.port)
        environment = HostEnvironment(
            self.reactor, self.agent, self.sharedData, self.sharedQueues, self.metrics,
            services=services.get, wasi=self.wasi, trapPolicy=self.trapPolicy,
            logLevel=self.logLevel, phaseObserver=self.phaseObserver, observer=self.observer,
            activity=self.activity, live=self.live)
        wanted: List[Tuple[str, object, object]] = []
        envs: Dict[str, Dict[str, str]] = {}
        for chainIndex, chain in enumerate(config.filterChains):
            if not chain.enabled:
                continue
            for entryIndex, entry in enumerate(chain.filters):
                if entry.enabled:
                    chainLocation = getattr(chain, "location", None) or "filter_chains[{}]".format(chainIndex)
                    location = "{}.filters[{}]".format(chainLocation, entryIndex)
                    wanted.append((location, chain, entry))
                    envs.setdefault(entry.name, {}).update(entry.env)
        errors = []
        vms: Dict[str, ProxyWasmVM] = {}
        broken: Dict[str, str] = {}
        slots: Dict[str, List[FilterSlot]] = {}
        for location, chain, entry in wanted:
            name = entry.name
            if name in broken:
                errors.append("{}: {}".format(location, broken[name]))
                continue
            vm = vms.get(name)
            if vm is None:
                try:
                    module = self.registry.module(name)
                    vm = ProxyWasmVM(module, name, environment, self.limits, envs[name])
                    vm.start()
                except UnknownFilter:
                    broken[name] = 'no such filter "{}"'.format(name)
                except (WasmCompileError, VMStartError) as error:
                    broken[name] = 'filter "{}" cannot be loaded: {}'.format(name, error)
                if name in broken:
                    errors.append("{}: {}".format(location, broken[name]))
                    continue
                vms[name] = vm
                log.info("filter {filter}: ABI {abi} ({reason}) on {runtime}", filter=name,
                         abi=vm.abiVersion, reason=vm.abiReason, runtime=self.registry.runtime.name)
            configuration = entry.config.encode("utf-8") if entry.config is not None else None
            try:
                root = vm.addRoot(entry.rootId or name, configuration, location, entry.failurePolicy)
            except VMStartError as error:
                errors.append('{}: filter "{}" {}'.format(location, name, error))
                continue
            slots.setdefault(chain.id, []).append(FilterSlot(entry, vm, root, location))
        if errors:
            for vm in vms.values():
                vm.stop()
            raise ConfigError("{}: {}".format(config.source, error) for error in errors)
        return ChainPlan(config, self.settings, vms, slots, self.reactor)


class ChainPlan:
    """
    The filter chains of one configuration, ready to run requests.

    @ivar vms: the instance of each filter module, by filter name.
    """

    def __init__(self, config, settings: ChainSettings, vms: Dict[str, ProxyWasmVM],
                 slots: Dict[str, List[FilterSlot]], reactor) -> None:
        self.config = config
        self.settings = settings
        self.vms = vms
        self.reactor = reactor
        self._slotsByChain = slots
        self._combined: Dict[Tuple[Optional[str], Optional[str]], Optional[CombinedChain]] = {}
        self.stopped = False

    def slotsFor(self, serviceId: Optional[str], routeId: Optional[str]) -> Tuple[FilterSlot, ...]:
        """
        @return: the enabled filters of the service's chain followed by
            those of the route's chain (Kong's combined chain).
        """
        combined = self._combinedFor(serviceId, routeId)
        return combined.slots if combined is not None else ()

    def _combinedFor(self, serviceId: Optional[str], routeId: Optional[str]) -> Optional["CombinedChain"]:
        key = (serviceId, routeId)
        try:
            return self._combined[key]
        except KeyError:
            pass
        found: List[FilterSlot] = []
        for chain in self.config.filterChains:
            if serviceId is not None and chain.serviceId == serviceId:
                found[:0] = self._slotsByChain.get(chain.id, [])
            elif routeId is not None and chain.routeId == routeId:
                found.extend(self._slotsByChain.get(chain.id, []))
        combined = self._combined[key] = CombinedChain(tuple(found)) if found else None
        return combined

    def chainFor(self, exchange) -> Optional["ChainRun"]:
        """
        @return: the L{ChainRun} for a request, or L{None} when its route
            and service have no enabled filters.
        """
        combined = self._combinedFor(getattr(exchange.service, "id", None),
                                     getattr(exchange.route, "id", None))
        if combined is None:
            return None
        return ChainRun(self, exchange, combined)

    def filterHealth(self) -> Dict[str, Dict[str, object]]:
        """
        @return: per filter name: C{generation} (instances created),
            C{traps} (traps so far), C{trapped} (whether the instance is
            waiting to be replaced), C{backoffUntil} (reactor time, 0 when
            not in backoff).
        """
        return {name: {"generation": vm.generation, "traps": vm.trapCount,
                       "trapped": vm.trapped is not None,
                       "backoffUntil": vm.backoffUntil if vm.inBackoff() else 0.0}
                for name, vm in self.vms.items()}

    def stop(self) -> None:
        """
        Release the plan: timers, queue notifications and HTTP calls stop;
        requests still running finish on their instances.
        """
        self.stopped = True
        for vm in self.vms.values():
            vm.stop()


class CombinedChain:
    """
    The filters one request runs (a service chain and a route chain), and
    what their modules export, worked out once per plan.

    @ivar slots: the L{FilterSlot}s in order.
    @ivar exported: the names of the callbacks at least one of the
        filters' modules exports.
    @ivar wantsRequestBody: whether one exports C{proxy_on_request_body}.
    @ivar rewritesResponseBody: whether one exports
        C{proxy_on_response_body} (else the response body step is skipped).
    @ivar handlesResponseHeaders: whether one exports
        C{proxy_on_response_headers} (else that step is skipped).
    """

    def __init__(self, slots: Tuple[FilterSlot, ...]) -> None:
        self.slots = slots
        self.exported = frozenset(name for slot in slots for name in slot.vm.exportSigs)
        self.wantsRequestBody = "proxy_on_request_body" in self.exported
        self.rewritesResponseBody = "proxy_on_response_body" in self.exported
        self.handlesResponseHeaders = "proxy_on_response_headers" in self.exported


class _Member:
    """
    One filter of one request.
    """

    __slots__ = ("slot", "vm", "context", "active", "buffer", "overflowed")

    def __init__(self, slot: FilterSlot) -> None:
        self.slot = slot
        self.vm = slot.vm
        self.context = None
        self.active = True
        self.buffer: Optional[bytes] = None
        self.overflowed = False

    @property
    def name(self) -> str:
        return self.slot.entry.name

    @property
    def failOpen(self) -> bool:
        return self.slot.entry.failurePolicy == "fail_open"


class _Waiting:
    """
    A step that has to wait: once C{until} fires, C{goOn()} runs the rest of
    it and returns the step's result or the next L{_Waiting}.
    """

    __slots__ = ("until", "goOn")

    def __init__(self, until: Deferred, goOn) -> None:
        self.until = until
        self.goOn = goOn


async def _waitThrough(waiting: _Waiting):
    """
    Run the rest of a step that has to wait, as often as it has to.

    @return: the step's result.
    """
    while True:
        await waiting.until
        result = waiting.goOn()
        if result.__class__ is not _Waiting:
            return result
        waiting = result


def _step(walk, *args) -> Deferred:
    """
    Run a step, C{walk(*args)}: synchronously to its end unless a filter
    pauses or its instance is busy (it then returns a L{_Waiting}); only
    then does the rest run as a Deferred.
    """
    try:
        result = walk(*args)
    except BaseException:
        return fail()
    if result.__class__ is _Waiting:
        return Deferred.fromCoroutine(_waitThrough(result))
    return succeed(result)


def _expectsNoBody(headers) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding":
            return False
        if name == b"content-length":
            return value.strip() in (b"0", b"")
    return True


def _declaresEmptyBody(headers) -> bool:
    for name, value in headers:
        if name == b"content-length" and value.strip() == b"0":
            return True
    return False


_CONTINUE = int(Action.CONTINUE)
_PAUSE = int(Action.PAUSE)


@implementer(IChainRun)
class ChainRun:
    """
    The filters of one request; see C{IChainRun}.

    Each step walks the members synchronously; only where it has to wait
    (an instance busy with another guest call, a filter that paused) does
    its walk return a L{_Waiting} and the rest run as a Deferred.
    """

    phase = "created"
    _requestStopped = False
    _failed = False
    _finished = False
    _bodySeen = False
    _bodyEdits: Optional[List[Tuple[int, int, bytes]]] = None
    _requestEndOfStream = 0

    def __init__(self, plan: ChainPlan, exchange, combined: CombinedChain) -> None:
        self.exchange = exchange
        self.plan = plan
        self.combined = combined
        self.members = [_Member(slot) for slot in combined.slots]
        self.wantsRequestBody = combined.wantsRequestBody
        self.rewritesResponseBody = combined.rewritesResponseBody

    @property
    def settings(self) -> ChainSettings:
        return self.plan.settings

    # What stream contexts tell the run.

    def setLocalResponse(self, context, status: int, reason: bytes, body: bytes, headers) -> bool:
        """
        Store a filter's local response.

        @return: false once the response has started.
        """
        if self.phase not in ("created", "request", "response_headers") or self._finished:
            return False
        self.exchange.localResponse = LocalResponse(status, body, headers, reason or None)
        return True

    def requestBodyPending(self) -> bool:
        """
        @return: whether the request body is still to be read (a filter's
            change to it in C{on_request_headers} is applied once it is).
        """
        return self.phase == "request" and self.wantsRequestBody and not self._bodySeen

    def editRequestBody(self, start: int, size: int, data: bytes) -> None:
        """
        Record a change to the request body, applied when it is read.
        """
        if self._bodyEdits is None:
            self._bodyEdits = []
        self._bodyEdits.append((start, size, data))

    def closeStream(self, context, kind) -> None:
        """
        A filter closed the stream: the request ends with a 500 if the
        response has not started, and no other filter runs.
        """
        member = self._memberFor(context)
        self._logRequest("error", member, "closed the stream (proxy_close_stream)")
        if self.phase in ("created", "request", "response_headers"):
            self.exchange.localResponse = LocalResponse(500, _FAILED_BODY, list(_JSON))
        self._failed = True
        self._requestStopped = True

    def filterTrapped(self, context, phase: str, trap: WasmTrap) -> None:
        """
        A filter trapped outside a step of this run (in
        C{on_http_call_response}).
        """
        member = self._memberFor(context)
        if member is not None:
            self._fail(member, phase, trap.message, trapped=True)

    def _memberFor(self, context) -> Optional[_Member]:
        for member in self.members:
            if member.context is context:
                return member
        return None

    # Failures.

    def _logRequest(self, level: str, member: Optional[_Member], what: str) -> None:
        exchange = self.exchange
        getattr(log, level)(
            'filter "{filter}" ({location}) {what}; request {method} {uri}',
            filter=member.name if member else "?", location=member.slot.location if member else "?",
            what=what, method=exchange.method.decode("latin-1"),
            uri=exchange.originalUri.decode("latin-1"))

    def _fail(self, member: _Member, phase: str, message: str, trapped: bool,
              status: int = 500) -> None:
        if not member.active:
            return
        member.active = False
        verb = "trapped in" if trapped else "failed in"
        policy = "fail_open: skipping it" if member.failOpen else "fail_closed"
        self._logRequest("error", member, "{} {}: {} ({})".format(verb, phase, message, policy))
        context = member.context
        if context is not None and trapped:
            member.context = None
            member.vm.forgetStream(context)
        elif context is not None:
            context.abandon("failed")
        if member.failOpen:
            return
        self._failed = True
        self._requestStopped = True
        if self.phase in ("created", "request", "response_headers"):
            body = _UNAVAILABLE_BODY if status == 503 else _FAILED_BODY
            self.exchange.localResponse = LocalResponse(status, body, list(_JSON))

    # Calling one filter.

    def _liveContext(self, member: _Member, phase: str):
        """
        Make the member's stream context usable: replace a trapped instance
        (failing the member when that cannot be done), create the context
        (C{on_context_create}) when it has none or a stale one.

        @return: the context, or L{None} when the member failed.
        """
        vm = member.vm
        if (vm.stopped or vm.trapped is not None) and not vm.ensureReady():
            if vm.inBackoff():
                self._fail(member, phase, "filter in backoff after repeated traps", trapped=False,
                           status=503)
            else:
                self._fail(member, phase, "instance unavailable: {}".format(
                    vm.trapped.message if vm.trapped else "stopped"), trapped=False)
            return None
        context = member.context
        if context is None or context.deleted or context.generation != vm.generation:
            try:
                member.context = context = vm.createStream(member.slot.root, self.exchange, self)
            except WasmTrap as trap:
                member.context = None
                self._fail(member, "on_context_create", trap.message, trapped=True)
                return None
        return context

    def _call(self, member: _Member, phase: str, name: str, size: int, endOfStream: int) -> Optional[int]:
        """
        Call one filter's callback C{name(contextId, size, endOfStream)},
        with a usable stream context (see L{_liveContext}); its instance
        must be idle.

        @return: the callback's result, or L{None} when the member did not
            run or failed.
        """
        if not member.active or self._finished:
            return None
        vm = member.vm
        context = member.context
        if (vm.stopped or vm.trapped is not None or context is None or context.deleted
                or context.generation != vm.generation):
            context = self._liveContext(member, phase)
            if context is None:
                return None
        context.resumeRequested = False
        try:
            return vm.callWithContext(context, name, context.contextId, size, endOfStream)
        except WasmTrap as trap:
            self._fail(member, phase, trap.message, trapped=True)
            return None

    def _pause(self, member: _Member, phase: str) -> Optional[Deferred]:
        """
        A filter returned PAUSE.

        @return: L{None} when the step goes on at once (the filter already
            asked to resume, or a pause that cannot end is ignored), else a
            Deferred firing when it may go on (resumed, timed out, or the
            instance was lost).
        """
        context = member.context
        if context is None:
            return None
        if phase == "on_response_headers" and not context.pendingCalls and not context.resumeRequested:
            self._logRequest("warn", member, "returned PAUSE from on_response_headers without a local"
                             " response or a pending HTTP call; continuing")
            return None
        waiter = context.waitForResume()
        if waiter.called:
            return None
        return Deferred.fromCoroutine(self._awaitResume(member, phase, context, waiter))

    async def _awaitResume(self, member: _Member, phase: str, context, waiter: Deferred) -> None:
        def expire():
            if not waiter.called:
                waiter.callback("timeout")

        settings = self.plan.settings
        timer = self.plan.reactor.callLater(settings.pauseTimeout, expire)
        try:
            outcome = await waiter
        finally:
            if timer.active():
                timer.cancel()
        if outcome == "timeout":
            self._fail(member, phase, "paused and did not resume within {:g} s ({} pending HTTP"
                       " calls, no proxy_continue_stream)".format(
                           settings.pauseTimeout, len(context.pendingCalls)), trapped=False)
        elif outcome == "lost":
            self._fail(member, phase, "its instance was replaced while the request was paused",
                       trapped=True)

    def _afterPause(self, walk, index: int, *args):
        """
        Go on with C{walk(index, *args)} after a pause, unless a filter
        answered the request meanwhile.
        """
        if self.exchange.localResponse is not None:
            self._requestStopped = True
            return None
        return walk(index, *args)

    # The steps.

    def requestHeaders(self) -> Deferred:
        self.phase = "request"
        for member in self.members:
            vm = member.vm
            if vm.backoffUntil and member.active and vm.inBackoff():
                self._fail(member, "on_request_headers", "filter in backoff after repeated traps",
                           trapped=False, status=503)
        return _step(self._createContextsFrom, 0)

    def _createContextsFrom(self, index: int):
        """
        Create the stream contexts of the members from C{index} on, then
        run C{on_request_headers}.
        """
        members = self.members
        while index < len(members):
            if self._failed or self._finished:
                return None
            member = members[index]
            if member.active:
                if member.vm.depth:
                    return _Waiting(member.vm.whenIdle(), partial(self._createContextsFrom, index))
                self._liveContext(member, "on_context_create")
            index += 1
        self._requestEndOfStream = 1 if _expectsNoBody(self.exchange.requestHeaders) else 0
        return self._requestFrom(0, False)

    def _requestFrom(self, index: int, body: bool):
        """
        Run C{on_request_headers}, or C{on_request_body} if C{body}, for
        the members from C{index} on.
        """
        if body:
            phase, name, endOfStream = "on_request_body", "proxy_on_request_body", 1
        else:
            phase, name, endOfStream = "on_request_headers", "proxy_on_request_headers", self._requestEndOfStream
        members = self.members
        exchange = self.exchange
        while index < len(members):
            if self._requestStopped or self._finished:
                return None
            member = members[index]
            if not member.active:
                index += 1
                continue
            if member.vm.depth:
                return _Waiting(member.vm.whenIdle(), partial(self._requestFrom, index, body))
            index += 1
            size = len(exchange.requestBody or b"") if body else len(exchange.requestHeaders)
            action = self._call(member, phase, name, size, endOfStream)
            if exchange.localResponse is not None:
                self._requestStopped = True
                return None
            if action == _PAUSE:
                if not member.active:
                    continue
                pausing = self._pause(member, phase)
                if pausing is not None:
                    return _Waiting(pausing, partial(self._afterPause, self._requestFrom, index, body))
                if exchange.localResponse is not None:
                    self._requestStopped = True
                    return None
            elif action is not None and action != _CONTINUE:
                self._logRequest("warn", member, "returned unknown action {} from {}; continuing".format(
                    action, phase))
        return None

    def requestBody(self) -> Deferred:
        self.phase = "request"
        self._bodySeen = True
        edits = self._bodyEdits
        if edits:
            self._bodyEdits = None
            for start, size, data in edits:
                self.exchange.requestBody = spliceBody(self.exchange.requestBody or b"", start, size, data)
        if not self.exchange.requestBody:
            return succeed(None)
        return _step(self._requestFrom, 0, True)

    def responseHeaders(self) -> Deferred:
        self.phase = "response_headers"
        self._requestStopped = True
        if not self.combined.handlesResponseHeaders:
            return succeed(None)
        return _step(self._responseHeadersFrom, 0,
                     1 if _declaresEmptyBody(self.exchange.responseHeaders) else 0)

    def _responseHeadersFrom(self, index: int, endOfStream: int):
        """
        Run C{on_response_headers} for the members from C{index} on.
        """
        members = self.members
        exchange = self.exchange
        while index < len(members):
            if self._failed or self._finished:
                return None
            member = members[index]
            if not member.active or member.context is None:
                index += 1
                continue
            if member.vm.depth:
                return _Waiting(member.vm.whenIdle(), partial(self._responseHeadersFrom, index, endOfStream))
            index += 1
            action = self._call(member, "on_response_headers", "proxy_on_response_headers",
                                len(exchange.responseHeaders), endOfStream)
            if exchange.localResponse is not None:
                return None
            if action == _PAUSE and member.active:
                pausing = self._pause(member, "on_response_headers")
                if pausing is not None:
                    return _Waiting(pausing, partial(self._afterPause, self._responseHeadersFrom, index,
                                                     endOfStream))
                if exchange.localResponse is not None:
                    return None
        return None

    def responseBody(self, chunk: bytes, endOfStream: bool) -> Deferred:
        self.phase = "response_body"
        if not self.rewritesResponseBody:
            return succeed(chunk)
        return _step(self._responseBodyFrom, 0, chunk, endOfStream)

    def _responseBodyFrom(self, index: int, data: bytes, endOfStream: bool):
        """
        Pass a response body chunk through the members from C{index} on.

        @return: the bytes to send downstream now.
        """
        members = self.members
        while index < len(members):
            if self._failed or self._finished:
                break
            member = members[index]
            if not member.active or member.context is None:
                index += 1
                continue
            if member.vm.depth:
                return _Waiting(member.vm.whenIdle(),
                                partial(self._responseBodyFrom, index, data, endOfStream))
            index += 1
            data = self._bodyThrough(member, data, endOfStream)
            if data is None:
                return b""
        return data

    def _bodyThrough(self, member: _Member, data: bytes, endOfStream: bool) -> Optional[bytes]:
        """
        Run one member's C{on_response_body} over its buffered body and
        C{data}; its instance must be idle.

        @return: what goes on to the next member, or L{None} while the
            member buffers the body.
        """
        if member.buffer is not None:
            body = member.buffer + data
        elif not data and not endOfStream:
            return data
        else:
            body = data
        limit = self.plan.settings.maxBufferedResponseBody
        if member.buffer is not None and len(body) > limit and not member.overflowed:
            member.overflowed = True
            self._logRequest("error", member, "buffered more than {} bytes of response body"
                             " (PAUSE in on_response_body); passing the body on unbuffered".format(limit))
        context = member.context
        context.responseBody = body
        context.responseBodySize += len(data)
        action = self._call(member, "on_response_body", "proxy_on_response_body",
                            len(body), 1 if endOfStream else 0)
        result = context.responseBody if context.responseBody is not None else body
        context.responseBody = None
        if not member.active:
            member.buffer = None
            return result
        if action == _PAUSE and not endOfStream and not member.overflowed:
            member.buffer = result
            return None
        member.buffer = None
        return result

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.phase = "done"
        for member in self.members:
            context = member.context
            if context is None or context.deleted:
                continue
            context.abandon("finished")
            vm = member.vm
            if vm.stopped or vm.trapped is not None or context.generation != vm.generation:
                vm.forgetStream(context)
            elif vm.depth or vm.environment.activity.depth:
                vm.runWhenIdle(partial(self._finishMember, member, context))
            else:
                try:
                    self._finishMember(member, context)
                except Exception:
                    log.failure("filter {filter}: ending a stream context failed", filter=member.name)

    def _finishMember(self, member: _Member, context) -> None:
        """
        End an idle member's stream context: C{on_done}, C{on_log},
        C{on_delete} (unless one traps), then forget it.
        """
        vm = member.vm
        try:
            if not vm.stopped and vm.trapped is None and context.generation == vm.generation:
                contextId = context.contextId
                for name in ("proxy_on_done", "proxy_on_log", "proxy_on_delete"):
                    try:
                        vm.callWithContext(context, name, contextId)
                    except WasmTrap as trap:
                        self._logRequest("error", member, "trapped in {}: {}".format(
                            name[len("proxy_"):], trap.message))
                        break
        finally:
            member.context = None
            vm.forgetStream(context)
