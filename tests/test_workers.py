"""
Tests for L{twistgate.workers}: the C{--workers N} supervisor.

The supervisor's decisions (what a worker is started with, restarts and
their backoff, signals, stop) are tested over a fake process reactor on a
L{Clock}; a few end-to-end tests run real gateway workers on real sockets.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from twistgate import workers
from twistgate.workers import Listener, WorkerSupervisor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def freePort() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeProcess:
    """
    A spawned worker: records the signals it is sent.
    """

    def __init__(self, reactor, protocol, args, env, childFDs, pid):
        self.reactor = reactor
        self.protocol = protocol
        self.args = args
        self.env = env
        self.childFDs = childFDs
        self.pid = pid
        self.signals = []
        self.ended = False
        protocol.makeConnection(self)

    def signalProcess(self, signum):
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(signal.Signals(signum).name)

    def end(self, reason=None):
        """
        The process exits (by default killed by a signal).
        """
        self.ended = True
        self.protocol.processEnded(Failure(reason or ProcessTerminated(signal=9)))


class FakeProcessReactor(Clock):
    """
    C{IReactorTime} and C{spawnProcess}, recording the spawned processes.
    """

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, protocol, executable, args=(), env=None, path=None, uid=None, gid=None,
                     usePTY=False, childFDs=None):
        process = FakeProcess(self, protocol, list(args), env, childFDs, 1000 + len(self.spawned))
        self.spawned.append(process)
        return process

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class SupervisorTests(TestCase):
    """
    L{WorkerSupervisor} over a fake process reactor, with real sockets.
    """

    def setUp(self):
        self.reactor = FakeProcessReactor()
        self.port = freePort()

    def supervisor(self, count=2, balance="shared", pluginArgs=None, **kwargs):
        supervisor = WorkerSupervisor(
            self.reactor,
            pluginArgs if pluginArgs is not None else
            ["--config", "kong.yml", "--proxy-listen", "tcp:8000", "--workers", "2", "--vm", "wasmer"],
            count, [Listener("proxy", f"tcp:{self.port}:interface=127.0.0.1")],
            balance=balance, env={"PATH": "/bin"}, installSignalHandlers=False, killTime=5,
            minRestartDelay=1, maxRestartDelay=4, stableTime=10, **kwargs)
        supervisor.startService()
        self.addCleanup(self.stopAll, supervisor)
        return supervisor

    def stopAll(self, supervisor):
        if supervisor.running:
            stopped = supervisor.stopService()
            for process in self.reactor.spawned:
                if not process.ended:
                    process.end(ProcessDone(0))
            return stopped

    def pluginArgs(self, process):
        return process.args[process.args.index("twistgate") + 1:]

    def test_workersAdoptSharedSocket(self):
        """
        Every worker runs C{twistd -n twistgate} with the parent's options,
        minus C{--workers}, and adopts the one listening socket as fd 3
        through the systemd convention.
        """
        self.supervisor(count=2)
        self.assertEqual(len(self.reactor.spawned), 2)
        fds = set()
        for index, process in enumerate(self.reactor.spawned):
            self.assertEqual(process.args[:2], [sys.executable, "-c"])
            self.assertEqual(process.args[3:6], ["-n", "--pidfile=", "twistgate"])
            self.assertEqual(self.pluginArgs(process), [
                "--config", "kong.yml", "--vm", "wasmer",
                "--proxy-listen", "systemd:domain=INET:name=proxy"])
            self.assertEqual((process.env["LISTEN_FDS"], process.env["LISTEN_FDNAMES"]), ("1", "proxy"))
            self.assertEqual(process.env[workers.WORKER_INDEX], str(index))
            self.assertEqual(process.env[workers.SUPERVISOR_PID], str(os.getpid()))
            self.assertEqual(process.env["PATH"], "/bin")
            fds.add(process.childFDs[3])
        self.assertEqual(len(fds), 1)
        adopted = socket.socket(fileno=os.dup(fds.pop()))
        self.addCleanup(adopted.close)
        self.assertEqual(adopted.getsockname(), ("127.0.0.1", self.port))

    def test_listeningBeforeWorkersStart(self):
        """
        The port accepts connections as soon as the supervisor started: they
        wait in the backlog for a worker.
        """
        self.supervisor(count=1)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5):
            pass

    def test_reusePortGivesEachWorkerItsSocket(self):
        """
        With C{balance="reuseport"}, each worker gets its own socket bound to
        the same port; a restarted worker gets its predecessor's.
        """
        self.supervisor(count=2, balance="reuseport")
        first, second = self.reactor.spawned
        self.assertNotEqual(first.childFDs[3], second.childFDs[3])
        for process in (first, second):
            sock = socket.socket(fileno=os.dup(process.childFDs[3]))
            self.addCleanup(sock.close)
            self.assertEqual(sock.getsockname(), ("127.0.0.1", self.port))
        second.end()
        self.reactor.advance(1)
        self.assertEqual(self.reactor.spawned[-1].childFDs[3], second.childFDs[3])

    def test_deadWorkerRestartedWithBackoff(self):
        """
        A worker that dies is restarted after C{minRestartDelay}; each quick
        death doubles the delay up to C{maxRestartDelay}; the other worker is
        left alone.
        """
        supervisor = self.supervisor(count=2)
        delays = []
        for _ in range(4):
            dying = supervisor.workers[1]
            dying.end()
            self.assertNotIn(1, supervisor.workers)
            spawned = len(self.reactor.spawned)
            waited = 0
            while len(self.reactor.spawned) == spawned:
                self.reactor.advance(0.5)
                waited += 0.5
            delays.append(waited)
            self.assertEqual(self.reactor.spawned[-1].env[workers.WORKER_INDEX], "1")
        self.assertEqual(delays, [1, 2, 4, 4])
        self.assertEqual(supervisor.restarts, {0: 0, 1: 4})
        self.assertIs(supervisor.workers[0], self.reactor.spawned[0])

    def test_stableWorkerResetsBackoff(self):
        """
        A worker that ran for C{stableTime} is restarted after the minimum
        delay again.
        """
        supervisor = self.supervisor(count=1)
        for _ in range(3):
            supervisor.workers[0].end()
            self.reactor.advance(4)
        self.reactor.advance(10)
        supervisor.workers[0].end()
        spawned = len(self.reactor.spawned)
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.spawned), spawned + 1)

    def test_reloadSignalsEveryWorker(self):
        """
        L{WorkerSupervisor.reload} (the parent's C{SIGHUP}) sends C{SIGHUP}
        to every running worker.
        """
        supervisor = self.supervisor(count=3)
        supervisor.reload()
        self.assertEqual([p.signals for p in self.reactor.spawned], [["SIGHUP"]] * 3)

    def test_postedConfigReachesEveryWorker(self):
        """
        A posted configuration shared by one worker is signalled to every
        worker (C{SIGUSR2}) and is in force for workers that start later,
        until a C{SIGHUP} makes the file win again.
        """
        supervisor = self.supervisor(count=2)
        self.assertFalse(workers.postedConfigActive(self.reactor.spawned[0].env))
        kills = []
        shared = workers.shareConfig("_format_version: '3.0'\n", self.reactor.spawned[0].env,
                                     kill=lambda pid, signum: kills.append((pid, signum)))
        self.assertTrue(shared)
        self.assertEqual(kills, [(os.getpid(), signal.SIGUSR2)])
        supervisor.sharePostedConfig()
        self.assertEqual([p.signals for p in self.reactor.spawned], [["SIGUSR2"], ["SIGUSR2"]])
        supervisor.workers[0].end()
        self.reactor.advance(1)
        restarted = self.reactor.spawned[-1].env
        self.assertTrue(workers.postedConfigActive(restarted))
        self.assertEqual(workers.sharedConfigText(restarted), "_format_version: '3.0'\n")
        supervisor.reload()
        self.assertFalse(workers.postedConfigActive(restarted))
        self.assertEqual(self.pluginArgs(self.reactor.spawned[-1])[:2], ["--config", "kong.yml"])

    def test_shareConfigOutsideWorkers(self):
        """
        Outside a supervisor, L{workers.shareConfig} does nothing.
        """
        self.assertFalse(workers.shareConfig("x", {}, kill=lambda pid, signum: self.fail("signalled")))
        self.assertIsNone(workers.sharedConfigText({}))

    def test_stopTerminatesAndWaits(self):
        """
        Stopping sends C{SIGTERM} to every worker and fires once all have
        exited; a worker that outlives C{killTime} gets C{SIGKILL}; nothing
        is restarted and the port is closed.
        """
        supervisor = self.supervisor(count=2)
        first, second = self.reactor.spawned
        stopped = supervisor.stopService()
        self.assertEqual((first.signals, second.signals), (["SIGTERM"], ["SIGTERM"]))
        first.end(ProcessDone(0))
        self.assertNoResult(stopped)
        self.reactor.advance(5)
        self.assertEqual(second.signals, ["SIGTERM", "SIGKILL"])
        second.end()
        self.successResultOf(stopped)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()

    def test_stopCancelsPendingRestart(self):
        """
        A worker waiting for its restart is not started after a stop.
        """
        supervisor = self.supervisor(count=1)
        supervisor.workers[0].end()
        self.successResultOf(supervisor.stopService())
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 1)

    def test_portInUse(self):
        """
        A listener that cannot be bound fails the start with a message
        naming it, before any worker starts.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", self.port))
        taken.listen(1)
        supervisor = WorkerSupervisor(self.reactor, [], 2, [Listener("proxy", f"tcp:{self.port}:interface=127.0.0.1")],
                                      installSignalHandlers=False)
        error = self.assertRaises(ValueError, supervisor.startService)
        self.assertIn(f"tcp:{self.port}:interface=127.0.0.1", str(error))
        self.assertEqual(self.reactor.spawned, [])

    def test_badArguments(self):
        """
        A worker count below 1, an unknown balance mode or an endpoint type
        that cannot be shared are refused with a message saying what.
        """
        self.assertIn("at least 1", str(self.assertRaises(
            ValueError, WorkerSupervisor, self.reactor, [], 0, [])))
        self.assertIn("'round-robin'", str(self.assertRaises(
            ValueError, WorkerSupervisor, self.reactor, [], 2, [], balance="round-robin")))
        self.assertIn("'ssl'", str(self.assertRaises(ValueError, workers.bindListener, "ssl:8443:privateKey=k")))


class ArgumentsTests(TestCase):
    """
    The command line a worker gets.
    """

    def test_workerArguments(self):
        """
        C{--workers} and the replaced listen options are dropped in both
        their forms; everything else is kept in order.
        """
        self.assertEqual(
            workers.workerArguments(
                ["--config=k.yml", "--workers", "4", "--proxy-listen=tcp:1", "--admin-listen", "tcp:2",
                 "--echo-listen", "off", "--workers=3", "--vm", "wasmer"],
                ["--proxy-listen", "--admin-listen"]),
            ["--config=k.yml", "--echo-listen", "off", "--vm", "wasmer"])

    def test_pluginArguments(self):
        """
        The plugin arguments are what follows the plugin name.
        """
        self.assertEqual(
            workers.pluginArguments(["twistd", "-n", "twistgate", "--config", "k.yml"]), ["--config", "k.yml"])
        self.assertEqual(workers.pluginArguments(["twistd"]), [])

    def test_escapedIPv6Interface(self):
        """
        A C{tcp6} endpoint with an escaped interface binds an IPv6 socket
        adopted as C{INET6}.
        """
        try:
            sock = workers.bindListener("tcp6:0:interface=\\:\\:1")
        except ValueError as e:
            raise self.skipTest(f"no IPv6 loopback here: {e}")
        self.addCleanup(sock.close)
        self.assertEqual(sock.getsockname()[0], "::1")
        self.assertEqual(workers.adoptedDescription("proxy", sock), "systemd:domain=INET6:name=proxy")


# A supervisor of real gateway workers, as tap.py runs it for --workers.
SUPERVISOR_SCRIPT = textwrap.dedent("""\
    import sys
    from twisted.internet import reactor
    from twisted.python import log
    from twistgate.workers import Listener, WorkerSupervisor
    log.startLogging(sys.stdout)
    proxy, admin, echo = sys.argv[2:5]
    supervisor = WorkerSupervisor(
        reactor, ["--config", sys.argv[1], "--filters-path", "filters"], 2,
        [Listener("proxy", "tcp:%s:interface=127.0.0.1" % proxy),
         Listener("admin", "tcp:%s:interface=127.0.0.1" % admin),
         Listener("echo", "tcp:%s:interface=127.0.0.1" % echo)],
        minRestartDelay=0.2, killTime=10)
    reactor.callWhenRunning(supervisor.startService)
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stopService)
    reactor.run()
    """)


def children(pid):
    """
    The pids of a process's children.
    """
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(child) for child in f.read().split()]
    return found


