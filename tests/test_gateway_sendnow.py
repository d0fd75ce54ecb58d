"""
Tests for L{twistgate.gateway.sendnow}: bytes leave at once over plain TCP,
in order with the transport's own buffered writes.
"""

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twistgate.gateway.sendnow import sendNow


class _Connected(Protocol):
    def __init__(self, ready: Deferred) -> None:
        self.ready = ready

    def connectionMade(self):
        self.ready.callback(self.transport)


class _Factory(ClientFactory):
    def __init__(self, ready: Deferred) -> None:
        self.ready = ready

    def buildProtocol(self, addr):
        return _Connected(self.ready)


class SendNowTests(TestCase):
    """
    L{sendNow} over a real loopback connection to a plain socket.
    """

    @inlineCallbacks
    def setUp(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        ready = Deferred()
        connector = reactor.connectTCP("127.0.0.1", listener.getsockname()[1], _Factory(ready))
        self.addCleanup(connector.disconnect)
        self.transport = yield ready
        self.peer, _ = listener.accept()
        self.addCleanup(self.peer.close)
        self.peer.settimeout(5)

    def receive(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.peer.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def test_leavesBeforeTheReactorTurns(self):
        """
        With nothing buffered, the bytes are on the wire when L{sendNow}
        returns.
        """
        sendNow(self.transport, b"hello")
        self.assertEqual(self.receive(5), b"hello")

    @inlineCallbacks
    def test_orderWithBufferedWrites(self):
        """
        Once the transport buffers, L{sendNow} queues behind it: the peer
        reads the bytes in the order they were written.
        """
        sendNow(self.transport, b"a")
        self.transport.write(b"b")
        sendNow(self.transport, b"c")
        yield _turn()
        self.assertEqual(self.receive(3), b"abc")

    @inlineCallbacks
    def test_moreThanTheSocketTakes(self):
        """
        What the socket does not take is left to the transport and arrives
        whole, in order, once the peer reads.
        """
        data = bytes(range(256)) * (16 * 1024)
        sendNow(self.transport, data)
        sendNow(self.transport, b"end")
        received = b""
        while len(received) < len(data) + 3:
            yield _turn()
            self.peer.setblocking(False)
            try:
                received += self.peer.recv(1 << 20)
            except BlockingIOError:
                pass
        self.assertEqual(received, data + b"end")


def _turn() -> Deferred:
    waiter = Deferred()
    reactor.callLater(0.01, waiter.callback, None)
    return waiter


class OtherTransportTests(SynchronousTestCase):
    """
    Transports that are not plain TCP get an ordinary write.
    """

    def test_stringTransport(self):
        transport = StringTransport()
        sendNow(transport, b"abc")
        self.assertEqual(transport.value(), b"abc")
