"""``prev_seq`` stays exact however changes arrive, and version 2 fills it in for old data.

Every check compares each stored change's ``prev_seq`` with the predecessor computed from
the stored seqs themselves, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.history import links, schema
from app.history.schema import Key
from tests.history.linkcheck import assert_links_exact, expected_links, stored_links

KEYS: list[Key] = [(a, w, s) for a in ("a1", "a2") for w in ("", "margin") for s in ("BTC", "ETH")]


@pytest.fixture
async def engine(history_url: str) -> AsyncIterator[AsyncEngine]:
    eng = schema.make_engine(history_url)
    try:
        yield eng
    finally:
        await eng.dispose()


def _row(seq: int, key: Key) -> tuple[Any, ...]:
    account, wallet, asset = key
    return (seq, 1_000 + seq, "balance", account, "v", wallet, asset, None, str(seq),
            str(seq), "0", None, None, "{}")  # fmt: skip


async def _store(
    engine: AsyncEngine, rows: list[tuple[Any, ...]], memory: links.LinkMemory
) -> None:
    async with schema.writes(engine).begin() as conn:
        linked = await links.store_changes(conn, rows, memory)
    linked.remember(memory)


async def test_links_stay_exact_through_redeliveries_other_writers_and_retention(
    engine: AsyncEngine,
) -> None:
    await schema.migrate(engine)
    rng = random.Random(11)
    key_of = {seq: rng.choice(KEYS) for seq in range(1, 1_201)}
    # three writers, each with its own memory, taking batches of the stream in turns and
    # now and then late (a batch older than what others stored) or again (redelivered)
    writers = [links.LinkMemory() for _ in range(3)]
    cuts = sorted({1, 1_201, *rng.sample(range(2, 1_201), 40)})
    batches = [list(range(a, b)) for a, b in itertools.pairwise(cuts)]
    pending: list[list[int]] = []
    stored: list[list[int]] = []
    present: set[int] = set()
    for i, batch in enumerate(batches):
        if rng.random() < 0.3:
            pending.append(batch)  # held back: stored after later batches
            continue
        todo = [batch]
        if pending and rng.random() < 0.5:
            todo.append(pending.pop(0))
        if stored and rng.random() < 0.2:
            todo.append(rng.choice(stored))  # redelivery, maybe mixed with new seqs
            todo.append(rng.choice(stored) + batch[:3])
        for seqs in todo:
            rows = [_row(s, key_of[s]) for s in seqs]
            rng.shuffle(rows)
            await _store(engine, rows, writers[rng.randrange(3)])
            stored.append(seqs)
            present.update(seqs)
        if i == len(batches) // 2:  # retention deletes the oldest changes
            async with schema.writes(engine).begin() as conn:
                await conn.execute(delete(schema.changes).where(schema.changes.c.seq <= 300))
            present = {s for s in present if s > 300}
        await assert_links_exact(engine, 300 if i >= len(batches) // 2 else 0)
    for seqs in pending:
        await _store(engine, [_row(s, key_of[s]) for s in seqs], writers[0])
        present.update(seqs)
    await assert_links_exact(engine, 300)
    assert set(await stored_links(engine)) == present and len(present) > 800


async def test_one_writer_in_order_links_each_batch_to_the_last(engine: AsyncEngine) -> None:
    await schema.migrate(engine)
    memory = links.LinkMemory()
    seq = 0
    for _ in range(5):
        rows = []
        for key in KEYS * 3:
            seq += 1
            rows.append(_row(seq, key))
        await _store(engine, rows, memory)
    assert await stored_links(engine) == await expected_links(engine)
    assert memory.newest == {key: seq - len(KEYS) + i + 1 for i, key in enumerate(KEYS)}
    assert memory.commits == 5


async def test_version_2_links_the_changes_a_version_1_database_holds(engine: AsyncEngine) -> None:
    async with schema.writes(engine).begin() as conn:
        await conn.run_sync(schema._current_version)
        await conn.run_sync(schema.MIGRATIONS[0])
        await conn.run_sync(schema._set_version, 1)
        rng = random.Random(5)
        rows = [_row(s, rng.choice(KEYS)) for s in range(1, 301)]
        cols = ", ".join(links.CHANGE_COLUMNS)
        marks = (
            ", ".join(f"${i}" for i in range(1, 15))
            if engine.dialect.name == "postgresql"
            else ", ".join("?" * 14)
        )
        await conn.exec_driver_sql(f"INSERT INTO history_changes ({cols}) VALUES ({marks})", rows)
    assert await schema.migrate(engine) == schema.LATEST == 2
    got = await stored_links(engine)
    assert got == await expected_links(engine)
    assert sum(v is None for v in got.values()) == len({links.key_of(r) for r in rows})
    async with engine.connect() as conn:  # the commit counter starts
        assert (await conn.execute(select(schema.link_state.c.commits))).all() == [(0,)]
