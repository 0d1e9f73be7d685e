"""The demo's random walk: balances move, stay exact and never go negative."""

from __future__ import annotations

import random
from decimal import Decimal

import aiohttp

from app.domain import adds_up
from app.simulators.runner import start_simulators
from app.simulators.walk import RandomWalk, walk_amount, walk_locked
from tests.polling import eventually
from tests.simulators.wsclient import recv_json


def test_walk_amount_is_exact_and_non_negative() -> None:
    rng = random.Random(3)
    value = Decimal("0.00000003")
    for _ in range(2_000):
        value = walk_amount(rng, value, 8)
        assert value >= 0 and value == value.quantize(Decimal("1e-8"))
        locked = walk_locked(rng, value, value, 8)
        assert 0 <= locked <= value


async def test_walk_moves_every_venue(session: aiohttp.ClientSession) -> None:
    sims = await start_simulators(seed=11, ping_interval=5.0)
    try:
        before = {v: s.truth(sims.default_keys[v]) for v, s in sims.all().items()}
        walk = RandomWalk(
            sims.bitopro, sims.sfox, sims.deltadefi, sims.solanatracker, drops=True, seed=5
        )
        key = sims.default_keys["deltadefi"]
        async with session.ws_connect(f"{sims.deltadefi.ws_url}?api_key={key}") as ws:
            await sims.deltadefi.wait_for_connections(key)
            for _ in range(400):
                await walk.step()
            assert walk.steps == 400
            if not ws.closed and sims.deltadefi.connection_counts(key).open:
                assert (await recv_json(ws))["type"] == "Account"
        for venue, sim in sims.all().items():
            rows = sim.truth(sims.default_keys[venue])
            assert rows != before[venue], venue
            for row in rows:
                assert row.total >= 0 and row.available >= 0 and row.locked >= 0
                assert adds_up(row.total, row.available, row.locked)
        assert sims.deltadefi.connection_counts(key).total >= 1
    finally:
        await sims.stop()


async def test_walk_task_starts_and_stops() -> None:
    sims = await start_simulators(walk=True, walk_rate=500.0, seed=2)
    try:
        assert sims.walk is not None
        walk = sims.walk
        await eventually(lambda: walk.steps > 10, "the walk took steps")
        assert sims.walk.steps > 10
    finally:
        await sims.stop()
