"""
Writing to a TCP connection without waiting for the reactor's next turn.

A Twisted TCP transport buffers every write and registers the socket for
writability; the data leaves on the reactor's next turn, and the socket is
unregistered once the buffer drained. That is two C{epoll_ctl} calls and a
reactor turn for each response and each upstream request: about a tenth of
the proxy's CPU per request. L{sendNow} sends at once when nothing is
buffered and hands the transport only what the socket did not take, so the
order of bytes, backpressure and error handling stay the transport's.
"""

from typing import Optional

from twisted.internet import tcp


def _plainSocket(transport) -> Optional[object]:
    """
    @return: the socket of a connected plain TCP transport with nothing
        buffered, else L{None}.
    """
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return None
    if not transport.connected or transport.disconnecting or transport.dataBuffer \
            or transport._tempDataBuffer:
        return None
    return transport.socket


def sendNow(transport, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending what the socket takes right away
    when the transport is plain TCP with an empty buffer.
    """
    socket = _plainSocket(transport)
    if socket is not None and data:
        try:
            sent = socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # The transport finds and reports the error on its next write.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
