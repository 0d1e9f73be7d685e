"""History's starting point, retention, price recording and settings."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.history import queries, schema
from app.history.prices import PriceRecorder
from app.history.runtime import group_name
from app.history.writer import ForeignHistory
from app.metrics import Metrics
from app.settings import Settings
from app.store import BalanceReader, BalanceWriter, Keys
from tests.history.test_writer import ACCOUNTS, _rows, make_writer, random_changes


@pytest.fixture
async def engine(history_url: str) -> AsyncIterator[AsyncEngine]:
    eng = schema.make_engine(history_url)
    try:
        yield eng
    finally:
        await eng.dispose()


def _now_us() -> int:
    return time.time_ns() // 1000


async def test_history_enabled_on_a_trimmed_stream_starts_from_a_snapshot(
    redis_client: aioredis.Redis, key_prefix: str, engine: AsyncEngine
) -> None:
    keys = Keys(key_prefix)
    owner = BalanceWriter(redis_client, keys, stream_maxlen=100)
    owner.start()
    try:
        before = _now_us()
        await random_changes(owner, random.Random(1), 400, each=True)
        writer = make_writer(redis_client, key_prefix, engine, "late")
        await writer.bootstrap()
        await writer.catch_up()
        await random_changes(owner, random.Random(2), 20, each=True)
        await writer.catch_up()
    finally:
        await owner.close()
    async with engine.connect() as conn:
        reasons = [r.reason for r in await conn.execute(select(schema.snapshots))]
        assert reasons == ["start"]  # a starting point, not a gap: nothing was promised
        assert await queries.gaps_between(conn) == []
        with pytest.raises(queries.NotCovered) as info:
            await queries.state_at(conn, before)
        assert info.value.code == "not_covered"
        state = await queries.state_at(conn, _now_us())
    snap = await BalanceReader(redis_client, keys).snapshot(ACCOUNTS)
    got = sorted(
        (r["account"], r["wallet"], r["asset"], r["total"], r["available"], r["locked"])
        for r in state.records.values()
    )
    assert got == _rows(snap.records)


async def test_retention_folds_old_changes_into_a_base_snapshot(
    redis_client: aioredis.Redis, key_prefix: str, engine: AsyncEngine
) -> None:
    keys = Keys(key_prefix)
    owner = BalanceWriter(redis_client, keys)
    owner.start()
    writer = make_writer(redis_client, key_prefix, engine, "w")
    try:
        await random_changes(owner, random.Random(3), 100, each=True)
        await writer.bootstrap()
        await writer.catch_up()
        cutoff = _now_us()
        await random_changes(owner, random.Random(4), 50, each=True)
        await writer.catch_up()
    finally:
        await owner.close()
    later = _now_us()
    async with engine.connect() as conn:
        at_cutoff = await queries.state_at(conn, cutoff)
        at_later = await queries.state_at(conn, later)
        total_before = (
            await conn.execute(select(func.count()).select_from(schema.changes))
        ).scalar()
    assert await queries.apply_retention(engine, cutoff)
    async with engine.connect() as conn:
        total_after = (
            await conn.execute(select(func.count()).select_from(schema.changes))
        ).scalar()
        assert total_after is not None and total_before is not None
        assert 0 < total_after < total_before
        assert (await queries.state_at(conn, cutoff)).records == at_cutoff.records
        assert (await queries.state_at(conn, later)).records == at_later.records
        with pytest.raises(queries.NotCovered):
            await queries.state_at(conn, cutoff - 1)


async def test_prices_are_sampled_per_interval_and_on_large_moves(engine: AsyncEngine) -> None:
    await schema.migrate(engine)
    recorder = PriceRecorder(engine, interval=60, threshold=Decimal("0.01"))
    t0 = 1_800_000_000.0
    kept = [
        recorder.record_price("BTC/USD", "bitopro", Decimal("97000.12"), t0),
        recorder.record_price("BTC/USD", "bitopro", Decimal("97100"), t0 + 1),  # +0.1 %: no
        recorder.record_price("BTC/USD", "bitopro", Decimal("99000"), t0 + 2),  # +2 %: yes
        recorder.record_price("BTC/USD", "sfox", Decimal("97000"), t0 + 2),  # other source
        recorder.record_price("BTC/USD", "bitopro", Decimal("99001"), t0 + 63),  # interval
    ]
    assert kept == [True, False, True, True, True]
    with pytest.raises(TypeError):
        recorder.record_price("BTC/USD", "bitopro", 1.5, t0)  # type: ignore[arg-type]
    assert await recorder.flush() == 4
    async with engine.connect() as conn:
        rows = list(await conn.execute(select(schema.prices).order_by(schema.prices.c.id)))
    assert [(r.pair, r.source, r.price) for r in rows] == [
        ("BTC/USD", "bitopro", "97000.12"),
        ("BTC/USD", "bitopro", "99000"),
        ("BTC/USD", "sfox", "97000"),
        ("BTC/USD", "bitopro", "99001"),
    ]
    assert rows[0].time_us == int(t0 * 1_000_000)


def test_history_settings() -> None:
    off = Settings(_env_file=None, history="off")
    assert off.history is False
    url = "postgresql+asyncpg://balagg:pw-CANARY@db:5432/balagg"
    on = Settings(_env_file=None, history="on", history_url=url)
    assert on.history is True and "pw-CANARY" not in repr(on)
    with pytest.raises(ValueError, match="postgresql"):
        Settings(_env_file=None, history_url="mysql://x@y/z")
    assert group_name(url) == "history"
    a = group_name("sqlite+aiosqlite:///data/history.sqlite3", "host-a")
    b = group_name("sqlite+aiosqlite:///data/history.sqlite3", "host-b")
    assert a != b and a.startswith("history:sqlite:")


async def test_a_database_of_another_deployment_is_refused(
    redis_client: aioredis.Redis, key_prefix: str, engine: AsyncEngine
) -> None:
    owner = BalanceWriter(redis_client, Keys(key_prefix))
    owner.start()
    try:
        await random_changes(owner, random.Random(6), 50, each=True)
        first = make_writer(redis_client, key_prefix, engine, "w")
        await first.bootstrap()
        await first.catch_up()
    finally:
        await owner.close()
    other = make_writer(redis_client, key_prefix + "x", engine, "w")  # a fresh deployment
    with pytest.raises(ForeignHistory):
        await other.bootstrap()
    assert not other.ready


async def test_lag_grows_while_the_database_is_unreachable_from_the_start(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    metrics = Metrics()
    dead = schema.make_engine("postgresql+asyncpg://balagg:x@127.0.0.1:9/history")
    writer = make_writer(redis_client, key_prefix, dead, "w", metrics=metrics)
    writer.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if metrics.history_lag_seconds._value.get() > 0:
                break
            await asyncio.sleep(0.05)
        assert metrics.history_lag_seconds._value.get() > 0
        assert not writer.ready and not writer.healthy
    finally:
        await writer.stop()
        await dead.dispose()


async def test_an_embedded_history_commit_is_on_disk_before_it_returns(tmp_path: Path) -> None:
    """The writer acknowledges stream entries as soon as their batch committed: the commit
    must survive a power loss (WAL synced at every commit, ``synchronous=FULL``), or an
    acknowledged batch could vanish without a gap being recorded."""
    eng = schema.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.sqlite3'}")
    try:
        async with eng.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            level = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
    finally:
        await eng.dispose()
    assert (mode, level) == ("wal", 2)  # 2: FULL
