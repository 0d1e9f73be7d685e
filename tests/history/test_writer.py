"""The history writer against a real Redis and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import AssetBalance
from app.history import queries, schema
from app.history.writer import HistoryWriter
from app.metrics import Metrics
from app.store import BalanceReader, BalanceWriter, Keys, decimal_str
from tests.history.linkcheck import assert_links_exact
from tests.pgserver import PrivatePostgres

ACCOUNTS = ["acct-a", "acct-b"]


def bal(asset: str, total: str, locked: str = "0", wallet: str = "") -> AssetBalance:
    t, lk = Decimal(total), Decimal(locked)
    return AssetBalance(wallet=wallet, asset=asset, symbol=asset, total=t, available=t - lk,
                        locked=lk, extra={})  # fmt: skip


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except Exception:  # e.g. the schema is not created yet, the database restarting
            pass
        await asyncio.sleep(0.05)
    assert await check(), "condition not met before the deadline"


@pytest.fixture
async def engine(history_url: str) -> AsyncIterator[AsyncEngine]:
    eng = schema.make_engine(history_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def owner(redis_client: aioredis.Redis, key_prefix: str) -> AsyncIterator[BalanceWriter]:
    writer = BalanceWriter(redis_client, Keys(key_prefix), stream_maxlen=100_000)
    writer.start()
    try:
        yield writer
    finally:
        await writer.close()


def make_writer(
    client: aioredis.Redis, prefix: str, engine: AsyncEngine, name: str, **kw: Any
) -> HistoryWriter:
    return HistoryWriter(client, Keys(prefix), engine, lambda: ACCOUNTS, consumer=name,
                         block_ms=100, **kw)  # fmt: skip


async def stored_seqs(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return [r.seq for r in await conn.execute(select(schema.changes.c.seq))]


async def stream_change_seqs(client: aioredis.Redis, prefix: str) -> list[int]:
    """Seqs of the balance/removed entries on the stream (statuses and events excluded)."""
    entries: Any = await client.xrange(Keys(prefix).changes)
    out = []
    for entry_id, fields in entries:
        if fields[b"s"]:
            out.append(int(entry_id.decode().partition("-")[0]))
    return out


async def random_changes(
    owner: BalanceWriter, rng: random.Random, n: int, *, each: bool = False
) -> None:
    """``n`` random updates; ``each`` writes every one before the next (no conflation)."""
    for i in range(n):
        account = rng.choice(ACCOUNTS)
        asset = rng.choice(["BTC", "ETH", "USDT", "SOL"])
        if rng.random() < 0.1:
            owner.submit_snapshot(account, "sfox", "", [bal("BTC", str(rng.randint(1, 9)))])
        else:
            total = Decimal(rng.randint(0, 10**12)) / Decimal(10**8)
            owner.submit_update(account, "sfox", [bal(asset, decimal_str(total))])
        if each:
            assert await owner.drain(10)
        elif i % 7 == 0:
            await asyncio.sleep(0)
    assert await owner.drain(10)


async def test_every_change_is_stored_and_state_at_matches(
    redis_client: aioredis.Redis, key_prefix: str, owner: BalanceWriter, engine: AsyncEngine
) -> None:
    metrics = Metrics()
    writer = make_writer(redis_client, key_prefix, engine, "one", metrics=metrics)
    writer.start()
    rng = random.Random(7)
    checkpoints: list[tuple[int, list[tuple[str, str, str, str, str, str]]]] = []
    reader = BalanceReader(redis_client, Keys(key_prefix))
    try:
        for _ in range(8):
            await random_changes(owner, rng, 60)
            snap = await reader.snapshot(ACCOUNTS)
            checkpoints.append((time.time_ns() // 1000, _rows(snap.records)))
            await asyncio.sleep(0.003)
        expected = await stream_change_seqs(redis_client, key_prefix)

        async def caught_up() -> bool:
            return sorted(await stored_seqs(engine)) == expected

        await wait_for(caught_up)
    finally:
        await writer.stop()
    assert metrics.history_writes._value.get() >= len(expected)
    async with engine.connect() as conn:
        for at_us, rows in checkpoints:
            state = await queries.state_at(conn, at_us)
            got = sorted(
                (r["account"], r["wallet"], r["asset"], r["total"], r["available"], r["locked"])
                for r in state.records.values()
            )
            assert got == rows


def _rows(records: Any) -> list[tuple[str, str, str, str, str, str]]:
    return sorted(
        (r.account, r.wallet, r.asset, decimal_str(r.total), decimal_str(r.available),
         decimal_str(r.locked))
        for r in records
    )  # fmt: skip


async def test_three_writers_store_every_change_exactly_once(
    redis_client: aioredis.Redis, key_prefix: str, owner: BalanceWriter, engine: AsyncEngine
) -> None:
    writers = [make_writer(redis_client, key_prefix, engine, f"replica-{i}", batch=50)
               for i in range(3)]  # fmt: skip
    for w in writers:
        w.start()
    try:
        await random_changes(owner, random.Random(3), 3_000)
        expected = await stream_change_seqs(redis_client, key_prefix)

        async def caught_up() -> bool:
            return len(await stored_seqs(engine)) >= len(expected)

        await wait_for(caught_up, 60)
    finally:
        for w in writers:
            await w.stop()
    assert sorted(await stored_seqs(engine)) == expected
    # each entry went to exactly one writer: their counts add up to the stored rows
    assert sum(w.written for w in writers) == len(expected)
    pending: Any = await redis_client.xpending(Keys(key_prefix).changes, "history")
    assert pending["pending"] == 0
    await assert_links_exact(engine)  # batches of three writers, committed in any order


async def test_a_dead_consumers_entries_are_claimed(
    redis_client: aioredis.Redis, key_prefix: str, owner: BalanceWriter, engine: AsyncEngine
) -> None:
    first = make_writer(redis_client, key_prefix, engine, "first")
    await first.bootstrap()
    await random_changes(owner, random.Random(5), 200)
    keys = Keys(key_prefix)
    # a consumer that reads and dies before acknowledging
    taken: Any = await redis_client.xreadgroup("history", "dead", {keys.changes: ">"}, count=10_000)
    assert taken and taken[0][1]
    survivor = make_writer(redis_client, key_prefix, engine, "survivor", claim_idle_ms=1_000)
    survivor.start()
    try:
        expected = await stream_change_seqs(redis_client, key_prefix)

        async def caught_up() -> bool:
            return sorted(await stored_seqs(engine)) == expected

        await wait_for(caught_up)
    finally:
        await survivor.stop()
    pending: Any = await redis_client.xpending(keys.changes, "history")
    assert pending["pending"] == 0
    await assert_links_exact(engine)


async def test_falling_behind_the_stream_records_a_gap_and_a_snapshot(
    redis_client: aioredis.Redis, key_prefix: str, engine: AsyncEngine
) -> None:
    keys = Keys(key_prefix)
    small = BalanceWriter(redis_client, keys, stream_maxlen=100)
    small.start()
    metrics = Metrics()
    writer = make_writer(redis_client, key_prefix, engine, "w", metrics=metrics)
    try:
        await random_changes(small, random.Random(1), 20)
        await writer.bootstrap()
        await writer.catch_up()
        # the writer is away while far more changes than the stream keeps go by
        await random_changes(small, random.Random(2), 600, each=True)
        first: Any = await redis_client.xrange(keys.changes, count=1)
        assert int(first[0][0].decode().partition("-")[0]) > 100, "the stream was not trimmed"
        await writer.catch_up()
        await random_changes(small, random.Random(4), 30)
        await writer.catch_up()
    finally:
        await small.close()
    assert metrics.history_gaps._value.get() == 1
    now_us = time.time_ns() // 1000
    async with engine.connect() as conn:
        gaps = await queries.gaps_between(conn)
        assert len(gaps) == 1
        # before the gap: known; inside it: refused; after the snapshot: exact
        gap_row = (await conn.execute(select(schema.gaps))).one()
        await queries.state_at(conn, gap_row.from_time_us - 1)
        with pytest.raises(queries.NotCovered) as info:
            await queries.state_at(conn, (gap_row.from_time_us + gap_row.to_time_us) // 2)
        assert info.value.code == "history_gap"
        state = await queries.state_at(conn, now_us)
        n_snap = (await conn.execute(select(func.count()).select_from(schema.snapshots))).scalar()
        assert n_snap == 2  # genesis and the one after the gap
    snap = await BalanceReader(redis_client, keys).snapshot(ACCOUNTS)
    got = sorted(
        (r["account"], r["wallet"], r["asset"], r["total"], r["available"], r["locked"])
        for r in state.records.values()
    )
    assert got == _rows(snap.records)


async def test_database_outage_loses_nothing_the_stream_still_holds(
    redis_client: aioredis.Redis, key_prefix: str, owner: BalanceWriter
) -> None:
    server = PrivatePostgres()
    server.start()
    url = server.create_database()
    eng = schema.make_engine(url)
    metrics = Metrics()
    writer = make_writer(redis_client, key_prefix, eng, "w", metrics=metrics)
    writer.start()
    try:
        await random_changes(owner, random.Random(8), 300)
        await wait_for(lambda: _has(eng, 1))
        server.stop()
        await random_changes(owner, random.Random(9), 500)

        async def failing() -> bool:
            return not writer.healthy

        await wait_for(failing)

        async def lagging() -> bool:
            return bool(metrics.history_lag_seconds._value.get() > 0)

        await wait_for(lagging)
        server.start()
        await random_changes(owner, random.Random(10), 300)
        expected = await stream_change_seqs(redis_client, key_prefix)

        async def caught_up() -> bool:
            return sorted(await stored_seqs(eng)) == expected

        await wait_for(caught_up, 60)
        assert metrics.history_gaps._value.get() == 0

        async def lag_back_to_zero() -> bool:
            return bool(metrics.history_lag_seconds._value.get() == 0)

        await wait_for(lag_back_to_zero)
    finally:
        await writer.stop()
        await eng.dispose()
        server.destroy()


async def test_an_outage_while_the_next_batch_is_read_ahead_loses_nothing(
    redis_client: aioredis.Redis, key_prefix: str, owner: BalanceWriter
) -> None:
    """Small batches and a backlog: every round reads the next batch while one commits.
    The database dies mid-backlog; the batches read ahead stay pending and are written
    once it is back, each change exactly once, with no gap."""
    server = PrivatePostgres()
    server.start()
    url = server.create_database()
    eng = schema.make_engine(url)
    metrics = Metrics()
    await random_changes(owner, random.Random(11), 1500, each=True)
    writer = make_writer(redis_client, key_prefix, eng, "ahead", batch=10, metrics=metrics)
    writer.start()
    try:
        await wait_for(lambda: _has(eng, 20))
        server.stop()

        async def failing() -> bool:
            return not writer.healthy

        await wait_for(failing)
        server.start()
        await random_changes(owner, random.Random(12), 200, each=True)
        expected = await stream_change_seqs(redis_client, key_prefix)

        async def caught_up() -> bool:
            return sorted(await stored_seqs(eng)) == expected

        await wait_for(caught_up, 60)
        assert metrics.history_gaps._value.get() == 0

        async def nothing_pending() -> bool:
            pending: Any = await redis_client.xpending(Keys(key_prefix).changes, writer.group)
            return bool(pending["pending"] == 0)

        await wait_for(nothing_pending)
    finally:
        await writer.stop()
        await eng.dispose()
        server.destroy()


async def _has(engine: AsyncEngine, n: int) -> bool:
    return len(await stored_seqs(engine)) >= n


async def _checkpoint_seqs(engine: AsyncEngine) -> list[int]:
    snaps = schema.snapshots
    async with engine.connect() as conn:
        result = await conn.execute(
            select(snaps.c.seq).where(snaps.c.reason == "checkpoint").order_by(snaps.c.seq)
        )
        return [r.seq for r in result]


async def test_checkpoints_keep_at_exact_and_never_skip_an_unacknowledged_change(
    redis_client: aioredis.Redis, key_prefix: str, owner: BalanceWriter, engine: AsyncEngine
) -> None:
    keys = Keys(key_prefix)
    reader = BalanceReader(redis_client, keys)
    rng = random.Random(11)
    instants: list[tuple[int, list[tuple[str, str, str, str, str, str]]]] = []

    async def walk(rounds: int) -> None:
        for _ in range(rounds):
            await random_changes(owner, rng, 40)
            snap = await reader.snapshot(ACCOUNTS)
            instants.append((time.time_ns() // 1000, _rows(snap.records)))
            await asyncio.sleep(0.003)

    writers = [
        make_writer(redis_client, key_prefix, engine, f"replica-{i}", batch=30,
                    checkpoint_every=20, checkpoint_check_s=0, claim_idle_ms=600_000)
        for i in range(3)
    ]  # fmt: skip
    for w in writers:
        w.start()
    try:
        await walk(6)

        async def caught_up() -> bool:
            expected = await stream_change_seqs(redis_client, key_prefix)
            return sorted(await stored_seqs(engine)) == expected

        await wait_for(caught_up)

        async def checkpointed() -> bool:
            return len(await _checkpoint_seqs(engine)) >= 1

        await wait_for(checkpointed)
        # a replica reads entries and dies before committing them: they stay pending
        for w in writers:
            await w.stop()
        await random_changes(owner, rng, 10, each=True)
        dead: Any = await redis_client.xreadgroup(
            "history", "dead-replica", {keys.changes: ">"}, count=5
        )
        held = [int(e[0].decode().partition("-")[0]) for e in dead[0][1]]
        assert len(held) == 5
        for w in writers:
            w.start()
        await walk(6)

        async def all_but_held() -> bool:
            expected = await stream_change_seqs(redis_client, key_prefix)
            wanted = [s for s in expected if s not in held]
            return sorted(await stored_seqs(engine)) == wanted

        await wait_for(all_but_held)
        for w in writers:
            await w.stop()
        for w in writers:
            await w.step()  # a checkpoint attempt after everything else is committed
        assert all(seq < min(held) for seq in await _checkpoint_seqs(engine))
    finally:
        for w in writers:
            await w.stop()
    # another replica claims the dead one's entries; checkpoints resume past them
    rescuer = make_writer(redis_client, key_prefix, engine, "rescuer", claim_idle_ms=1,
                          checkpoint_every=20, checkpoint_check_s=0)  # fmt: skip
    await rescuer.bootstrap()
    await rescuer.catch_up()
    await rescuer.step()
    assert sorted(await stored_seqs(engine)) == await stream_change_seqs(redis_client, key_prefix)
    checkpoints = await _checkpoint_seqs(engine)
    assert len(checkpoints) >= 2 and max(checkpoints) > max(held)
    async with engine.connect() as conn:
        for at_us, rows in instants:
            state = await queries.state_at(conn, at_us)
            got = sorted(
                (r["account"], r["wallet"], r["asset"], r["total"], r["available"], r["locked"])
                for r in state.records.values()
            )
            assert got == rows


async def test_entries_are_read_byte_exact_whatever_their_messages_hold(
    redis_client: aioredis.Redis, key_prefix: str, engine: AsyncEngine
) -> None:
    """Messages with newlines, spaces and multi-byte text, entries without a usable ``t``:
    each change is stored under its own seq with its own exact values."""
    keys = Keys(key_prefix)
    base_us = time.time_ns() // 1000 - 1_000_000

    def balance(asset: str, total: str, symbol: str) -> dict[str, Any]:
        return {"account": "acct-a", "venue": "sfox", "wallet": "w 1\nx", "asset": asset,
                "symbol": symbol, "total": total, "available": total, "locked": "0",
                "updated_at": "2026-11-28T08:00:00.000001+00:00", "venue_ts": None,
                "extra": {"note": "a\nb 12 34\n"}}  # fmt: skip

    btc = balance("BTC", "0.1", "₿ 比特币")
    eth = balance("ETH", "12345678901234567890.000000001", "Ξ")
    removed = {"type": "removed", "account": "acct-a", "wallet": "w 1\nx", "asset": "BTC"}
    messages = [
        # pretty-printed: raw newlines and spaces between the tokens
        (json.dumps({"type": "balance", "balance": btc}, indent=2), str(base_us + 1)),
        (json.dumps({"type": "balance", "balance": eth}), "not a time 5"),
        (json.dumps(removed), str(base_us + 3)),
        (json.dumps({"type": "balance", "balance": balance("SOL", "7", "◎\n")}), str(base_us + 4)),
    ]
    for seq, (m, t) in enumerate(messages, start=1):
        fields: dict[str, str] = {"a": "acct-a", "s": "x", "m": m, "t": t}
        await redis_client.xadd(keys.changes, fields, id=f"{seq}-0")  # type: ignore[arg-type]
    await redis_client.set(keys.seq, len(messages))
    writer = make_writer(redis_client, key_prefix, engine, "exact")
    await writer.bootstrap()
    await writer.catch_up()
    async with engine.connect() as conn:
        rows = {r.seq: r for r in await conn.execute(select(schema.changes))}
    updated_us = 1_795_852_800_000_001  # 2026-11-28T08:00:00.000001Z
    assert sorted(rows) == [1, 2, 3, 4]
    first = (rows[1].kind, rows[1].asset, rows[1].symbol, rows[1].total, rows[1].wallet)
    assert first == ("balance", "BTC", "₿ 比特币", "0.1", "w 1\nx")
    assert rows[1].time_us == base_us + 1
    assert orjson.loads(rows[1].extra) == {"note": "a\nb 12 34\n"}
    # no usable t: the record's own time
    assert (rows[2].total, rows[2].symbol, rows[2].time_us) == (
        "12345678901234567890.000000001",
        "Ξ",
        updated_us,
    )
    assert (rows[3].kind, rows[3].asset, rows[3].total) == ("removed", "BTC", None)
    assert rows[3].time_us == base_us + 3
    assert (rows[4].symbol, rows[4].total, rows[4].time_us) == ("◎\n", "7", base_us + 4)
    pending: Any = await redis_client.xpending(keys.changes, writer.group)
    assert pending["pending"] == 0
    # the state, read from the changes and then from a checkpoint holding them, is the same
    # (extra fields included)
    later = time.time_ns() // 1000 + 10_000_000
    expected = {
        ("acct-a", "w 1\nx", "ETH"): ("12345678901234567890.000000001", "Ξ"),
        ("acct-a", "w 1\nx", "SOL"): ("7", "◎\n"),
    }
    for checkpoint in (False, True):
        async with schema.writes(engine).begin() as conn:
            if checkpoint:
                assert await queries.write_checkpoint(conn, 4, 1) == 4
            state = await queries.state_at(conn, later)
        assert state.seq == 4
        got = {k: (r["total"], r["symbol"]) for k, r in state.records.items()}
        assert got == expected
        assert all(r["extra"] == {"note": "a\nb 12 34\n"} for r in state.records.values())
        assert all(r["updated_at"] == "2026-11-28T08:00:00.000001+00:00"
                   for r in state.records.values())  # fmt: skip
