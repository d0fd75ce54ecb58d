"""
Tests for L{twistgate.tap}: options, Kong's environment variables, the
twistd plugin and the service it makes (on a L{MemoryReactorClock}).
"""

import io
import os
import sys

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twistgate import tap
from twistgate.service import GatewayService

CONFIG = """\
_format_version: "3.0"
services:
  - name: up
    url: http://127.0.0.1:9999
    routes:
      - paths: ["/"]
"""


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options}: command line first, then Kong's variables, then
    defaults.
    """

    def parse(self, args, environ=None):
        options = tap.Options()
        options.environ = environ or {}
        options.parseOptions(args)
        return options

    def test_defaults(self):
        options = self.parse(["--config", "kong.yml"])
        self.assertEqual(options["proxy-endpoints"], ("tcp:8000",))
        self.assertEqual(options["admin-endpoints"], ("tcp:8001:interface=127.0.0.1",))
        self.assertEqual(options["echo-endpoints"], ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual((options["vm"], options["filters-path"], options["wasm"]), ("wasmtime", "filters", True))
        self.assertFalse(options["filters-path-required"])
        self.assertEqual(options["max-body-size"], 8 * 1024 * 1024)

    def test_environment(self):
        options = self.parse([], {"KONG_DECLARATIVE_CONFIG": "/etc/kong.yml", "KONG_WASM_FILTERS_PATH": "/f",
                                  "KONG_PROXY_LISTEN": "0.0.0.0:9000, 127.0.0.1:9001 reuseport",
                                  "KONG_ADMIN_LISTEN": "off", "KONG_WASM": "off"})
        self.assertEqual(options["config"], "/etc/kong.yml")
        self.assertEqual((options["filters-path"], options["filters-path-required"]), ("/f", True))
        self.assertEqual(options["proxy-endpoints"], ("tcp:9000", "tcp:9001:interface=127.0.0.1"))
        self.assertEqual(options["admin-endpoints"], ())
        self.assertFalse(options["wasm"])

    def test_optionsWinOverEnvironment(self):
        options = self.parse(["--config", "mine.yml", "--proxy-listen", "tcp:7000", "--filters-path", "here",
                              "--vm", "wasmer"],
                             {"KONG_DECLARATIVE_CONFIG": "/etc/kong.yml", "KONG_PROXY_LISTEN": "0.0.0.0:9000",
                              "KONG_WASM_FILTERS_PATH": "/f"})
        self.assertEqual((options["config"], options["proxy-endpoints"], options["filters-path"], options["vm"]),
                         ("mine.yml", ("tcp:7000",), "here", "wasmer"))

    def test_tlsEndpoint(self):
        """
        Twisted endpoint strings pass through, so TLS needs no extra code.
        """
        options = self.parse(["--config", "k", "--proxy-listen", "ssl:8443:privateKey=k.pem:certKey=c.pem"])
        self.assertEqual(options["proxy-endpoints"], ("ssl:8443:privateKey=k.pem:certKey=c.pem",))

    def test_errors(self):
        self.assertRaises(usage.UsageError, self.parse, [])
        self.assertRaises(usage.UsageError, self.parse, ["--config", "k", "--vm", "v8"])
        self.assertRaises(usage.UsageError, self.parse, ["--config", "k", "--max-body-size", "lots"])
        self.assertRaises(usage.UsageError, self.parse, ["--config", "k"], {"KONG_PROXY_LISTEN": "0.0.0.0:8443 ssl"})
        self.assertRaises(usage.UsageError, self.parse, ["--config", "k"], {"KONG_WASM": "maybe"})

    def test_sizes(self):
        self.assertEqual(self.parse(["--config", "k", "--max-body-size", "512k"])["max-body-size"], 512 * 1024)
        self.assertEqual(self.parse(["--config", "k", "--max-body-size", "0"])["max-body-size"], 0)


class MakeServiceTests(SynchronousTestCase):
    """
    L{tap.makeService} and the plugin.
    """

    def configFile(self, text):
        path = self.mktemp()
        with open(path, "w") as configFile:
            configFile.write(text)
        return path

    def options(self, *args):
        options = tap.Options()
        options.environ = {}
        options.parseOptions(list(args))
        return options

    def test_pluginRegistered(self):
        makers = [maker for maker in getPlugins(IServiceMaker) if maker.tapname == "twistgate"]
        self.assertEqual(len(makers), 1)
        self.assertIsInstance(makers[0].options(), tap.Options)

    def test_makesListeningService(self):
        reactor = MemoryReactorClock()
        filters = self.mktemp()
        os.makedirs(filters)
        service = tap.makeService(self.options("--config", self.configFile(CONFIG), "--proxy-listen", "tcp:18000",
                                               "--echo-listen", "none", "--filters-path", filters), reactor)
        self.assertIsInstance(service, GatewayService)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(sorted(port for port, *_ in reactor.tcpServers), [8001, 18000])

    def test_badConfigExits(self):
        """
        An invalid configuration prints every problem on stderr and exits
        with status 1.
        """
        path = self.configFile(CONFIG.replace('["/"]', '["nope"]').replace("url:", "uri:"))
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        exit = self.assertRaises(SystemExit, tap.makeService, self.options("--config", path), MemoryReactorClock())
        self.assertEqual(exit.code, 1)
        lines = [line for line in stderr.getvalue().splitlines() if line.startswith(path + ": ")]
        self.assertEqual(len(lines), 3, stderr.getvalue())
