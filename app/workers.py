"""``serve --workers N``: N service processes on one port, supervised by a parent.

The parent owns what exists once per deployment: the data directory's lock, the listening
socket (bound before anything starts, so a taken port fails at once with one line) and,
when ``BALAGG_REDIS_URL`` is unset, the embedded Redis. It then starts N workers
(``python -m app.workers``), each a complete service — its own mirror and hub, REST,
``/v1/stream``, ``/metrics`` and upstream supervisor — serving the inherited socket, so
the kernel spreads connections between them. Each worker is an instance of the
multi-instance design (docs/scaling.md) with its own id ``<instance_id>-w<k>``: the
account leases split the accounts between workers, and a worker's accounts are taken
over by the others when it dies.

The parent restarts a worker that exits unasked, with a growing delay when it keeps
dying soon after start (so a crash loop costs little and is logged once per attempt).
SIGTERM or SIGINT to the parent stops every worker with SIGTERM (each closes its sockets
with 1001, flushes and exits 0), then the embedded Redis, then releases the lock.
Workers die with the parent (``PR_SET_PDEATHSIG``) even if the parent is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from app.accounts import AccountConfig
from app.redis_server import DirectoryInUse, DirectoryLock, EmbeddedRedis
from app.settings import Settings, load_config

log = logging.getLogger(__name__)

# the listening sockets a worker inherits: "<shared fd>[,<own fd>]"
LISTEN_FDS_ENV = "_BALAGG_LISTEN_FDS"
_PR_SET_PDEATHSIG = 1
# a worker that lived shorter than this is crash-looping: back off before the next start
_HEALTHY_RUN_S = 30.0
_RESTART_DELAY_MIN_S = 0.5
_RESTART_DELAY_MAX_S = 30.0
# a worker gets uvicorn's graceful shutdown (10 s) plus the writer's drain (10 s), and more
_STOP_TIMEOUT_S = 30.0


@dataclass
class _Slot:
    """One worker position: its listener(s), its current process, its restart state."""

    index: int
    instance_id: str
    sockets: list[socket.socket]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = _RESTART_DELAY_MIN_S
    restart_at: float | None = None
    restarts: int = field(default=0)


def _worker_preexec(parent_pid: int) -> None:
    """Runs in the worker between fork and exec."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    # a Ctrl-C in the terminal reaches only the parent, which stops the workers in order
    # (a second SIGINT straight to a worker would make uvicorn skip its graceful shutdown)
    os.setpgrp()


class WorkerPool:
    """The parent's side: start, watch, restart and stop the worker processes."""

    def __init__(
        self,
        settings: Settings,
        shared: socket.socket,
        own: Sequence[socket.socket],
        redis_url: str | None,
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.slots = [
            _Slot(
                index=k,
                instance_id=f"{settings.instance_id}-w{k}",
                sockets=[shared, *([own[k]] if own else [])],
            )
            for k in range(settings.workers)
        ]
        self._stop = threading.Event()
        workers = settings.workers
        self.venue_limits: dict[str, dict[str, object]] = {}
        for venue, limits in settings.resolved_venue_limits().items():
            self.venue_limits[venue] = limits.share(workers).setting()
            counts = [c for c, _ in (*limits.connect, *limits.rest)]
            if any(c < workers for c in counts) or 0 < limits.sockets < workers:
                log.warning(
                    "venue limits: %s allows fewer than one of each per worker; %d workers "
                    "get one each and may exceed it together", venue, workers,
                )  # fmt: skip

    def request_stop(self, *_args: object) -> None:
        self._stop.set()

    def _env(self, slot: _Slot) -> dict[str, str]:
        env = dict(os.environ)
        env["BALAGG_INSTANCE_ID"] = slot.instance_id
        env["BALAGG_WORKERS"] = "1"
        env["BALAGG_WORKER_PORT_BASE"] = "0"
        # the workers leave from one IP: together they keep each venue host's limits
        env["BALAGG_VENUE_LIMITS"] = json.dumps(self.venue_limits)
        if self.redis_url is not None:
            env["BALAGG_REDIS_URL"] = self.redis_url
        env[LISTEN_FDS_ENV] = ",".join(str(s.fileno()) for s in slot.sockets)
        return env

    def _start(self, slot: _Slot) -> None:
        parent = os.getpid()
        slot.proc = subprocess.Popen(
            [sys.executable, "-m", "app.workers"],
            stdin=subprocess.DEVNULL,
            env=self._env(slot),
            pass_fds=[s.fileno() for s in slot.sockets],
            preexec_fn=lambda: _worker_preexec(parent),
        )
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker %d started (pid %d) as instance %s", slot.index, slot.proc.pid,
                 slot.instance_id)  # fmt: skip

    def _reap(self, slot: _Slot, now: float) -> None:
        proc = slot.proc
        if proc is None or proc.poll() is None:
            return
        slot.proc = None
        lived = now - slot.started
        slot.delay = (
            _RESTART_DELAY_MIN_S
            if lived >= _HEALTHY_RUN_S
            else min(_RESTART_DELAY_MAX_S, slot.delay * 2)
        )
        slot.restart_at = now + slot.delay
        slot.restarts += 1
        log.warning(
            "worker %d (pid %d) exited with code %s after %.1f s; restarting in %.1f s "
            "(its accounts are taken over by the other workers when their leases expire)",
            slot.index, proc.pid, proc.returncode, lived, slot.delay,
        )  # fmt: skip

    def run(self, redis_alive: _RedisWatch | None = None) -> int:
        """Start every worker and keep them running until asked to stop; 0 if all
        workers then exit 0."""
        for slot in self.slots:
            self._start(slot)
        failed = False
        while not self._stop.wait(0.2):
            now = time.monotonic()
            if redis_alive is not None and not redis_alive.alive():
                log.error("embedded redis exited; stopping the workers")
                failed = True
                break
            for slot in self.slots:
                self._reap(slot, now)
                if slot.proc is None and slot.restart_at is not None and now >= slot.restart_at:
                    self._start(slot)
        return 1 if self.stop() or failed else 0

    def stop(self) -> bool:
        """SIGTERM every worker and wait for it; True if any did not exit 0 in time."""
        running = [s.proc for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        bad = False
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for proc in running:
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in %.0f s; killing it", proc.pid,
                          _STOP_TIMEOUT_S)  # fmt: skip
                proc.kill()
                code = proc.wait()
            if code != 0:
                log.error("worker pid %d exited with code %s on shutdown", proc.pid, code)
                bad = True
        for slot in self.slots:
            slot.proc = None
        return bad


