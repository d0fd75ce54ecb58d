"""
Shared key/value data and shared queues: the state Proxy-Wasm filters share
across contexts, filters and (with another backend) processes.

The hostcalls C{proxy_get_shared_data}, C{proxy_set_shared_data} and the
C{proxy_*_shared_queue} family talk to an L{ISharedData} and an
L{ISharedQueues}; L{InMemorySharedData} and L{InMemorySharedQueues} are the
embedded default, C{twistgate.gateway.redis_store} the one shared across
workers and nodes.

Every method is synchronous because the ABI calls are, and every result is a
C{proxy_status_t} the SDKs accept for the calling hostcall: a backend never
raises into the hostcall.
"""

from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple

from zope.interface import Interface, implementer

from twistgate.proxywasm.constants import Status

#: The largest CAS value: the ABI returns CAS through a C{u32*}.
MAX_CAS = 0xFFFFFFFF

QueueReadyCallback = Callable[[int], None]


def nextCas(counter: int) -> int:
    """
    Map a write counter (1, 2, 3, ...) to a CAS value in C{[1, MAX_CAS]},
    wrapping around and never giving 0 (0 means "no CAS" in the ABI).

    @param counter: a positive write counter.
    @return: the CAS value for that write.
    """
    return (counter - 1) % MAX_CAS + 1


class ISharedData(Interface):
    """
    A key/value store with compare-and-swap, as the Proxy-Wasm spec and
    Envoy define it: a C{cas} of 0 writes unconditionally; a nonzero C{cas}
    must equal the stored one when the key exists; every successful write
    gives the key a new CAS.
    """

    def get(key: bytes) -> Optional[Tuple[bytes, int]]:
        """
        Read a key.

        @return: C{(value, cas)}, or L{None} when the key is absent (or the
            backend cannot answer: the hostcall then reports NOT_FOUND).
        """

    def set(key: bytes, value: Optional[bytes], cas: int) -> int:
        """
        Write or delete a key.

        @param value: the new value; L{None} deletes the key.
        @param cas: 0 for an unconditional write, else the CAS the caller
            read.
        @return: C{Status.OK} or C{Status.CAS_MISMATCH} (also when the
            backend cannot answer).
        """


class ISharedQueues(Interface):
    """
    Named FIFO queues of byte strings, scoped by VM id, with a notification
    for the root context that registered a queue.
    """

    def register(vmId: bytes, name: bytes) -> int:
        """
        Create the queue C{(vmId, name)} or open it if it exists.

        @return: the queue id (never fails: the hostcall accepts only OK).
        """

    def resolve(vmId: bytes, name: bytes) -> Optional[int]:
        """
        @return: the id of an existing queue, or L{None}.
        """

    def enqueue(queueId: int, data: bytes) -> int:
        """
        Append C{data} and notify the queue's subscribers.

        @return: C{Status.OK} or C{Status.NOT_FOUND}.
        """

    def dequeue(queueId: int) -> Tuple[int, Optional[bytes]]:
        """
        Remove the oldest item.

        @return: C{(Status.OK, data)}, C{(Status.EMPTY, None)} or
            C{(Status.NOT_FOUND, None)}.
        """

    def subscribe(queueId: int, callback: QueueReadyCallback) -> None:
        """
        Call C{callback(queueId)} after each enqueue into the queue. The
        host turns this into C{on_queue_ready(root_id, queue_id)} for the
        registering root, deferred until the guest is not running.
        """

    def unsubscribe(queueId: int, callback: QueueReadyCallback) -> None:
        """
        Stop calling C{callback}; unknown subscriptions are ignored.
        """


@implementer(ISharedData)
class InMemorySharedData:
    """
    The in-process L{ISharedData}, optionally with a time to live per key.

    @ivar ttl: seconds a key lives after its last write, or L{None}.
    """

    def __init__(self, ttl: Optional[float] = None,
                 now: Optional[Callable[[], float]] = None) -> None:
        """
        @param ttl: seconds a key lives after its last write; L{None} keeps
            keys forever.
        @param now: the clock for C{ttl} (e.g. C{reactor.seconds});
            required when C{ttl} is set.
        """
        if ttl is not None and now is None:
            raise ValueError("InMemorySharedData: a ttl needs a clock (now)")
        self.ttl = ttl
        self._now = now
        self._entries: Dict[bytes, Tuple[bytes, int, Optional[float]]] = {}
        self._writes = 0

    def _live(self, key: bytes) -> Optional[Tuple[bytes, int, Optional[float]]]:
        entry = self._entries.get(key)
        if entry is not None and entry[2] is not None and self._now() >= entry[2]:
            del self._entries[key]
            return None
        return entry

    def get(self, key: bytes) -> Optional[Tuple[bytes, int]]:
        entry = self._live(key)
        if entry is None:
            return None
        return entry[0], entry[1]

    def set(self, key: bytes, value: Optional[bytes], cas: int) -> int:
        entry = self._live(key)
        if cas and entry is not None and entry[1] != cas:
            return Status.CAS_MISMATCH
        if value is None:
            self._entries.pop(key, None)
            return Status.OK
        self._writes += 1
        expires = None if self.ttl is None else self._now() + self.ttl
        self._entries[key] = (bytes(value), nextCas(self._writes), expires)
        return Status.OK

    def close(self) -> None:
        """
        Nothing to release; here so every store can be closed alike.
        """


@implementer(ISharedQueues)
class InMemorySharedQueues:
    """
    The in-process L{ISharedQueues}: ids 1, 2, 3, ... in registration
    order; subscribers are called synchronously after each enqueue.
    """

    def __init__(self) -> None:
        self._ids: Dict[Tuple[bytes, bytes], int] = {}
        self._items: Dict[int, Deque[bytes]] = {}
        self._subscribers: Dict[int, List[QueueReadyCallback]] = {}

    def register(self, vmId: bytes, name: bytes) -> int:
        key = (bytes(vmId), bytes(name))
        queueId = self._ids.get(key)
        if queueId is None:
            queueId = len(self._ids) + 1
            self._ids[key] = queueId
            self._items[queueId] = deque()
        return queueId

    def resolve(self, vmId: bytes, name: bytes) -> Optional[int]:
        return self._ids.get((bytes(vmId), bytes(name)))

    def enqueue(self, queueId: int, data: bytes) -> int:
        items = self._items.get(queueId)
        if items is None:
            return Status.NOT_FOUND
        items.append(bytes(data))
        for callback in list(self._subscribers.get(queueId, ())):
            callback(queueId)
        return Status.OK

    def dequeue(self, queueId: int) -> Tuple[int, Optional[bytes]]:
        items = self._items.get(queueId)
        if items is None:
            return Status.NOT_FOUND, None
        if not items:
            return Status.EMPTY, None
        return Status.OK, items.popleft()

    def subscribe(self, queueId: int, callback: QueueReadyCallback) -> None:
        self._subscribers.setdefault(queueId, []).append(callback)

    def unsubscribe(self, queueId: int, callback: QueueReadyCallback) -> None:
        callbacks = self._subscribers.get(queueId, [])
        if callback in callbacks:
            callbacks.remove(callback)

    def close(self) -> None:
        """
        Drop every subscription; here so every store can be closed alike.
        """
        self._subscribers.clear()
