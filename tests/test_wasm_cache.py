"""
Tests for L{twistgate.wasm.cache}, independent of any runtime; the runtimes'
use of it is tested in C{tests/test_wasm_runtime.py}.
"""

import os

from twisted.trial.unittest import TestCase

from twistgate.wasm.cache import (
    CORRUPT,
    HIT,
    MISS,
    UNCACHED,
    CompiledModuleCache,
    compileCached,
)

SHA = "ab" * 32


class CompiledModuleCacheTests(TestCase):
    """
    Entries are read back only when their header and checksum match.
    """

    def setUp(self):
        self.directory = self.mktemp()
        self.cache = CompiledModuleCache(self.directory, "wasmtime", "50.0.1")

    def test_roundTrip(self):
        """
        A stored payload loads back as a hit; an absent one is a miss.
        """
        self.assertEqual(self.cache.load(SHA), (None, MISS))
        self.cache.store(SHA, b"compiled")
        self.assertEqual(self.cache.load(SHA), (b"compiled", HIT))
        self.assertEqual(os.listdir(self.directory), [os.path.basename(self.cache.pathFor(SHA))])

    def test_otherVersionIsStale(self):
        """
        An entry written by another runtime version is not trusted, even
        under this version's file name.
        """
        older = CompiledModuleCache(self.directory, "wasmtime", "49.0.0")
        older.store(SHA, b"old code")
        os.replace(older.pathFor(SHA), self.cache.pathFor(SHA))
        self.assertEqual(self.cache.load(SHA), (None, CORRUPT))

    def test_otherModuleIsStale(self):
        """
        An entry for another module, renamed, is not trusted.
        """
        self.cache.store("cd" * 32, b"other module")
        os.replace(self.cache.pathFor("cd" * 32), self.cache.pathFor(SHA))
        self.assertEqual(self.cache.load(SHA), (None, CORRUPT))

    def test_garbage(self):
        """
        A file that is not a cache entry at all is corrupt.
        """
        os.makedirs(self.directory)
        with open(self.cache.pathFor(SHA), "wb") as entry:
            entry.write(b"\x7fELF not ours")
        self.assertEqual(self.cache.load(SHA), (None, CORRUPT))

    def test_unwritableDirectory(self):
        """
        When the cache cannot be written, compiling still works.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file where the directory should be")
        compiled, status = compileCached(
            os.path.join(blocker, "cache"), "wasmtime", "50.0.1", SHA,
            lambda: "native", lambda native: b"bytes", lambda payload: "loaded",
        )
        self.assertEqual((compiled, status), ("native", MISS))


class CompileCachedTests(TestCase):
    """
    L{compileCached} compiles once and then loads.
    """

    def setUp(self):
        self.directory = self.mktemp()
        self.compiled = []

    def compile(self):
        self.compiled.append(1)
        return "native"

    def compileOnce(self, deserialize=lambda payload: "loaded:" + payload.decode()):
        return compileCached(
            self.directory, "wasmer", "1.1.0", SHA, self.compile,
            lambda native: native.encode(), deserialize,
        )

    def test_missThenHit(self):
        """
        The first call compiles and stores, the second loads.
        """
        self.assertEqual(self.compileOnce(), ("native", MISS))
        self.assertEqual(self.compileOnce(), ("loaded:native", HIT))
        self.assertEqual(len(self.compiled), 1)

    def test_rejectedPayloadRecompiled(self):
        """
        A payload the runtime refuses is recompiled and replaced.
        """
        self.compileOnce()

        def refuse(payload):
            raise RuntimeError("incompatible")

        self.assertEqual(self.compileOnce(refuse), ("native", CORRUPT))
        self.assertEqual(len(self.compiled), 2)
        self.assertEqual(self.compileOnce(), ("loaded:native", HIT))

    def test_noDirectory(self):
        """
        Without a directory nothing is cached.
        """
        self.directory = None
        self.assertEqual(self.compileOnce(), ("native", UNCACHED))
        self.assertEqual(self.compileOnce(), ("native", UNCACHED))
