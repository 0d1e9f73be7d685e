"""``state_at`` answers the same with a snapshot cache; the cache stays within its rows."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.history import links, queries, schema
from app.history.snapshot_cache import SnapshotCache

ACCOUNTS = ("a1", "a2", "a3")
ASSETS = ("BTC", "ETH", "SOL", "ADA")


@pytest.fixture
async def engine(history_url: str) -> AsyncIterator[AsyncEngine]:
    eng = schema.make_engine(history_url)
    try:
        yield eng
    finally:
        await eng.dispose()


def _change(seq: int, rng: random.Random) -> dict[str, Any]:
    removed = rng.random() < 0.15
    total = None if removed else f"{rng.randint(0, 3)}.{rng.randint(0, 99):02d}"
    return {
        "seq": seq, "time_us": 1_000 + seq * 10, "kind": "removed" if removed else "balance",
        "account": rng.choice(ACCOUNTS), "venue": "v", "wallet": rng.choice(("", "margin")),
        "asset": rng.choice(ASSETS), "symbol": None, "total": total, "available": total,
        "locked": None if removed else "0", "updated_at": None, "venue_ts": None,
        "extra": None if removed else rng.choice(("{}", '{"n": 1}')),
    }  # fmt: skip


async def _fill(engine: AsyncEngine, n: int, every: int) -> None:
    await schema.migrate(engine)
    rng = random.Random(7)
    async with schema.writes(engine).begin() as conn:
        await queries.insert_ignore(
            conn, schema.snapshots, [{"seq": 0, "time_us": 0, "reason": "genesis"}]
        )
    memory = links.LinkMemory()
    for start in range(1, n + 1, 25):
        async with schema.writes(engine).begin() as conn:
            rows = [_change(seq, rng) for seq in range(start, min(start + 25, n + 1))]
            linked = await links.store_changes(
                conn, [tuple(r[c] for c in links.CHANGE_COLUMNS) for r in rows], memory
            )
            await queries.write_checkpoint(conn, rows[-1]["seq"], every)
        linked.remember(memory)


async def test_answers_with_and_without_the_cache_are_the_same(engine: AsyncEngine) -> None:
    await _fill(engine, 400, every=50)
    cache = SnapshotCache()
    rng = random.Random(3)
    filters: list[tuple[list[str] | None, list[str] | None]] = [
        (None, None), (["a1"], None), (None, ["ETH", "SOL"]), (["a2", "a3"], ["BTC"]),
    ]  # fmt: skip
    async with engine.connect() as conn:
        for _ in range(3):  # later rounds answer from kept snapshots
            for at in [1_000 + 10 * s for s in (0, 1, 49, 50, 51, 199, 250, 400)] + [
                rng.randint(1_000, 6_000) for _ in range(10)
            ]:
                for accounts, assets in filters:
                    plain = await queries.state_at(conn, at, accounts, assets)
                    cached = await queries.state_at(conn, at, accounts, assets, cache)
                    assert cached.seq == plain.seq
                    assert cached.raw == plain.raw
                    assert cached.records == plain.records
                    assert queries.balances_json(cached, "t") == queries.balances_json(plain, "t")
    assert len(cache) > 1


def test_the_cache_keeps_at_most_its_rows_least_recently_used_first() -> None:
    cache = SnapshotCache(max_rows=5)

    def rows(n: int) -> dict[schema.Key, schema.RawRecord]:
        return {(str(i), "", "X"): (str(i),) for i in range(n)}

    cache.put(1, rows(2))
    cache.put(2, rows(2))
    assert cache.get(1) is not None  # 1 is now the most recently used
    cache.put(3, rows(2))  # 6 rows: the least recently used (2) goes
    assert cache.get(2) is None and cache.get(1) is not None and cache.get(3) is not None
    cache.put(4, rows(6))  # larger than the whole budget: never kept
    assert cache.get(4) is None and len(cache) == 2


class _Evicting(SnapshotCache):
    """Lists its snapshots, then has dropped each one by the time it is asked for (as
    when other answers fill the cache while this one reads)."""

    def get(self, seq: int) -> dict[schema.Key, schema.RawRecord] | None:
        super().get(seq)
        return None


async def test_a_snapshot_dropped_from_the_cache_meanwhile_is_read_again(
    engine: AsyncEngine,
) -> None:
    await _fill(engine, 200, every=50)
    cache = _Evicting()
    async with engine.connect() as conn:
        for at in (1_000 + 10 * s for s in (60, 120, 180)):
            first = await queries.state_at(conn, at, snapshots=cache)  # read, kept
            again = await queries.state_at(conn, at, snapshots=cache)  # kept, then gone
            part = await queries.state_at(conn, at, ["a1"], None, cache)
            plain = await queries.state_at(conn, at)
            assert first.raw == again.raw == plain.raw
            assert part.raw == {k: r for k, r in plain.raw.items() if k[0] == "a1"}
    assert len(cache) == 3
