"""
Tests for L{twistgate.service.GatewayService} on a L{MemoryReactorClock}.
"""

import gc

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twistgate.config.errors import ConfigError
from twistgate.config.filters import FilterFile
from twistgate.service import GatewayService, GatewaySettings

CONFIG = """\
_format_version: "3.0"
services:
  - name: up
    url: http://127.0.0.1:9999
    routes:
      - name: r
        paths: ["/"]
"""

WITH_CHAIN = CONFIG + """\
filter_chains:
  - route: r
    filters:
      - name: f
"""


class _Plan:
    def __init__(self, config):
        self.config = config
        self.stopped = False

    def chainFor(self, exchange):
        return None

    def stop(self):
        self.stopped = True


class GatewayServiceTests(SynchronousTestCase):
    """
    Wiring, reloads and graceful stop.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.plans = []

    def settings(self, text=CONFIG, **overrides):
        path = self.mktemp()
        with open(path, "w") as configFile:
            configFile.write(text)
        values = dict(configPath=path, proxyListen=("tcp:18000",), adminListen=("tcp:18001:interface=127.0.0.1",),
                      echoListen=("tcp:18080:interface=127.0.0.1",))
        values.update(overrides)
        return GatewaySettings(**values)

    def buildPlan(self, config):
        plan = _Plan(config)
        self.plans.append(plan)
        return plan

    def gateway(self, text=CONFIG, filters=None, **overrides):
        return GatewayService(self.settings(text, **overrides), self.reactor, planBuilder=self.buildPlan,
                              filters=filters if filters is not None else {"f": FilterFile("f", "f.wasm", "0", 0, None, ())})

    def test_listensOnEveryEndpoint(self):
        """
        Starting the service listens on the proxy, admin and echo endpoints.
        """
        gateway = self.gateway()
        gateway.startService()
        ports = sorted((port, interface) for port, _, _, interface in self.reactor.tcpServers)
        self.assertEqual(ports, [(18000, ""), (18001, "127.0.0.1"), (18080, "127.0.0.1")])

    def test_disabledListener(self):
        """
        A listener given no endpoint does not listen.
        """
        gateway = self.gateway(echoListen=())
        gateway.startService()
        self.assertEqual(sorted(port for port, *_ in self.reactor.tcpServers), [18000, 18001])

    def test_badConfigRaises(self):
        """
        An invalid file raises L{ConfigError} with every problem, before
        anything listens.
        """
        error = self.assertRaises(ConfigError, self.gateway, CONFIG.replace('["/"]', '["x"]').replace("url:", "urll:"))
        self.assertEqual(len(error.errors), 3, error.errors)
        self.assertEqual(self.reactor.tcpServers, [])

    def test_wasmOff(self):
        """
        With Wasm disabled, a filter chain is an error.
        """
        error = self.assertRaises(ConfigError, self.gateway, WITH_CHAIN, wasmEnabled=False)
        self.assertEqual(len(error.errors), 1)
        self.assertIn("wasm support is not enabled", error.errors[0])

    def test_planOnlyForChains(self):
        """
        The plan builder runs only for configurations with filter chains.
        """
        self.gateway(CONFIG)
        self.assertEqual(self.plans, [])
        gateway = self.gateway(WITH_CHAIN)
        self.assertEqual(len(self.plans), 1)
        self.assertIs(gateway.state.current.plan, self.plans[0])

    def test_reloadSwapsAfterInFlightEnd(self):
        """
        A reload serves new requests from the new configuration; the old
        plan stops once its last request ends.
        """
        gateway = self.gateway(WITH_CHAIN)
        old = gateway.state.current
        running = gateway.state.acquire()
        new = gateway.reloadText(WITH_CHAIN.replace('["/"]', '["/v2"]'))
        self.assertIs(gateway.state.current, new)
        self.assertEqual(new.number, 2)
        self.assertEqual([route.paths for route in new.config.routes], [("/v2",)])
        self.assertFalse(self.plans[0].stopped)
        gateway.state.release(running)
        self.assertTrue(self.plans[0].stopped)
        self.assertIs(running, old)

    def test_badReloadKeepsOld(self):
        """
        A refused reload leaves the current configuration serving.
        """
        gateway = self.gateway()
        current = gateway.state.current
        self.assertRaises(ConfigError, gateway.reloadText, "services: 3")
        self.assertIs(gateway.state.current, current)

    def test_reloadFile(self):
        """
        L{GatewayService.reloadFile} re-reads the file; a broken file is
        logged and ignored.
        """
        gateway = self.gateway()
        with open(gateway.settings.configPath, "w") as configFile:
            configFile.write(CONFIG.replace('["/"]', '["/file"]'))
        self.assertEqual(gateway.reloadFile().config.routes[0].paths, ("/file",))
        with open(gateway.settings.configPath, "w") as configFile:
            configFile.write("_format_version: [")
        self.assertIsNone(gateway.reloadFile())
        self.assertEqual(gateway.state.current.config.routes[0].paths, ("/file",))

    def test_stopWaitsForInFlight(self):
        """
        Stopping stops listening, then waits for requests in flight.
        """
        gateway = self.gateway(drainTimeout=10)
        gateway.startService()
        running = gateway.state.acquire()
        stopped = gateway.stopService()
        self.assertNoResult(stopped)
        gateway.state.release(running)
        self.successResultOf(stopped)

    def test_stopIsBounded(self):
        """
        Requests still in flight after the drain timeout do not hold the
        stop.
        """
        gateway = self.gateway(drainTimeout=10)
        gateway.startService()
        gateway.state.acquire()
        stopped = gateway.stopService()
        self.reactor.advance(9)
        self.assertNoResult(stopped)
        self.reactor.advance(2)
        self.successResultOf(stopped)

    def test_echoStopsAfterDrain(self):
        """
        The built-in echo upstream keeps listening while requests in flight
        finish (they may be going to it).
        """
        gateway = self.gateway(drainTimeout=10)
        gateway.startService()
        running = gateway.state.acquire()
        gateway.stopService()
        self.assertTrue(gateway.echoListeners.running)
        self.assertFalse(gateway.running)
        gateway.state.release(running)
        self.assertFalse(gateway.echoListeners.running)


class HeapFreezingTests(SynchronousTestCase):
    """
    A gateway that freezes its heap does so once started, thaws it while a
    replaced configuration is alive, and freezes again once it drained.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        path = self.mktemp()
        with open(path, "w") as configFile:
            configFile.write(WITH_CHAIN)
        settings = GatewaySettings(configPath=path, proxyListen=("tcp:18000",), adminListen=(), echoListen=())
        self.gateway = GatewayService(settings, self.reactor, planBuilder=_Plan, freezeHeap=True,
                                      filters={"f": FilterFile("f", "f.wasm", "0", 0, None, ())})
        self.addCleanup(gc.unfreeze)

    def test_frozenOnceStarted(self):
        self.assertEqual(gc.get_freeze_count(), 0)
        self.gateway.startService()
        self.assertGreater(gc.get_freeze_count(), 0)
        self.successResultOf(self.gateway.stopService())
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_thawedUntilTheReplacedConfigurationDrained(self):
        """
        The replaced configuration stays collectable while a request still
        uses it; the heap is frozen again once it ended.
        """
        self.gateway.startService()
        old = self.gateway.state.acquire()
        self.gateway.reloadText(WITH_CHAIN.replace('["/"]', '["/v2"]'))
        self.assertEqual(gc.get_freeze_count(), 0)
        self.reactor.advance(5)
        self.assertEqual(gc.get_freeze_count(), 0)
        self.gateway.state.release(old)
        self.reactor.advance(1)
        self.assertGreater(gc.get_freeze_count(), 0)
        self.successResultOf(self.gateway.stopService())

    def test_offByDefault(self):
        """
        A gateway sharing its process (the tests, an embedding program)
        leaves the collector alone.
        """
        path = self.mktemp()
        with open(path, "w") as configFile:
            configFile.write(CONFIG)
        gateway = GatewayService(GatewaySettings(configPath=path, proxyListen=(), adminListen=(), echoListen=()),
                                 self.reactor)
        gateway.startService()
        self.assertEqual(gc.get_freeze_count(), 0)
        self.successResultOf(gateway.stopService())
