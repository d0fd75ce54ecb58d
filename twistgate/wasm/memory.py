"""
Bounds-checked access to a guest's linear memory.

Wasm passes C{i32} and C{i64} values as signed integers; pointers and sizes
are unsigned, so host code reads them through L{u32} and L{u64} before use.
"""

import struct

from twistgate.wasm.interfaces import GuestMemoryError

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def u32(value: int) -> int:
    """
    Reinterpret a Wasm C{i32} (signed) as unsigned.

    @param value: an int as a runtime returns an C{i32}.
    @return: the same 32 bits as an unsigned int.
    """
    return value & 0xFFFFFFFF


def u64(value: int) -> int:
    """
    Reinterpret a Wasm C{i64} (signed) as unsigned.

    @param value: an int as a runtime returns an C{i64}.
    @return: the same 64 bits as an unsigned int.
    """
    return value & 0xFFFFFFFFFFFFFFFF


def checkBounds(offset: int, length: int, size: int) -> None:
    """
    Check that C{length} bytes at C{offset} lie inside a memory of C{size}
    bytes.

    @raise GuestMemoryError: if they do not, or if either number is negative.
    """
    if offset < 0 or length < 0 or offset + length > size:
        raise GuestMemoryError(
            "guest memory access out of bounds: offset {:#x} length {} "
            "(memory size {})".format(offset, length, size)
        )


class GuestMemory:
    """
    Typed little-endian access to an instance's memory. Unaligned offsets are
    fine; every access is bounds-checked by the instance.

    @ivar instance: the L{twistgate.wasm.interfaces.IWasmInstance}.
    @ivar readBytes: C{readBytes(offset, length)} returns the C{length}
        bytes at C{offset} (the instance's C{readMemory} itself).
    @ivar writeBytes: C{writeBytes(offset, data)} writes C{data} at
        C{offset} (the instance's C{writeMemory} itself).
    """

    def __init__(self, instance) -> None:
        self.instance = instance
        self.readBytes = instance.readMemory
        self.writeBytes = instance.writeMemory
        self._knownSize = 0

    def size(self) -> int:
        """
        @return: the memory's current size in bytes.
        """
        return self.instance.memorySize()

    def checkRange(self, offset: int, length: int) -> None:
        """
        Check that C{length} bytes at C{offset} lie inside the memory. A
        linear memory never shrinks, so a range inside the size seen last is
        inside without asking the runtime again.

        @raise GuestMemoryError: if they do not.
        """
        if offset < 0 or length < 0 or offset + length > self._knownSize:
            self._knownSize = self.instance.memorySize()
            checkBounds(offset, length, self._knownSize)

    def readU32(self, offset: int) -> int:
        """
        @return: the unsigned 32-bit little-endian value at C{offset}.
        @raise GuestMemoryError: if the range is out of bounds.
        """
        return _U32.unpack(self.readBytes(offset, 4))[0]

    def writeU32(self, offset: int, value: int) -> None:
        """
        Store C{value} (taken modulo 2**32) little-endian at C{offset}.

        @raise GuestMemoryError: if the range is out of bounds.
        """
        self.writeBytes(offset, _U32.pack(value & 0xFFFFFFFF))

    def readU64(self, offset: int) -> int:
        """
        @return: the unsigned 64-bit little-endian value at C{offset}.
        @raise GuestMemoryError: if the range is out of bounds.
        """
        return _U64.unpack(self.readBytes(offset, 8))[0]

    def writeU64(self, offset: int, value: int) -> None:
        """
        Store C{value} (taken modulo 2**64) little-endian at C{offset}.

        @raise GuestMemoryError: if the range is out of bounds.
        """
        self.writeBytes(offset, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))
