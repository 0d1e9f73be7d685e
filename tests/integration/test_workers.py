"""``serve --workers 2``: real processes, one port, one embedded Redis, leases between workers.

The parent is started as a user would (``python -m app serve --workers 2`` with the
embedded Redis in a temporary data directory) against the real simulators. The test
checks the process tree with psutil, the upstream sockets with the simulators' own
connection counts, and the state through REST against the simulators' truth.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import pytest

from app.simulators.runner import Simulators
from tests.integration.conftest import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
LEASE_MS = 3000
VENUES = ("bitopro", "sfox", "deltadefi")
ASSET = {"bitopro": "BTC", "sfox": "btc", "deltadefi": "ada"}


class Deployment:
    """Twelve simulator accounts and one ``serve --workers 2`` parent."""

    def __init__(self, sims: Simulators, tmp: Path) -> None:
        self.sims = sims
        self.tmp = tmp
        self.keys: dict[str, tuple[str, str]] = {}
        accounts: list[dict[str, Any]] = []
        for i in range(12):
            venue = VENUES[i % 3]
            sim = sims[venue]
            if venue == "bitopro":
                key = sims.bitopro.add_account(
                    f"wk-bp-{i}", f"wk-bp-secret-{i}", f"wk{i}@example.com", {"BTC": "1"}
                )
            elif venue == "sfox":
                key = sims.sfox.add_account(f"wk-sfox-{i}", {"btc": "1", "usd": "10"})
            else:
                key = sims.deltadefi.add_account(f"wk-ddf-{i}", {"ada": "5"})
            account_id = f"acct-{i:02d}"
            self.keys[account_id] = (venue, key)
            described = sims.describe()[venue]
            accounts.append(
                {
                    "id": account_id,
                    "venue": venue,
                    "ws_url": described["ws_url"],
                    "rest_url": described["rest_url"],
                    **sim.credentials(key),
                }
            )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
        env.update(
            BALAGG_ACCOUNTS=orjson.dumps(accounts).decode(),
            BALAGG_DATA_DIR=str(tmp / "data"),
            BALAGG_PORT=str(self.port),
            BALAGG_INSTANCE_ID="wk",
            BALAGG_LEASE_MS=str(LEASE_MS),
            BALAGG_HEARTBEAT="1",
            BALAGG_READ_TIMEOUT="3",
            BALAGG_BACKOFF_INITIAL="0.05",
            BALAGG_BACKOFF_MAX="0.5",
        )
        self.log_path = tmp / "serve.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--workers", "2"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )
        self.parent = psutil.Process(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def workers(self) -> list[psutil.Process]:
        out = []
        for child in self.parent.children():
            try:
                if "app.workers" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                    out.append(child)
            except psutil.NoSuchProcess:
                continue
        return out

    def open_counts(self) -> dict[str, int]:
        return {
            a: self.sims[venue].connection_counts(key).open for a, (venue, key) in self.keys.items()
        }

    async def owners(self, http: aiohttp.ClientSession) -> dict[str, tuple[str, str]]:
        async with http.get(self.url + "/v1/accounts") as response:
            doc = await response.json()
        return {a["account"]: (a.get("owner") or "", a["state"]) for a in doc["accounts"]}

    async def push(self, n: int) -> None:
        for c in range(n):
            account = f"acct-{c % 12:02d}"
            venue, key = self.keys[account]
            await self.sims[venue].push(key, {ASSET[venue]: f"{c + 7}.{c % 89:02d}"})

    async def converged(self, http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(self.url + "/v1/balances") as response:
                body = await response.json()
        except (aiohttp.ClientError, OSError):
            return False
        served = {
            (b["account"], b["asset"]): Decimal(b["total"])
            for b in body["balances"]
            if Decimal(b["total"]) != 0
        }
        truth = {
            (account, row.asset): row.total
            for account, (venue, key) in self.keys.items()
            for row in self.sims[venue].truth(key)
            if row.total != 0
        }
        return served == truth

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for child in self.parent.children(recursive=True) if self.parent.is_running() else []:
            child.kill()


async def _all_live(dep: Deployment, http: aiohttp.ClientSession) -> bool:
    try:
        owners = await dep.owners(http)
    except (aiohttp.ClientError, OSError):
        return False
    return (
        len(owners) == 12
        and all(state == "live" for _o, state in owners.values())
        and all(n == 1 for n in dep.open_counts().values())
    )


async def _spread(dep: Deployment, http: aiohttp.ClientSession) -> bool:
    owners = await dep.owners(http)
    per = {"wk-w0": 0, "wk-w1": 0}
    for owner, state in owners.values():
        if owner in per and state == "live":
            per[owner] += 1
    return all(n >= 4 for n in per.values()) and sum(per.values()) == 12


def _shared_port_connections(proc: psutil.Process, port: int) -> int:
    try:
        conns = proc.net_connections("tcp")
    except psutil.NoSuchProcess:
        return 0
    return sum(1 for c in conns if c.status == "ESTABLISHED" and c.laddr.port == port)


async def test_two_workers_share_the_port_the_accounts_and_fail_over(
    sims: Simulators, tmp_path: Path
) -> None:
    dep = Deployment(sims, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            assert await wait_until(lambda: _all_live(dep, http), 40, 0.2), dep.log()
            workers = dep.workers()
            assert len(workers) == 2, dep.log()
            # exactly one upstream socket per account, spread over both workers by leases
            assert await wait_until(lambda: _spread(dep, http), 20, 0.2), dep.log()
            for _ in range(10):
                assert all(n == 1 for n in dep.open_counts().values())
                await asyncio.sleep(0.1)

            # both workers accept REST connections on the one shared port
            held: list[aiohttp.ClientSession] = []
            try:
                for _ in range(60):
                    session = aiohttp.ClientSession()
                    held.append(session)
                    async with session.get(dep.url + "/healthz") as response:
                        assert response.status == 200
                    counts = [_shared_port_connections(w, dep.port) for w in workers]
                    if all(n > 0 for n in counts):
                        break
                assert all(n > 0 for n in counts), counts
            finally:
                for session in held:
                    await session.close()

            # SIGKILL one worker: the parent restarts it, the other takes its accounts over
            await dep.push(24)
            victim = workers[0]
            victim_id = "wk-w0" if "wk-w0" in " ".join(victim.environ().values()) else "wk-w1"
            owners = await dep.owners(http)
            victims = [a for a, (o, _s) in owners.items() if o == victim_id]
            assert victims
            victim.send_signal(signal.SIGKILL)

            async def restarted() -> bool:
                now = dep.workers()
                return len(now) == 2 and victim.pid not in {w.pid for w in now}

            assert await wait_until(restarted, 20, 0.1), dep.log()
            assert "restarting in" in dep.log()

            async def taken_over() -> bool:
                try:
                    now = await dep.owners(http)
                except (aiohttp.ClientError, OSError):
                    return False
                return all(now[a][1] == "live" and now[a][0] != "" for a in victims) and all(
                    n == 1 for n in dep.open_counts().values()
                )

            assert await wait_until(taken_over, LEASE_MS / 1000 + 15, 0.1), dep.log()
            await dep.push(36)
            assert await wait_until(lambda: dep.converged(http), 20, 0.2), dep.log()
            assert all(n == 1 for n in dep.open_counts().values())
            # the restarted worker gets its fair share back
            assert await wait_until(lambda: _spread(dep, http), 20, 0.2), dep.log()

        # SIGTERM the parent: every worker exits 0, then Redis stops; nothing is left
        tree = dep.parent.children(recursive=True)
        assert any("redis-server" in " ".join(p.cmdline()) for p in tree)
        dep.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(dep.proc.wait, 60) == 0, dep.log()

        async def all_gone() -> bool:
            return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)

        await wait_until(all_gone, 10, 0.05)
        left = [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == [], dep.log()
        assert all(n == 0 for n in dep.open_counts().values())
        assert "exited with code" not in dep.log().split("shutting down", 1)[-1]
    finally:
        dep.stop()


def test_workers_parent_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    env.update(
        BALAGG_ACCOUNTS="[]",
        BALAGG_DATA_DIR=str(tmp_path / "data"),
        BALAGG_PORT=str(port),
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "app", "serve", "--workers", "2"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(
        f"cannot start: cannot listen on 127.0.0.1:{port}"
    ), proc.stderr
    # nothing was started: no Redis files in the data directory
    assert not (tmp_path / "data" / "redis").exists()
