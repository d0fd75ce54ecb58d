"""
Conformance tests for the Wasm runtimes: one mixin, run once per runtime over
the WAT guests in C{tests/wat/}.
"""

import os
import time

from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from twistgate.wasm.cache import CompiledModuleCache
from twistgate.wasm.interfaces import (
    FuncSig,
    GuestMemoryError,
    HostFunction,
    IWasmInstance,
    IWasmModule,
    IWasmRuntime,
    Limits,
    RuntimeUnavailable,
    WasmCompileError,
    WasmLinkError,
    WasmTrap,
)
from twistgate.wasm.memory import GuestMemory, u32
from twistgate.wasm.registry import getRuntime
from twistgate.wasm.wasi import (
    EBADF,
    EFAULT,
    ENOENT,
    ENOSYS,
    ENOTSUP,
    ESUCCESS,
    WasiShim,
)

WAT_DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wat")
PAGE = 65536
I32 = "i32"
I64 = "i64"


def readWat(name: str) -> bytes:
    with open(os.path.join(WAT_DIRECTORY, name), "rb") as source:
        return source.read()


class RuntimeConformanceMixin:
    """
    Behaviour every runtime shares. Subclasses set C{runtimeName}.
    """

    runtimeName: str

    def setUp(self):
        try:
            self.runtime = getRuntime(self.runtimeName)
        except RuntimeUnavailable as error:
            if os.environ.get("CI"):
                raise
            raise SkipTest(str(error))
        self.module = self.runtime.compile(readWat("conformance.wat"))
        self.recorded = []
        self.instance = None

    def hostFunctions(self):
        """
        The conformance guest's imports, implemented against C{self.instance}.
        """

        def hostFail(value):
            raise ValueError("refused {}".format(value))

        def hostReenter(value):
            pointer = u32(self.instance.call("malloc", 8))
            GuestMemory(self.instance).writeU32(pointer, value * 3)
            return pointer

        return [
            HostFunction("env", "host_add", FuncSig((I32, I32), (I32,)), lambda a, b: a + b),
            HostFunction("env", "host_add64", FuncSig((I64, I64), (I64,)), lambda a, b: a + b),
            HostFunction("env", "host_fail", FuncSig((I32,), (I32,)), hostFail),
            HostFunction("env", "host_reenter", FuncSig((I32,), (I32,)), hostReenter),
            HostFunction(
                "env",
                "host_nested",
                FuncSig((I32,), (I32,)),
                lambda value: self.instance.call("add_i32", value, 1),
            ),
            HostFunction(
                "env",
                "host_record",
                FuncSig((I32, I32)),
                lambda a, b: self.recorded.append((a, b)),
            ),
        ]

    def instantiate(self, limits=Limits()):
        self.instance = self.module.instantiate(self.hostFunctions(), limits)
        return self.instance

    def test_interfaces(self):
        """
        The runtime, its modules and instances provide the VM interfaces.
        """
        self.assertTrue(verifyObject(IWasmRuntime, self.runtime))
        self.assertEqual(self.runtime.name, self.runtimeName)
        self.assertTrue(verifyObject(IWasmModule, self.module))
        self.assertTrue(verifyObject(IWasmInstance, self.instantiate()))

    def test_describesImportsAndExports(self):
        """
        A module lists its imports and exports with their signatures.
        """
        imports = {(i.module, i.name): i.sig for i in self.module.imports()}
        self.assertEqual(imports[("env", "host_add64")], FuncSig((I64, I64), (I64,)))
        self.assertEqual(imports[("env", "host_record")], FuncSig((I32, I32), ()))
        exports = {e.name: e for e in self.module.exports()}
        self.assertEqual(exports["memory"].kind, "memory")
        self.assertEqual(exports["mixed"].sig, FuncSig((I32, I64, I32), (I64,)))
        self.assertEqual(len(self.module.sha256), 64)

    def test_i32(self):
        """
        i32 arguments and results are signed ints; unsigned arguments wrap.
        """
        instance = self.instantiate()
        self.assertEqual(instance.call("add_i32", 2, 3), 5)
        self.assertEqual(instance.call("add_i32", 0x7FFFFFFF, 1), -(2**31))
        self.assertEqual(instance.call("add_i32", 0xFFFFFFFF, 1), 0)

    def test_i64(self):
        """
        i64 arguments and results keep all 64 bits.
        """
        instance = self.instantiate()
        self.assertEqual(instance.call("add_i64", 2**40, 2**40 + 1), 2**41 + 1)
        self.assertEqual(instance.call("add_i64", 2**63 - 1, 1), -(2**63))
        self.assertEqual(instance.call("mixed", 3, 2**33, 4), 3 + 2**35)

    def test_arities(self):
        """
        Functions with no parameters, no result, and many parameters work
        through both C{call} and C{function}.
        """
        instance = self.instantiate()
        self.assertIsNone(instance.call("nothing"))
        self.assertEqual(instance.call("sum5", 1, 2, 3, 4, 5), 15)
        sum5 = instance.function("sum5")
        self.assertEqual(sum5(10, 20, 30, 40, 50), 150)
        self.assertIs(instance.function("sum5"), sum5)
        self.assertRaises(TypeError, sum5, 1, 2)

    def test_unknownExport(self):
        """
        Calling a function the guest does not export raises L{KeyError}.
        """
        instance = self.instantiate()
        self.assertTrue(instance.hasExport("add_i32"))
        self.assertFalse(instance.hasExport("no_such_function"))
        self.assertFalse(instance.hasExport("memory"))
        self.assertRaises(KeyError, instance.call, "no_such_function")
        self.assertRaises(KeyError, instance.function, "no_such_function")

    def test_memoryReadWrite(self):
        """
        What the host writes the guest reads, and the reverse.
        """
        instance = self.instantiate()
        self.assertEqual(instance.memorySize(), PAGE)
        instance.writeMemory(100, b"\x01\x02\x03\x04")
        self.assertEqual(instance.call("load_u32", 100), 0x04030201)
        instance.call("store_u32", 200, 0xCAFEBABE)
        self.assertEqual(instance.readMemory(200, 4), bytes.fromhex("bebafeca"))
        self.assertEqual(instance.readMemory(PAGE, 0), b"")

    def test_memoryAfterGrow(self):
        """
        After the guest grows its memory, the host reaches the new pages and
        still sees the old ones.
        """
        instance = self.instantiate()
        instance.writeMemory(8, b"kept")
        self.assertRaises(GuestMemoryError, instance.readMemory, 2 * PAGE, 4)
        self.assertEqual(instance.call("grow", 2), 1)
        self.assertEqual(instance.memorySize(), 3 * PAGE)
        instance.writeMemory(2 * PAGE + 12, b"\x2a\0\0\0")
        self.assertEqual(instance.call("load_u32", 2 * PAGE + 12), 42)
        instance.call("store_u32", 3 * PAGE - 4, 7)
        self.assertEqual(instance.readMemory(3 * PAGE - 4, 4), b"\x07\0\0\0")
        self.assertEqual(instance.readMemory(8, 4), b"kept")

    def test_checkRangeAfterGrow(self):
        """
        L{GuestMemory.checkRange} refuses a range past the end, and accepts
        it once the guest grew its memory over it.
        """
        instance = self.instantiate()
        memory = GuestMemory(instance)
        memory.checkRange(PAGE - 4, 4)
        error = self.assertRaises(GuestMemoryError, memory.checkRange, 2 * PAGE, 4)
        self.assertIn("offset 0x20000 length 4 (memory size 65536)", str(error))
        self.assertRaises(GuestMemoryError, memory.checkRange, -1, 4)
        instance.call("grow", 2)
        memory.checkRange(2 * PAGE, 4)
        self.assertRaises(GuestMemoryError, memory.checkRange, 3 * PAGE - 2, 4)

    def test_guestMemoryTypedAccess(self):
        """
        L{GuestMemory} reads and writes little-endian u32 and u64 values at
        unaligned offsets.
        """
        memory = GuestMemory(self.instantiate())
        memory.writeU32(301, 0xFFFFFFFE)
        self.assertEqual(memory.readU32(301), 0xFFFFFFFE)
        self.assertEqual(memory.readBytes(301, 4), b"\xfe\xff\xff\xff")
        memory.writeU64(403, 2**64 - 3)
        self.assertEqual(memory.readU64(403), 2**64 - 3)
        memory.writeU32(500, -1)
        self.assertEqual(memory.readU32(500), 0xFFFFFFFF)
        self.assertEqual(memory.size(), PAGE)

    def test_memoryBounds(self):
        """
        An access past the end of memory, or at a negative offset, raises
        L{GuestMemoryError} saying where, and changes nothing.
        """
        instance = self.instantiate()
        error = self.assertRaises(GuestMemoryError, instance.readMemory, PAGE - 1, 2)
        self.assertEqual(
            str(error),
            "guest memory access out of bounds: offset 0xffff length 2 (memory size 65536)",
        )
        self.assertRaises(GuestMemoryError, instance.readMemory, -4, 4)
        instance.writeMemory(PAGE - 2, b"ab")
        self.assertRaises(GuestMemoryError, instance.writeMemory, PAGE - 2, b"xyz")
        self.assertEqual(instance.readMemory(PAGE - 2, 2), b"ab")
        self.assertRaises(GuestMemoryError, GuestMemory(instance).readU64, PAGE - 7)

    def assertTraps(self, kind, fragment, name, *args):
        error = self.assertRaises(WasmTrap, self.instance.call, name, *args)
        self.assertEqual(error.kind, kind)
        self.assertIn(fragment, error.message)
        self.assertNotIn("\n", error.message)
        return error

    def test_trapUnreachable(self):
        """
        C{unreachable} traps; the instance stays usable.
        """
        self.instantiate()
        self.assertTraps("trap", "unreachable", "trap_unreachable")
        self.assertEqual(self.instance.call("add_i32", 1, 1), 2)

    def test_trapDivideByZero(self):
        """
        Integer division by zero traps.
        """
        self.instantiate()
        self.assertTraps("trap", "integer divide by zero", "trap_div", 0)
        self.assertEqual(self.instance.call("trap_div", 1), 1)

    def test_trapOutOfBounds(self):
        """
        A guest load outside its memory traps.
        """
        self.instantiate()
        self.assertTraps("trap", "out of bounds memory access", "trap_oob")

    def test_trapStackOverflow(self):
        """
        Unbounded recursion traps instead of crashing the process.
        """
        self.instantiate()
        self.assertTraps("trap", "call stack exhausted", "trap_stack", 0)
        self.assertEqual(self.instance.call("add_i32", 2, 2), 4)

    def test_hostException(self):
        """
        An exception raised by a host function ends the guest call with a
        trap of kind C{"host"} naming the function and the exception.
        """
        self.instantiate()
        error = self.assertTraps("host", "refused 7", "call_host_fail", 7)
        self.assertEqual(error.message, "host function env.host_fail raised ValueError: refused 7")
        self.assertIsInstance(error.__cause__, ValueError)
        self.assertEqual(self.instance.call("call_host_add", 2, 5), 7)

    def test_hostCalls(self):
        """
        The guest calls host functions with i32 and i64 values.
        """
        instance = self.instantiate()
        self.assertEqual(instance.call("call_host_add", 40, 2), 42)
        self.assertEqual(instance.call("call_host_add64", 2**40, -1), 2**40 - 1)
        self.assertIsNone(instance.call("call_host_record", 1, 2))
        self.assertEqual(self.recorded, [(1, 2)])

    def test_releaseFreesHostFunctionReferents(self):
        """
        After L{IWasmInstance.release}, the objects the host functions
        reached are collectable although they refer back to the instance,
        and the released instance is not callable any more.
        """
        import gc
        import weakref

        class Owner:
            pass

        owner = Owner()
        instance = self.module.instantiate(
            [
                HostFunction(hostFunction.module, hostFunction.name, hostFunction.sig,
                             lambda *args, owner=owner: owner.instance and 0)
                for hostFunction in self.hostFunctions()
            ],
            Limits(),
        )
        owner.instance = instance
        alive = weakref.ref(owner)
        instance.release()
        del owner, instance
        gc.collect()
        self.assertIsNone(alive())

    def test_hostResultWraps(self):
        """
        A host function may return an unsigned value for an i32 result.
        """
        instance = self.instantiate()
        self.assertEqual(instance.call("call_host_add", 0xFFFFFFFF, 0), -1)

    def test_unsignedPointers(self):
        """
        An i32 pointer at or above 2**31 arrives negative; L{u32} restores it.
        """
        instance = self.instantiate()
        pointer = instance.call("high_pointer")
        self.assertLess(pointer, 0)
        self.assertEqual(u32(pointer), 0x80000010)
        instance.call("call_host_record", 0x80000010, 5)
        received, size = self.recorded[0]
        self.assertLess(received, 0)
        self.assertEqual(u32(received), 0x80000010)
        self.assertEqual(size, 5)

    def test_reentrantHostCall(self):
        """
        A host function calls back into the guest (its malloc) and writes
        the guest's memory while the guest waits for it.
        """
        instance = self.instantiate()
        self.assertEqual(instance.call("call_host_reenter", 5), 15)
        self.assertEqual(instance.call("call_host_reenter", 7), 21)
        self.assertEqual(instance.call("malloc", 0), 1024 + 16)

    def test_missingImportsNamed(self):
        """
        Instantiating without some imports names each missing one with its
        type, in one error.
        """
        offered = [f for f in self.hostFunctions() if f.name not in ("host_fail", "host_record")]
        error = self.assertRaises(WasmLinkError, self.module.instantiate, offered, Limits())
        self.assertIn("missing import env.host_fail (i32) -> (i32)", str(error))
        self.assertIn("missing import env.host_record (i32, i32) -> ()", str(error))

    def test_mistypedImport(self):
        """
        A host function with another signature than the import fails the
        link, saying both types.
        """
        offered = self.hostFunctions() + [
            HostFunction("env", "host_add", FuncSig((I64, I64), (I64,)), lambda a, b: a)
        ]
        error = self.assertRaises(WasmLinkError, self.module.instantiate, offered, Limits())
        self.assertEqual(
            str(error),
            "import env.host_add has type (i32, i32) -> (i32) "
            "but the host function has (i64, i64) -> (i64)",
        )

    def test_compileErrors(self):
        """
        Invalid Wasm and invalid WAT raise L{WasmCompileError}.
        """
        self.assertRaises(WasmCompileError, self.runtime.compile, b"\0asm\x01\0\0\0\xff")
        self.assertRaises(WasmCompileError, self.runtime.compile, b"(module (func (export")
        self.assertRaises(WasmCompileError, self.runtime.compile, b"\xff\xfe")

    def test_binaryAndTextSameModule(self):
        """
        A module given as WAT and as its binary compiles to the same hash.
        """
        text = b"(module (func (export \"f\") (result i32) i32.const 9))"
        fromText = self.runtime.compile(text)
        fromString = self.runtime.compile(text.decode("ascii"))
        self.assertEqual(fromText.sha256, fromString.sha256)
        self.assertEqual(fromText.instantiate([], Limits()).call("f"), 9)

    def test_startTrapFailsLink(self):
        """
        A module whose start function traps fails to instantiate.
        """
        module = self.runtime.compile(b"(module (func $s unreachable) (start $s))")
        error = self.assertRaises(WasmLinkError, module.instantiate, [], Limits())
        self.assertIn("unreachable", str(error))

    def test_initialMemoryOverCap(self):
        """
        A module whose initial memory exceeds the cap fails to instantiate.
        """
        module = self.runtime.compile(b"(module (memory (export \"memory\") 8))")
        self.assertRaises(WasmLinkError, module.instantiate, [], Limits(maxMemoryBytes=4 * PAGE))

    def test_memoryCap(self):
        """
        Growing memory within the cap works; past it C{memory.grow} fails
        with -1 and the memory keeps its size.
        """
        instance = self.instantiate(Limits(maxMemoryBytes=4 * PAGE))
        self.assertEqual(instance.call("grow", 2), 1)
        self.assertEqual(instance.memorySize(), 3 * PAGE)
        self.assertEqual(instance.call("grow", 2), -1)
        self.assertEqual(instance.memorySize(), 3 * PAGE)
        self.assertEqual(instance.call("grow", 1), 3)
        self.assertEqual(instance.call("grow", 1), -1)

    def test_memoryOnlyModule(self):
        """
        A module with a memory and data but no imports lists no imports and
        exposes its data.
        """
        module = self.runtime.compile(
            b'(module (memory (export "memory") 1) (data (i32.const 3) "hi"))'
        )
        self.assertEqual(module.imports(), ())
        self.assertEqual(module.instantiate([], Limits()).readMemory(3, 2), b"hi")

    def test_declaredMaximumBelowCap(self):
        """
        A module's own memory maximum still holds under a larger cap.
        """
        module = self.runtime.compile(
            b"(module (memory (export \"memory\") 1 2)"
            b" (func (export \"grow\") (param i32) (result i32) (memory.grow (local.get 0))))"
        )
        instance = module.instantiate([], Limits(maxMemoryBytes=64 * PAGE))
        self.assertEqual(instance.call("grow", 2), -1)
        self.assertEqual(instance.call("grow", 1), 1)
        self.assertEqual(instance.memorySize(), 2 * PAGE)

    def compileCached(self, directory):
        return self.runtime.compile(readWat("conformance.wat"), cacheDirectory=directory)

    def test_cacheMissThenHit(self):
        """
        The first compile with a cache directory stores the compiled module;
        the next one loads it, and the loaded module works.
        """
        directory = self.mktemp()
        self.assertEqual(self.compileCached(directory).cacheStatus, "miss")
        self.module = self.compileCached(directory)
        self.assertEqual(self.module.cacheStatus, "hit")
        self.assertEqual(self.instantiate().call("call_host_add", 1, 2), 3)

    def corruptEntry(self, directory, damage):
        module = self.compileCached(directory)
        [entry] = [name for name in os.listdir(directory) if name.startswith(module.sha256)]
        entryPath = os.path.join(directory, entry)
        with open(entryPath, "rb") as existing:
            content = existing.read()
        with open(entryPath, "wb") as damaged:
            damaged.write(damage(content))

    def assertRecompiles(self, directory):
        self.module = self.compileCached(directory)
        self.assertEqual(self.module.cacheStatus, "corrupt")
        self.assertEqual(self.instantiate().call("sum5", 1, 1, 1, 1, 1), 5)
        self.assertEqual(self.compileCached(directory).cacheStatus, "hit")

    def test_cacheCorruptPayload(self):
        """
        A cache entry with a flipped byte is recompiled, not loaded.
        """
        directory = self.mktemp()

        def flip(content):
            middle = len(content) // 2
            return content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1 :]

        self.corruptEntry(directory, flip)
        self.assertRecompiles(directory)

    def test_cacheTruncated(self):
        """
        A truncated cache entry is recompiled.
        """
        directory = self.mktemp()
        self.corruptEntry(directory, lambda content: content[: len(content) // 3])
        self.assertRecompiles(directory)

    def test_cacheRejectedByRuntime(self):
        """
        An entry whose checksum matches but which the runtime cannot load is
        recompiled.
        """
        directory = self.mktemp()
        module = self.compileCached(directory)
        cache = CompiledModuleCache(directory, self.runtime.name, self.runtime.cacheVersion)
        cache.store(module.sha256, b"not compiled code")
        self.assertRecompiles(directory)

    def wasiInstance(self, **shimArguments):
        self.logged = []
        shim = WasiShim(log=lambda level, text: self.logged.append((level, text)), **shimArguments)
        module = self.runtime.compile(readWat("wasi.wat"))
        instance = module.instantiate(shim.hostFunctions(), Limits())
        shim.bindInstance(instance)
        self.memory = GuestMemory(instance)
        return instance

    def writeIovecs(self, chunks, at=1000):
        """
        Lay out an iovec array at C{at}, the chunks after it.
        """
        data = at + 8 * len(chunks)
        for index, chunk in enumerate(chunks):
            self.memory.writeU32(at + 8 * index, data)
            self.memory.writeU32(at + 8 * index + 4, len(chunk))
            self.memory.writeBytes(data, chunk)
            data += len(chunk)
        return at

    def test_wasiFdWrite(self):
        """
        C{fd_write} to stdout and stderr reaches the log sink as one message
        per call, trailing newline stripped; other descriptors are refused.
        """
        instance = self.wasiInstance()
        iovs = self.writeIovecs([b"hello ", b"world\n"])
        self.assertEqual(instance.call("fd_write", 1, iovs, 2, 900), ESUCCESS)
        self.assertEqual(self.memory.readU32(900), 12)
        iovs = self.writeIovecs([b"it broke\n\n"])
        self.assertEqual(instance.call("fd_write", 2, iovs, 1, 900), ESUCCESS)
        self.assertEqual(instance.call("fd_write", 3, iovs, 1, 900), EBADF)
        self.assertEqual(self.logged, [("info", "hello world"), ("error", "it broke\n")])

    def test_wasiBadPointer(self):
        """
        A WASI call with a pointer outside memory returns EFAULT.
        """
        instance = self.wasiInstance()
        self.assertEqual(instance.call("fd_write", 1, 0xFFFFFFF0, 1, 900), EFAULT)
        iovs = self.writeIovecs([b"x"])
        self.memory.writeU32(iovs, 0x7FFFFFFF)
        self.assertEqual(instance.call("fd_write", 1, iovs, 1, 900), EFAULT)
        self.assertEqual(instance.call("fd_write", 1, iovs, 0x7FFFFFFF, 900), EFAULT)
        self.assertEqual(instance.call("random_get", PAGE - 4, 8), EFAULT)
        self.assertEqual(instance.call("clock_time_get", 0, -8), EFAULT)
        self.assertEqual(self.logged, [])

    def test_wasiEnvironOnlyConfigured(self):
        """
        The guest sees exactly the configured environment, never the
        gateway's.
        """
        os.environ["TWISTGATE_TEST_SECRET"] = "gateway-only"
        self.addCleanup(os.environ.pop, "TWISTGATE_TEST_SECRET")
        instance = self.wasiInstance(environ={"MODE": "strict", "É": "ü"})
        self.assertEqual(instance.call("environ_sizes_get", 100, 104), ESUCCESS)
        count, size = self.memory.readU32(100), self.memory.readU32(104)
        self.assertEqual(count, 2)
        self.assertEqual(instance.call("environ_get", 200, 300), ESUCCESS)
        pointers = [self.memory.readU32(200 + 4 * i) for i in range(count)]
        self.assertEqual(pointers[0], 300)
        block = self.memory.readBytes(300, size)
        self.assertEqual(block, "MODE=strict\0É=ü\0".encode("utf-8"))
        self.assertEqual(self.memory.readBytes(pointers[1], 6), "É=ü\0".encode("utf-8"))

    def test_wasiArgs(self):
        """
        Arguments are empty by default and as configured otherwise.
        """
        instance = self.wasiInstance()
        self.assertEqual(instance.call("args_sizes_get", 100, 104), ESUCCESS)
        self.assertEqual((self.memory.readU32(100), self.memory.readU32(104)), (0, 0))
        instance = self.wasiInstance(args=["filter", "-v"])
        instance.call("args_sizes_get", 100, 104)
        self.assertEqual((self.memory.readU32(100), self.memory.readU32(104)), (2, 10))
        self.assertEqual(instance.call("args_get", 200, 300), ESUCCESS)
        self.assertEqual(self.memory.readBytes(self.memory.readU32(204), 3), b"-v\0")

    def test_wasiRandom(self):
        """
        C{random_get} fills the buffer with fresh random bytes.
        """
        instance = self.wasiInstance()
        self.assertEqual(instance.call("random_get", 100, 32), ESUCCESS)
        first = self.memory.readBytes(100, 32)
        instance.call("random_get", 100, 32)
        self.assertNotEqual(first, self.memory.readBytes(100, 32))
        self.assertEqual(self.memory.readBytes(132, 4), b"\0\0\0\0")

    def test_wasiClocks(self):
        """
        Realtime and monotonic clocks read in nanoseconds with 1 ns
        resolution; other clocks are not supported.
        """
        instance = self.wasiInstance(realtime=lambda: 1700000000123456789, monotonic=lambda: 42)
        self.assertEqual(instance.call("clock_time_get", 0, 100), ESUCCESS)
        self.assertEqual(self.memory.readU64(100), 1700000000123456789)
        self.assertEqual(instance.call("clock_time_get", 1, 100), ESUCCESS)
        self.assertEqual(self.memory.readU64(100), 42)
        self.assertEqual(instance.call("clock_time_get", 2, 100), ENOTSUP)
        self.assertEqual(instance.call("clock_res_get", 1, 108), ESUCCESS)
        self.assertEqual(self.memory.readU64(108), 1)
        instance = self.wasiInstance()
        before = time.time_ns()
        instance.call("clock_time_get", 0, 100)
        self.assertTrue(before <= self.memory.readU64(100) <= time.time_ns())

    def test_wasiProcExit(self):
        """
        C{proc_exit} ends the guest call with a trap of kind C{"exit"}.
        """
        instance = self.wasiInstance()
        error = self.assertRaises(WasmTrap, instance.call, "proc_exit", 3)
        self.assertEqual(error.kind, "exit")
        self.assertEqual(error.exitCode, 3)
        self.assertEqual(error.message, "guest called proc_exit(3)")

    def test_wasiStdioAndScheduling(self):
        """
        stdout is a writable descriptor; polling returns no events; yielding
        succeeds.
        """
        instance = self.wasiInstance()
        self.memory.writeBytes(100, b"\xaa" * 24)
        self.assertEqual(instance.call("fd_fdstat_get", 1, 100), ESUCCESS)
        self.assertEqual(self.memory.readU64(108), 64)
        self.assertEqual(self.memory.readBytes(100, 8), bytes(8))
        self.assertEqual(instance.call("fd_fdstat_get", 5, 100), EBADF)
        self.memory.writeU32(200, 99)
        self.assertEqual(instance.call("poll_oneoff", 300, 400, 1, 200), ESUCCESS)
        self.assertEqual(self.memory.readU32(200), 0)
        self.assertEqual(instance.call("sched_yield"), ESUCCESS)

    def test_wasiFilesystemRefused(self):
        """
        File system and socket calls are refused with their errno, under both
        WASI module names.
        """
        instance = self.wasiInstance()
        self.memory.writeBytes(100, b"/etc/passwd")
        self.assertEqual(instance.call("path_open", 100, 11), ENOENT)
        self.assertEqual(instance.call("fd_read", 0), ENOSYS)
        self.assertEqual(instance.call("fd_prestat_get", 3), EBADF)
        self.assertEqual(instance.call("sock_send", 3), EBADF)


class WasmtimeRuntimeTests(RuntimeConformanceMixin, TestCase):
    """
    The conformance tests on wasmtime, plus its CPU deadline.
    """

    runtimeName = "wasmtime"

    def test_deadline(self):
        """
        A guest in an infinite loop is stopped at its deadline with a trap
        that says so; the instance then works again.
        """
        self.assertTrue(self.runtime.supportsDeadline)
        instance = self.instantiate(Limits(callDeadline=0.2))
        started = time.monotonic()
        error = self.assertRaises(WasmTrap, instance.call, "spin")
        elapsed = time.monotonic() - started
        self.assertEqual(error.kind, "deadline")
        self.assertEqual(error.message, "guest call exceeded its CPU deadline of 0.2 s")
        self.assertTrue(0.15 <= elapsed < 5, elapsed)
        self.assertEqual(instance.call("add_i32", 1, 2), 3)

    def test_deadlineSpansNestedCalls(self):
        """
        A guest looping over host calls that call back into it is stopped at
        the outer call's deadline: the nested calls do not renew it.
        """
        instance = self.instantiate(Limits(callDeadline=0.2))
        started = time.monotonic()
        error = self.assertRaises(WasmTrap, instance.call, "spin_nested")
        self.assertEqual(error.kind, "deadline")
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(instance.call("call_host_reenter", 1), 3)

    def test_noDeadline(self):
        """
        Without a deadline a long guest call is not interrupted.
        """
        instance = self.instantiate(Limits(callDeadline=None))
        self.assertEqual(instance.call("call_host_reenter", 2), 6)


class WasmerRuntimeTests(RuntimeConformanceMixin, TestCase):
    """
    The conformance tests on wasmer, which has no interruption.
    """

    runtimeName = "wasmer"

    def test_noDeadlineSupport(self):
        """
        wasmer-python cannot interrupt a guest, and says so.
        """
        self.assertFalse(self.runtime.supportsDeadline)
