"""
Every Proxy-Wasm hostcall, in one table: its name, its Wasm signature, the
ABI versions that define it, and the L{Hostcalls} method implementing it (or
the status it answers when twistgate does not support it).

Hostcalls never trap for a bad argument: a pointer or size outside the
guest's memory answers INVALID_MEMORY_ACCESS, an unknown enumeration value
BAD_ARGUMENT, malformed pairs BAD_ARGUMENT, and every other status is one the
SDKs accept for that call (reference §5.3). Pointers and sizes are read as
unsigned. Output buffers are allocated through the guest's allocator; an
empty result writes a null pointer and a zero size without allocating.
"""

from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from twisted.logger import Logger

from twistgate.proxywasm.constants import (
    ABI_0_1_0,
    ABI_0_2,
    ABI_0_2_1,
    ALL_ABI_VERSIONS,
    BufferType,
    LogLevel,
    MapType,
    MetricType,
    Status,
    StreamType,
    enumValue,
)
from twistgate.proxywasm.maps import HeaderMap, ReadOnlyHeaderMap, validName, validValue
from twistgate.proxywasm.pairs import PairsError, decodePairs, decodePath, encodePairs
from twistgate.proxywasm.properties import getProperty, propertyName, setProperty
from twistgate.wasm.interfaces import FuncSig, GuestMemoryError, HostFunction, WasmTrap
from twistgate.wasm.memory import u32, u64

I32 = "i32"
I64 = "i64"

log = Logger(namespace="twistgate.proxywasm.hostcalls")

_PROPERTY_NAMES_KEPT = 256
_OK = Status.OK
_U32_MASK = 0xFFFFFFFF  # what u32 does, without a call
_STREAM_MAPS = {int(kind): kind for kind in (MapType.HTTP_REQUEST_HEADERS, MapType.HTTP_REQUEST_TRAILERS,
                                             MapType.HTTP_RESPONSE_HEADERS, MapType.HTTP_RESPONSE_TRAILERS)}


def _sig(paramCount: int, results: int = 1, i64At: Tuple[int, ...] = ()) -> FuncSig:
    params = tuple(I64 if index in i64At else I32 for index in range(paramCount))
    return FuncSig(params, (I32,) * results)


@dataclass(frozen=True)
class Hostcall:
    """
    One row of the hostcall table.

    @ivar name: the import name in module C{env}.
    @ivar sig: the signature the spec gives it.
    @ivar versions: the ABI versions that define it.
    @ivar method: the L{Hostcalls} method implementing it, or L{None} when
        twistgate does not support it.
    @ivar unsupportedStatus: what an unsupported hostcall answers: a status
        the SDKs accept for that call.
    @ivar alternativeSigs: other signatures guests declare for it (0.1.0
        continue calls without a result).
    @ivar note: a short remark for the capability table.
    """

    name: str
    sig: FuncSig
    versions: FrozenSet[str]
    method: Optional[str]
    unsupportedStatus: Status = Status.UNIMPLEMENTED
    alternativeSigs: Tuple[FuncSig, ...] = ()
    note: str = ""


_ALL = ALL_ABI_VERSIONS
_V01 = frozenset([ABI_0_1_0])
_NO_RESULT = FuncSig((), ())

