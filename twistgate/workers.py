"""
C{--workers N}: several gateway processes sharing the listening sockets.

The parent process binds every listening socket once, then runs N worker
processes (C{twistd -n twistgate ...} without C{--workers}) that adopt those
sockets through the systemd socket-activation convention (C{LISTEN_FDS},
C{LISTEN_FDNAMES}, C{LISTEN_PID}), i.e. each worker listens on the endpoint
C{systemd:domain=INET:name=proxy}. The parent serves no traffic; it restarts a
worker that dies (with exponential backoff), forwards C{SIGHUP} (reload) to
every worker, and on stop sends C{SIGTERM} to every worker and waits for them,
killing those that outlive C{killTime}.

Two ways of sharing a port:
    - C{"shared"}: one socket per listener, inherited by every worker; the
      workers compete in C{accept()}. A dead worker never strands a
      connection: the others keep accepting.
    - C{"reuseport"}: one C{SO_REUSEPORT} socket per listener and worker;
      the kernel spreads new connections evenly over the workers. While a
      worker is down, connections hashed to its socket wait in that socket's
      backlog (held open by the parent) until it is back.

Reloads reach every worker: C{SIGHUP} to the supervisor makes every worker
re-read the configuration file. A configuration posted to one worker's admin
API (C{POST /config}) is shared through a file: that worker calls
L{shareConfig}, which writes the text to C{$TWISTGATE_SHARED_CONFIG} and sends
C{SIGUSR2} to the supervisor; the supervisor forwards C{SIGUSR2} to every
worker, which loads L{sharedConfigText}. A worker that starts (or was still
starting) after that loads the posted configuration once started
(L{postedConfigActive}); C{SIGHUP} removes the shared file and makes the
configuration file win again.

Only L{twistgate.tap} and L{twistgate.service} touch the global reactor; this
module receives it as a parameter.
"""

import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

LISTEN_FDS_START = 3

#: Environment of a worker: its index, the supervisor's pid, the file that
#: carries a posted configuration to every worker.
WORKER_INDEX = "TWISTGATE_WORKER_INDEX"
SUPERVISOR_PID = "TWISTGATE_SUPERVISOR_PID"
SHARED_CONFIG = "TWISTGATE_SHARED_CONFIG"

# Runs in the worker before twistd: record the worker's own pid for the
# systemd endpoint parser, ignore reload signals until the gateway installs
# its handlers (a reload during start-up must not kill it), and ask the
# kernel to SIGTERM the worker when the supervisor dies (so no orphan keeps
# serving on the shared sockets).
_WORKER_BOOT = """\
import os, signal, sys
os.environ["LISTEN_PID"] = str(os.getpid())
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.signal(signal.SIGUSR2, signal.SIG_IGN)
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))
except (OSError, AttributeError):
    pass
if os.getppid() != int(os.environ["TWISTGATE_SUPERVISOR_PID"]):
    sys.exit("twistgate worker: supervisor gone before start")
from twisted.scripts.twistd import run
sys.argv[0] = "twistd"
run()
"""


@dataclass(frozen=True)
class Listener:
    """
    One listening endpoint of the gateway.

    @ivar name: the listener's role, as in its option: C{"proxy"} for
        C{--proxy-listen}, C{"admin"}, C{"echo"}.
    @ivar description: the endpoint string the user gave, e.g.
        C{"tcp:8000:interface=127.0.0.1"}; C{tcp}, C{tcp6} and C{unix} are
        supported.
    """

    name: str
    description: str


