"""
The layering of C{../shared/DESIGN.md}: each package imports only from the
layers below it, and only C{service.py}/C{tap.py} touch the global reactor.
"""

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import twistgate

PACKAGE_ROOT = os.path.dirname(os.path.abspath(twistgate.__file__))

ALLOWED = {
    "wasm": {"wasm"},
    "config": {"config"},
    "proxywasm": {"wasm", "proxywasm"},
    "gateway": {"wasm", "proxywasm", "config", "gateway"},
    "web": {"wasm", "proxywasm", "config", "gateway", "web"},
}

NO_TWISTED = {"wasm", "config"}

REACTOR_OWNERS = {"service.py", "tap.py"}


def importedModules(path):
    """
    @return: the absolute module names a Python file imports.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                yield node.module + "." + alias.name


def packageFiles():
    """
    @return: (layer, relative path, absolute path) of every module.
    """
    for directory, _, files in os.walk(PACKAGE_ROOT):
        for name in files:
            if name.endswith(".py"):
                absolute = os.path.join(directory, name)
                relative = os.path.relpath(absolute, PACKAGE_ROOT)
                layer = relative.split(os.sep)[0] if os.sep in relative else None
                yield layer, relative, absolute


class LayeringTests(SynchronousTestCase):
    """
    Import arrows between twistgate's layers.
    """

    def test_layersImportOnlyFromBelow(self):
        """
        A module of layer L imports twistgate modules only from the layers
        L may use.
        """
        wrong = []
        for layer, relative, absolute in packageFiles():
            if layer not in ALLOWED:
                continue
            for module in importedModules(absolute):
                parts = module.split(".")
                if parts[0] == "twistgate" and len(parts) > 1:
                    if parts[1] not in ALLOWED[layer]:
                        wrong.append(f"{relative} imports {module}")
        self.assertEqual(wrong, [])

    def test_runtimeNeutralLayersAvoidTwisted(self):
        """
        C{twistgate.wasm} and C{twistgate.config} import no Twisted.
        """
        wrong = [
            f"{relative} imports {module}"
            for layer, relative, absolute in packageFiles()
            if layer in NO_TWISTED
            for module in importedModules(absolute)
            if module.split(".")[0] == "twisted"
        ]
        self.assertEqual(wrong, [])

    def test_onlyWasmRuntimeModulesImportARuntime(self):
        """
        Only C{wasm/wasmtime_vm.py} and C{wasm/wasmer_vm.py} import a Wasm
        runtime.
        """
        owners = {os.path.join("wasm", "wasmtime_vm.py"), os.path.join("wasm", "wasmer_vm.py")}
        wrong = [
            f"{relative} imports {module}"
            for layer, relative, absolute in packageFiles()
            if relative not in owners
            for module in importedModules(absolute)
            if module.split(".")[0] in ("wasmtime", "wasmer", "wasmer_compiler_cranelift")
        ]
        self.assertEqual(wrong, [])

    def test_globalReactorOnlyInServiceAndTap(self):
        """
        Only C{service.py} and C{tap.py} import the global reactor.
        """
        wrong = [
            relative
            for layer, relative, absolute in packageFiles()
            if relative not in REACTOR_OWNERS
            for module in importedModules(absolute)
            if module == "twisted.internet.reactor"
        ]
        self.assertEqual(wrong, [])
