"""Venue limits end to end: what the service sends a venue host stays within its limits.

An sFOX simulator that records when each WebSocket upgrade and each REST snapshot request
arrives, and how many sockets are open at once; the real service with small limits set
by settings; a burst of resyncs for several accounts. A BitoPro account alongside shows
that waiting for sFOX never holds up another venue. ``serve --workers 2`` leaves from one
IP, so its workers together keep one host's limits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from app.accounts import AccountConfig
from app.services import Services
from app.simulators.runner import Simulators
from app.simulators.sfox import REST_PATH, WS_PATH, SfoxSimulator
from tests.integration.conftest import (
    account_for,
    fast_settings,
    free_port,
    metric,
    running_service,
    wait_state,
    wait_until,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SOCKETS = 3
CONNECTS = 3  # per WINDOW
RESTS = 2  # per WINDOW
WINDOW = 2.0
# Arrival at the simulator lags the limiter's grant by one loopback hop and a scheduler
# turn, which can bring two grants a window apart closer together by that much: the
# windows checked are shorter by this margin.
HOP_MARGIN = 0.25


class RecordingSfox(SfoxSimulator):
    """sFOX simulator that records every upgrade and REST request and the open sockets."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.upgrades: list[float] = []
        self.rests: list[float] = []
        self.open_now = 0
        self.open_max = 0

    def build_app(self) -> web.Application:
        app = super().build_app()

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path == REST_PATH:
                self.rests.append(time.monotonic())
                return await handler(request)
            if request.path != WS_PATH:
                return await handler(request)
            self.upgrades.append(time.monotonic())
            self.open_now += 1
            self.open_max = max(self.open_max, self.open_now)
            try:
                return await handler(request)  # returns when the socket has closed
            finally:
                self.open_now -= 1

        app.middlewares.append(record)
        return app


def most_in_any_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        best = max(best, sum(1 for t in ordered[i:] if t - start < window))
    return best


@pytest.fixture
async def sfox() -> AsyncIterator[RecordingSfox]:
    sim = RecordingSfox(ping_interval=1.0)
    for n in range(4):
        sim.add_account(f"sfox-key-{n}", {"usd": f"{n + 1}00.5", "btc": "0.125"})
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def sfox_account(sim: RecordingSfox, n: int) -> AccountConfig:
    return AccountConfig.model_validate(
        {
            "id": f"sfox-{n}", "venue": "sfox", "api_key": f"sfox-key-{n}",
            "ws_url": sim.ws_url, "rest_url": sim.rest_url,
        }
    )  # fmt: skip


def states(rt: Services, ids: list[str]) -> dict[str, str]:
    out = {}
    for account in ids:
        runner = rt.supervisor.runner(account)
        out[account] = str(runner.state) if runner is not None else "absent"
    return out


async def test_resync_burst_stays_within_the_sfox_limits_and_spares_other_venues(
    sfox: RecordingSfox,
    sims: Simulators,
    redis_url: str,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="app")
    accounts = [sfox_account(sfox, n) for n in range(4)]
    bitopro = account_for(sims, "bitopro")
    limits = {
        "sfox": {
            "connect": [f"{CONNECTS}/{WINDOW}"],
            "rest": [f"{RESTS}/{WINDOW}"],
            "sockets": SOCKETS,
        }
    }
    settings = fast_settings(redis_url, key_prefix, venue_limits=limits)
    ids = [a.id for a in accounts]
    async with running_service(settings, [*accounts, bitopro]) as rt:
        # four sFOX accounts, three sockets allowed: said at startup, never exceeded
        assert any(
            "4 sfox sockets are configured" in r.getMessage() and r.levelno == logging.WARNING
            for r in caplog.records
        )
        await wait_state(rt, bitopro.id, ["live"])

        async def three_live() -> bool:
            now = list(states(rt, ids).values())
            waiting = [s for s in now if s != "live"]
            return len(waiting) == 1 and waiting[0] in ("connecting", "stale")

        assert await wait_until(three_live, 20), states(rt, ids)
        [waiting] = [a for a, s in states(rt, ids).items() if s != "live"]
        assert states(rt, [waiting]) == {waiting: "connecting"}
        runner = rt.supervisor.runner(waiting)
        assert runner is not None and runner.attempts == 0  # it never opened a socket

        # a burst of resyncs for every account, and a few more while they reconnect
        bito_runner = rt.supervisor.runner(bitopro.id)
        assert bito_runner is not None
        bito_attempts = bito_runner.attempts
        started = time.monotonic()
        sfox_upgrades = len(sfox.upgrades)
        for _ in range(3):
            for account in [*ids, bitopro.id]:
                await rt.supervisor.resync(account)
            await asyncio.sleep(0.05)

        # the other venue reconnects at once while sFOX accounts wait for their budget
        async def bitopro_back() -> bool:
            return bito_runner.attempts > bito_attempts and str(bito_runner.state) == "live"

        assert await wait_until(bitopro_back, 5)

        live_most = 0

        async def settled() -> bool:
            nonlocal live_most
            now = states(rt, ids)
            live_most = max(live_most, sum(1 for s in now.values() if s == "live"))
            assert sfox.open_now <= SOCKETS
            return len(sfox.upgrades) >= sfox_upgrades + 6 and live_most > 0

        assert await wait_until(settled, 30)
        assert await wait_until(three_live, 20), states(rt, ids)
        assert live_most <= SOCKETS

        # at the venue: never more sockets at once, connections and REST per window
        assert sfox.open_max <= SOCKETS, sfox.open_max
        assert most_in_any_window(sfox.upgrades, WINDOW - HOP_MARGIN) <= CONNECTS
        assert most_in_any_window(sfox.rests, WINDOW - HOP_MARGIN) <= RESTS
        # the burst was spread out, not refused: it took more than one window
        assert time.monotonic() - started > WINDOW
        # the waits are visible: a metric per venue and kind, and a debug line
        assert metric(rt, "balagg_upstream_throttled_total", {"venue": "sfox", "kind": "connect"})
        assert metric(rt, "balagg_upstream_throttled_total", {"venue": "sfox", "kind": "sockets"})
        assert not metric(
            rt, "balagg_upstream_throttled_total", {"venue": "bitopro", "kind": "connect"}
        )
        assert any("connect limit reached" in r.getMessage() for r in caplog.records)


