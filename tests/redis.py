"""
A real C{redis-server} for tests: started on a free loopback port in a
temporary directory, with persistence off, and stopped on cleanup.

C{.ci/run} installs C{redis-server}; without it the tests that need one
fail with a message saying how to install it (they do not skip).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Optional

REDIS_SERVER = "redis-server"

_STARTUP_SECONDS = 10.0


def freePort() -> int:
    """
    @return: a TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """
    One C{redis-server} process on 127.0.0.1.

    @ivar port: the port it listens on (kept across L{stop} and L{start}, so
        a test can take Redis down and bring it back at the same address).
    """

    def __init__(self, port: Optional[int] = None) -> None:
        executable = shutil.which(REDIS_SERVER)
        if executable is None:
            raise RuntimeError(
                "redis-server is not installed; install it with"
                " 'apt-get install -y redis-server' (.ci/run does)")
        self._executable = executable
        self.port = port or freePort()
        self.directory = tempfile.mkdtemp(prefix="twistgate-redis-")
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """
        @return: the C{redis://} URL of database 0.
        """
        return "redis://127.0.0.1:{}/0".format(self.port)

    def start(self) -> None:
        """
        Start the server and wait (at most 10 seconds) until it answers
        C{PING}.

        @raise RuntimeError: when it does not come up.
        """
        log = open(os.path.join(self.directory, "redis.log"), "ab")
        self.process = subprocess.Popen(
            [self._executable, "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", self.directory,
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + _STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        with open(os.path.join(self.directory, "redis.log"), "rb") as f:
            output = f.read().decode("utf-8", "replace")[-2000:]
        raise RuntimeError("redis-server on port {} did not start:\n{}".format(
            self.port, output))

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port),
                                          timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """
        Stop the server (if running) and wait for it to exit.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """
        Freeze the server (SIGSTOP): connections are accepted by the kernel
        but never answered, as with a hung Redis.
        """
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """
        Undo L{pause}.
        """
        os.kill(self.process.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        """
        Stop the server and remove its directory.
        """
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def startRedis(testCase) -> RedisServer:
    """
    Start a L{RedisServer} that is stopped when C{testCase} ends.

    @param testCase: a trial test case.
    @return: the running server.
    """
    server = RedisServer()
    testCase.addCleanup(server.cleanup)
    server.start()
    return server