HOSTCALLS: Tuple[Hostcall, ...] = (
    Hostcall("proxy_log", _sig(3), _ALL, "proxy_log"),
    Hostcall("proxy_get_log_level", _sig(1), frozenset([ABI_0_2_1]), "proxy_get_log_level"),
    Hostcall("proxy_get_current_time_nanoseconds", _sig(1), _ALL, "proxy_get_current_time_nanoseconds"),
    Hostcall("proxy_set_tick_period_milliseconds", _sig(1), _ALL, "proxy_set_tick_period_milliseconds"),
    Hostcall("proxy_set_effective_context", _sig(1), _ALL, "proxy_set_effective_context"),
    Hostcall("proxy_done", _sig(0), _ALL, "proxy_done", note="accepted; contexts finish at once"),
    Hostcall("proxy_call_foreign_function", _sig(6), ABI_0_2, None, Status.NOT_FOUND,
             note="no foreign functions are registered"),
    Hostcall("proxy_get_buffer_bytes", _sig(5), _ALL, "proxy_get_buffer_bytes"),
    Hostcall("proxy_set_buffer_bytes", _sig(5), _ALL, "proxy_set_buffer_bytes"),
    Hostcall("proxy_get_buffer_status", _sig(3), _ALL, "proxy_get_buffer_status"),
    Hostcall("proxy_get_header_map_pairs", _sig(3), _ALL, "proxy_get_header_map_pairs"),
    Hostcall("proxy_set_header_map_pairs", _sig(3), _ALL, "proxy_set_header_map_pairs"),
    Hostcall("proxy_get_header_map_size", _sig(2), _ALL, "proxy_get_header_map_size"),
    Hostcall("proxy_get_header_map_value", _sig(5), _ALL, "proxy_get_header_map_value"),
    Hostcall("proxy_add_header_map_value", _sig(5), _ALL, "proxy_add_header_map_value"),
    Hostcall("proxy_replace_header_map_value", _sig(5), _ALL, "proxy_replace_header_map_value"),
    Hostcall("proxy_remove_header_map_value", _sig(3), _ALL, "proxy_remove_header_map_value"),
    Hostcall("proxy_get_property", _sig(4), _ALL, "proxy_get_property"),
    Hostcall("proxy_set_property", _sig(4), _ALL, "proxy_set_property"),
    Hostcall("proxy_continue_stream", _sig(1), ABI_0_2, "proxy_continue_stream"),
    Hostcall("proxy_close_stream", _sig(1), ABI_0_2, "proxy_close_stream"),
    Hostcall("proxy_continue_request", _sig(0), _V01, "proxy_continue_request",
             alternativeSigs=(_NO_RESULT,)),
    Hostcall("proxy_continue_response", _sig(0), _V01, "proxy_continue_response",
             alternativeSigs=(_NO_RESULT,)),
    Hostcall("proxy_clear_route_cache", _sig(0), _V01, "proxy_clear_route_cache",
             alternativeSigs=(_NO_RESULT,), note="accepted; routing is done once per request"),
    Hostcall("proxy_get_configuration", _sig(2), _V01, "proxy_get_configuration"),
    Hostcall("proxy_get_status", _sig(3), _ALL, "proxy_get_status"),
    Hostcall("proxy_send_local_response", _sig(8), _ALL, "proxy_send_local_response"),
    Hostcall("proxy_http_call", _sig(10), _ALL, "proxy_http_call"),
    Hostcall("proxy_grpc_call", _sig(12), _ALL, None, Status.INTERNAL_FAILURE,
             note="gRPC calls are not supported"),
    Hostcall("proxy_grpc_stream", _sig(9), _ALL, None, Status.INTERNAL_FAILURE,
             note="gRPC streams are not supported"),
    Hostcall("proxy_grpc_send", _sig(4), _ALL, None, Status.NOT_FOUND,
             note="no gRPC stream exists"),
    Hostcall("proxy_grpc_cancel", _sig(1), _ALL, None, Status.NOT_FOUND,
             note="no gRPC call exists"),
    Hostcall("proxy_grpc_close", _sig(1), _ALL, None, Status.NOT_FOUND,
             note="no gRPC call exists"),
    Hostcall("proxy_get_shared_data", _sig(5), _ALL, "proxy_get_shared_data"),
    Hostcall("proxy_set_shared_data", _sig(5), _ALL, "proxy_set_shared_data"),
    Hostcall("proxy_register_shared_queue", _sig(3), _ALL, "proxy_register_shared_queue"),
    Hostcall("proxy_resolve_shared_queue", _sig(5), _ALL, "proxy_resolve_shared_queue"),
    Hostcall("proxy_enqueue_shared_queue", _sig(3), _ALL, "proxy_enqueue_shared_queue"),
    Hostcall("proxy_dequeue_shared_queue", _sig(3), _ALL, "proxy_dequeue_shared_queue"),
    Hostcall("proxy_define_metric", _sig(4), _ALL, "proxy_define_metric"),
    Hostcall("proxy_increment_metric", _sig(2, i64At=(1,)), _ALL, "proxy_increment_metric"),
    Hostcall("proxy_record_metric", _sig(2, i64At=(1,)), _ALL, "proxy_record_metric"),
    Hostcall("proxy_get_metric", _sig(2), _ALL, "proxy_get_metric"),
)

