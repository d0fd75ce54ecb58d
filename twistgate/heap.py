"""
Keeping long-lived objects out of the cyclic garbage collector's way.

A serving gateway holds a large, steady heap: modules, the loaded
configuration, its filters and their runtimes. Objects of the requests in
flight are promoted into the oldest generation as the collector runs, and
every few hundred requests that triggers a full collection, which scans the
whole steady heap again (a few percent of the CPU per request under load).
L{HeapFreezer} moves the steady heap out of the collector's sight
(C{gc.freeze}) once the gateway started, and again after each reload once
the configurations it replaced have drained, so that their objects are
freed as usual meanwhile.
"""

import gc
from typing import Callable, Optional


class HeapFreezer:
    """
    Freezes the heap when the gateway is steady, thaws it when a
    configuration is replaced.
    """

    def __init__(self, clock, steady: Callable[[], bool], interval: float = 1.0) -> None:
        """
        @param clock: an C{IReactorTime}.
        @param steady: tells whether no replaced configuration is alive.
        @param interval: seconds between two looks at C{steady} after a
            thaw.
        """
        self._clock = clock
        self._steady = steady
        self._interval = interval
        self._pending: Optional[object] = None
        self.frozen = False

    def freeze(self) -> None:
        """
        Collect what is garbage now, then freeze everything alive.
        """
        self._cancel()
        gc.collect()
        gc.freeze()
        self.frozen = True

    def thaw(self) -> None:
        """
        A configuration was replaced: give the frozen objects back to the
        collector (the replaced configuration must become collectable), and
        freeze again once it has drained.
        """
        gc.unfreeze()
        self.frozen = False
        if self._pending is None:
            self._pending = self._clock.callLater(self._interval, self._freezeWhenSteady)

    def stop(self) -> None:
        """
        Thaw for good (the gateway is stopping).
        """
        self._cancel()
        if self.frozen:
            gc.unfreeze()
            self.frozen = False

    def _freezeWhenSteady(self) -> None:
        self._pending = None
        if self._steady():
            self.freeze()
        else:
            self._pending = self._clock.callLater(self._interval, self._freezeWhenSteady)

    def _cancel(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
