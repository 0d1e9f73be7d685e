"""Child processes of the bench: Redis, the simulator host, the service, the bare app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from app.redis_server import EmbeddedRedis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports."""
    for _ in range(200):
        base = free_port()
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no run of free ports")


def raise_fd_limit() -> int:
    """Raise the soft fd limit to the hard one (inherited by every child)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


class Child:
    """A child process started in its own process group, stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None):
        self.log = log
        out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=out,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        if log is not None and not isinstance(out, int):
            out.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def first_line(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() or self.proc.poll() is not None:
                break
        if not line.strip():
            raise RuntimeError(f"child {self.proc.args!r} printed nothing: {self.tail()}")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-2000:]

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Stack:
    """Redis (AOF off) + the simulator host; services are started per phase."""

    def __init__(self, ping: float) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="balagg-bench-"))
        self.redis = EmbeddedRedis(self.tmp / "redis", appendonly=False)
        self.ping = ping
        self.sim: Child | None = None
        self.ws_url = ""
        self.rest_url = ""
        self.bench_url = ""

    def start(self) -> None:
        self.redis.start()
        port = free_ports(4)
        self.sim = Child(
            [
                sys.executable,
                "-m",
                "bench.simhost",
                "--port",
                str(port),
                "--bench-port",
                str(free_port()),
                "--ping",
                str(self.ping),
            ],
            log=self.tmp / "simhost.log",
        )
        info = self.sim.first_line()
        self.ws_url = info["bitopro"]["ws_url"]
        self.rest_url = info["bitopro"]["rest_url"]
        self.bench_url = info["bench_url"]

    def stop(self) -> None:
        if self.sim is not None:
            self.sim.stop()
        self.redis.stop()
        if os.environ.get("BENCH_KEEP_TMP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)


class Service:
    """``python -m app serve [--workers N]`` with the given accounts, on a free port.

    With ``workers`` > 1 each worker also listens on a private port
    (``BALAGG_WORKER_PORT_BASE``), so the bench can read every worker's ``/metrics``.
    """

    def __init__(
        self,
        stack: Stack,
        accounts: list[dict[str, Any]],
        prefix: str,
        heartbeat: float = 20.0,
        workers: int = 1,
        history: bool = True,
    ) -> None:
        self.port = free_port()
        self.prefix = prefix
        self.workers = workers
        # a file, not BALAGG_ACCOUNTS: one environment string is limited to 128 KiB
        accounts_file = stack.tmp / f"accounts-{prefix}.json"
        accounts_file.write_text(json.dumps({"accounts": accounts}))
        env = {
            "BALAGG_REDIS_URL": stack.redis.url,
            "BALAGG_ACCOUNTS_FILE": str(accounts_file),
            "BALAGG_PORT": str(self.port),
            "BALAGG_HOST": "127.0.0.1",
            "BALAGG_KEY_PREFIX": prefix,
            "BALAGG_LOG_LEVEL": "WARNING",
            "BALAGG_DATA_DIR": str(stack.tmp / f"data-{prefix}"),
            "BALAGG_HEARTBEAT": str(heartbeat),
            "BALAGG_STREAM_MAXLEN": "1000000",
            "BALAGG_INSTANCE_ID": prefix,
            "BALAGG_WORKERS": str(workers),
            "BALAGG_HISTORY": "on" if history else "off",
            # the simulator host is no venue: the venues' connection and REST budgets
            # (app/ratelimit.py) would spread 2,000 connects over an hour
            "BALAGG_VENUE_LIMITS": json.dumps(
                {"bitopro": {"connect": ["1000000/1"], "rest": ["1000000/1"]}}
            ),
        }
        self.base = f"http://127.0.0.1:{self.port}"
        self.live = 0  # accounts live at the last look of wait_live
        self.metric_bases = [self.base]
        if workers > 1:
            first = free_ports(workers)
            env["BALAGG_WORKER_PORT_BASE"] = str(first)
            self.metric_bases = [f"http://127.0.0.1:{first + k}" for k in range(workers)]
        self.child = Child(
            [sys.executable, "-m", "app", "serve"], env=env, log=stack.tmp / f"{prefix}.log"
        )

    @property
    def pid(self) -> int:
        return self.child.pid

    def processes(self) -> list[psutil.Process]:
        """The processes doing the work: the service, or its workers (not Redis)."""
        parent = psutil.Process(self.child.pid)
        if self.workers == 1:
            return [parent]
        return [p for p in parent.children() if "app.workers" in " ".join(p.cmdline())]

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        """Bytes resident in the service's processes (the parent of workers included)."""
        procs = self.processes()
        if self.workers > 1:
            procs.append(psutil.Process(self.child.pid))
        return sum(p.memory_info().rss for p in procs)

    async def wait_spread(self, count: int, timeout: float = 120.0) -> dict[str, int]:
        """With workers: until every worker holds about its fair share of ``count``."""
        fair = -(-count // self.workers)
        deadline = time.monotonic() + timeout
        per: dict[str, int] = {}
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                async with http.get(self.base + "/v1/accounts") as r:
                    doc = await r.json()
                per = {}
                for a in doc["accounts"]:
                    if a["state"] == "live" and a.get("owner"):
                        per[a["owner"]] = per.get(a["owner"], 0) + 1
                if (
                    sum(per.values()) >= count
                    and len(per) == self.workers
                    and max(per.values()) <= fair
                ):
                    return per
                await asyncio.sleep(0.5)
        return per

    async def wait_live(
        self, count: int, timeout: float = 120.0, interval: float | None = None
    ) -> None:
        """Until ``/v1/accounts`` lists ``count`` accounts, all live.

        Polled every ``interval`` s; by default 0.2 s, and less often for thousands of
        accounts: the listing of 10,000 accounts is a few MB the service would otherwise
        build five times a second while it starts.
        """
        if interval is None:
            interval = max(0.2, count / 5000)
        deadline = time.monotonic() + timeout
        last = ""
        self.live = 0
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.child.proc.poll() is not None:
                    raise RuntimeError(f"service exited: {self.child.tail()}")
                try:
                    async with http.get(self.base + "/v1/accounts") as r:
                        if r.status == 200:
                            doc = await r.json()
                            states = [a["state"] for a in doc["accounts"]]
                            live = sum(1 for s in states if s == "live")
                            last = f"{live}/{len(states)} live"
                            self.live = live
                            if live >= count:
                                return
                except (aiohttp.ClientError, OSError):
                    pass
                await asyncio.sleep(interval)
        raise TimeoutError(f"service not live in {timeout}s ({last}): {self.child.tail()}")

    def stop(self) -> None:
        self.child.stop()
