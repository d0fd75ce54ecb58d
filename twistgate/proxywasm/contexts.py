"""
Root contexts (one per filter entry: configuration, tick timer, queues)
and stream contexts (one per filter per request: maps, bodies, pause and
resume, local responses, HTTP calls).
"""

from typing import Dict, Optional

from twisted.internet.defer import Deferred

from twistgate.proxywasm.constants import BufferType, MapType, Status, StreamType
from twistgate.proxywasm.maps import HeaderMap, RequestHeaderMap, ResponseHeaderMap


def spliceBody(body: bytes, start: int, size: int, data: bytes) -> bytes:
    """
    Replace C{size} bytes of C{body} at C{start} with C{data} (clipped to
    the body: a start past the end appends).
    """
    return body[:start] + data + body[start + size:]


class RootContext:
    """
    The root context of one filter entry in one VM.

    @ivar contextId: the id the guest knows it by.
    @ivar rootIdName: the root id (C{plugin_root_id}): the entry's
        C{root_id}, else the filter name.
    @ivar configuration: the bytes C{on_configure} reads, or L{None}.
    @ivar location: where the entry is in the configuration, for messages.
    @ivar failurePolicy: C{"fail_closed"} or C{"fail_open"}.
    """

    isStream = False

    def __init__(self, vm, contextId: int, rootIdName: str, configuration: Optional[bytes],
                 location: str, failurePolicy: str = "fail_closed") -> None:
        self.vm = vm
        self.contextId = contextId
        self.rootIdName = rootIdName
        self.configuration = configuration
        self.location = location
        self.failurePolicy = failurePolicy
        self.properties: Dict[str, bytes] = {}
        self.tickPeriod = 0
        self.ticks = 0
        self._tickCall = None
        self._queues: Dict[int, object] = {}
        self.stopped = False

    @property
    def root(self) -> "RootContext":
        return self

    def now(self) -> float:
        return self.vm.environment.now()

    def setTickPeriod(self, milliseconds: int) -> None:
        """
        Call C{on_tick} every C{milliseconds}, re-armed after each tick;
        0 stops the timer.
        """
        self.tickPeriod = milliseconds
        if self._tickCall is not None and self._tickCall.active():
            self._tickCall.cancel()
        self._tickCall = None
        if milliseconds and not self.stopped:
            self._tickCall = self.vm.environment.reactor.callLater(milliseconds / 1000.0, self._tick)

    def _tick(self) -> None:
        self._tickCall = None
        self.vm.runWhenIdle(self._runTick)

    def _runTick(self) -> None:
        if self.stopped:
            return
        self.ticks += 1
        self.vm.callRootCallback(self, "proxy_on_tick", self.contextId)
        if self.tickPeriod and self._tickCall is None and not self.stopped:
            self._tickCall = self.vm.environment.reactor.callLater(self.tickPeriod / 1000.0, self._tick)

    def watchQueue(self, queueId: int) -> None:
        """
        Deliver C{on_queue_ready} for C{queueId} to this root context.
        """
        if queueId in self._queues or self.stopped:
            return

        def ready(readyId: int) -> None:
            self.vm.runWhenIdle(lambda: self._queueReady(readyId))

        self._queues[queueId] = ready
        self.vm.environment.sharedQueues.subscribe(queueId, ready)

    def _queueReady(self, queueId: int) -> None:
        if not self.stopped:
            self.vm.callRootCallback(self, "proxy_on_queue_ready", self.contextId, queueId)

    def stop(self) -> None:
        """
        Stop the timer and the queue notifications.
        """
        self.stopped = True
        if self._tickCall is not None and self._tickCall.active():
            self._tickCall.cancel()
        self._tickCall = None
        queues = self.vm.environment.sharedQueues
        for queueId, ready in self._queues.items():
            queues.unsubscribe(queueId, ready)
        self._queues.clear()