HOSTCALLS_BY_NAME: Dict[str, Hostcall] = {hostcall.name: hostcall for hostcall in HOSTCALLS}


class HostTrap(Exception):
    """
    Raised by a hostcall to trap the guest on purpose (never for a bad
    argument: for misuse the host cannot answer with a status).
    """


class Hostcalls:
    """
    The implementations of the hostcalls for one L{ProxyWasmVM}.

    Each method takes the raw integer arguments of its import and returns a
    L{Status}; L{bind} wraps it so memory errors and unexpected host errors
    become statuses.

    @ivar vm: the L{twistgate.proxywasm.vm.ProxyWasmVM}.
    """

    def __init__(self, vm) -> None:
        self.vm = vm
        self._propertyNames: Dict[bytes, Optional[str]] = {}

    # Memory helpers.

    def _read(self, pointer: int, size: int) -> bytes:
        return self.vm.memory.readBytes(pointer & _U32_MASK, size & _U32_MASK)

    def _checkSlot(self, pointer: int, size: int) -> None:
        self.vm.memory.checkRange(pointer & _U32_MASK, size)

    def _writeU32(self, pointer: int, value: int) -> None:
        self.vm.memory.writeU32(u32(pointer), value)

    def _writeU64(self, pointer: int, value: int) -> None:
        self.vm.memory.writeU64(u32(pointer), value)

    def _output(self, data: bytes, dataPointer: int, sizePointer: int) -> int:
        """
        Hand C{data} to the guest: allocate, copy, and store the address and
        size at the two output pointers.
        """
        checkRange = self.vm.memory.checkRange
        checkRange(dataPointer & _U32_MASK, 4)
        checkRange(sizePointer & _U32_MASK, 4)
        if not data:
            self._writeU32(dataPointer, 0)
            self._writeU32(sizePointer, 0)
            return Status.OK
        address = self.vm.allocate(len(data))
        if not address:
            return Status.INTERNAL_FAILURE
        self.vm.memory.writeBytes(address, data)
        self._writeU32(dataPointer, address)
        self._writeU32(sizePointer, len(data))
        return Status.OK

    def _context(self):
        return self.vm.effectiveContext

    def _stream(self):
        context = self.vm.effectiveContext
        return context if context is not None and context.isStream else None

    # Logging and time.

    def proxy_log(self, level, message, messageSize):
        if not LogLevel.TRACE <= level <= LogLevel.CRITICAL:
            return Status.BAD_ARGUMENT
        if level < self.vm.environment.logLevel:
            return Status.OK
        self.vm.logFromGuest(LogLevel(level), self._read(message, messageSize))
        return Status.OK

    def proxy_get_log_level(self, levelPointer):
        self._writeU32(levelPointer, self.vm.environment.logLevel)
        return Status.OK

    def proxy_get_current_time_nanoseconds(self, timePointer):
        self._writeU64(timePointer, int(self.vm.environment.now() * 1e9))
        return Status.OK

    # Contexts, timers, streams.

    def proxy_set_tick_period_milliseconds(self, period):
        context = self._context()
        if context is None:
            return Status.BAD_ARGUMENT
        context.root.setTickPeriod(u32(period))
        return Status.OK

    def proxy_set_effective_context(self, contextId):
        return self.vm.setEffectiveContext(u32(contextId))

    def proxy_done(self):
        return Status.OK

    def _onHttpStream(self, streamType, action):
        """
        Apply C{action(stream, kind)} to the current stream for an HTTP
        stream type: BAD_ARGUMENT for an unknown type or outside a stream,
        UNIMPLEMENTED for the L4 types.
        """
        kind = enumValue(StreamType, streamType)
        if kind is None:
            return Status.BAD_ARGUMENT
        if kind not in (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE):
            return Status.UNIMPLEMENTED
        stream = self._stream()
        if stream is None:
            return Status.BAD_ARGUMENT
        action(stream, kind)
        return Status.OK

    def proxy_continue_stream(self, streamType):
        return self._onHttpStream(streamType, lambda stream, kind: stream.continueStream(kind))

    def proxy_close_stream(self, streamType):
        return self._onHttpStream(streamType, lambda stream, kind: stream.closeStream(kind))

    def proxy_continue_request(self):
        return self.proxy_continue_stream(StreamType.HTTP_REQUEST)

    def proxy_continue_response(self):
        return self.proxy_continue_stream(StreamType.HTTP_RESPONSE)

    def proxy_clear_route_cache(self):
        return Status.OK

    # Buffers.

    def _buffer(self, kind: BufferType) -> Optional[bytes]:
        context = self._context()
        if kind == BufferType.PLUGIN_CONFIGURATION:
            return None if context is None else context.root.configuration
        if kind == BufferType.VM_CONFIGURATION:
            return self.vm.vmConfiguration
        if kind == BufferType.HTTP_CALL_RESPONSE_BODY:
            call = self.vm.deliveringCall
            return None if call is None else call.body
        stream = self._stream()
        if stream is None:
            return None
        if kind == BufferType.HTTP_REQUEST_BODY:
            return stream.exchange.requestBody
        if kind == BufferType.HTTP_RESPONSE_BODY:
            return stream.responseBody
        return None

    def proxy_get_buffer_bytes(self, bufferType, start, maxSize, dataPointer, sizePointer):
        kind = enumValue(BufferType, bufferType)
        if kind is None:
            return Status.BAD_ARGUMENT
        self._checkSlot(dataPointer, 4)
        self._checkSlot(sizePointer, 4)
        data = self._buffer(kind)
        if data is None:
            return Status.NOT_FOUND
        start = u32(start)
        return self._output(data[start:start + u32(maxSize)], dataPointer, sizePointer)

    def proxy_get_buffer_status(self, bufferType, sizePointer, flagsPointer):
        kind = enumValue(BufferType, bufferType)
        if kind is None:
            return Status.BAD_ARGUMENT
        self._checkSlot(sizePointer, 4)
        self._checkSlot(flagsPointer, 4)
        data = self._buffer(kind)
        if data is None:
            return Status.NOT_FOUND
        self._writeU32(sizePointer, len(data))
        self._writeU32(flagsPointer, 0)
        return Status.OK

    def proxy_set_buffer_bytes(self, bufferType, start, size, data, dataSize):
        kind = enumValue(BufferType, bufferType)
        if kind is None:
            return Status.BAD_ARGUMENT
        replacement = self._read(data, dataSize)
        if kind not in (BufferType.HTTP_REQUEST_BODY, BufferType.HTTP_RESPONSE_BODY):
            return Status.BAD_ARGUMENT
        stream = self._stream()
        if stream is None:
            return Status.NOT_FOUND
        return stream.setBody(kind, u32(start), u32(size), replacement)

    def proxy_get_configuration(self, dataPointer, sizePointer):
        if self.vm.startingVm:
            data = self.vm.vmConfiguration
        else:
            context = self._context()
            data = None if context is None else context.root.configuration
        return self._output(data or b"", dataPointer, sizePointer)

    # Header maps.

    def _map(self, mapType) -> Optional[HeaderMap]:
        if mapType in _STREAM_MAPS:
            context = self.vm.effectiveContext
            if context is None or not context.isStream:
                return ReadOnlyHeaderMap()
            return context.headerMap(_STREAM_MAPS[mapType])
        kind = enumValue(MapType, mapType)
        if kind not in (MapType.HTTP_CALL_RESPONSE_HEADERS, MapType.HTTP_CALL_RESPONSE_TRAILERS):
            return None
        call = self.vm.deliveringCall
        if call is None:
            return ReadOnlyHeaderMap()
        if kind == MapType.HTTP_CALL_RESPONSE_HEADERS:
            return ReadOnlyHeaderMap(call.headers, call.pseudoHeaders())
        return ReadOnlyHeaderMap(call.trailers)

    def proxy_get_header_map_pairs(self, mapType, dataPointer, sizePointer):
        headerMap = self._map(mapType)
        if headerMap is None:
            return Status.BAD_ARGUMENT
        return self._output(encodePairs(headerMap.pairs()), dataPointer, sizePointer)

    def proxy_get_header_map_size(self, mapType, sizePointer):
        headerMap = self._map(mapType)
        if headerMap is None:
            return Status.BAD_ARGUMENT
        self._writeU32(sizePointer, len(encodePairs(headerMap.pairs())))
        return Status.OK

    def proxy_set_header_map_pairs(self, mapType, data, size):
        encoded = self._read(data, size)
        headerMap = self._map(mapType)
        if headerMap is None:
            return Status.BAD_ARGUMENT
        try:
            pairs = decodePairs(encoded)
        except PairsError as error:
            self.vm.logHost("warn", "proxy_set_header_map_pairs: {}".format(error))
            return Status.BAD_ARGUMENT
        return self._mapWrite(headerMap.setPairs(pairs), "proxy_set_header_map_pairs", mapType)

    def proxy_get_header_map_value(self, mapType, key, keySize, valuePointer, valueSizePointer):
        name = self._read(key, keySize)
        headerMap = self._map(mapType)
        if headerMap is None:
            return Status.BAD_ARGUMENT
        self._checkSlot(valuePointer, 4)
        self._checkSlot(valueSizePointer, 4)
        value = headerMap.get(name)
        if value is None:
            if self.vm.abiVersion == ABI_0_1_0:
                return self._output(b"", valuePointer, valueSizePointer)
            return Status.NOT_FOUND
        return self._output(value, valuePointer, valueSizePointer)

    def _mapWrite(self, status, call, mapType) -> int:
        if status != _OK:
            self.vm.logHost("warn", "{} on map {} refused: invalid name, value or read-only map".format(
                call, mapType))
        return status

    def proxy_add_header_map_value(self, mapType, key, keySize, value, valueSize):
        name, data = self._read(key, keySize), self._read(value, valueSize)
        headerMap = self._map(mapType)
        if headerMap is None:
            return Status.BAD_ARGUMENT
        return self._mapWrite(headerMap.add(name, data), "proxy_add_header_map_value", mapType)

    def proxy_replace_header_map_value(self, mapType, key, keySize, value, valueSize):
        name, data = self._read(key, keySize), self._read(value, valueSize)
        headerMap = self._map(mapType)
        if headerMap is None:
            return Status.BAD_ARGUMENT
        return self._mapWrite(headerMap.replace(name, data), "proxy_replace_header_map_value", mapType)

    def proxy_remove_header_map_value(self, mapType, key, keySize):
        name = self._read(key, keySize)
        headerMap = self._map(mapType)
        if headerMap is None:
            return Status.BAD_ARGUMENT
        return self._mapWrite(headerMap.remove(name), "proxy_remove_header_map_value", mapType)

    # Properties.

    def _propertyName(self, path: bytes) -> Optional[str]:
        """
        @return: the dotted name of a serialized property path (L{None} for
            an empty path), remembered for the paths a filter keeps asking.
        """
        try:
            return self._propertyNames[path]
        except KeyError:
            pass
        segments = decodePath(path)
        name = propertyName(segments) if segments else None
        if len(self._propertyNames) < _PROPERTY_NAMES_KEPT:
            self._propertyNames[path] = name
        return name

    def proxy_get_property(self, path, pathSize, valuePointer, valueSizePointer):
        name = self._propertyName(self._read(path, pathSize))
        self._checkSlot(valuePointer, 4)
        self._checkSlot(valueSizePointer, 4)
        context = self._context()
        if name is None or context is None:
            return Status.NOT_FOUND
        value = getProperty(context, name)
        if value is None:
            return Status.NOT_FOUND
        return self._output(value, valuePointer, valueSizePointer)

    def proxy_set_property(self, path, pathSize, value, valueSize):
        segments = decodePath(self._read(path, pathSize))
        data = self._read(value, valueSize)
        context = self._context()
        if not segments or context is None:
            return Status.NOT_FOUND
        name = propertyName(segments)
        status = setProperty(context, name, data)
        if status == Status.INTERNAL_FAILURE:
            self.vm.logHost("error", 'property "{}" is not changeable'.format(name))
        return status

    # Local responses and HTTP calls.

    def proxy_send_local_response(self, statusCode, details, detailsSize, body, bodySize,
                                  headers, headersSize, grpcStatus):
        reason = self._read(details, detailsSize)
        content = self._read(body, bodySize)
        encoded = self._read(headers, headersSize)
        statusCode = u32(statusCode)
        if not 100 <= statusCode <= 999:
            self.vm.logHost("warn", "proxy_send_local_response: bad status {}".format(statusCode))
            return Status.BAD_ARGUMENT
        if not validValue(reason):
            return Status.BAD_ARGUMENT
        try:
            pairs = [(name.lower(), value) for name, value in decodePairs(encoded)]
        except PairsError as error:
            self.vm.logHost("warn", "proxy_send_local_response: headers: {}".format(error))
            return Status.BAD_ARGUMENT
        for name, value in pairs:
            if not validName(name) or not validValue(value):
                self.vm.logHost("warn", "proxy_send_local_response: invalid header {!r}".format(name))
                return Status.BAD_ARGUMENT
        stream = self._stream()
        if stream is None:
            return Status.BAD_ARGUMENT
        return stream.sendLocalResponse(statusCode, reason, content, pairs)

    def proxy_http_call(self, upstream, upstreamSize, headers, headersSize, body, bodySize,
                        trailers, trailersSize, timeout, tokenPointer):
        target = self._read(upstream, upstreamSize)
        encodedHeaders = self._read(headers, headersSize)
        content = self._read(body, bodySize)
        encodedTrailers = self._read(trailers, trailersSize)
        self._checkSlot(tokenPointer, 4)
        try:
            headerPairs = decodePairs(encodedHeaders)
            trailerPairs = decodePairs(encodedTrailers)
        except PairsError as error:
            self.vm.logHost("warn", "proxy_http_call: {}".format(error))
            return Status.BAD_ARGUMENT
        context = self._context()
        if context is None:
            return Status.BAD_ARGUMENT
        status, token = self.vm.dispatchHttpCall(
            context, target, headerPairs, content, trailerPairs, u32(timeout))
        if status == Status.OK:
            self._writeU32(tokenPointer, token)
        return status

    def proxy_get_status(self, codePointer, messagePointer, messageSizePointer):
        self._checkSlot(codePointer, 4)
        call = self.vm.deliveringCall
        code, message = (Status.OK, b"") if call is None else call.status()
        self._writeU32(codePointer, code)
        return self._output(message, messagePointer, messageSizePointer)

    # Shared data and queues.

    def proxy_get_shared_data(self, key, keySize, valuePointer, valueSizePointer, casPointer):
        name = self._read(key, keySize)
        self._checkSlot(casPointer, 4)
        self._checkSlot(valuePointer, 4)
        self._checkSlot(valueSizePointer, 4)
        found = self.vm.environment.sharedData.get(name)
        if found is None:
            return Status.NOT_FOUND
        value, cas = found
        status = self._output(value, valuePointer, valueSizePointer)
        if status == Status.OK:
            self._writeU32(casPointer, cas)
        return status

    def proxy_set_shared_data(self, key, keySize, value, valueSize, cas):
        name = self._read(key, keySize)
        data = None if u32(value) == 0 else self._read(value, valueSize)
        return self.vm.environment.sharedData.set(name, data, u32(cas))

    def proxy_register_shared_queue(self, name, nameSize, queueIdPointer):
        queueName = self._read(name, nameSize)
        self._checkSlot(queueIdPointer, 4)
        context = self._context()
        if context is None:
            return Status.BAD_ARGUMENT
        queueId = self.vm.environment.sharedQueues.register(self.vm.vmId, queueName)
        context.root.watchQueue(queueId)
        self._writeU32(queueIdPointer, queueId)
        return Status.OK

    def proxy_resolve_shared_queue(self, vmId, vmIdSize, name, nameSize, queueIdPointer):
        owner = self._read(vmId, vmIdSize) or self.vm.vmId
        queueName = self._read(name, nameSize)
        self._checkSlot(queueIdPointer, 4)
        queueId = self.vm.environment.sharedQueues.resolve(owner, queueName)
        if queueId is None:
            return Status.NOT_FOUND
        self._writeU32(queueIdPointer, queueId)
        return Status.OK

    def proxy_enqueue_shared_queue(self, queueId, value, valueSize):
        data = self._read(value, valueSize)
        return self.vm.environment.sharedQueues.enqueue(u32(queueId), data)

    def proxy_dequeue_shared_queue(self, queueId, valuePointer, valueSizePointer):
        self._checkSlot(valuePointer, 4)
        self._checkSlot(valueSizePointer, 4)
        status, data = self.vm.environment.sharedQueues.dequeue(u32(queueId))
        if status != Status.OK:
            return status
        return self._output(data or b"", valuePointer, valueSizePointer)

    # Metrics.

    def proxy_define_metric(self, metricType, name, nameSize, metricIdPointer):
        metricName = self._read(name, nameSize)
        self._checkSlot(metricIdPointer, 4)
        if enumValue(MetricType, metricType) is None:
            return Status.BAD_ARGUMENT
        metricId = self.vm.environment.metrics.define(
            metricType, metricName.decode("utf-8", "replace"), self.vm.filterName)
        self._writeU32(metricIdPointer, metricId)
        return Status.OK

    def proxy_increment_metric(self, metricId, delta):
        return self.vm.environment.metrics.increment(u32(metricId), delta)

    def proxy_record_metric(self, metricId, value):
        return self.vm.environment.metrics.record(u32(metricId), u64(value))

    def proxy_get_metric(self, metricId, resultPointer):
        self._checkSlot(resultPointer, 8)
        status, value = self.vm.environment.metrics.get(u32(metricId))
        if status == Status.OK:
            self._writeU64(resultPointer, value)
        return status


