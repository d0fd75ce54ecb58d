"""
Tests for L{twistgate.proxywasm.vm}: ABI version detection, 0.1.0 guests,
imports the host does not know, and the after-call queue.
"""

import os
import shutil

from twisted.trial.unittest import SynchronousTestCase

from twistgate.proxywasm.vm import detectAbiVersion
from twistgate.wasm.interfaces import FuncSig

from tests.proxywasm_harness import (
    LogCapture,
    RuntimeMixin,
    bothRuntimes,
    entry,
    routeConfig,
)

WAT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wat")
HEADERS2 = FuncSig(("i32", "i32"), ("i32",))
HEADERS3 = FuncSig(("i32", "i32", "i32"), ("i32",))
MARKER = FuncSig((), ())


class DetectAbiVersionTests(SynchronousTestCase):
    """
    L{detectAbiVersion} trusts a marker unless the callbacks contradict it.
    """

    def test_marker(self):
        self.assertEqual(detectAbiVersion({"proxy_abi_version_0_2_1": MARKER,
                                           "proxy_on_request_headers": HEADERS3})[0], "0.2.1")
        self.assertEqual(detectAbiVersion({"proxy_abi_version_0_2_0": MARKER})[0], "0.2.0")

    def test_noMarkerThreeArguments(self):
        """
        Go wasip1 builds export no marker: 3-argument header callbacks mean
        0.2.x.
        """
        self.assertEqual(detectAbiVersion({"proxy_on_request_headers": HEADERS3})[0], "0.2.1")

    def test_twoArguments(self):
        """
        2-argument header callbacks are 0.1.0, marker or not.
        """
        self.assertEqual(detectAbiVersion({"proxy_on_response_headers": HEADERS2})[0], "0.1.0")

    def test_wrongMarker(self):
        """
        A 0.1.0 marker with 3-argument callbacks is 0.2.0.
        """
        version, reason = detectAbiVersion({"proxy_abi_version_0_1_0": MARKER,
                                            "proxy_on_request_headers": HEADERS3})
        self.assertEqual(version, "0.2.0")
        self.assertIn("3-argument", reason)


class Abi010Mixin(RuntimeMixin):
    """
    A 0.1.0 guest (WAT, no marker) runs.
    """

    def setUp(self):
        super().setUp()
        directory = self.mktemp()
        os.makedirs(directory)
        shutil.copy(os.path.join(WAT, "proxywasm_abi010.wat"), os.path.join(directory, "abi010.wasm"))
        self.filtersPath = directory

    def test_configurationAndTwoArgumentCallbacks(self):
        """
        C{proxy_get_configuration} gives the entry's configuration,
        2-argument header callbacks are called with 2 arguments, an unknown
        C{env} import answers UNIMPLEMENTED (12) and is logged at load.
        """
        logs = LogCapture(self)
        harness = self.harness(routeConfig(entry("abi010", "the-config")), filtersPath=self.filtersPath)
        self.assertEqual(harness.vm("abi010").abiVersion, "0.1.0")
        self.assertTrue(logs.containing("env.proxy_not_a_hostcall"))
        result = self.respond(harness)
        self.assertEqual(result.status, 200)
        seen = dict(harness.upstream.seenHeaders[0])
        self.assertEqual(seen[b"x-config"], b"the-config")
        self.assertEqual(seen[b"x-unknown"], b"x")


bothRuntimes(Abi010Mixin, globals())
