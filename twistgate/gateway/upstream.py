"""
The upstream client: sends a proxied request to a service over persistent
HTTP/1.1 connections (L{twistgate.gateway.http1client}), with the service's
connect and read timeouts and its C{retries} on connection failures.
"""

import ipaddress
from typing import Callable, Dict, List, Optional, Set, Tuple

from OpenSSL import SSL
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from twistgate.config.model import Service
from twistgate.gateway.http1client import ConnectionClosedEarly, HTTP11ClientConnection, UpstreamResponse

HeaderPairs = List[Tuple[bytes, bytes]]


class UpstreamError(Exception):
    """
    The upstream could not be reached or did not answer with valid HTTP: the
    client gets a 502.
    """


class UpstreamTimeout(UpstreamError):
    """
    The upstream did not connect or answer in time: the client gets a 504.
    """


def _isIPLiteral(host: str) -> Optional[int]:
    """
    @return: 4 or 6 for an IPv4 or IPv6 literal, else L{None}.
    """
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def _endpointFor(reactor, scheme: str, host: str, port: int, connectTimeout: float) -> IStreamClientEndpoint:
    """
    The endpoint to an upstream host. IP literals connect directly (no
    resolver); names go through L{HostnameEndpoint}.

    @param scheme: C{"http"} or C{"https"}.
    @param host: a name or an IP address (without brackets).
    @param connectTimeout: in seconds.
    """
    version = _isIPLiteral(host)
    if version == 4:
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=connectTimeout)
    elif version == 6:
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=connectTimeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=connectTimeout)
    if scheme == "https":
        endpoint = wrapClientTLS(_UnverifiedTLS(host, sni=version is None), endpoint)
    return endpoint


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedTLS:
    """
    TLS to an upstream without verifying its certificate, as Kong does by
    default (a service's C{tls_verify} is off unless set): upstreams behind
    a gateway commonly use private or self-signed certificates. The host
    name is sent as SNI.
    """

    def __init__(self, host: str, sni: bool) -> None:
        self._context = CertificateOptions(verify=False).getContext()
        self._serverName = host.encode("idna") if sni else None

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._serverName is not None:
            connection.set_tlsext_host_name(self._serverName)
        connection.set_connect_state()
        return connection


class _ServicePool:
    """
    The connections to one upstream host and port: idle ones kept for
    reuse (the most recently used first), new ones made through one
    endpoint.
    """

    def __init__(self, client: "UpstreamClient", endpoint: IStreamClientEndpoint) -> None:
        self._client = client
        self._endpoint = endpoint
        self.idle: List[HTTP11ClientConnection] = []
        self.open: Set[HTTP11ClientConnection] = set()
        self._factory = _ConnectionFactory(self)

    def idleConnection(self) -> Optional[HTTP11ClientConnection]:
        """
        @return: an idle connection to reuse, or L{None}.
        """
        idle = self.idle
        if not idle:
            return None
        connection = idle.pop()
        if self._client._reactor.seconds() - connection.idleSince > self._client.idleTimeout:
            connection.transport.loseConnection()
            return self.idleConnection()
        return connection

    def connect(self) -> Deferred:
        """
        @return: a Deferred firing with a new connection.
        """
        return self._endpoint.connect(self._factory)

    def connectionIdle(self, connection: HTTP11ClientConnection) -> None:
        if len(self.idle) >= self._client.maxPersistentPerHost:
            connection.transport.loseConnection()
            return
        connection.idleSince = self._client._reactor.seconds()
        self.idle.append(connection)
        self._client._scheduleSweep()

    def connectionLost(self, connection: HTTP11ClientConnection) -> None:
        self.open.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)

    def sweep(self, now: float) -> None:
        """
        Close the connections idle for longer than the idle timeout.
        """
        expired = [c for c in self.idle if now - c.idleSince >= self._client.idleTimeout]
        for connection in expired:
            self.idle.remove(connection)
            connection.transport.loseConnection()


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: _ServicePool) -> None:
        self._pool = pool

    def buildProtocol(self, addr):
        connection = HTTP11ClientConnection(self._pool.connectionIdle, self._pool.connectionLost)
        self._pool.open.add(connection)
        return connection


#: Methods a request on a reused connection may be sent again for when the
#: upstream closed that connection before answering.
_IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"])