def _guard(name: str, implementation: Callable[..., int], hasResult: bool, vm) -> Callable[..., Optional[int]]:
    """
    Wrap a hostcall so it answers a status whatever happens: memory errors
    become INVALID_MEMORY_ACCESS and host bugs INTERNAL_FAILURE (logged);
    only L{HostTrap} and traps of nested guest calls unwind the guest.
    """

    def hostcall(*args):
        try:
            status = implementation(*args)
        except GuestMemoryError:
            status = Status.INVALID_MEMORY_ACCESS
        except (WasmTrap, HostTrap):
            raise
        except Exception:
            log.failure("hostcall {name} of filter {filter} failed", name=name, filter=vm.filterName)
            status = Status.INTERNAL_FAILURE
        return int(status) if hasResult else None

    return hostcall


def _droppingQuietLogs(guarded: Callable[..., int], environment) -> Callable[..., int]:
    """
    Answer C{proxy_log} calls below the environment's log level at once (OK,
    as L{Hostcalls.proxy_log} would), the cheapest way: guests such as the
    AssemblyScript SDK log several debug lines per request.
    """
    lowest = int(LogLevel.TRACE)
    ok = int(Status.OK)

    def proxy_log(level, message, messageSize):
        if lowest <= level < environment.logLevel:
            return ok
        return guarded(level, message, messageSize)

    return proxy_log


