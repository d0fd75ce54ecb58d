"""
The Proxy-Wasm serialization of header maps and property paths.

A map is C{u32 N}, then N pairs of C{u32} key and value lengths, then each
key and value followed by a NUL (the lengths exclude the NUL). All integers
are little-endian.
"""

import struct
from typing import Iterable, List, Sequence, Tuple

Pairs = List[Tuple[bytes, bytes]]

MAX_PAIRS = 8192
"""
The largest number of pairs L{decodePairs} accepts.
"""

_U32 = struct.Struct("<I")


class PairsError(ValueError):
    """
    Bytes a guest sent are not a valid serialized map.
    """


def encodePairs(pairs: Iterable[Tuple[bytes, bytes]]) -> bytes:
    """
    Serialize a header map.

    @param pairs: C{(key, value)} byte strings, in order; duplicates kept.
    @return: the serialization, always at least the 4-byte count (an empty
        map is C{b"\\0\\0\\0\\0"}, which every SDK reads as empty).
    """
    pairs = list(pairs)
    sizes = [_U32.pack(len(pairs))]
    data = []
    for key, value in pairs:
        sizes.append(struct.pack("<II", len(key), len(value)))
        data.append(key)
        data.append(b"\0")
        data.append(value)
        data.append(b"\0")
    return b"".join(sizes + data)


def decodePairs(data: bytes) -> Pairs:
    """
    Parse a serialized header map a guest sent.

    @param data: the bytes; empty bytes and a lone NUL mean an empty map.
    @return: the C{(key, value)} pairs in order.
    @raise PairsError: if the bytes are truncated, a terminator is missing,
        bytes trail the last pair, or there are more than L{MAX_PAIRS} pairs.
    """
    if len(data) == 0 or data == b"\0":
        return []
    if len(data) < 4:
        raise PairsError("map of {} bytes is shorter than its count".format(len(data)))
    (count,) = _U32.unpack_from(data, 0)
    if count > MAX_PAIRS:
        raise PairsError("map claims {} pairs (limit {})".format(count, MAX_PAIRS))
    sizesEnd = 4 + 8 * count
    if sizesEnd > len(data):
        raise PairsError("map of {} pairs is truncated in its sizes".format(count))
    pairs = []
    position = sizesEnd
    for index in range(count):
        keyLength, valueLength = struct.unpack_from("<II", data, 4 + 8 * index)
        keyEnd = position + keyLength
        valueStart = keyEnd + 1
        valueEnd = valueStart + valueLength
        if valueEnd + 1 > len(data):
            raise PairsError("pair {} runs past the end of the map".format(index))
        if data[keyEnd] != 0 or data[valueEnd] != 0:
            raise PairsError("pair {} is not NUL-terminated".format(index))
        pairs.append((bytes(data[position:keyEnd]), bytes(data[valueStart:valueEnd])))
        position = valueEnd + 1
    if position != len(data):
        raise PairsError("{} bytes trail the last pair".format(len(data) - position))
    return pairs


def encodePath(segments: Sequence[bytes]) -> bytes:
    """
    Serialize a property path: segments joined by NUL, no trailing NUL.
    """
    return b"\0".join(segments)


def decodePath(data: bytes) -> Tuple[bytes, ...]:
    """
    Split a serialized property path into its segments. A trailing NUL (some
    guests send one) is ignored; an empty path has no segments.
    """
    if data.endswith(b"\0"):
        data = data[:-1]
    if not data:
        return ()
    return tuple(data.split(b"\0"))
