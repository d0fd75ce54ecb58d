"""
Tests for L{twistgate.tap}: options, Kong's environment variables, the
twistd plugin and the service it makes (on a L{MemoryReactorClock}).
"""

import io
import os
import sys

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twistgate import tap
from twistgate.proxywasm.constants import LogLevel
from twistgate.service import GatewayService
from twistgate.wasm.interfaces import Limits, RuntimeUnavailable
from twistgate.wasm.registry import getRuntime

FILTERS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "filters")

CONFIG = """\
_format_version: "3.0"
services:
  - name: up
    url: http://127.0.0.1:9999
    routes:
      - paths: ["/"]
"""

CHAIN_CONFIG = CONFIG + """\
        filter_chains:
          - filters:
              - name: greeting
                config: {"my_greeting": "hi"}
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


class LogLevelOptionsTests(SynchronousTestCase):
    """
    C{--log-level} and Kong's C{KONG_LOG_LEVEL}: the lowest level of
    filters' logs kept.
    """

    def parse(self, *args, environ=None):
        options = tap.Options()
        options.environ = environ or {}
        options.parseOptions(["--config", "k"] + list(args))
        return options["filter-log-level"]

    def test_default(self):
        self.assertEqual(self.parse(), LogLevel.INFO)

    def test_option(self):
        for name, level in [("trace", LogLevel.TRACE), ("debug", LogLevel.DEBUG), ("info", LogLevel.INFO),
                            ("WARN", LogLevel.WARN), ("error", LogLevel.ERROR),
                            ("critical", LogLevel.CRITICAL)]:
            self.assertEqual(self.parse("--log-level", name), level)

    def test_kongEnvironment(self):
        """
        C{KONG_LOG_LEVEL} takes Kong's names (notice is info, crit is
        critical); the option wins over it.
        """
        for name, level in [("debug", LogLevel.DEBUG), ("info", LogLevel.INFO), ("notice", LogLevel.INFO),
                            ("warn", LogLevel.WARN), ("error", LogLevel.ERROR), ("crit", LogLevel.CRITICAL)]:
            self.assertEqual(self.parse(environ={"KONG_LOG_LEVEL": name}), level)
        self.assertEqual(self.parse("--log-level", "error", environ={"KONG_LOG_LEVEL": "debug"}),
                         LogLevel.ERROR)

    def test_errors(self):
        for args, environ, prefix in [(("--log-level", "loud"), {}, "--log-level: "),
                                      (("--log-level", "notice"), {}, "--log-level: "),
                                      ((), {"KONG_LOG_LEVEL": "trace"}, "KONG_LOG_LEVEL: ")]:
            error = self.assertRaises(usage.UsageError, self.parse, *args, environ=environ)
            message = str(error)
            self.assertTrue(message.startswith(prefix), message)
            self.assertNotIn("\n", message)


class FilterLimitOptionsTests(SynchronousTestCase):
    """
    The filter limits, trap policy and compiled-module cache options.
    """

    def parse(self, *args, environ=None):
        options = tap.Options()
        options.environ = {"HOME": "/home/gw"} if environ is None else environ
        options.parseOptions(["--config", "k"] + list(args))
        return options

    def test_defaults(self):
        """
        256 MiB of memory, a 1 s CPU deadline, backoff after 5 traps in 60 s
        for 30 s, and a cache under the user's cache directory.
        """
        options = self.parse()
        self.assertEqual(options["limits"], Limits(maxMemoryBytes=256 * 1024 ** 2, callDeadline=1.0))
        self.assertEqual(options["limits"], Limits())
        policy = options["trap-policy"]
        self.assertEqual((policy.maxTraps, policy.window, policy.backoff), (5, 60.0, 30.0))
        self.assertEqual(options["cache-directory"], "/home/gw/.cache/twistgate")

    def test_xdgCacheHome(self):
        options = self.parse(environ={"HOME": "/home/gw", "XDG_CACHE_HOME": "/var/cache/gw"})
        self.assertEqual(options["cache-directory"], "/var/cache/gw/twistgate")

    def test_values(self):
        options = self.parse("--filter-memory-limit", "64m", "--filter-deadline", "0.25",
                             "--filter-max-traps", "3", "--filter-trap-window", "10",
                             "--filter-backoff", "2.5", "--cache-dir", "/tmp/modules")
        self.assertEqual(options["limits"], Limits(maxMemoryBytes=64 * 1024 ** 2, callDeadline=0.25))
        policy = options["trap-policy"]
        self.assertEqual((policy.maxTraps, policy.window, policy.backoff), (3, 10.0, 2.5))
        self.assertEqual(options["cache-directory"], "/tmp/modules")

    def test_disabled(self):
        """
        A deadline of 0 is no deadline; C{--cache-dir off} is no cache.
        """
        options = self.parse("--filter-deadline", "0", "--cache-dir", "OFF")
        self.assertIsNone(options["limits"].callDeadline)
        self.assertIsNone(options["cache-directory"])

    def test_errors(self):
        """
        A bad value is a one-line usage error naming the option and the
        value.
        """
        for option, value in [("--filter-memory-limit", "lots"), ("--filter-memory-limit", "0"),
                              ("--filter-memory-limit", "5g"), ("--filter-deadline", "-1"),
                              ("--filter-deadline", "soon"), ("--filter-deadline", "inf"),
                              ("--filter-deadline", "nan"), ("--filter-max-traps", "0"),
                              ("--filter-max-traps", "1.5"), ("--filter-trap-window", "0"),
                              ("--filter-trap-window", "-2"), ("--filter-backoff", "x"),
                              ("--cache-dir", " ")]:
            error = self.assertRaises(usage.UsageError, self.parse, option, value)
            message = str(error)
            self.assertTrue(message.startswith(option + ": "), message)
            self.assertNotIn("\n", message)
            if value.strip():
                self.assertIn(repr(value), message)


class DeadlineWarningTests(SynchronousTestCase):
    """
    A runtime that cannot interrupt a guest gets one start-up warning that
    the CPU deadline is not enforced.
    """

    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def warnings(self):
        return [formatEvent(event) for event in self.events
                if event.get("log_namespace") == "twistgate.tap" and "CPU deadline" in formatEvent(event)]

    def start(self, vm, *args):
        try:
            getRuntime(vm)
        except RuntimeUnavailable as error:
            if os.environ.get("CI"):
                raise
            self.skipTest(str(error))
        path = self.mktemp()
        with open(path, "w") as configFile:
            configFile.write(CHAIN_CONFIG)
        options = tap.Options()
        options.environ = {}
        options.parseOptions(["--config", path, "--vm", vm, "--filters-path", FILTERS, "--cache-dir", "off",
                              "--echo-listen", "none"] + list(args))
        service = tap.makeService(options, MemoryReactorClock())
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_wasmerWarnsOnce(self):
        """
        With wasmer and the default deadline, one warning names the runtime
        and the deadline; a reload does not repeat it.
        """
        service = self.start("wasmer")
        warnings = self.warnings()
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("wasmer", warnings[0])
        self.assertIn("--filter-deadline 1", warnings[0])
        self.assertIn("not enforced", warnings[0])
        with open(service.settings.configPath) as configFile:
            service.reloadText(configFile.read())
        self.assertEqual(len(self.warnings()), 1)

    def test_wasmerWithoutDeadline(self):
        self.start("wasmer", "--filter-deadline", "0")
        self.assertEqual(self.warnings(), [])

    def test_wasmtimeEnforces(self):
        self.start("wasmtime")
        self.assertEqual(self.warnings(), [])


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
