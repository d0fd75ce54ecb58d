"""
Proxy-Wasm ABI constants, named as the specification names them.

Values match the spec's C{proxy_*_t} enumerations (and the Rust and Go SDKs);
the statuses the spec does not define (C{BAD_EXPRESSION}, C{RESULT_MISMATCH},
C{BROKEN_CONNECTION}) are the ones Envoy and Kong use.
"""

from enum import IntEnum
from typing import Dict

ABI_0_1_0 = "0.1.0"
ABI_0_2_0 = "0.2.0"
ABI_0_2_1 = "0.2.1"

ALL_ABI_VERSIONS = frozenset([ABI_0_1_0, ABI_0_2_0, ABI_0_2_1])
ABI_0_2 = frozenset([ABI_0_2_0, ABI_0_2_1])

ABI_MARKERS = {
    "proxy_abi_version_0_2_1": ABI_0_2_1,
    "proxy_abi_version_0_2_0": ABI_0_2_0,
    "proxy_abi_version_0_1_0": ABI_0_1_0,
}


class Status(IntEnum):
    """
    C{proxy_status_t}: the result of every hostcall.
    """

    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class Action(IntEnum):
    """
    C{proxy_action_t}: what an HTTP callback asks the host to do next.
    """

    CONTINUE = 0
    PAUSE = 1


class LogLevel(IntEnum):
    """
    C{proxy_log_level_t}.
    """

    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


class BufferType(IntEnum):
    """
    C{proxy_buffer_type_t}.
    """

    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_CALL_MESSAGE = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    FOREIGN_FUNCTION_ARGUMENTS = 8


class MapType(IntEnum):
    """
    C{proxy_map_type_t}.
    """

    HTTP_REQUEST_HEADERS = 0
    HTTP_REQUEST_TRAILERS = 1
    HTTP_RESPONSE_HEADERS = 2
    HTTP_RESPONSE_TRAILERS = 3
    GRPC_CALL_INITIAL_METADATA = 4
    GRPC_CALL_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class StreamType(IntEnum):
    """
    C{proxy_stream_type_t} (ABI 0.2.x).
    """

    HTTP_REQUEST = 0
    HTTP_RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class PeerType(IntEnum):
    """
    C{proxy_peer_type_t}.
    """

    UNKNOWN = 0
    LOCAL = 1
    REMOTE = 2


class MetricType(IntEnum):
    """
    C{proxy_metric_type_t}.
    """

    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


def enumValue(enumType, value):
    """
    Look up an enumeration member by its ABI value.

    @param enumType: one of the L{IntEnum} classes of this module.
    @param value: the integer the guest passed.
    @return: the member, or L{None} if C{value} is not one of them.
    """
    members = _MEMBERS_BY_VALUE.get(enumType)
    if members is None:
        members = _MEMBERS_BY_VALUE[enumType] = {member.value: member for member in enumType}
    return members.get(value)


_MEMBERS_BY_VALUE: Dict[type, Dict[int, IntEnum]] = {}