class _Call:
    """
    One request to a service: its attempts, timers and outcome.
    """

    __slots__ = ("_client", "_service", "_pool", "_method", "_path", "_headers", "_bodyProducerFactory",
                 "_onAttempt", "result", "_retriesLeft", "_connecting", "_connection",
                 "_staleRetried", "_producer")

    def __init__(self, client: "UpstreamClient", service: Service, pool: _ServicePool, method: bytes,
                 path: bytes, headers: HeaderPairs, bodyProducerFactory, onAttempt) -> None:
        self._client = client
        self._service = service
        self._pool = pool
        self._method = method
        self._path = path
        self._headers = headers
        self._bodyProducerFactory = bodyProducerFactory
        self._onAttempt = onAttempt
        self.result: Deferred = Deferred(self._cancel)
        self._retriesLeft = service.retries
        self._connecting: Optional[Deferred] = None
        self._connection: Optional[HTTP11ClientConnection] = None
        self._staleRetried = False
        self._producer = None

    def start(self) -> None:
        if self._onAttempt is not None:
            self._onAttempt()
        connection = self._pool.idleConnection()
        if connection is not None:
            self._send(connection)
            return
        connecting = self._connecting = self._pool.connect()
        connecting.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, connection: HTTP11ClientConnection) -> None:
        self._connecting = None
        if self.result.called:
            connection.transport.loseConnection()
            return
        self._send(connection)

    def _connectFailed(self, failure) -> None:
        self._connecting = None
        if self.result.called:
            return
        if failure.check(ierror.ConnectError, ierror.DNSLookupError) and self._retriesLeft > 0:
            self._retriesLeft -= 1
            self._client._log.debug("retrying {service} after {error}", service=self._service.name,
                                    error=failure.getErrorMessage())
            self.start()
            return
        if failure.check(ierror.TimeoutError):
            self.result.errback(UpstreamTimeout(failure.getErrorMessage()))
        elif failure.check(CancelledError):
            self.result.errback(failure)
        else:
            self.result.errback(UpstreamError(_describe(failure)))

    def _send(self, connection: HTTP11ClientConnection) -> None:
        self._connection = connection
        factory = self._bodyProducerFactory
        producer = self._producer = factory() if factory is not None else None
        try:
            connection.request(self._method, self._path, self._headers, producer, self._responded,
                               self._failed, self._sent)
        except ValueError as e:
            connection.abandon()
            self._connection = None
            self.result.errback(UpstreamError(str(e)))

    def _sent(self) -> None:
        connection = self._connection
        if not self.result.called and connection is not None:
            connection.watchHead(self._client._reactor, self._service.readTimeout / 1000.0, self._timedOut)

    def _timedOut(self) -> None:
        connection, self._connection = self._connection, None
        if not self.result.called:
            self.result.errback(UpstreamTimeout("no response within {} ms".format(self._service.readTimeout)))
        if connection is not None:
            connection.abandon()

    def _responded(self, response: UpstreamResponse) -> None:
        self._connection = None
        if self.result.called:
            response.deliverBody(_Discard())
            return
        self.result.callback(response)

    def _failed(self, failure) -> None:
        self._connection = None
        if self.result.called:
            return
        closed = failure.check(ConnectionClosedEarly)
        if closed and failure.value.reused and not self._staleRetried and self._method in _IDEMPOTENT \
                and (self._producer is None or isinstance(getattr(self._producer, "body", None), bytes)):
            # An idle connection the upstream closed as the request went out.
            self._staleRetried = True
            self.start()
            return
        self.result.errback(UpstreamError(_describe(failure)))

    def _cancel(self, _: Deferred) -> None:
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abandon()


