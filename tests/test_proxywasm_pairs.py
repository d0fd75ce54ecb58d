"""
Tests for L{twistgate.proxywasm.pairs}: the header map and property path
serialization of the Proxy-Wasm ABI.
"""

import struct

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twistgate.proxywasm.pairs import (
    MAX_PAIRS,
    PairsError,
    decodePairs,
    decodePath,
    encodePairs,
    encodePath,
)

_PAIRS = st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=20)), max_size=12)


class EncodePairsTests(SynchronousTestCase):
    """
    L{encodePairs} writes the count, all sizes, then NUL-terminated data.
    """

    def test_specExample(self):
        """
        The example of the reference encodes to its 38 documented bytes.
        """
        encoded = encodePairs([(b":method", b"GET"), (b"x-a", b"1")])
        self.assertEqual(
            encoded,
            bytes.fromhex("02000000" "07000000" "03000000" "03000000" "01000000"
                          "3a6d6574686f6400" "47455400" "782d6100" "3100"))
        self.assertEqual(len(encoded), 38)

    def test_emptyMapIsFourBytes(self):
        """
        An empty map is the 4-byte count 0, never shorter (the Go SDK reads
        4 bytes unconditionally).
        """
        self.assertEqual(encodePairs([]), b"\0\0\0\0")

    def test_duplicatesKeepOrder(self):
        """
        Repeated keys are kept, in order.
        """
        pairs = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
        self.assertEqual(decodePairs(encodePairs(pairs)), pairs)

    @given(_PAIRS)
    def test_roundTrip(self, pairs):
        """
        Whatever the bytes (NULs included), decoding undoes encoding and
        the size is 4 + sum(8 + len(k) + 1 + len(v) + 1).
        """
        encoded = encodePairs(pairs)
        self.assertEqual(len(encoded), 4 + sum(10 + len(k) + len(v) for k, v in pairs))
        self.assertEqual(decodePairs(encoded), pairs)


class DecodePairsTests(SynchronousTestCase):
    """
    L{decodePairs} accepts what guests send and rejects malformed bytes with
    L{PairsError}, never another exception.
    """

    def test_emptyInputs(self):
        """
        Size 0 and a lone NUL are both the empty map.
        """
        self.assertEqual(decodePairs(b""), [])
        self.assertEqual(decodePairs(b"\0"), [])

    def test_truncatedCount(self):
        self.assertRaises(PairsError, decodePairs, b"\1\0")

    def test_countBeyondSizes(self):
        """
        A count whose size table does not fit is rejected.
        """
        self.assertRaises(PairsError, decodePairs, struct.pack("<I", 3) + b"\0" * 8)

    def test_hugeCount(self):
        """
        A count over L{MAX_PAIRS} is rejected before anything is allocated.
        """
        self.assertRaises(PairsError, decodePairs, struct.pack("<I", MAX_PAIRS + 1))

    def test_missingTerminator(self):
        encoded = bytearray(encodePairs([(b"k", b"v")]))
        encoded[-1] = ord("x")
        self.assertRaises(PairsError, decodePairs, bytes(encoded))

    def test_trailingBytes(self):
        self.assertRaises(PairsError, decodePairs, encodePairs([(b"k", b"v")]) + b"junk")

    def test_lengthOverrun(self):
        self.assertRaises(PairsError, decodePairs,
                          struct.pack("<III", 1, 100, 1) + b"k\0v\0")

    @given(st.binary(max_size=64))
    def test_arbitraryBytes(self, data):
        """
        Random bytes decode to pairs or raise L{PairsError}, nothing else.
        """
        try:
            pairs = decodePairs(data)
        except PairsError:
            return
        self.assertIsInstance(pairs, list)


class PathTests(SynchronousTestCase):
    """
    Property paths are segments joined by NUL without a trailing NUL.
    """

    def test_encode(self):
        self.assertEqual(encodePath([b"request", b"path"]), b"request\0path")

    def test_decode(self):
        self.assertEqual(decodePath(b"request\0path"), (b"request", b"path"))

    def test_decodeToleratesTrailingNul(self):
        self.assertEqual(decodePath(b"plugin_name\0"), (b"plugin_name",))

    def test_emptyPath(self):
        self.assertEqual(decodePath(b""), ())
