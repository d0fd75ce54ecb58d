"""
Small rewrites of Wasm binaries.

wasmer-python has no memory limiter, but it does honour the maximum of a
memory it is given. L{importDefinedMemory} turns a module's own memory into
an imported one, so that the host can create that memory per instance with
the maximum it chooses, and C{memory.grow} past the cap fails as it does on
wasmtime.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

_HEADER = b"\0asm\x01\0\0\0"
_CUSTOM = 0
_IMPORT = 2
_MEMORY = 5
_MEMORY_KIND = 2
_LIMITS_MIN = 0
_LIMITS_MIN_MAX = 1


@dataclass(frozen=True)
class ImportedMemory:
    """
    A module whose memory became an import.

    @ivar binary: the rewritten module.
    @ivar minimumPages: the memory's declared initial size, in pages.
    @ivar maximumPages: its declared maximum, or L{None}.
    """

    binary: bytes
    minimumPages: int
    maximumPages: Optional[int]


class _Truncated(Exception):
    """
    The binary ends inside a value.
    """


def _readUnsigned(data: bytes, position: int) -> Tuple[int, int]:
    """
    Read an unsigned LEB128 number.

    @return: the number and the position after it.
    """
    result = 0
    shift = 0
    while True:
        if position >= len(data):
            raise _Truncated()
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, position


def _unsigned(value: int) -> bytes:
    """
    @return: C{value} as unsigned LEB128.
    """
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _name(text: bytes) -> bytes:
    return _unsigned(len(text)) + text


def _section(sectionId: int, content: bytes) -> bytes:
    return bytes([sectionId]) + _unsigned(len(content)) + content


def _sections(binary: bytes) -> List[Tuple[int, bytes]]:
    """
    @return: the module's sections as C{(id, content)}.
    """
    sections = []
    position = len(_HEADER)
    while position < len(binary):
        sectionId = binary[position]
        size, start = _readUnsigned(binary, position + 1)
        if start + size > len(binary):
            raise _Truncated()
        sections.append((sectionId, binary[start : start + size]))
        position = start + size
    return sections


def importDefinedMemory(binary: bytes, module: bytes, name: bytes) -> Optional[ImportedMemory]:
    """
    Replace the module's one defined memory by an import C{module.name} with
    the same limits. Memory index 0 keeps meaning that memory, so exports,
    data segments and instructions are unchanged.

    @return: the rewritten module, or L{None} when there is nothing this can
        rewrite: no defined memory, several, a shared or 64-bit one, or a
        binary it cannot parse (the runtime then reports the error).
    """
    if not binary.startswith(_HEADER):
        return None
    try:
        sections = _sections(binary)
        memories = [content for sectionId, content in sections if sectionId == _MEMORY]
        if len(memories) != 1:
            return None
        count, position = _readUnsigned(memories[0], 0)
        if count != 1:
            return None
        flags = memories[0][position]
        if flags not in (_LIMITS_MIN, _LIMITS_MIN_MAX):
            return None
        minimum, position = _readUnsigned(memories[0], position + 1)
        maximum = None
        if flags == _LIMITS_MIN_MAX:
            maximum, position = _readUnsigned(memories[0], position)
    except (_Truncated, IndexError):
        return None
    limits = memories[0][len(_unsigned(count)) :]
    entry = _name(module) + _name(name) + bytes([_MEMORY_KIND]) + limits
    out = [_HEADER]
    importWritten = False
    for sectionId, content in sections:
        if sectionId == _IMPORT:
            imports, position = _readUnsigned(content, 0)
            content = _unsigned(imports + 1) + content[position:] + entry
            importWritten = True
        elif sectionId == _MEMORY:
            continue
        elif sectionId != _CUSTOM and sectionId > _IMPORT and not importWritten:
            out.append(_section(_IMPORT, _unsigned(1) + entry))
            importWritten = True
        out.append(_section(sectionId, content))
    return ImportedMemory(b"".join(out), minimum, maximum)
