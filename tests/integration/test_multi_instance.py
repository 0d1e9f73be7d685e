"""Several instances against one Redis: one socket per account, failover, fencing, one stream."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from app.simulators.runner import Simulators
from app.store import BalanceReader, Keys
from tests.integration.conftest import UNLIMITED, State, free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
LEASE_MS = 3000
VENUES = ("bitopro", "sfox", "deltadefi")


class Fleet:
    """Thirty accounts on the simulators and N service processes sharing one Redis."""

    def __init__(self, sims: Simulators, redis_url: str, prefix: str, tmp: Path) -> None:
        self.sims = sims
        self.redis_url = redis_url
        self.prefix = prefix
        self.tmp = tmp
        self.keys: dict[str, tuple[str, str]] = {}  # account id -> (venue, credential)
        self.accounts: list[dict[str, Any]] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        for i in range(30):
            venue = VENUES[i % 3]
            sim = sims[venue]
            if venue == "bitopro":
                key = sims.bitopro.add_account(
                    f"mi-bp-{i}",
                    f"mi-bp-secret-{i}",
                    f"mi{i}@example.com",
                    {"BTC": "1", "ETH": "2"},
                )
            elif venue == "sfox":
                key = sims.sfox.add_account(f"mi-sfox-{i}", {"btc": "1", "usd": "10"})
            else:
                key = sims.deltadefi.add_account(f"mi-ddf-{i}", {"ada": "5", "usdm": "7"})
            account_id = f"acct-{i:02d}"
            self.keys[account_id] = (venue, key)
            described = sims.describe()[venue]
            self.accounts.append(
                {
                    "id": account_id,
                    "venue": venue,
                    "ws_url": described["ws_url"],
                    "rest_url": described["rest_url"],
                    **sim.credentials(key),
                }
            )

    def start(self, name: str) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
        env.update(
            BALAGG_ACCOUNTS=orjson.dumps(self.accounts).decode(),
            BALAGG_REDIS_URL=self.redis_url,
            BALAGG_KEY_PREFIX=self.prefix,
            BALAGG_INSTANCE_ID=name,
            BALAGG_PORT=str(port),
            BALAGG_LEASE_MS=str(LEASE_MS),
            BALAGG_HEARTBEAT="1",
            BALAGG_READ_TIMEOUT="3",
            BALAGG_BACKOFF_INITIAL="0.05",
            BALAGG_BACKOFF_MAX="0.5",
            BALAGG_HISTORY="off",  # history's own multi-writer tests: tests/history
            # 30 accounts rebalanced and taken over within seconds: beyond sFOX's REST limit
            # of 5 per 10 s, which test_venue_limits.py checks on its own
            BALAGG_VENUE_LIMITS=orjson.dumps(
                {v: UNLIMITED for v in ("bitopro", "sfox", "deltadefi", "solanatracker")}
            ).decode(),
        )
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        self.ports[name] = port

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def open_counts(self) -> dict[str, int]:
        return {
            a: self.sims[venue].connection_counts(key).open for a, (venue, key) in self.keys.items()
        }

    async def owners(self, http: aiohttp.ClientSession, via: str) -> dict[str, tuple[str, str]]:
        async with http.get(self.url(via) + "/v1/accounts") as response:
            doc = await response.json()
        return {a["account"]: (a.get("owner") or "", a["state"]) for a in doc["accounts"]}

    def truth(self) -> dict[str, State]:
        out: dict[str, State] = {}
        for account, (venue, key) in self.keys.items():
            out[account] = {
                (r.wallet, r.asset): (r.total, r.available, r.locked)
                for r in self.sims[venue].truth(key)
            }
        return out

    async def redis_state(self, client: aioredis.Redis) -> dict[str, State]:
        snap = await BalanceReader(client, Keys(self.prefix)).snapshot(list(self.keys))
        out: dict[str, State] = {a: {} for a in self.keys}
        for r in snap.records:
            out[r.account][(r.wallet, r.asset)] = (r.total, r.available, r.locked)
        return out

    async def push_some(self, n: int, counter: list[int]) -> None:
        for _ in range(n):
            counter[0] += 1
            c = counter[0]
            account = f"acct-{c % 30:02d}"
            venue, key = self.keys[account]
            amount = f"{c}.{c % 97:02d}"
            asset = {"bitopro": "BTC", "sfox": "btc", "deltadefi": "ada"}[venue]
            await self.sims[venue].push(key, {asset: amount})

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
async def fleet(
    sims: Simulators, redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[Fleet]:
    f = Fleet(sims, redis_url, key_prefix, tmp_path)
    try:
        yield f
    finally:
        await asyncio.to_thread(f.stop_all)


async def _all_live_once(fleet: Fleet, http: aiohttp.ClientSession, via: str) -> bool:
    try:
        owners = await fleet.owners(http, via)
    except (aiohttp.ClientError, OSError):
        return False
    counts = fleet.open_counts()
    return all(state == "live" for _o, state in owners.values()) and all(
        n == 1 for n in counts.values()
    )


async def _converged(fleet: Fleet, client: aioredis.Redis) -> bool:
    return await fleet.redis_state(client) == fleet.truth()


async def test_three_instances_share_thirty_accounts_and_fail_over(
    fleet: Fleet, redis_url: str
) -> None:
    for name in ("i1", "i2", "i3"):
        fleet.start(name)
    client = aioredis.Redis.from_url(redis_url)
    async with aiohttp.ClientSession() as http:
        assert await wait_until(lambda: _all_live_once(fleet, http, "i2"), 40, 0.2), fleet.log(
            "i1"
        )[-2000:]
        # never two upstream sockets for one account, even while replicas that started
        # together hand accounts over (an account moving has none for a moment) ...
        for _ in range(10):
            counts = fleet.open_counts()
            assert all(n <= 1 for n in counts.values()), counts
            await asyncio.sleep(0.1)

        async def one_each() -> bool:
            counts = fleet.open_counts()
            assert all(n <= 1 for n in counts.values()), counts
            return all(n == 1 for n in counts.values())

        # ... and exactly one each once it settled
        assert await wait_until(one_each, 20, 0.1), fleet.open_counts()
        per_instance: dict[str, int] = {}
        owners: dict[str, tuple[str, str]] = {}

        async def spread() -> bool:
            # replicas that started together rebalance one account per tick: let it settle
            nonlocal owners, per_instance
            owners = await fleet.owners(http, "i3")
            per_instance = {name: 0 for name in ("i1", "i2", "i3")}
            for owner, state in owners.values():
                if owner in per_instance and state == "live":
                    per_instance[owner] += 1
            return all(8 <= n <= 12 for n in per_instance.values())

        assert await wait_until(spread, 15, 0.2), per_instance
        assert all(n == 1 for n in fleet.open_counts().values())
        # every instance serves the same state
        bodies = []
        for name in ("i1", "i2", "i3"):
            async with http.get(fleet.url(name) + "/v1/balances") as response:
                bodies.append({(b["account"], b["asset"]): b["total"]
                               for b in (await response.json())["balances"]})  # fmt: skip
        assert await wait_until(lambda: _true(True))
        assert bodies[0].keys() == bodies[1].keys() == bodies[2].keys()

        # a stream client on a surviving instance, which will resume with ?since=
        received: dict[tuple[str, str, str], str] = {}
        last_seq = 0
        ws = await http.ws_connect(fleet.url("i2").replace("http", "ws") + "/v1/stream")
        first = orjson.loads((await ws.receive()).data)
        assert first["type"] == "snapshot"
        for b in first["balances"]:
            received[(b["account"], b["wallet"], b["asset"])] = b["total"]
        last_seq = first["seq"]

        counter = [0]
        await fleet.push_some(60, counter)
        victims = [a for a, (o, _s) in owners.items() if o == "i1"]
        fleet.procs["i1"].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()

        async def taken_over() -> bool:
            now = await fleet.owners(http, "i2")
            return all(now[a][0] in ("i2", "i3") and now[a][1] == "live" for a in victims)

        pushing = asyncio.create_task(_keep_pushing(fleet, counter))
        # read part of the stream, drop the client, keep changes flowing, then resume
        for _ in range(20):
            msg = orjson.loads((await ws.receive(timeout=10)).data)
            last_seq = _apply(msg, received, last_seq)
        await ws.close()
        assert await wait_until(taken_over, LEASE_MS / 1000 + 10, 0.1)
        takeover_s = time.monotonic() - killed_at
        pushing.cancel()
        await fleet.push_some(30, counter)
        assert takeover_s <= LEASE_MS / 1000 + 2 + 1.5, takeover_s  # + polling slack
        assert all(n == 1 for n in fleet.open_counts().values())
        assert await wait_until(lambda: _converged(fleet, client), 20, 0.2)

        ws = await http.ws_connect(
            fleet.url("i2").replace("http", "ws") + f"/v1/stream?since={last_seq}"
        )
        current = await BalanceReader(client, Keys(fleet.prefix)).current_seq()
        while last_seq < current:
            msg = orjson.loads((await ws.receive(timeout=10)).data)
            if msg["type"] == "snapshot":
                received = {(b["account"], b["wallet"], b["asset"]): b["total"]
                            for b in msg["balances"]}  # fmt: skip
                last_seq = msg["seq"]
            else:
                last_seq = _apply(msg, received, last_seq)
        await ws.close()
        truth = fleet.truth()
        expected = {(a, w, asset): str(v[0].normalize()) if v[0] else "0"
                    for a, rows in truth.items() for (w, asset), v in rows.items()}  # fmt: skip
        assert {k: Decimal(v) for k, v in received.items()} == {
            k: Decimal(v) for k, v in expected.items()
        }
    await client.aclose()


async def _true(value: bool) -> bool:
    return value


async def _keep_pushing(fleet: Fleet, counter: list[int]) -> None:
    while True:
        await fleet.push_some(3, counter)
        await asyncio.sleep(0.02)


def _apply(msg: dict[str, Any], state: dict[tuple[str, str, str], str], last: int) -> int:
    if msg["type"] in ("balance", "removed", "status", "event"):
        assert msg["seq"] > last, (msg["seq"], last)  # in order, each once
        if msg["type"] == "balance":
            b = msg["balance"]
            state[(b["account"], b["wallet"], b["asset"])] = b["total"]
        elif msg["type"] == "removed":
            state.pop((msg["account"], msg["wallet"], msg["asset"]), None)
        return int(msg["seq"])
    return last


async def test_frozen_owner_is_fenced_and_steps_down(fleet: Fleet, redis_url: str) -> None:
    for name in ("i1", "i2"):
        fleet.start(name)
    client = aioredis.Redis.from_url(redis_url)
    async with aiohttp.ClientSession() as http:
        assert await wait_until(lambda: _all_live_once(fleet, http, "i2"), 40, 0.2)

        async def both_own_some() -> bool:
            # on a loaded machine one instance may take every account before the other
            # has joined; the fair share hands some over within a lease or two
            if not await _all_live_once(fleet, http, "i2"):
                return False
            try:
                owners = await fleet.owners(http, "i2")
            except (aiohttp.ClientError, OSError):
                return False
            return {o for o, _s in owners.values()} == {"i1", "i2"}

        assert await wait_until(both_own_some, 40, 0.2)
        owners = await fleet.owners(http, "i2")
        frozen = [a for a, (o, _s) in owners.items() if o == "i1"]
        assert frozen
        fleet.procs["i1"].send_signal(signal.SIGSTOP)
        counter = [0]

        async def taken_over() -> bool:
            now = await fleet.owners(http, "i2")
            return all(now[a][0] == "i2" and now[a][1] == "live" for a in frozen)

        assert await wait_until(taken_over, LEASE_MS / 1000 + 10, 0.1)
        # changes the frozen instance still receives on its old sockets while asleep
        for account in frozen:
            venue, key = fleet.keys[account]
            asset = {"bitopro": "BTC", "sfox": "btc", "deltadefi": "ada"}[venue]
            await fleet.sims[venue].push(key, {asset: "424242.42"})
        await fleet.push_some(30, counter)
        fleet.procs["i1"].send_signal(signal.SIGCONT)

        async def fenced_and_stepped_down() -> bool:
            try:
                async with http.get(fleet.url("i1") + "/metrics") as response:
                    text = await response.text()
            except (aiohttp.ClientError, OSError):
                return False
            fenced = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("balagg_fenced_writes_total")
            )
            held = [
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("balagg_leases_held")
            ]
            return fenced > 0 and held == [0.0]

        assert await wait_until(fenced_and_stepped_down, 20, 0.2), fleet.log("i1")[-3000:]
        assert await wait_until(lambda: _converged(fleet, client), 20, 0.2)
        await asyncio.sleep(1.0)
        counts = fleet.open_counts()
        assert all(n <= 1 for n in counts.values()), counts  # never two sockets for one

        async def one_each() -> bool:
            return all(n == 1 for n in fleet.open_counts().values())

        assert await wait_until(one_each, 20, 0.1), fleet.open_counts()
        assert await _converged(fleet, client)
    await client.aclose()