class RealWorkersTests(TestCase):
    """
    Two real gateway workers on shared sockets, over real HTTP.
    """

    timeout = 120

    def setUp(self):
        self.proxy, admin, echo = freePort(), freePort(), freePort()
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write(textwrap.dedent(f"""\
                _format_version: "3.0"
                services:
                  - name: echo
                    url: http://127.0.0.1:{echo}
                    routes:
                      - name: all
                        paths: ["/"]
                """))
        self.log = open(os.path.abspath(self.mktemp()), "wb")
        self.addCleanup(self.log.close)
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.supervisor = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR_SCRIPT, config, str(self.proxy), str(admin), str(echo)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.addCleanup(self.kill)
        self.waitFor(lambda: len(self.workerPids()) == 2 and self.get() is not None, "two workers answering")

    def kill(self):
        if self.supervisor.poll() is None:
            for pid in self.workerPids():
                os.kill(pid, signal.SIGKILL)
            self.supervisor.kill()
            self.supervisor.wait()

    def workerPids(self):
        try:
            return children(self.supervisor.pid)
        except OSError:
            return []

    def get(self):
        """
        One request through the proxy on a new connection: the echo's view of
        it, or L{None} if it failed.
        """
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.proxy}/hello", timeout=10) as response:
                return json.loads(response.read()) if response.status == 200 else None
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def waitFor(self, condition, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.supervisor.poll() is not None:
                break
            time.sleep(0.1)
        self.log.flush()
        with open(self.log.name, "rb") as f:
            self.fail(f"no {what} after {timeout}s:\n" + f.read()[-4000:].decode("utf-8", "replace"))

    def test_killedWorkerRestartedWhileOthersServe(self):
        """
        Killing a worker loses no later request: the other worker answers
        every one while the dead one is restarted with a new pid.
        """
        first, second = self.workerPids()
        os.kill(first, signal.SIGKILL)
        answered = [self.get() is not None for _ in range(20)]
        self.assertEqual(answered, [True] * 20)
        self.waitFor(lambda: len(set(self.workerPids()) - {first}) == 2, "restarted worker")
        self.assertIn(second, self.workerPids())
        self.assertEqual([self.get() is not None for _ in range(10)], [True] * 10)

    def test_sigtermStopsEverything(self):
        """
        SIGTERM to the supervisor stops every worker and the supervisor
        exits 0; the port is closed.
        """
        pids = self.workerPids()
        self.supervisor.send_signal(signal.SIGTERM)
        self.assertEqual(self.supervisor.wait(30), 0)
        for pid in pids:
            self.assertFalse(os.path.exists(f"/proc/{pid}/status") and "zombie" not in open(
                f"/proc/{pid}/status").read(), f"worker {pid} still running")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", self.proxy), timeout=5).close()


class TwistdWorkersTests(TestCase):
    """
    C{twistd -n twistgate --workers 2}: reloads reach every worker.
    """

    timeout = 120

    def setUp(self):
        self.proxy, self.admin, echo = freePort(), freePort(), freePort()
        self.config = os.path.abspath(self.mktemp())
        self.text = textwrap.dedent(f"""\
            _format_version: "3.0"
            services:
              - name: echo
                url: http://127.0.0.1:{echo}
                routes:
                  - name: all
                    paths: ["/"]
                filter_chains:
                  - filters:
                      - name: greeting
                        config:
                          my_greeting: "from the file"
            """)
        with open(self.config, "w") as f:
            f.write(self.text)
        self.log = open(os.path.abspath(self.mktemp()), "wb")
        self.addCleanup(self.log.close)
        self.twistd = subprocess.Popen(
            [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
             "-n", "--pidfile=", "twistgate", "--config", self.config, "--filters-path", "filters",
             "--proxy-listen", f"tcp:{self.proxy}:interface=127.0.0.1",
             "--admin-listen", f"tcp:{self.admin}:interface=127.0.0.1",
             "--echo-listen", f"tcp:{echo}:interface=127.0.0.1", "--workers", "2"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=self.log, stderr=subprocess.STDOUT)
        self.addCleanup(self.kill)
        RealWorkersTests.waitFor(self, lambda: len(children(self.twistd.pid)) == 2
                                 and self.greetings(1) == ["from the file"], "two workers answering")

    supervisor = property(lambda self: self.twistd)

    def kill(self):
        if self.twistd.poll() is None:
            for pid in children(self.twistd.pid):
                os.kill(pid, signal.SIGKILL)
            self.twistd.kill()
            self.twistd.wait()

    def greetings(self, count):
        """
        The X-Greeting of C{count} requests, each on a new connection (so
        both workers answer some).
        """
        found = []
        for _ in range(count):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.proxy}/", timeout=10) as response:
                    response.read()
                    found.append(response.headers.get("x-greeting"))
            except (urllib.error.URLError, OSError):
                found.append(None)
        return found

    def configsByWorker(self, timeout=60):
        """
        The configuration text each running worker serves, by worker pid:
        asked from the admin API over new connections until every worker
        has answered (C{GET /} names the worker, C{GET /config} on the same
        connection gives its configuration).
        """
        deadline = time.monotonic() + timeout
        found = {}
        while time.monotonic() < deadline:
            pids = set(children(self.twistd.pid))
            if pids and pids <= set(found):
                return {pid: found[pid] for pid in pids}
            connection = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10)
            try:
                connection.request("GET", "/")
                pid = json.loads(connection.getresponse().read())["pids"]["master"]
                connection.request("GET", "/config")
                found[pid] = connection.getresponse().read().decode("utf-8")
            except (OSError, ValueError, http.client.HTTPException):
                time.sleep(0.1)
            finally:
                connection.close()
        self.fail(f"not every worker answered within {timeout}s: {sorted(found)} of {children(self.twistd.pid)}")

    def test_reloadsReachEveryWorker(self):
        """
        A configuration posted to the admin API serves on every worker, also
        on a worker restarted afterwards; SIGHUP makes every worker re-read
        the file; SIGTERM stops them all and twistd exits 0.
        """
        posted = self.text.replace("from the file", "posted")
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin}/config", data=posted.encode(),
                                         method="POST", headers={"Content-Type": "application/yaml"})
        with urllib.request.urlopen(request, timeout=30) as response:
            self.assertEqual(response.status, 201)
        RealWorkersTests.waitFor(self, lambda: set(self.configsByWorker().values()) == {posted},
                                 "posted config on every worker")
        self.assertEqual(self.greetings(10), ["posted"] * 10)
        first, second = children(self.twistd.pid)
        os.kill(first, signal.SIGKILL)
        RealWorkersTests.waitFor(self, lambda: len(set(children(self.twistd.pid)) - {first}) == 2,
                                 "restarted worker")
        self.assertEqual(list(self.configsByWorker().values()), [posted, posted])
        self.twistd.send_signal(signal.SIGHUP)
        RealWorkersTests.waitFor(self, lambda: set(self.configsByWorker().values()) == {self.text},
                                 "file config on every worker after SIGHUP")
        self.assertEqual(self.greetings(10), ["from the file"] * 10)
        workerPids = children(self.twistd.pid)
        self.twistd.send_signal(signal.SIGTERM)
        self.assertEqual(self.twistd.wait(30), 0)
        for pid in workerPids:
            self.assertFalse(os.path.exists(f"/proc/{pid}/status") and "zombie" not in open(
                f"/proc/{pid}/status").read(), f"worker {pid} still running")
