"""
Tests for L{twistgate.dispatch}.
"""

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twistgate.dispatch import leanDispatch


class _Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class _Client(Protocol):
    def connectionMade(self):
        self.received = b""
        self.factory.client = self
        self.transport.write(b"ping")

    def dataReceived(self, data):
        self.received += data
        if self.factory.failOnData:
            raise RuntimeError("broken protocol")

    def connectionLost(self, reason):
        self.factory.lost = reason
        if self.factory.failOnLost:
            raise RuntimeError("broken connectionLost")


class LeanDispatchTests(SynchronousTestCase):
    """
    A reactor with the lean poll step still serves connections, and the
    failures of its protocols are handled as before.
    """

    def setUp(self):
        self.reactor = EPollReactor()
        self.addCleanup(self._closeReactor)
        self.assertTrue(leanDispatch(self.reactor))
        self.port = self.reactor.listenTCP(0, Factory.forProtocol(_Echo), interface="127.0.0.1")
        self.factory = ClientFactory.forProtocol(_Client)
        self.factory.client = self.factory.lost = None
        self.factory.failOnData = self.factory.failOnLost = False

    def _closeReactor(self):
        self.port.stopListening()
        for selectable in self.reactor.removeAll():
            selectable.socket.close()
        self.reactor._poller.close()

    def connect(self):
        self.reactor.connectTCP("127.0.0.1", self.port.getHost().port, self.factory)

    def iterateUntil(self, condition):
        for _ in range(200):
            if condition():
                return
            self.reactor.iterate(0.01)
        self.fail("condition not met")

    def test_serves(self):
        """
        Data goes both ways over a real connection.
        """
        self.connect()
        self.iterateUntil(lambda: self.factory.client is not None and self.factory.client.received == b"ping")

    def test_failingReadDisconnects(self):
        """
        A protocol raising from C{dataReceived} is disconnected with that
        error, as on Twisted's own poll step.
        """
        self.factory.failOnData = True
        self.connect()
        self.iterateUntil(lambda: self.factory.lost is not None)
        self.assertTrue(self.factory.lost.check(RuntimeError))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_failureEscapingIsLogged(self):
        """
        An exception escaping the event's handling (here from
        C{connectionLost}) is logged and the reactor goes on serving.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.factory.failOnData = self.factory.failOnLost = True
        self.connect()
        self.iterateUntil(lambda: self.factory.lost is not None)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        escaped = [event for event in events if event.get("log_namespace") == "twistgate.dispatch"]
        self.assertEqual(len(escaped), 1)
        self.assertIn("broken connectionLost", str(escaped[0]["log_failure"].value))
        self.factory.failOnData = self.factory.failOnLost = False
        self.factory.client = None
        self.connect()
        self.iterateUntil(lambda: self.factory.client is not None and self.factory.client.received == b"ping")

    def test_otherReactorsLeftAlone(self):
        """
        A reactor that is not an epoll reactor is not changed.
        """
        reactor = MemoryReactorClock()
        self.assertFalse(leanDispatch(reactor))
        self.assertNotIn("doIteration", vars(reactor))
