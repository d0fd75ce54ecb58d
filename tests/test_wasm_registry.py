"""
Tests for L{twistgate.wasm.registry}.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

from twistgate.wasm.interfaces import RuntimeUnavailable
from twistgate.wasm.registry import availableRuntimes, getRuntime, runtimeNames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runWithout(blockedModule: str, runtimeName: str) -> subprocess.CompletedProcess:
    """
    Ask for a runtime in a fresh interpreter where C{blockedModule} cannot
    be imported, as on a Python without its wheels.
    """
    program = (
        "import sys; sys.modules[{!r}] = None\n"
        "from twistgate.wasm.registry import getRuntime\n"
        "from twistgate.wasm.interfaces import RuntimeUnavailable\n"
        "try:\n"
        "    getRuntime({!r})\n"
        "except RuntimeUnavailable as error:\n"
        "    print(error)\n"
    ).format(blockedModule, runtimeName)
    return subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT), timeout=60,
    )


class RegistryTests(TestCase):
    """
    L{getRuntime} finds runtimes by name and explains what is missing.
    """

    def test_names(self):
        """
        wasmtime and wasmer are the known runtimes.
        """
        self.assertEqual(runtimeNames(), ["wasmer", "wasmtime"])

    def test_oncePerProcess(self):
        """
        A runtime is created once and shared.
        """
        runtime = getRuntime("wasmtime")
        self.assertIs(getRuntime("wasmtime"), runtime)
        self.assertEqual(runtime.name, "wasmtime")

    def test_unknownName(self):
        """
        An unknown name gets a one-line error listing the known ones.
        """
        error = self.assertRaises(RuntimeUnavailable, getRuntime, "v8")
        self.assertEqual(str(error), "unknown Wasm runtime 'v8'; choose one of: wasmer, wasmtime")

    def test_available(self):
        """
        Every runtime reported available can be used.
        """
        available = availableRuntimes()
        self.assertIn("wasmtime", available)
        if os.environ.get("CI"):
            self.assertIn("wasmer", available)
        for name in available:
            self.assertEqual(getRuntime(name).compile(b"(module)").imports(), ())

    def test_wasmerMissing(self):
        """
        Without a working wasmer, asking for it gives one line saying what
        to install and how to run.
        """
        done = runWithout("wasmer", "wasmer")
        self.assertEqual(done.returncode, 0, done.stderr)
        lines = done.stdout.splitlines()
        self.assertEqual(len(lines), 1, done.stdout)
        self.assertIn("Wasm runtime wasmer unavailable on Python", lines[0])
        self.assertIn(
            "wasmer-python 1.1.0 needs CPython <= 3.10 with wasmer and "
            "wasmer-compiler-cranelift installed; run with python3.10 (make run does)",
            lines[0],
        )

    def test_wasmtimeWithoutWasmer(self):
        """
        wasmtime works in an interpreter without wasmer: runtimes are
        imported only when asked for.
        """
        program = (
            "import sys; sys.modules['wasmer'] = None\n"
            "from twistgate.wasm.registry import availableRuntimes\n"
            "print(availableRuntimes())\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=ROOT), timeout=60,
        )
        self.assertEqual(done.stdout.strip(), "['wasmtime']", done.stderr)
