"""Acceptance: a random walk on all four venues, then ``GET /v1/balances?at=`` replays it.

The real simulators and the real service over real sockets; REST state is recorded at
random instants (each taken when the service has folded everything the simulators sent,
so the instant is unambiguous), and afterwards the state history gives for each instant
must equal the recorded one exactly — every field of every record.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from app.history.times import iso_us
from app.service import create_app
from app.simulators.runner import Simulators, start_simulators
from app.simulators.walk import RandomWalk
from tests.history.conftest import serve
from tests.integration.conftest import all_default_accounts, fast_settings, truth_state
from tests.pgserver import PrivatePostgres

VENUES = ("bitopro", "sfox", "deltadefi", "solanatracker")
STEPS = 160
RECORDINGS = 50


def _sort(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: (r["account"], r["wallet"], r["asset"]))


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    assert await check(), "condition not met before the deadline"


async def _settled(http: aiohttp.ClientSession, base: str, sims: Simulators) -> bool:
    """REST shows exactly the simulators' truth and every account is live."""
    _s, body = await _get(http, base + "/v1/balances")
    ours: dict[str, dict[tuple[str, str], tuple[Decimal, Decimal, Decimal]]] = {}
    for r in body["balances"]:
        if r["stale"]:
            return False
        row = (Decimal(r["total"]), Decimal(r["available"]), Decimal(r["locked"]))
        ours.setdefault(r["venue"], {})[(r["wallet"], r["asset"])] = row
    zero = (Decimal(0), Decimal(0), Decimal(0))
    for venue in VENUES:
        truth = truth_state(sims, venue)
        mine = ours.get(venue, {})
        if venue == "solanatracker":  # a sold-out mint is a zero balance, not absent
            truth = {k: v for k, v in truth.items() if v != zero}
            mine = {k: v for k, v in mine.items() if v != zero}
        if mine != truth:
            return False
    return True


async def _record(
    http: aiohttp.ClientSession, base: str, sims: Simulators, app: Any
) -> tuple[str, list[dict[str, Any]], int]:
    """An instant and the REST state at it, once nothing was in flight around the read.

    A change is stamped when its write is prepared, a moment before it becomes visible;
    a read is kept only if, after every write in flight has landed, Redis holds no change
    the read did not show (else it is taken again).
    """
    runtime = app.state.services
    for _ in range(50):
        await _until(lambda: _settled(http, base, sims))
        at = iso_us(time.time_ns() // 1000)
        status, body = await _get(http, base + "/v1/balances")
        assert status == 200
        assert await runtime.writer.drain(5)
        if await runtime.reader.current_seq() == body["seq"]:
            return at, _sort(body["balances"]), body["seq"]
    raise AssertionError("the state never held still for a recording")


async def walk_and_replay(
    history_url: str,
    redis_url: str,
    key_prefix: str,
    seed: int,
    midway: Callable[[int], Awaitable[None]] | None = None,
) -> None:
    sims = await start_simulators(ping_interval=1.0, seed=seed)
    try:
        settings = fast_settings(redis_url, key_prefix, history=True, history_url=history_url)
        app = create_app(settings, all_default_accounts(sims))
        async with serve(app) as base, aiohttp.ClientSession() as http:
            # sFOX announces its web3 wallets right after the subscription
            await _until(lambda: _settled(http, base, sims))
            walk = RandomWalk(sims.bitopro, sims.sfox, sims.deltadefi, sims.solanatracker,
                              seed=seed)  # fmt: skip
            rng = random.Random(seed)
            chosen = set(rng.sample(range(STEPS), RECORDINGS))
            recorded: list[tuple[str, list[dict[str, Any]], int]] = []
            for step in range(STEPS):
                if midway is not None:
                    await midway(step)
                await walk.step()
                if step in chosen:
                    recorded.append(await _record(http, base, sims, app))
            final = recorded[-1]

            async def caught_up() -> bool:
                status, body = await _get(http, f"{base}/v1/balances?at={final[0]}")
                return status == 200 and _sort(body["balances"]) == final[1]

            await _until(caught_up, 60)
            distinct = {str(r[1]) for r in recorded}
            assert len(distinct) > RECORDINGS // 2, "the walk hardly changed anything"
            for at, balances, seq in recorded:
                status, body = await _get(http, f"{base}/v1/balances?at={at}")
                assert status == 200, body
                assert body["as_of"] == at
                assert _sort(body["balances"]) == balances, at
                assert body["seq"] <= seq  # statuses and events may follow the last change
            status, gaps = await _get(http, base + "/v1/history/gaps")
            assert status == 200 and gaps["gaps"] == []
    finally:
        await sims.stop()


@pytest.mark.slow
async def test_balances_at_replays_a_random_walk(
    history_url: str, redis_url: str, key_prefix: str
) -> None:
    await walk_and_replay(history_url, redis_url, key_prefix, seed=21)


@pytest.mark.slow
async def test_database_killed_mid_walk_loses_nothing(redis_url: str, key_prefix: str) -> None:
    server = PrivatePostgres()
    server.start()
    try:
        url = server.create_database()

        async def midway(step: int) -> None:
            if step == STEPS // 3:
                await asyncio.to_thread(server.stop)
            elif step == 2 * STEPS // 3:
                await asyncio.to_thread(server.start)

        await walk_and_replay(url, redis_url, key_prefix, seed=22, midway=midway)
    finally:
        server.destroy()
