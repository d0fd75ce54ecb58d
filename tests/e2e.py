"""
Helpers for end-to-end tests: run the real C{twistd -n twistgate} on free
loopback ports, run a real upstream in the test process, and talk HTTP to
both over real sockets.

Typical use, in a L{twisted.trial.unittest.TestCase}::

    gateway = yield startGateway(self, CONFIG)     # CONFIG may say {echoPort}
    response = yield fetch("GET", gateway.proxyURL + "/anything")
    self.assertEqual(response.status, 200)

The gateway is stopped (SIGTERM, then SIGKILL after a grace period) when the
test ends. These helpers use the real reactor; unit tests must not.
"""

import http.client
import json
import os
import socket
import ssl
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from twisted.internet import defer, reactor, threads
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.server import Site

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def freePort() -> int:
    """
    @return: a TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def twistdCommand() -> List[str]:
    """
    @return: the command line that runs C{twistd} with this interpreter.
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


def gatewayEnvironment(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """
    @return: the environment for a gateway subprocess: this one without
        Kong's variables, with the repository on C{PYTHONPATH}.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("KONG_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPOSITORY, env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


@dataclass
class FetchResult:
    """
    An HTTP response read over a real socket.

    @ivar headers: C{(name, value)} pairs as received, repeated headers kept.
    """

    status: int
    reason: str
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """
        @return: the first value of header C{name} (any case), or L{None}.
        """
        values = self.headerValues(name)
        return values[0] if values else None

    def headerValues(self, name: str) -> List[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


def fetchBlocking(method: str, url: str, headers: Sequence[Tuple[str, str]] = (), body: Optional[bytes] = None,
                  timeout: float = 30.0) -> FetchResult:
    """
    One HTTP request with C{http.client} (blocking: run it in a thread);
    C{https} URLs accept any certificate.
    """
    parsed = http.client.urlsplit(url)
    if parsed.scheme == "https":
        # Test servers use self-signed certificates.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(parsed.hostname, parsed.port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        target = parsed.path or "/"
        if parsed.query:
            target += "?" + parsed.query
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return FetchResult(response.status, response.reason, list(response.getheaders()), response.read())
    finally:
        connection.close()


def fetch(method: str, url: str, headers: Sequence[Tuple[str, str]] = (), body: Optional[bytes] = None,
          timeout: float = 30.0) -> defer.Deferred:
    """
    L{fetchBlocking} in a thread. @return: a Deferred firing with a
    L{FetchResult}.
    """
    return threads.deferToThread(fetchBlocking, method, url, headers, body, timeout)


class _GatewayProtocol(ProcessProtocol):
    def __init__(self, process: "GatewayProcess") -> None:
        self._process = process

    def outReceived(self, data: bytes) -> None:
        self._process._output.append(data)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        code = reason.value.exitCode if reason.check(ProcessDone, ProcessTerminated) else None
        self._process.exitCode = code
        self._process._ended = True
        self._process.signal_ = getattr(reason.value, "signal", None)
        waiters, self._process._endWaiters = self._process._endWaiters, []
        for waiter in waiters:
            waiter.callback(code)


@dataclass
class GatewayProcess:
    """
    A running C{twistd -n twistgate}.

    @ivar exitCode: the exit status once it ended, else L{None}.
    """

    proxyPort: int
    adminPort: int
    echoPort: int
    configPath: str
    transport: object = None
    exitCode: Optional[int] = None
    signal_: Optional[int] = None
    _output: List[bytes] = field(default_factory=list)
    _endWaiters: List[defer.Deferred] = field(default_factory=list)
    _ended: bool = False

    @property
    def proxyURL(self) -> str:
        return "http://127.0.0.1:%d" % (self.proxyPort,)

    @property
    def adminURL(self) -> str:
        return "http://127.0.0.1:%d" % (self.adminPort,)

    @property
    def echoURL(self) -> str:
        return "http://127.0.0.1:%d" % (self.echoPort,)

    @property
    def pid(self) -> int:
        return self.transport.pid

    @property
    def running(self) -> bool:
        return self.transport is not None and not self._ended

    def logText(self) -> str:
        """
        @return: everything the gateway printed so far (stdout and stderr).
        """
        return b"".join(self._output).decode("utf-8", "replace")

    def rss(self) -> int:
        """
        @return: the gateway process's resident set size in bytes.
        """
        with open("/proc/%d/status" % (self.pid,)) as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS for process %d" % (self.pid,))

    def signal(self, name: str) -> None:
        """
        Send a signal, e.g. C{"HUP"} or C{"TERM"}.
        """
        if self.running:
            self.transport.signalProcess(name)

    def ended(self) -> defer.Deferred:
        """
        @return: a Deferred firing with the exit status when the process ends.
        """
        if self.transport is None or self._ended:
            return defer.succeed(self.exitCode)
        waiter: defer.Deferred = defer.Deferred()
        self._endWaiters.append(waiter)
        return waiter

    @defer.inlineCallbacks
    def stop(self, timeout: float = STOP_TIMEOUT):
        """
        SIGTERM, then SIGKILL if it is still running after C{timeout}.

        @return: a Deferred firing with the exit status.
        """
        ended = self.ended()
        self.signal("TERM")
        killer = reactor.callLater(timeout, self.signal, "KILL")
        code = yield ended
        if killer.active():
            killer.cancel()
        return code


def _substitute(configText: Union[str, Callable[[GatewayProcess], str]], process: GatewayProcess) -> str:
    if callable(configText):
        return configText(process)
    return (configText.replace("{echoPort}", str(process.echoPort))
            .replace("{proxyPort}", str(process.proxyPort))
            .replace("{adminPort}", str(process.adminPort)))


@defer.inlineCallbacks
def startGateway(testCase, configText, filtersPath: Optional[str] = None, vm: str = "wasmtime",
                 extraArgs: Sequence[str] = (), env: Optional[Dict[str, str]] = None):
    """
    Start C{twistd -n twistgate} on free loopback ports and wait until its
    admin API answers; it is stopped when C{testCase} ends.

    @param configText: the kong.yml text; C{{echoPort}}, C{{proxyPort}} and
        C{{adminPort}} in it are replaced by the chosen ports. Or a callable
        taking the L{GatewayProcess} and returning the text.
    @param filtersPath: C{--filters-path}, if given (else the repository's
        C{filters}, as the gateway runs in the repository).
    @param vm: C{--vm}.
    @param extraArgs: more twistgate options.
    @param env: more environment variables for the process.
    @return: a Deferred firing with the L{GatewayProcess}.
    """
    process = GatewayProcess(freePort(), freePort(), freePort(), "")
    directory = tempfile.mkdtemp(prefix="twistgate-e2e-")
    process.configPath = os.path.join(directory, "kong.yml")
    with open(process.configPath, "w", encoding="utf-8") as configFile:
        configFile.write(_substitute(configText, process))
    args = twistdCommand() + [
        "-n", "--pidfile=", "twistgate",
        "--config", process.configPath,
        "--vm", vm,
        "--proxy-listen", "tcp:%d:interface=127.0.0.1" % process.proxyPort,
        "--admin-listen", "tcp:%d:interface=127.0.0.1" % process.adminPort,
        "--echo-listen", "tcp:%d:interface=127.0.0.1" % process.echoPort,
    ]
    if filtersPath is not None:
        args += ["--filters-path", filtersPath]
    args += list(extraArgs)
    process.transport = reactor.spawnProcess(
        _GatewayProtocol(process), args[0], args, env=gatewayEnvironment(env), path=REPOSITORY)
    testCase.addCleanup(process.stop)
    deadline = reactor.seconds() + STARTUP_TIMEOUT
    while True:
        if process.transport.pid is None:
            raise AssertionError("twistgate exited with status %r while starting:\n%s"
                                 % (process.exitCode, process.logText()))
        try:
            status = yield fetch("GET", process.adminURL + "/status", timeout=2.0)
        except (OSError, http.client.HTTPException):
            status = None
        if status is not None and status.status == 200:
            return process
        if reactor.seconds() > deadline:
            raise AssertionError("twistgate did not answer within %d s:\n%s"
                                 % (STARTUP_TIMEOUT, process.logText()))
        yield deferLater(0.1)


def deferLater(seconds: float) -> defer.Deferred:
    """
    @return: a Deferred firing after C{seconds} on the real reactor.
    """
    waiter: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, waiter.callback, None)
    return waiter


def runTwistgate(args: Sequence[str], env: Optional[Dict[str, str]] = None) -> defer.Deferred:
    """
    Run C{twistd -n twistgate ARGS} to completion (for option and config
    errors).

    @return: a Deferred firing with C{(exitCode, stdout, stderr)} as text.
    """
    from twisted.internet.utils import getProcessOutputAndValue
    command = twistdCommand() + ["-n", "--pidfile=", "twistgate"] + list(args)
    d = getProcessOutputAndValue(command[0], command[1:], env=gatewayEnvironment(env), path=REPOSITORY)
    return d.addCallback(lambda result: (result[2], result[0].decode("utf-8", "replace"),
                                         result[1].decode("utf-8", "replace")))


class TrackedConnection(ProtocolWrapper):
    def connectionLost(self, reason):
        ProtocolWrapper.connectionLost(self, reason)
        self.factory.lost(self)


class TrackingFactory(WrappingFactory):
    """
    Wraps a server factory to track its connections, so that a test can
    close them all and wait until they are gone (L{closeAll}).
    """

    protocol = TrackedConnection

    def __init__(self, wrapped: Factory) -> None:
        super().__init__(wrapped)
        self._waiters: List[defer.Deferred] = []

    def lost(self, connection) -> None:
        if not self.protocols:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def closeAll(self) -> defer.Deferred:
        """
        Abort every connection. @return: a Deferred firing once all are lost.
        """
        if not self.protocols:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append(waiter)
        for connection in list(self.protocols):
            connection.transport.abortConnection()
        return waiter


@dataclass
class UpstreamServer:
    """
    A real HTTP server in the test process.
    """

    port: int

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % (self.port,)


def startUpstream(testCase, resource) -> UpstreamServer:
    """
    Serve C{resource} with twisted.web on a free loopback port until
    C{testCase} ends (its connections are then closed).
    """
    factory = TrackingFactory(Site(resource))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    @defer.inlineCallbacks
    def stop():
        yield port.stopListening()
        yield factory.closeAll()

    testCase.addCleanup(stop)
    return UpstreamServer(port.getHost().port)


def rawExchange(port: int, data: bytes, readTimeout: float = 10.0, shutdownWrite: bool = False) -> bytes:
    """
    Send raw bytes to 127.0.0.1:C{port} and read until the server closes
    (blocking: run it in a thread).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=readTimeout) as connection:
        connection.sendall(data)
        if shutdownWrite:
            connection.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = connection.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


__all__ = ["startGateway", "GatewayProcess", "fetch", "fetchBlocking", "FetchResult", "runTwistgate",
           "startUpstream", "UpstreamServer", "TrackingFactory", "rawExchange", "freePort", "deferLater"]