def _splitDescription(description: str) -> Tuple[List[str], Dict[str, str]]:
    """
    Split an endpoint string into positional and keyword arguments, honouring
    backslash escapes (C{tcp6:8000:interface=\\:\\:1}).

    @return: C{(positional, keywords)}; C{positional[0]} is the type.
    """
    parts: List[str] = []
    current: List[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    positional = [p for p in parts if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts if "=" in p)
    return positional, keywords


def bindListener(description: str, reusePort: bool = False) -> socket.socket:
    """
    Create, bind and listen on a socket for an endpoint string.

    @param description: C{tcp:PORT[:interface=HOST][:backlog=N]},
        C{tcp6:...} or C{unix:PATH[:backlog=N]}.
    @param reusePort: set C{SO_REUSEPORT} so that several sockets may be bound
        to the same TCP port.
    @return: a listening, non-blocking, inheritable socket.
    @raise ValueError: for an endpoint type other than tcp, tcp6, unix, or a
        malformed port; the message names the description.
    """
    positional, keywords = _splitDescription(description)
    kind = positional[0]
    backlog = int(keywords.get("backlog", "128"))
    if kind == "unix":
        if len(positional) < 2:
            raise ValueError(f"listen {description!r}: unix needs a path")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: object = positional[1]
    elif kind in ("tcp", "tcp6"):
        try:
            port = int(positional[1] if len(positional) > 1 else keywords["port"])
        except (KeyError, ValueError):
            raise ValueError(f"listen {description!r}: a TCP port number is required") from None
        interface = keywords.get("interface", "::" if kind == "tcp6" else "")
        family = socket.AF_INET6 if kind == "tcp6" or ":" in interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reusePort:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        address = (interface, port)
    else:
        raise ValueError(f"listen {description!r}: --workers supports tcp, tcp6 and unix endpoints, not {kind!r}")
    try:
        sock.bind(address)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise ValueError(f"listen {description!r}: {e.strerror}") from None
    sock.setblocking(False)
    return sock


def adoptedDescription(name: str, sock: socket.socket) -> str:
    """
    The endpoint string by which a worker adopts an inherited socket.

    @param name: the listener's name (its C{LISTEN_FDNAMES} entry).
    @param sock: the inherited socket.
    @return: e.g. C{"systemd:domain=INET:name=proxy"}.
    """
    domain = {socket.AF_INET: "INET", socket.AF_INET6: "INET6", socket.AF_UNIX: "UNIX"}[sock.family]
    return f"systemd:domain={domain}:name={name}"


def workerArguments(pluginArgs: Sequence[str], listenOptions: Sequence[str]) -> List[str]:
    """
    The twistgate plugin arguments of a worker: the parent's, without
    C{--workers} and without the listen options the supervisor replaces.

    @param pluginArgs: the arguments that followed C{twistgate} on the
        parent's command line.
    @param listenOptions: the listen options to drop, e.g.
        C{["--proxy-listen", "--admin-listen"]}.
    @return: the remaining arguments, in order.
    """
    dropped = {"--workers"} | set(listenOptions)
    kept: List[str] = []
    skipNext = False
    for arg in pluginArgs:
        if skipNext:
            skipNext = False
            continue
        option = arg.split("=", 1)[0]
        if option in dropped:
            skipNext = "=" not in arg
            continue
        kept.append(arg)
    return kept


def pluginArguments(argv: Sequence[str], plugin: str = "twistgate") -> List[str]:
    """
    The arguments that follow the plugin name on a twistd command line.

    @param argv: e.g. C{sys.argv} of C{twistd -n twistgate --config x.yml}.
    @return: e.g. C{["--config", "x.yml"]}; empty if C{plugin} is absent.
    """
    argv = list(argv)
    if plugin in argv:
        return argv[argv.index(plugin) + 1 :]
    return []


def isWorker(environ: Mapping[str, str] = os.environ) -> bool:
    """
    @return: whether this process is a worker of a L{WorkerSupervisor}.
    """
    return SUPERVISOR_PID in environ and SHARED_CONFIG in environ


def shareConfig(text: str, environ: Mapping[str, str] = os.environ, kill=os.kill) -> bool:
    """
    Hand a configuration this worker accepted (C{POST /config}) to every
    worker: write it to the shared file and signal the supervisor.

    @param text: the configuration's text, already loaded successfully.
    @return: C{False} when this process is not a worker (nothing to do).
    """
    if not isWorker(environ):
        return False
    path = environ[SHARED_CONFIG]
    partial = f"{path}.{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, path)
    kill(int(environ[SUPERVISOR_PID]), signal.SIGUSR2)
    return True


def sharedConfigText(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """
    The configuration last shared by a worker (on C{SIGUSR2}).

    @return: its text, or L{None} when there is none.
    """
    try:
        with open(environ[SHARED_CONFIG], encoding="utf-8") as f:
            return f.read()
    except (KeyError, OSError):
        return None


def postedConfigActive(environ: Mapping[str, str] = os.environ) -> bool:
    """
    Whether a configuration posted to a worker is in force (shared since the
    last C{SIGHUP}): a worker checks this once its C{SIGUSR2} handler is
    installed, and loads L{sharedConfigText} instead of its file if so (it
    may have started, or missed the signal while starting, after the post).
    """
    return sharedConfigText(environ) is not None


class _WorkerProtocol(ProcessProtocol):
    """
    Tells the supervisor when its worker process ends.
    """

    def __init__(self, supervisor: "WorkerSupervisor", index: int):
        self.supervisor = supervisor
        self.index = index

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._workerEnded(self.index, self.transport, reason)


class WorkerSupervisor(Service):
    """
    Runs C{count} twistgate worker processes on shared listening sockets.

    @ivar workers: the running worker process transports by index (absent
        while a worker is down).
    @ivar restarts: how many times each worker index was restarted.
    """

    log = Logger()

    def __init__(
        self,
        reactor,
        pluginArgs: Sequence[str],
        count: int,
        listeners: Sequence[Listener],
        balance: str = "shared",
        killTime: float = 10.0,
        minRestartDelay: float = 0.2,
        maxRestartDelay: float = 30.0,
        stableTime: float = 10.0,
        env: Optional[Mapping[str, str]] = None,
        executable: str = sys.executable,
        installSignalHandlers: bool = True,
        bind: Callable[[str, bool], socket.socket] = bindListener,
        plugin: str = "twistgate",
        listenOption: str = "--{name}-listen",
    ):
        """
        @param reactor: an C{IReactorProcess} and C{IReactorTime} provider.
        @param pluginArgs: the twistgate plugin arguments of the parent; see
            L{workerArguments} for what the workers get.
        @param count: how many workers, at least 1.
        @param listeners: the endpoints to share.
        @param balance: C{"shared"} or C{"reuseport"} (see the module
            docstring).
        @param killTime: seconds a worker has to stop after C{SIGTERM}
            before C{SIGKILL}.
        @param minRestartDelay: delay before restarting a worker that died;
            doubled for each death that follows within C{stableTime} of its
            start, up to C{maxRestartDelay}.
        @param stableTime: a worker that ran this long resets its delay.
        @param env: the workers' environment (default: the parent's).
        @param executable: the Python interpreter that runs the workers.
        @param installSignalHandlers: handle C{SIGHUP} and C{SIGUSR2} in the
            parent by forwarding them (off in unit tests).
        @param bind: creates a listening socket from a description.
        @param plugin: the twistd plugin the workers run.
        @param listenOption: the worker option that takes a listener's
            endpoint, formatted with the listener's C{name}.
        """
        if count < 1:
            raise ValueError(f"--workers: must be at least 1, not {count}")
        if balance not in ("shared", "reuseport"):
            raise ValueError(f"--workers balance: 'shared' or 'reuseport', not {balance!r}")
        self.reactor = reactor
        self.count = count
        self.listeners = tuple(listeners)
        self.balance = balance
        self.killTime = killTime
        self.minRestartDelay = minRestartDelay
        self.maxRestartDelay = maxRestartDelay
        self.stableTime = stableTime
        self.env = dict(os.environ if env is None else env)
        self.executable = executable
        self.installSignalHandlers = installSignalHandlers
        self._bind = bind
        self.plugin = plugin
        self.listenOption = listenOption
        self._pluginArgs = workerArguments(
            pluginArgs, [listenOption.format(name=listener.name) for listener in self.listeners]
        )
        self._sockets: List[List[socket.socket]] = []
        self.workers: Dict[int, object] = {}
        self.restarts: Dict[int, int] = {}
        self._delay: Dict[int, float] = {}
        self._startedAt: Dict[int, float] = {}
        self._pendingRestarts: Dict[int, object] = {}
        self._exitWaiters: Dict[int, List[Deferred]] = {}
        self._previousHandlers: Dict[int, object] = {}
        self._runtimeDir: Optional[str] = None

    def _socketsFor(self, index: int) -> List[socket.socket]:
        """
        The listening sockets worker C{index} inherits, one per listener.
        """
        return [socks[index % len(socks)] for socks in self._sockets]

    def workerCommand(self, index: int) -> Tuple[List[str], Dict[str, str], Dict[int, object]]:
        """
        How worker C{index} is spawned.

        @return: C{(argv, env, childFDs)} for C{spawnProcess}.
        """
        sockets = self._socketsFor(index)
        args = list(self._pluginArgs)
        childFDs: Dict[int, object] = {0: "w", 1: 1, 2: 2}
        for offset, (listener, sock) in enumerate(zip(self.listeners, sockets)):
            args += [self.listenOption.format(name=listener.name), adoptedDescription(listener.name, sock)]
            childFDs[LISTEN_FDS_START + offset] = sock.fileno()
        argv = [self.executable, "-c", _WORKER_BOOT, "-n", "--pidfile=", self.plugin] + args
        env = dict(self.env)
        env.update(
            LISTEN_FDS=str(len(sockets)),
            LISTEN_FDNAMES=":".join(listener.name for listener in self.listeners),
            **{WORKER_INDEX: str(index), SUPERVISOR_PID: str(os.getpid()), SHARED_CONFIG: self.sharedConfigPath},
        )
        return argv, env, childFDs

    def startService(self) -> None:
        """
        Bind the sockets, start every worker and take over C{SIGHUP}.

        @raise ValueError: a listener cannot be bound (before any worker
            starts).
        """
        perListener = self.count if self.balance == "reuseport" else 1
        try:
            for listener in self.listeners:
                self._sockets.append(
                    [self._bind(listener.description, self.balance == "reuseport") for _ in range(perListener)]
                )
        except BaseException:
            self._closeSockets()
            raise
        self._runtimeDir = tempfile.mkdtemp(prefix="twistgate-workers-")
        Service.startService(self)
        if self.installSignalHandlers:
            for signum, handler in ((signal.SIGHUP, self.reload), (signal.SIGUSR2, self.sharePostedConfig)):
                self._previousHandlers[signum] = signal.signal(
                    signum, lambda number, frame, handler=handler: self.reactor.callFromThread(handler))
        for index in range(self.count):
            self._delay[index] = self.minRestartDelay
            self.restarts[index] = 0
            self._startWorker(index)

    def _startWorker(self, index: int) -> None:
        self._pendingRestarts.pop(index, None)
        if not self.running:
            return
        argv, env, childFDs = self.workerCommand(index)
        self._startedAt[index] = self.reactor.seconds()
        self.workers[index] = self.reactor.spawnProcess(
            _WorkerProtocol(self, index), self.executable, argv, env=env, childFDs=childFDs
        )
        self.log.info("worker {index} started (pid {pid})", index=index, pid=self.workers[index].pid)

    def _workerEnded(self, index: int, transport, reason: Failure) -> None:
        if self.workers.get(index) is transport:
            del self.workers[index]
        for waiter in self._exitWaiters.pop(index, []):
            waiter.callback(None)
        if not self.running:
            return
        ranFor = self.reactor.seconds() - self._startedAt.get(index, 0.0)
        if ranFor >= self.stableTime:
            self._delay[index] = self.minRestartDelay
        delay = self._delay[index]
        self._delay[index] = min(delay * 2, self.maxRestartDelay)
        self.restarts[index] += 1
        how = "exited" if reason.check(ProcessDone) else f"died ({reason.getErrorMessage()})"
        self.log.warn(
            "worker {index} {how} after {ranFor:.1f}s; restarting in {delay:.1f}s",
            index=index,
            how=how,
            ranFor=ranFor,
            delay=delay,
        )
        self._pendingRestarts[index] = self.reactor.callLater(delay, self._startWorker, index)

    @property
    def sharedConfigPath(self) -> str:
        """
        The file through which a posted configuration reaches every worker.
        """
        return os.path.join(self._runtimeDir or tempfile.gettempdir(), "posted-config.yml")

    def reload(self) -> None:
        """
        Ask every running worker to re-read the configuration file
        (C{SIGHUP}); the posted configuration, if any, is forgotten.
        """
        try:
            os.remove(self.sharedConfigPath)
        except FileNotFoundError:
            pass
        self.log.info("reload: SIGHUP to {n} workers", n=len(self.workers))
        for transport in list(self.workers.values()):
            self._signal(transport, signal.SIGHUP)

    def sharePostedConfig(self) -> None:
        """
        A worker shared a posted configuration (L{shareConfig}): ask every
        worker to load it (C{SIGUSR2}); workers started from now on load it
        too (L{postedConfigActive}).
        """
        self.log.info("posted configuration: SIGUSR2 to {n} workers", n=len(self.workers))
        for transport in list(self.workers.values()):
            self._signal(transport, signal.SIGUSR2)

    def _signal(self, transport, signum: int) -> None:
        try:
            transport.signalProcess(signum)
        except ProcessExitedAlready:
            # It ended between the lookup and the signal; its processEnded
            # follows.
            pass

    def stopService(self) -> Deferred:
        """
        Stop every worker: C{SIGTERM}, then C{SIGKILL} after C{killTime}.

        @return: a L{Deferred} that fires once every worker has exited.
        """
        Service.stopService(self)
        if self.installSignalHandlers and getattr(self.reactor, "_exitSignal", None) == signal.SIGTERM:
            # A stop on SIGTERM is the graceful stop: exit 0, not re-raise
            # the signal as twistd does for the exit status.
            self.reactor._exitSignal = None
        for signum, previous in self._previousHandlers.items():
            signal.signal(signum, previous)
        self._previousHandlers.clear()
        for call in self._pendingRestarts.values():
            if call.active():
                call.cancel()
        self._pendingRestarts.clear()
        waits = []
        for index, transport in list(self.workers.items()):
            exited: Deferred = Deferred()
            self._exitWaiters.setdefault(index, []).append(exited)
            waits.append(exited)
            self._signal(transport, signal.SIGTERM)
            killer = self.reactor.callLater(self.killTime, self._signal, transport, signal.SIGKILL)
            exited.addBoth(lambda result, killer=killer: killer.cancel() if killer.active() else None)
        if not waits:
            self._closeSockets()
            return succeed(None)
        stopped = DeferredList(waits)
        stopped.addCallback(lambda _: self._closeSockets())
        return stopped

    def _closeSockets(self) -> None:
        for socks in self._sockets:
            for sock in socks:
                sock.close()
        self._sockets = []
        if self._runtimeDir is not None:
            shutil.rmtree(self._runtimeDir, ignore_errors=True)
            self._runtimeDir = None