class StreamContext:
    """
    The context of one filter for one request.

    @ivar exchange: the request's L{twistgate.gateway.exchange.Exchange}.
    @ivar run: the chain run that owns it: C{run.setLocalResponse(context,
        status, reason, body, headers) -> bool} stores a local response (false
        once the response started), C{run.closeStream(context, kind)} ends
        the request, C{run.requestBodyPending()} says whether the request
        body is still to be read and C{run.editRequestBody(start, size,
        data)} records a change to apply to it once read.
    @ivar responseBody: the response body bytes the filter sees in
        C{on_response_body} (the current chunk, or what is buffered), else
        L{None}.
    @ivar pendingCalls: HTTP calls this context made that have not been
        answered, by token.
    """

    isStream = True
    __slots__ = ("vm", "contextId", "root", "exchange", "run", "generation", "properties", "responseBody",
                 "responseBodySize", "_maps", "pendingCalls", "resumeRequested", "_waiter", "deleted")

    def __init__(self, vm, contextId: int, root: RootContext, exchange, run) -> None:
        self.vm = vm
        self.contextId = contextId
        self.root = root
        self.exchange = exchange
        self.run = run
        self.generation = vm.generation
        self.properties: Dict[str, bytes] = {}
        self.responseBody: Optional[bytes] = None
        self.responseBodySize = 0
        self._maps: Dict[MapType, HeaderMap] = {}
        self.pendingCalls: Dict[int, object] = {}
        self.resumeRequested = False
        self._waiter: Optional[Deferred] = None
        self.deleted = False

    def now(self) -> float:
        return self.vm.environment.now()

    def headerMap(self, kind: MapType) -> HeaderMap:
        """
        @return: the map of this type for the filter (the header maps read
            and write the exchange's headers as they are at the time).
        """
        try:
            return self._maps[kind]
        except KeyError:
            pass
        if kind == MapType.HTTP_REQUEST_HEADERS:
            headerMap = RequestHeaderMap(self.exchange)
        elif kind == MapType.HTTP_RESPONSE_HEADERS:
            headerMap = ResponseHeaderMap(self.exchange)
        else:
            headerMap = HeaderMap()
        self._maps[kind] = headerMap
        return headerMap

    def setBody(self, kind: BufferType, start: int, size: int, data: bytes) -> int:
        """
        Replace C{size} bytes at C{start} of a body with C{data}: C{(0, 0)}
        prepends, C{start} past the end appends, C{(0, len)} replaces all.

        @return: a L{Status}.
        """
        if kind == BufferType.HTTP_REQUEST_BODY:
            if self.exchange.requestBody is None and self.run.requestBodyPending():
                self.run.editRequestBody(start, size, data)
                return Status.OK
            self.exchange.requestBody = spliceBody(self.exchange.requestBody or b"", start, size, data)
            return Status.OK
        if self.responseBody is None:
            return Status.NOT_FOUND
        self.responseBody = spliceBody(self.responseBody, start, size, data)
        return Status.OK

    def sendLocalResponse(self, status: int, reason: bytes, body: bytes, headers) -> int:
        """
        Answer the request with a response of the filter's making.

        @return: a L{Status}: BAD_ARGUMENT once the response has started.
        """
        if not self.run.setLocalResponse(self, status, reason, body, list(headers)):
            self.vm.logHost("warn", "proxy_send_local_response after the response started; ignored",
                            self.contextId)
            return Status.BAD_ARGUMENT
        for call in list(self.pendingCalls.values()):
            call.cancel()
        self.pendingCalls.clear()
        self.resume()
        return Status.OK

    def continueStream(self, kind: StreamType) -> None:
        """
        C{proxy_continue_stream}: resume once the current guest call returns.
        """
        self.resume()

    def closeStream(self, kind: StreamType) -> None:
        """
        C{proxy_close_stream}: end the request with an error.
        """
        self.run.closeStream(self, kind)
        self.resume()

    def resume(self) -> None:
        """
        Let a paused step continue (after the current guest call returns).
        """
        self.resumeRequested = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            self.vm.runWhenIdle(lambda: waiter.called or waiter.callback("resumed"))

    def callsSettled(self) -> None:
        """
        The last pending HTTP call was answered: resume, as Kong does (the
        chain clears the request at the start of each step).
        """
        if not self.pendingCalls:
            self.resume()

    def waitForResume(self) -> Deferred:
        """
        @return: a Deferred firing with C{"resumed"} when the filter may
            continue (at once if it already asked to), or C{"finished"} when
            the request ended first.
        """
        waiter = Deferred()
        if self.resumeRequested:
            self.resumeRequested = False
            waiter.callback("resumed")
            return waiter
        self._waiter = waiter

        def consumed(result):
            self.resumeRequested = False
            return result

        return waiter.addCallback(consumed)

    def abandon(self, reason: str = "finished") -> None:
        """
        The request ended (C{"finished"}) or the instance was replaced
        (C{"lost"}): cancel pending calls and release a waiting step with
        C{reason}.
        """
        if self.pendingCalls:
            for call in list(self.pendingCalls.values()):
                call.cancel()
            self.pendingCalls.clear()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.called:
                waiter.callback(reason)