def _stub(sig: FuncSig, status: Status) -> Callable[..., Optional[int]]:
    result = int(status) if sig.results and sig.results[0] == I32 else 0

    def unsupported(*args):
        return result if sig.results else None

    return unsupported


def bindHostcalls(imports, hostcalls: Hostcalls) -> Tuple[List[HostFunction], List[str]]:
    """
    Make the host functions for a module's C{env} imports.

    @param imports: the module's L{twistgate.wasm.interfaces.ImportDesc}s.
    @param hostcalls: the L{Hostcalls} of the VM.
    @return: the host functions (one per C{env} function import, with the
        type the module declares) and a description of each import the host
        does not implement (unknown name or unexpected type); those answer
        UNIMPLEMENTED.
    """
    functions = []
    unknown = []
    for wanted in imports:
        if wanted.module != "env" or wanted.sig is None:
            continue
        hostcall = HOSTCALLS_BY_NAME.get(wanted.name)
        if hostcall is None:
            unknown.append("env.{} {} (unknown hostcall)".format(wanted.name, wanted.sig))
            callable = _stub(wanted.sig, Status.UNIMPLEMENTED)
        elif wanted.sig != hostcall.sig and wanted.sig not in hostcall.alternativeSigs:
            unknown.append("env.{} {} (expected {})".format(wanted.name, wanted.sig, hostcall.sig))
            callable = _stub(wanted.sig, Status.UNIMPLEMENTED)
        elif hostcall.method is None:
            callable = _stub(wanted.sig, hostcall.unsupportedStatus)
        else:
            callable = _guard(wanted.name, getattr(hostcalls, hostcall.method),
                              bool(wanted.sig.results), hostcalls.vm)
            if wanted.name == "proxy_log":
                callable = _droppingQuietLogs(callable, hostcalls.vm.environment)
        functions.append(HostFunction("env", wanted.name, wanted.sig, callable))
    return functions, unknown


def supportedHostcalls() -> Sequence[Hostcall]:
    """
    @return: the table rows, for the capability table.
    """
    return HOSTCALLS
