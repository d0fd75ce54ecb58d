"""
The gateway's current configuration as one swappable generation: the
config, its router and its filter chain plan. A reload swaps the generation
atomically; requests hold the generation they started on until they end, and
a replaced generation's plan is stopped once its last request ended.
"""

from typing import Callable, List, Mapping, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from twistgate.config.model import GatewayConfig


class Generation:
    """
    One loaded configuration.

    @ivar config: the L{GatewayConfig}.
    @ivar router: matches requests to routes (C{match(method, host, path,
        headers)}).
    @ivar plan: the filter chain plan (C{chainFor(exchange)}, C{stop()}),
        or L{None} when no filters run.
    @ivar filters: the installed filters (name to C{FilterFile}).
    @ivar number: 1 for the first configuration, incremented per reload.
    @ivar inFlight: requests currently using this generation.
    """

    _log = Logger()

    def __init__(self, config: GatewayConfig, router, plan=None, filters: Optional[Mapping] = None,
                 number: int = 1) -> None:
        self.config = config
        self.router = router
        self.plan = plan
        self.filters = dict(filters or {})
        self.number = number
        self.inFlight = 0
        self.retired = False
        self._stopped = False

    def acquire(self) -> "Generation":
        """
        Count one more request on this generation.
        """
        self.inFlight += 1
        return self

    def release(self) -> None:
        """
        Count one request less; stop a retired generation's plan once idle.
        """
        self.inFlight -= 1
        self._maybeStop()

    def retire(self) -> None:
        """
        Mark this generation replaced; its plan stops when the last request
        on it ends.
        """
        self.retired = True
        self._maybeStop()

    def _maybeStop(self) -> None:
        if self.retired and self.inFlight == 0 and not self._stopped:
            self._stopped = True
            if self.plan is not None:
                try:
                    self.plan.stop()
                except Exception:
                    self._log.failure("stopping the filter plan of configuration {number}",
                                      number=self.number)


class GatewayState:
    """
    The generation serving new requests, and a count of requests in flight
    over all generations (for graceful stop).
    """

    def __init__(self, generation: Generation) -> None:
        self.current = generation
        self.reloads = 0
        self.totalRequests = 0
        self._inFlight = 0
        self._drainWaiters: List[Deferred] = []

    def acquire(self) -> Generation:
        """
        Start a request: @return: the generation it runs on (call
        L{release} with it when the request ended).
        """
        self._inFlight += 1
        self.totalRequests += 1
        return self.current.acquire()

    def release(self, generation: Generation) -> None:
        """
        End a request started with L{acquire}.
        """
        generation.release()
        self._inFlight -= 1
        if self._inFlight == 0:
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    @property
    def inFlight(self) -> int:
        """
        Requests in flight over every generation.
        """
        return self._inFlight

    def swap(self, generation: Generation) -> Generation:
        """
        Make C{generation} serve new requests; the previous one is retired.

        @return: the previous generation.
        """
        previous, self.current = self.current, generation
        self.reloads += 1
        previous.retire()
        return previous

    def drained(self) -> Deferred:
        """
        @return: a Deferred firing when no request is in flight.
        """
        if self._inFlight == 0:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._drainWaiters.append(waiter)
        return waiter

    def stop(self) -> None:
        """
        Retire the current generation (the gateway is stopping).
        """
        self.current.retire()


GenerationBuilder = Callable[[str, str], Generation]