class _RedisWatch:
    """The embedded Redis as the parent sees it: started once, watched, stopped last."""

    def __init__(self, embedded: EmbeddedRedis) -> None:
        self.embedded = embedded

    def alive(self) -> bool:
        proc = self.embedded.process
        return proc is not None and proc.poll() is None


def _void_predecessors(url: str, settings: Settings, accounts: Sequence[AccountConfig]) -> None:
    """Embedded Redis: every lease in it belongs to a process that is gone (the data
    directory is locked by this parent), so the workers may take the accounts at once."""
    from app.store import Keys

    keys = Keys(settings.key_prefix)
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        names = [keys.lease(a.id) for a in accounts]
        if names:
            client.delete(*names)
        client.delete(keys.instances)
    finally:
        client.close()


def bind_worker_ports(settings: Settings) -> list[socket.socket]:
    """One private listener per worker at ``worker_port_base + k`` (none when 0)."""
    from app.server import bind_listener

    if not settings.worker_port_base:
        return []
    own: list[socket.socket] = []
    try:
        for k in range(settings.workers):
            own.append(bind_listener(settings.host, settings.worker_port_base + k))
    except BaseException:
        for sock in own:
            sock.close()
        raise
    return own


def run_workers(settings: Settings, accounts: Sequence[AccountConfig]) -> int:
    """The parent of ``serve --workers N`` (N ≥ 2); returns the process exit code."""
    from app.server import bind_listener

    lock: DirectoryLock | None = None
    sockets: list[socket.socket] = []
    try:
        if settings.redis_url is None:
            lock = DirectoryLock(settings.data_dir).acquire()
        shared = bind_listener(settings.host, settings.port)
        sockets.append(shared)
        sockets += bind_worker_ports(settings)
    except DirectoryInUse as exc:
        sys.stderr.write(f"cannot start: {exc}\n")
        return 1
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if lock is not None:
            lock.release()
        reason = exc.strerror or type(exc).__name__
        where = f"{settings.host}:{settings.port}"
        if sockets:  # the shared port is bound: a worker port failed
            where = f"{settings.host}:{settings.worker_port_base}+"
        sys.stderr.write(f"cannot start: cannot listen on {where}: {reason}\n")
        return 1
    embedded: EmbeddedRedis | None = None
    handled = (signal.SIGINT, signal.SIGTERM)
    pool = WorkerPool(settings, sockets[0], sockets[1:], None)
    original = {sig: signal.signal(sig, pool.request_stop) for sig in handled}
    try:
        if settings.redis_url is None:
            embedded = EmbeddedRedis(settings.data_dir / "redis").start()
            log.info("started embedded redis (pid %s) on %s", embedded.pid, embedded.url)
            _void_predecessors(embedded.url, settings, accounts)
            pool.redis_url = embedded.url
        log.info("serving on %s:%d with %d workers", settings.host, settings.port,
                 settings.workers)  # fmt: skip
        return pool.run(_RedisWatch(embedded) if embedded is not None else None)
    finally:
        pool.stop()
        if embedded is not None:
            embedded.stop()
        for sock in sockets:
            sock.close()
        if lock is not None:
            lock.release()
        for sig, handler in original.items():
            signal.signal(sig, handler)
        log.info("all workers stopped")


def worker_main() -> int:
    """A worker: the full service on the listener(s) inherited from the parent."""
    from app.logs import setup_logging
    from app.server import serve_on
    from app.service import create_app

    fds = [int(x) for x in os.environ.pop(LISTEN_FDS_ENV, "").split(",") if x]
    if not fds:
        sys.stderr.write("app.workers is started by `serve --workers N`, not by hand\n")
        return 2
    settings, accounts = load_config()
    setup_logging(settings.log_level, settings.log_format)
    app = create_app(settings, accounts)
    sockets = [socket.socket(fileno=fd) for fd in fds]
    try:
        return serve_on(app, settings, sockets)
    finally:
        for sock in sockets:
            sock.close()


if __name__ == "__main__":
    sys.exit(worker_main())