class UpstreamClient:
    """
    Sends requests to services over pooled HTTP/1.1 connections (one pool
    per upstream scheme, host, port and connect timeout).

    @ivar maxPersistentPerHost: idle connections kept per upstream.
    @ivar idleTimeout: seconds an idle upstream connection is kept.
    """

    _log = Logger()

    def __init__(self, reactor, maxPersistentPerHost: int = 64, idleTimeout: float = 60.0,
                 agentFactory: Optional[Callable[[float], IAgent]] = None) -> None:
        """
        @param reactor: provides C{IReactorTCP} and C{IReactorTime}.
        @param maxPersistentPerHost: idle connections kept per upstream.
        @param idleTimeout: seconds an idle upstream connection is kept.
        @param agentFactory: makes the L{IAgent} for a connect timeout (in
            seconds) to send requests through instead of the built-in
            client (for tests).
        """
        self._reactor = reactor
        self.maxPersistentPerHost = maxPersistentPerHost
        self.idleTimeout = idleTimeout
        self._agentFactory = agentFactory
        self._agents: Dict[float, IAgent] = {}
        self._pools: Dict[tuple, _ServicePool] = {}
        self._sweep = None

    def _poolFor(self, service: Service) -> _ServicePool:
        key = (service.protocol, service.host, service.port, service.connectTimeout)
        pool = self._pools.get(key)
        if pool is None:
            endpoint = _endpointFor(self._reactor, service.protocol, service.host, service.port,
                                    service.connectTimeout / 1000.0)
            pool = self._pools[key] = _ServicePool(self, endpoint)
        return pool

    def _scheduleSweep(self) -> None:
        if self._sweep is None:
            self._sweep = self._reactor.callLater(self.idleTimeout, self._sweepIdle)

    def _sweepIdle(self) -> None:
        self._sweep = None
        now = self._reactor.seconds()
        for pool in self._pools.values():
            pool.sweep(now)
        if any(pool.idle for pool in self._pools.values()):
            self._scheduleSweep()

    def request(self, service: Service, method: bytes, path: bytes, headers: HeaderPairs,
                bodyProducerFactory: Optional[Callable[[], IBodyProducer]] = None,
                onAttempt: Optional[Callable[[], None]] = None) -> Deferred:
        """
        Send one request to C{service}, retrying up to C{service.retries}
        times when the connection cannot be made.

        @param path: the request target (path and query) sent upstream.
        @param headers: the request headers in order, C{Host} included.
        @param bodyProducerFactory: makes a fresh body producer per attempt,
            or L{None} for no body. A producer with a C{body} attribute
            (bytes) is sent from memory; the read timeout starts once the
            whole body was sent.
        @param onAttempt: called as each attempt starts.
        @return: a Deferred firing with the response (an L{IResponse}; from
            the built-in client an L{UpstreamResponse}) once its headers
            arrived; it fails with L{UpstreamTimeout} when the connection or
            the response headers take longer than the service's timeouts, and
            with L{UpstreamError} for anything else that went wrong.
        """
        if self._agentFactory is not None:
            return self._requestThroughAgent(service, method, path, headers, bodyProducerFactory, onAttempt)
        call = _Call(self, service, self._poolFor(service), method, path, headers, bodyProducerFactory,
                     onAttempt)
        call.start()
        return call.result

    def _agentFor(self, connectTimeout: float) -> IAgent:
        agent = self._agents.get(connectTimeout)
        if agent is None:
            agent = self._agents[connectTimeout] = self._agentFactory(connectTimeout)
        return agent

    def _requestThroughAgent(self, service: Service, method: bytes, path: bytes, headers: HeaderPairs,
                             bodyProducerFactory: Optional[Callable[[], IBodyProducer]],
                             onAttempt: Optional[Callable[[], None]]) -> Deferred:
        host = service.host
        if _isIPLiteral(host) == 6:
            host = "[" + host + "]"
        uri = "{}://{}:{}".format(service.protocol, host, service.port).encode("ascii") + path
        requestHeaders = Headers()
        for name, value in headers:
            requestHeaders.addRawHeader(name, value)
        agent = self._agentFor(service.connectTimeout / 1000.0)
        attempt: Optional[Deferred] = None

        def cancel(_: Deferred) -> None:
            if timer[0] is not None and timer[0].active():
                timer[0].cancel()
            if attempt is not None:
                attempt.cancel()

        result: Deferred = Deferred(cancel)
        retriesLeft = [service.retries]
        timer: list = [None]
        settled = [False]

        def send() -> None:
            nonlocal attempt
            if onAttempt is not None:
                onAttempt()
            producer = bodyProducerFactory() if bodyProducerFactory is not None else None
            attempt = agent.request(method, uri, requestHeaders, producer)
            settled[0] = False
            whenSent = getattr(producer, "whenSent", None)
            if whenSent is None:
                startTimer(attempt)
            else:
                whenSent().addCallback(lambda _, attempt=attempt: startTimer(attempt))
            attempt.addCallbacks(succeeded, failed)

        def startTimer(pending: Deferred) -> None:
            # Deferred.called says nothing here: an attempt on a pooled
            # connection is "called" while it still waits for the response.
            if pending is attempt and not settled[0] and not result.called:
                timer[0] = self._reactor.callLater(service.readTimeout / 1000.0, timedOut, pending)

        def timedOut(late: Deferred) -> None:
            timer[0] = None
            if not result.called:
                result.errback(UpstreamTimeout("no response within {} ms".format(service.readTimeout)))
            late.cancel()

        def stopTimer() -> None:
            if timer[0] is not None and timer[0].active():
                timer[0].cancel()
            timer[0] = None

        def succeeded(response: IResponse) -> None:
            settled[0] = True
            stopTimer()
            if result.called:
                response.deliverBody(_Discard())
                return
            result.callback(response)

        def failed(failure) -> None:
            settled[0] = True
            stopTimer()
            if result.called:
                return
            if failure.check(ierror.ConnectError, ierror.DNSLookupError) and retriesLeft[0] > 0:
                retriesLeft[0] -= 1
                self._log.debug("retrying {service} after {error}", service=service.name,
                                error=failure.getErrorMessage())
                send()
                return
            if failure.check(ierror.TimeoutError):
                result.errback(UpstreamTimeout(failure.getErrorMessage()))
            elif failure.check(CancelledError):
                result.errback(failure)
            else:
                result.errback(UpstreamError(_describe(failure)))

        send()
        return result

    def close(self) -> Deferred:
        """
        Close every idle upstream connection.
        """
        closing = []
        for pool in self._pools.values():
            idle, pool.idle = pool.idle, []
            closing.extend(connection.close() for connection in idle)
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        return gatherResults(closing).addCallback(lambda _: None)


class _Discard(Protocol):
    """
    Drops the body of a response that came too late.
    """

    def connectionMade(self):
        self.transport.stopProducing()


def _describe(failure) -> str:
    """
    A one-line description of an upstream failure, including the reasons
    wrapped in Twisted's C{ResponseFailed} and friends.
    """
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return failure.getErrorMessage()
