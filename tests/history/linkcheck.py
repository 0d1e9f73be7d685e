"""Each stored change's ``prev_seq`` against the predecessor computed from the stored seqs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.history import schema
from app.history.schema import Key


async def stored_links(engine: AsyncEngine) -> dict[int, int | None]:
    """``{seq: prev_seq}`` of every stored change."""
    c = schema.changes
    async with engine.connect() as conn:
        result = await conn.execute(select(c.c.seq, c.c.prev_seq))
        return {int(seq): (None if prev is None else int(prev)) for seq, prev in result.all()}


async def expected_links(engine: AsyncEngine) -> dict[int, int | None]:
    """``{seq: the stored seq of the same record before it, or None}`` per stored change."""
    c = schema.changes
    async with engine.connect() as conn:
        result = await conn.execute(select(c.c.seq, c.c.account, c.c.wallet, c.c.asset))
        by_key: dict[Key, list[int]] = {}
        for seq, account, wallet, asset in sorted(tuple(r) for r in result.all()):
            by_key.setdefault((account, wallet, asset), []).append(int(seq))
    out: dict[int, int | None] = {}
    for seqs in by_key.values():
        out.update(zip(seqs, [None, *seqs[:-1]], strict=True))
    return out


async def assert_links_exact(engine: AsyncEngine, deleted_through: int = 0) -> None:
    """Every link as expected; a record's first stored change may instead name a seq up
    to ``deleted_through`` (its predecessor, deleted by retention)."""
    got = await stored_links(engine)
    expected = await expected_links(engine)
    assert got.keys() == expected.keys()
    assert got, "no changes stored"
    for seq, prev in got.items():
        want = expected[seq]
        if want is None and prev is not None:
            assert prev <= deleted_through, (seq, prev)
        else:
            assert prev == want, (seq, prev, want)
