"""
The upstream client: sends a proxied request to a service over persistent
connections, with the service's connect and read timeouts and its C{retries}
on connection failures.
"""

import ipaddress
from typing import Callable, Dict, List, Optional, Tuple

from OpenSSL import SSL
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from twistgate.config.model import Service

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


@implementer(IAgentEndpointFactory)
class _ServiceEndpointFactory:
    """
    Endpoints to upstream hosts with one connect timeout. IP literals connect
    directly (no resolver); names go through L{HostnameEndpoint}.
    """

    def __init__(self, reactor, connectTimeout: float) -> None:
        self._reactor = reactor
        self._connectTimeout = connectTimeout

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        version = _isIPLiteral(host)
        if version == 4:
            endpoint = TCP4ClientEndpoint(self._reactor, host, uri.port, timeout=self._connectTimeout)
        elif version == 6:
            endpoint = TCP6ClientEndpoint(self._reactor, host, uri.port, timeout=self._connectTimeout)
        else:
            endpoint = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._connectTimeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(_UnverifiedTLS(host, sni=version is None), endpoint)
        return _NoDelayEndpoint(endpoint)


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


@implementer(IStreamClientEndpoint)
class _NoDelayEndpoint:
    """
    An endpoint whose TCP connections send small writes at once (no
    Nagle): a request's head and body go out as separate writes, and
    waiting for the peer's delayed ACK would add tens of milliseconds.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory):
        def noDelay(protocol):
            setTcpNoDelay = getattr(protocol.transport, "setTcpNoDelay", None)
            if setTcpNoDelay is not None:
                setTcpNoDelay(True)
            return protocol

        return self._endpoint.connect(protocolFactory).addCallback(noDelay)


class UpstreamClient:
    """
    Sends requests to services, sharing one connection pool.

    @ivar pool: the persistent connection pool.
    """

    _log = Logger()

    def __init__(self, reactor, maxPersistentPerHost: int = 64, idleTimeout: float = 60.0,
                 agentFactory: Optional[Callable[[float], IAgent]] = None) -> None:
        """
        @param reactor: provides C{IReactorTCP} and C{IReactorTime}.
        @param maxPersistentPerHost: idle connections kept per upstream.
        @param idleTimeout: seconds an idle upstream connection is kept.
        @param agentFactory: makes the L{IAgent} for a connect timeout (in
            seconds); by default an L{Agent} over TCP (and TLS for https)
            sharing L{pool}.
        """
        self._reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = maxPersistentPerHost
        self.pool.cachedConnectionTimeout = idleTimeout
        self._agentFactory = agentFactory or self._tcpAgent
        self._agents: Dict[float, IAgent] = {}

    def _tcpAgent(self, connectTimeout: float) -> IAgent:
        return Agent.usingEndpointFactory(
            self._reactor, _ServiceEndpointFactory(self._reactor, connectTimeout), pool=self.pool)

    def _agentFor(self, connectTimeout: float) -> IAgent:
        agent = self._agents.get(connectTimeout)
        if agent is None:
            agent = self._agents[connectTimeout] = self._agentFactory(connectTimeout)
        return agent

    def request(self, service: Service, method: bytes, path: bytes, headers: HeaderPairs,
                bodyProducerFactory: Optional[Callable[[], IBodyProducer]] = None,
                onAttempt: Optional[Callable[[], None]] = None) -> Deferred:
        """
        Send one request to C{service}, retrying up to C{service.retries}
        times when the connection cannot be made.

        @param path: the request target (path and query) sent upstream.
        @param headers: the request headers in order, C{Host} included.
        @param bodyProducerFactory: makes a fresh body producer per attempt,
            or L{None} for no body. A producer with a C{whenSent()} method
            (a body still arriving from the client) starts the read timeout
            once the whole body was sent.
        @param onAttempt: called as each attempt starts.
        @return: a Deferred firing with the L{IResponse} once its headers
            arrived; it fails with L{UpstreamTimeout} when the connection or
            the response headers take longer than the service's timeouts, and
            with L{UpstreamError} for anything else that went wrong.
        """
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
        return self.pool.closeCachedConnections()


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
