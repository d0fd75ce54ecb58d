"""
An on-disk cache of compiled modules, shared by the runtimes.

An entry is keyed by the SHA-256 of the module's bytes, the runtime's name and
the runtime's version. Each file starts with a header naming its key and the
SHA-256 and length of the serialized code after it; an entry whose header or
checksum does not match, or that the runtime refuses to load, is compiled
again and rewritten. Runtimes load serialized code without validating it, so
nothing that fails these checks is ever handed to them.
"""

import hashlib
import os
import re
import tempfile
from typing import Callable, Optional, Tuple, TypeVar

NativeModule = TypeVar("NativeModule")

_MAGIC = b"twistgate compiled wasm 1\n"
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.+-]")

HIT = "hit"
MISS = "miss"
CORRUPT = "corrupt"
UNCACHED = "uncached"


class CompiledModuleCache:
    """
    The cache directory of one runtime.

    @ivar directory: where entries live; created on first store.
    """

    def __init__(self, directory: str, runtimeName: str, runtimeVersion: str) -> None:
        self.directory = directory
        self._identity = "{} {}".format(runtimeName, runtimeVersion)
        self._suffix = _UNSAFE_NAME_CHARACTERS.sub(
            "_", "{}-{}".format(runtimeName, runtimeVersion)
        )

    def pathFor(self, moduleSha256: str) -> str:
        """
        @param moduleSha256: hex SHA-256 of the module's bytes.
        @return: the file holding that module's entry.
        """
        return os.path.join(
            self.directory, "{}-{}.cwasm".format(moduleSha256, self._suffix)
        )

    def _header(self, moduleSha256: str, payload: bytes) -> bytes:
        return _MAGIC + "{} {} {} {}\n".format(
            moduleSha256,
            self._identity,
            hashlib.sha256(payload).hexdigest(),
            len(payload),
        ).encode("utf-8")

    def load(self, moduleSha256: str) -> Tuple[Optional[bytes], str]:
        """
        Read and verify an entry.

        @return: C{(payload, HIT)} for a sound entry, C{(None, MISS)} when
            there is none (or it cannot be read), C{(None, CORRUPT)} when it
            fails verification.
        """
        try:
            with open(self.pathFor(moduleSha256), "rb") as entry:
                content = entry.read()
        except OSError:
            return None, MISS
        headerEnd = content.find(b"\n", len(_MAGIC)) + 1
        if not content.startswith(_MAGIC) or headerEnd == 0:
            return None, CORRUPT
        payload = content[headerEnd:]
        if content[:headerEnd] != self._header(moduleSha256, payload):
            return None, CORRUPT
        return payload, HIT

    def store(self, moduleSha256: str, payload: bytes) -> None:
        """
        Write an entry atomically: readers see the old entry or the new one,
        never half of one. A cache that cannot be written is skipped.
        """
        try:
            os.makedirs(self.directory, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(
                dir=self.directory, prefix=".partial-"
            )
        except OSError:
            return
        try:
            with os.fdopen(descriptor, "wb") as entry:
                entry.write(self._header(moduleSha256, payload))
                entry.write(payload)
            os.replace(temporary, self.pathFor(moduleSha256))
        except OSError:
            try:
                os.unlink(temporary)
            except OSError:
                pass


def compileCached(
    cacheDirectory: Optional[str],
    runtimeName: str,
    runtimeVersion: str,
    moduleSha256: str,
    compile: Callable[[], NativeModule],
    serialize: Callable[[NativeModule], bytes],
    deserialize: Callable[[bytes], NativeModule],
) -> Tuple[NativeModule, str]:
    """
    Get a runtime's compiled module from the cache, or compile it and store
    it.

    @param cacheDirectory: the cache directory, or L{None} to compile
        without caching.
    @param compile: compiles the module (raising on invalid modules).
    @param serialize: turns a compiled module into bytes.
    @param deserialize: turns those bytes back into a compiled module; it
        raises if the runtime rejects them.
    @return: the compiled module and what the cache did: L{HIT}, L{MISS},
        L{CORRUPT} (an entry was there but was recompiled) or L{UNCACHED}.
    """
    if cacheDirectory is None:
        return compile(), UNCACHED
    cache = CompiledModuleCache(cacheDirectory, runtimeName, runtimeVersion)
    payload, status = cache.load(moduleSha256)
    if payload is not None:
        try:
            return deserialize(payload), HIT
        except Exception:
            status = CORRUPT
    native = compile()
    cache.store(moduleSha256, bytes(serialize(native)))
    return native, status