def _serve_workers(
    accounts: Sequence[Mapping[str, object]],
    limits: Mapping[str, object],
    data_dir: Path,
    port: int,
    log_path: Path,
) -> subprocess.Popen[bytes]:
    """``serve --workers 2`` as a real process, its output in ``log_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    env.update(
        BALAGG_ACCOUNTS=orjson.dumps(accounts).decode(),
        BALAGG_VENUE_LIMITS=orjson.dumps(limits).decode(),
        BALAGG_DATA_DIR=str(data_dir),
        BALAGG_PORT=str(port),
        BALAGG_INSTANCE_ID="vl",
        BALAGG_LEASE_MS="2000",
        BALAGG_HEARTBEAT="1",
        BALAGG_BACKOFF_INITIAL="0.05",
        BALAGG_BACKOFF_MAX="0.5",
    )
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--workers", "2"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=log,
            stderr=log,
        )


async def test_workers_on_one_host_keep_the_venue_limits_together(
    sfox: RecordingSfox, tmp_path: Path
) -> None:
    for n in range(4, 8):
        sfox.add_account(f"sfox-key-{n}", {"usd": f"{n + 1}00.5", "btc": "0.125"})
    accounts = [
        {"id": f"sfox-{n}", "venue": "sfox", "api_key": f"sfox-key-{n}",
         "ws_url": sfox.ws_url, "rest_url": sfox.rest_url}
        for n in range(8)
    ]  # fmt: skip
    limits = {"sfox": {"connect": [f"{CONNECTS}/{WINDOW}"], "rest": [f"{RESTS}/{WINDOW}"]}}
    port = free_port()
    log_path = tmp_path / "serve.log"
    proc = _serve_workers(accounts, limits, tmp_path / "data", port, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def owners() -> dict[str, tuple[str, str]]:
                try:
                    async with http.get(base + "/v1/accounts") as r:
                        doc = await r.json() if r.status == 200 else {"accounts": []}
                except aiohttp.ClientError:
                    return {}
                return {a["account"]: (a.get("owner") or "", a["state"]) for a in doc["accounts"]}

            async def spread_and_live() -> bool:
                now = await owners()
                live = len(now) == 8 and all(state == "live" for _, state in now.values())
                return live and len({owner for owner, _ in now.values()}) == 2

            assert await wait_until(spread_and_live, 90), log_path.read_text()[-3000:]
            before = len(sfox.upgrades)
            for account in accounts:  # each worker reconnects the accounts it owns
                async with http.post(f"{base}/v1/accounts/{account['id']}/resync") as r:
                    assert r.status == 202, await r.text()

            async def reconnected() -> bool:
                return len(sfox.upgrades) >= before + 8 and await spread_and_live()

            assert await wait_until(reconnected, 60), log_path.read_text()[-3000:]
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # one IP for both workers: the host's limits hold for the two together
    assert most_in_any_window(sfox.upgrades, WINDOW - HOP_MARGIN) <= CONNECTS
    assert most_in_any_window(sfox.rests, WINDOW - HOP_MARGIN) <= RESTS
