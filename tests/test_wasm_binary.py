"""
Tests for L{twistgate.wasm.binary}.
"""

from twisted.trial.unittest import TestCase

from twistgate.wasm.binary import importDefinedMemory


def wat(text: str) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(text))


class ImportDefinedMemoryTests(TestCase):
    """
    L{importDefinedMemory} turns a module's memory into an import and keeps
    everything else.
    """

    def test_limitsReported(self):
        """
        The declared initial size and maximum are reported.
        """
        rewritten = importDefinedMemory(wat("(module (memory 3 9))"), b"m", b"mem")
        self.assertEqual((rewritten.minimumPages, rewritten.maximumPages), (3, 9))
        rewritten = importDefinedMemory(wat("(module (memory 2))"), b"m", b"mem")
        self.assertEqual((rewritten.minimumPages, rewritten.maximumPages), (2, None))

    def test_rewrittenModuleImportsMemory(self):
        """
        The rewritten module validates and imports the memory after its
        other imports; data segments still land in it.
        """
        source = wat(
            '(module (import "env" "f" (func (param i32)))'
            ' (@custom "note" "x")'
            ' (memory (export "memory") 1 4) (data (i32.const 5) "abc")'
            ' (func (export "load") (result i32) (i32.load8_u (i32.const 6))))'
        )
        rewritten = importDefinedMemory(source, b"host", b"memory0")
        import wasmtime

        module = wasmtime.Module(wasmtime.Engine(), rewritten.binary)
        self.assertEqual(
            [(i.module, i.name) for i in module.imports], [("env", "f"), ("host", "memory0")]
        )
        self.assertEqual(module.imports[1].type.limits.min, 1)
        self.assertEqual(module.imports[1].type.limits.max, 4)
        self.assertEqual([e.name for e in module.exports], ["memory", "load"])

    def test_nothingToRewrite(self):
        """
        Modules without a memory, with an imported one, or that do not parse
        are left alone.
        """
        self.assertIsNone(importDefinedMemory(wat("(module)"), b"m", b"n"))
        self.assertIsNone(
            importDefinedMemory(wat('(module (import "env" "memory" (memory 1)))'), b"m", b"n")
        )
        self.assertIsNone(importDefinedMemory(b"\0asm\x01\0\0\0\x05\x10\x01", b"m", b"n"))
        self.assertIsNone(importDefinedMemory(b"(module)", b"m", b"n"))
