"""
Shared data and shared queues kept in Redis, so that every worker and every
gateway node sees one store: a rate limit of 100 per minute stays 100 across
processes.

The ABI's calls are synchronous, so each hostcall is one short round trip
(one Lua script where a check and a write must be atomic) with short socket
timeouts. When Redis is down or does not answer, a call returns at once the
least harmful status the SDKs accept for it (reference §5.3) and the outage
is logged once; after a failure Redis is not tried again for
C{retryInterval} seconds, so a dead Redis costs one timeout per interval,
not one per request. Calls succeed again as soon as Redis is back.

Status on failure, per call: C{get} NOT_FOUND (the key reads as absent);
C{set} CAS_MISMATCH (the filter's retry loop or error path runs);
C{register} OK with the queue's id computed locally (registered in Redis when
it returns); C{resolve} the id this process knows, else NOT_FOUND;
C{enqueue} NOT_FOUND; C{dequeue} EMPTY.

Queue notifications travel by Redis pub/sub: an enqueue publishes on the
queue's channel, and each process that subscribed (because one of its root
contexts registered the queue) reads its channel from a short poll on the
injected reactor and calls the subscribers. After reconnecting, a process
re-subscribes and notifies for every subscribed queue that is not empty, so
nothing enqueued during an outage is left waiting.

Select it with C{--shared-data redis://127.0.0.1:6379/0} (or
C{TWISTGATE_SHARED_DATA}); see L{sharedStoresFromURL}.
"""

import time
import zlib
from typing import Callable, Dict, List, Optional, Set, Tuple, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from twistgate.proxywasm.constants import Status
from twistgate.proxywasm.shared import (
    MAX_CAS, ISharedData, ISharedQueues, InMemorySharedData,
    InMemorySharedQueues, QueueReadyCallback)

T = TypeVar("T")

#: Seconds a connect, read or write to Redis may take.
DEFAULT_TIMEOUT = 0.25
#: Seconds after a failure during which Redis is not tried again.
DEFAULT_RETRY_INTERVAL = 1.0
#: Seconds between two reads of the queue notification channels.
DEFAULT_POLL_INTERVAL = 0.02
#: Prefix of every key and channel this module uses.
DEFAULT_PREFIX = "twistgate:"

_QUEUE_ID_LIMIT = 0x7FFFFFFF

# KEYS: the entry's hash, the CAS counter. ARGV: value ("" with delete=1),
# cas, ttl in milliseconds (0: none), delete flag, MAX_CAS.
# Returns -1 on a CAS mismatch, else the new CAS (0 after a delete).
_SET_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'c')
local cas = tonumber(ARGV[2])
if cas ~= 0 and current and tonumber(current) ~= cas then
  return -1
end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[1])
  return 0
end
local n = redis.call('INCR', KEYS[2])
local new = (n - 1) % tonumber(ARGV[5]) + 1
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'c', new)
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('PERSIST', KEYS[1])
end
return new
"""

# KEYS: name -> id hash, id -> name hash. ARGV: the queue's name field, the
# preferred id, the id limit. Returns the queue's id, allocating the
# preferred one (or the next free one) the first time.
_REGISTER_SCRIPT = """
local known = redis.call('HGET', KEYS[1], ARGV[1])
if known then
  return tonumber(known)
end
local candidate = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
while redis.call('HSETNX', KEYS[2], candidate, ARGV[1]) == 0 do
  candidate = candidate % limit + 1
end
redis.call('HSET', KEYS[1], ARGV[1], candidate)
return candidate
"""

# KEYS: id -> name hash, the queue's list, the queue's channel. ARGV: id,
# data. Returns 0 for an unknown queue, else 1.
_ENQUEUE_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"""

# KEYS: id -> name hash, the queue's list. ARGV: id. Returns {0} for an
# unknown queue, {1} when empty, {2, data} otherwise.
_DEQUEUE_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {0}
end
local data = redis.call('LPOP', KEYS[2])
if not data then
  return {1}
end
return {2, data}
"""


class RedisConnection:
    """
    A Redis client with short timeouts and a circuit breaker: L{call} runs
    one operation, or fails fast for C{retryInterval} seconds after a
    failure.

    @ivar client: the L{redis.Redis} client.
    @ivar prefix: bytes prepended to every key and channel.
    @ivar available: whether the last operation succeeded.
    """

    log = Logger()

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX,
                 timeout: float = DEFAULT_TIMEOUT,
                 retryInterval: float = DEFAULT_RETRY_INTERVAL,
                 now: Callable[[], float] = time.monotonic) -> None:
        """
        @param url: a C{redis://}, C{rediss://} or C{unix://} URL as the
            C{redis} client accepts it.
        @param prefix: prepended to every key and channel.
        @param timeout: seconds for each connect, read and write.
        @param retryInterval: seconds to fail fast after a failure.
        @param now: a monotonic clock.
        """
        self.url = url
        self.prefix = prefix.encode("utf-8")
        self.timeout = timeout
        self.retryInterval = retryInterval
        self._now = now
        self._retryAt = 0.0
        self.available = True
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry_on_timeout=False, retry=Retry(NoBackoff(), 0),
            health_check_interval=0)
        self.setScript = self.client.register_script(_SET_SCRIPT)
        self.registerScript = self.client.register_script(_REGISTER_SCRIPT)
        self.enqueueScript = self.client.register_script(_ENQUEUE_SCRIPT)
        self.dequeueScript = self.client.register_script(_DEQUEUE_SCRIPT)

    def key(self, *parts: bytes) -> bytes:
        """
        @return: the prefixed key made of C{parts}.
        """
        return self.prefix + b"".join(parts)

    def call(self, operation: Callable[[redis.Redis], T], what: str,
             onFailure: T) -> T:
        """
        Run C{operation(client)}, or return C{onFailure} when Redis failed
        less than C{retryInterval} seconds ago or fails now.

        @param what: the operation's name for the log.
        """
        if self._now() < self._retryAt:
            return onFailure
        try:
            result = operation(self.client)
        except (redis.RedisError, OSError) as e:
            self.failed(what, e)
            return onFailure
        self.succeeded()
        return result

    def failed(self, what: str, error: Exception) -> None:
        """
        Record a failure: log it if it starts an outage, and fail fast for
        C{retryInterval} seconds.
        """
        self._retryAt = self._now() + self.retryInterval
        try:
            self.client.connection_pool.disconnect()
        except (redis.RedisError, OSError):
            pass
        if self.available:
            self.available = False
            self.log.error(
                "shared data: Redis at {url} failed ({what}: {error});"
                " get answers NOT_FOUND, set CAS_MISMATCH, enqueue NOT_FOUND,"
                " dequeue EMPTY until it is back",
                url=self.url, what=what, error=str(error) or type(error).__name__)

    def succeeded(self) -> None:
        """
        Record a success, logging the end of an outage.
        """
        if not self.available:
            self.available = True
            self.log.info("shared data: Redis at {url} is back", url=self.url)

    def close(self) -> None:
        """
        Close every connection.
        """
        self.client.close()


@implementer(ISharedData)
class RedisSharedData:
    """
    L{ISharedData} in Redis: each key is a hash C{{v: value, c: cas}}; the
    CAS comes from one global counter, so a deleted and re-created key never
    gets a CAS it had before; each write is one Lua script, atomic.

    @ivar ttl: seconds a key lives after its last write, or L{None}.
    """

    def __init__(self, connection: RedisConnection,
                 ttl: Optional[float] = None) -> None:
        self._connection = connection
        self.ttl = ttl
        self._casKey = connection.key(b"cas")

    def get(self, key: bytes) -> Optional[Tuple[bytes, int]]:
        entryKey = self._connection.key(b"kv:", key)
        value, cas = self._connection.call(
            lambda client: client.hmget(entryKey, "v", "c"),
            "get", (None, None))
        if value is None or cas is None:
            return None
        return value, int(cas)

    def set(self, key: bytes, value: Optional[bytes], cas: int) -> int:
        entryKey = self._connection.key(b"kv:", key)
        ttlMilliseconds = 0 if self.ttl is None else max(1, int(self.ttl * 1000))
        args = [b"" if value is None else value, cas, ttlMilliseconds,
                1 if value is None else 0, MAX_CAS]
        result = self._connection.call(
            lambda client: self._connection.setScript(
                keys=[entryKey, self._casKey], args=args, client=client),
            "set", -1)
        return Status.CAS_MISMATCH if result == -1 else Status.OK

    def close(self) -> None:
        """
        Close the connections to Redis.
        """
        self._connection.close()


def _queueField(vmId: bytes, name: bytes) -> bytes:
    return b"%d:%s%s" % (len(vmId), vmId, name)


def _preferredQueueId(field: bytes) -> int:
    return zlib.crc32(field) % _QUEUE_ID_LIMIT + 1


@implementer(ISharedQueues)
class RedisSharedQueues:
    """
    L{ISharedQueues} in Redis: one list per queue, ids allocated in a Redis
    hash (the CRC32 of the name when free, so every process computes the
    same id even while Redis is down), notifications by pub/sub.
    """

    log = Logger()

    def __init__(self, connection: RedisConnection, reactor=None,
                 pollInterval: float = DEFAULT_POLL_INTERVAL) -> None:
        """
        @param reactor: an C{IReactorTime} that drives the notification
            poll; without one, notifications are delivered only by
            L{deliverNotifications}.
        @param pollInterval: seconds between two polls.
        """
        self._connection = connection
        self._names = connection.key(b"queue-ids-by-name")
        self._ids = connection.key(b"queue-names-by-id")
        self._known: Dict[Tuple[bytes, bytes], int] = {}
        self._unregistered: Set[Tuple[bytes, bytes]] = set()
        self._subscribers: Dict[int, List[QueueReadyCallback]] = {}
        self._pubsub = None
        self._subscribed: Set[int] = set()
        self._lostSubscriptions = False
        self._pending: List[int] = []
        self._poll: Optional[LoopingCall] = None
        if reactor is not None:
            self._poll = LoopingCall(self._pollOnce)
            self._poll.clock = reactor
            self._pollInterval = pollInterval

    def _listKey(self, queueId: int) -> bytes:
        return self._connection.key(b"queue:%d" % (queueId,))

    def _channel(self, queueId: int) -> bytes:
        return self._connection.key(b"queue-ready:%d" % (queueId,))

    def _registerInRedis(self, vmId: bytes, name: bytes) -> Optional[int]:
        field = _queueField(vmId, name)
        return self._connection.call(
            lambda client: self._connection.registerScript(
                keys=[self._names, self._ids],
                args=[field, _preferredQueueId(field), _QUEUE_ID_LIMIT],
                client=client),
            "register", None)

    def register(self, vmId: bytes, name: bytes) -> int:
        key = (bytes(vmId), bytes(name))
        queueId = self._registerInRedis(*key)
        if queueId is None:
            queueId = self._known.get(key) or _preferredQueueId(
                _queueField(*key))
            self._unregistered.add(key)
        else:
            queueId = int(queueId)
            self._unregistered.discard(key)
        self._known[key] = queueId
        return queueId

    def resolve(self, vmId: bytes, name: bytes) -> Optional[int]:
        key = (bytes(vmId), bytes(name))
        found = self._connection.call(
            lambda client: client.hget(self._names, _queueField(*key)),
            "resolve", False)
        if found is False:
            return self._known.get(key)
        if found is None:
            return None
        self._known[key] = int(found)
        return int(found)

    def enqueue(self, queueId: int, data: bytes) -> int:
        self._registerPending()
        done = self._connection.call(
            lambda client: self._connection.enqueueScript(
                keys=[self._ids, self._listKey(queueId),
                      self._channel(queueId)],
                args=[queueId, data], client=client),
            "enqueue", 0)
        return Status.OK if done == 1 else Status.NOT_FOUND

    def dequeue(self, queueId: int) -> Tuple[int, Optional[bytes]]:
        self._registerPending()
        result = self._connection.call(
            lambda client: self._connection.dequeueScript(
                keys=[self._ids, self._listKey(queueId)], args=[queueId],
                client=client),
            "dequeue", [1])
        if result[0] == 0:
            return Status.NOT_FOUND, None
        if result[0] == 1:
            return Status.EMPTY, None
        return Status.OK, result[1]

    def _registerPending(self) -> None:
        """
        Register in Redis the queues registered while it was down.
        """
        for key in list(self._unregistered):
            self.register(*key)

    def subscribe(self, queueId: int, callback: QueueReadyCallback) -> None:
        self._subscribers.setdefault(queueId, []).append(callback)
        if self._connection.call(self._syncSubscriptions, "subscribe",
                                 None) is None:
            self._dropPubSub()
        if self._poll is not None and not self._poll.running:
            self._poll.start(self._pollInterval, now=False)

    def unsubscribe(self, queueId: int, callback: QueueReadyCallback) -> None:
        callbacks = self._subscribers.get(queueId, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            self._subscribers.pop(queueId, None)

    def _syncSubscriptions(self, client: redis.Redis) -> List[int]:
        """
        Make the pub/sub connection listen to exactly the subscribed
        queues' channels, connecting it first if needed, and wait until
        Redis confirms the new subscriptions (so no enqueue after this
        returns goes unnoticed).

        @return: the queues to notify now: after a reconnection, every
            subscribed queue that is not empty.
        """
        wanted = set(self._subscribers)
        if self._pubsub is None:
            self._pubsub = client.pubsub()
            self._subscribed = set()
        added = sorted(wanted - self._subscribed)
        removed = sorted(self._subscribed - wanted)
        if removed:
            self._pubsub.unsubscribe(*[self._channel(q) for q in removed])
        if added:
            channels = {self._channel(q) for q in added}
            self._pubsub.subscribe(*channels)
            deadline = time.monotonic() + self._connection.timeout
            while channels:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise redis.TimeoutError("no SUBSCRIBE confirmation")
                self._handle(self._pubsub.get_message(timeout=remaining),
                             channels)
        self._subscribed = wanted
        ready = []
        if self._lostSubscriptions:
            self._lostSubscriptions = False
            for queueId in sorted(wanted):
                if client.llen(self._listKey(queueId)):
                    ready.append(queueId)
        return ready

    def _handle(self, message: Optional[dict],
                awaitedChannels: Set[bytes]) -> None:
        """
        Note a pub/sub message: a notification goes to C{self._pending}, a
        subscription confirmation is removed from C{awaitedChannels}.
        """
        if message is None:
            return
        kind = message.get("type")
        if isinstance(kind, bytes):
            kind = kind.decode("ascii")
        if kind == "message":
            self._pending.append(int(message["data"]))
        elif kind == "subscribe":
            awaitedChannels.discard(message["channel"])

    def _read(self, client: redis.Redis, timeout: float) -> List[int]:
        """
        Read the pending notifications, waiting at most C{timeout} seconds
        for the first one.

        @return: the queue ids to notify, one per enqueue, in order.
        """
        ready = self._syncSubscriptions(client)
        if not self._pending and self._subscribed:
            self._handle(self._pubsub.get_message(timeout=timeout), set())
        while self._subscribed:
            message = self._pubsub.get_message(timeout=0.0)
            if message is None:
                break
            self._handle(message, set())
        ready.extend(self._pending)
        self._pending = []
        return ready

    def deliverNotifications(self, timeout: float = 0.0) -> int:
        """
        Call the subscribers of every queue that got items since the last
        call. The poll on the reactor calls this with C{timeout=0}.

        @param timeout: seconds to wait for a first notification.
        @return: the number of notifications delivered.
        """
        if not self._subscribers:
            self._dropPubSub()
            return 0
        ready = self._connection.call(
            lambda client: self._read(client, timeout), "queue poll", None)
        if ready is None:
            self._dropPubSub()
            return 0
        for queueId in ready:
            for callback in list(self._subscribers.get(queueId, ())):
                try:
                    callback(queueId)
                except Exception:
                    self.log.failure("on_queue_ready for queue {queueId}",
                                     queueId=queueId)
        return len(ready)

    def _pollOnce(self) -> None:
        try:
            self.deliverNotifications()
        except Exception:
            self.log.failure("shared queues: notification poll failed")
            self._dropPubSub()

    def _dropPubSub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if self._subscribed or self._subscribers:
            self._lostSubscriptions = True
        self._subscribed = set()
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis.RedisError, OSError):
                pass

    def close(self) -> None:
        """
        Stop the poll and close every connection to Redis.
        """
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._dropPubSub()
        self._connection.close()


def _redisOptions(url: str) -> Tuple[str, Dict[str, str]]:
    """
    Split twistgate's own query parameters (C{prefix}, C{ttl}, C{timeout},
    C{retry_interval}) off a Redis URL.

    @return: the URL for the C{redis} client and twistgate's parameters.
    """
    parts = urlsplit(url)
    ours, theirs = {}, []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("prefix", "ttl", "timeout", "retry_interval"):
            ours[name] = value
        else:
            theirs.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def _positiveSeconds(url: str, name: str, value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError("shared data {}: {} must be a positive number of"
                         " seconds, not {!r}".format(url, name, value))
    return seconds


def sharedStoresFromURL(url: Optional[str], reactor=None
                        ) -> Tuple[ISharedData, ISharedQueues]:
    """
    Make the shared data store and the shared queues a URL names.

    C{"memory"} (or empty) gives the in-process stores. A C{redis://},
    C{rediss://} or C{unix://} URL gives the Redis stores; twistgate's
    own query parameters are C{prefix} (key prefix, default
    C{twistgate:}), C{ttl} (seconds a shared-data key lives after its last
    write; default forever), C{timeout} (seconds per round trip, default
    0.25) and C{retry_interval} (seconds to fail fast after a failure,
    default 1); the others go to the C{redis} client. Redis need not be up
    yet: the stores work as soon as it is.

    Both returned objects have a C{close()} method to call on shutdown.

    @param url: e.g. C{"redis://127.0.0.1:6379/0?ttl=60"}.
    @param reactor: an C{IReactorTime} for the queue notification poll and
        the clocks; without one queues notify only through
        C{deliverNotifications}.
    @raise ValueError: with a one-line message for an unusable URL.
    """
    text = (url or "memory").strip()
    scheme = urlsplit(text).scheme.lower()
    if text.lower() in ("memory", "memory:"):
        return InMemorySharedData(), InMemorySharedQueues()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            "shared data: unsupported URL {!r} (expected 'memory',"
            " redis://host:port/db or unix:///path/to/redis.sock)".format(text))
    clientURL, options = _redisOptions(text)
    timeout = _positiveSeconds(text, "timeout", options.get("timeout"))
    retryInterval = _positiveSeconds(
        text, "retry_interval", options.get("retry_interval"))
    ttl = _positiveSeconds(text, "ttl", options.get("ttl"))
    now = time.monotonic if reactor is None else reactor.seconds
    try:
        connection = RedisConnection(
            clientURL, prefix=options.get("prefix", DEFAULT_PREFIX),
            timeout=timeout or DEFAULT_TIMEOUT,
            retryInterval=retryInterval or DEFAULT_RETRY_INTERVAL, now=now)
    except ValueError as e:
        raise ValueError("shared data: bad Redis URL {!r}: {}".format(text, e))
    connection.call(lambda client: client.ping(), "ping", None)
    return (RedisSharedData(connection, ttl=ttl),
            RedisSharedQueues(connection, reactor=reactor))
