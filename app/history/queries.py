"""Reads of the history tables: the state at an instant, changes by seq, per-step series.

Also the writes every part shares: the idempotent insert, checkpoints and retention. The
state at an instant is :mod:`app.history.state` (re-exported here); everything else is
dialect-neutral SQLAlchemy Core, so SQLite and PostgreSQL answer alike. Amounts
leave the database as the canonical strings they were stored as and become ``Decimal``
only where they are summed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.domain import EXACT, AccountState
from app.history import schema
from app.history.schema import Key, RawRecord
from app.history.state import RECORD_COLUMNS as RECORD_COLUMNS
from app.history.state import NotCovered as NotCovered
from app.history.state import Plan, current_changes, from_raw, run_plan
from app.history.state import StateAt as StateAt
from app.history.state import state_at as state_at
from app.history.times import iso_us
from app.store import decimal_str

MAX_PAGE = 10_000
MAX_POINTS = 1_000


async def insert_ignore(
    conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert ``rows``, skipping any whose primary key is already stored (idempotent)."""
    if conn.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    await conn.execute(stmt, list(rows))


def _record(row: Any) -> dict[str, Any]:
    return from_raw(tuple(row._mapping[n] for n in RECORD_COLUMNS))


def _filters(
    table: Table, accounts: Sequence[str] | None, assets: Sequence[str] | None
) -> list[Any]:
    out: list[Any] = []
    if accounts is not None:
        out.append(table.c.account.in_(list(accounts)))
    if assets is not None:
        out.append(table.c.asset.in_(list(assets)))
    return out


async def write_checkpoint(conn: AsyncConnection, safe_seq: int, every: int) -> int | None:
    """Store the state through ``safe_seq`` as a checkpoint snapshot; return its seq.

    ``?at=`` then reads the newest snapshot at or before the instant plus the changes
    after it, not every change since history began. ``safe_seq`` must be a seq at or below
    which every change is committed (the writer derives it from the consumer group: all
    delivered entries below the oldest unacknowledged one). Nothing is written when fewer
    than ``every`` seqs passed since the newest snapshot, or when a gap begins after it
    (the gap's own snapshot is the next base). The checkpoint's time is the newest time of
    the changes it folds in, so for every instant at or after it, the answer is the same
    as replaying those changes; earlier instants keep using the previous base.
    """
    snaps = schema.snapshots
    base = (
        await conn.execute(
            select(snaps.c.seq, snaps.c.time_us)
            .where(snaps.c.seq <= safe_seq)
            .order_by(snaps.c.seq.desc())
            .limit(1)
        )
    ).first()
    if base is None or safe_seq - int(base.seq) < every:
        return None
    base_seq = int(base.seq)
    g = schema.gaps
    gap = (
        await conn.execute(
            select(g.c.from_seq).where(g.c.from_seq > base_seq, g.c.from_seq <= safe_seq).limit(1)
        )
    ).first()
    if gap is not None:
        return None
    c = schema.changes
    window = [c.c.seq > base_seq, c.c.seq <= safe_seq]
    found = (
        await conn.execute(select(func.max(c.c.seq), func.max(c.c.time_us)).where(*window))
    ).first()
    if found is None or found[0] is None:
        return None
    seq, time_us = int(found[0]), max(int(found[1]), int(base.time_us))
    stored, current = await run_plan(conn, _checkpoint_plan(base_seq, seq))
    records: dict[Key, RawRecord] = {(r[0], r[2], r[3]): tuple(r) for r in stored}
    for row in current:
        key = (row[1], row[3], row[4])
        if row[0] == "removed":
            records.pop(key, None)
        else:
            records[key] = tuple(row[1:])
    await insert_ignore(conn, snaps, [{"seq": seq, "time_us": time_us, "reason": "checkpoint"}])
    # the stored values carried over as they are (extra is already its JSON text)
    out = [
        {"snapshot_seq": seq, **dict(zip(RECORD_COLUMNS[:-1], r[:-1], strict=True)),
         "extra": r[-1] or "{}"}
        for r in records.values()
    ]  # fmt: skip
    if out:
        await insert_ignore(conn, schema.snapshot_rows, out)
    return seq


def _checkpoint_plan(base_seq: int, seq: int) -> Plan:
    stored = yield (_SNAPSHOT_ROWS, (base_seq,))
    current = yield from current_changes(base_seq, seq, None, None)
    return stored, current


_SNAPSHOT_ROWS = (
    f"SELECT {', '.join(RECORD_COLUMNS)} FROM {schema.snapshot_rows.name} WHERE snapshot_seq = ?"
)


def _is_zero(amount: str) -> bool:
    # amounts are stored canonical ("0" for zero); Decimal only for anything else
    return amount == "0" or Decimal(amount) == 0


def balance_records(state: StateAt, nonzero: bool = False) -> list[dict[str, Any]]:
    """The records in the REST shape, ordered by account, wallet, asset."""
    out = []
    records = state.records
    for key in sorted(records):
        record = dict(records[key])
        if nonzero and _is_zero(record["total"]):
            continue
        record["stale"] = not state.live.get(record["account"], False)
        out.append(record)
    return out


_EMPTY_OBJECT = orjson.Fragment(b"{}")


def balances_json(state: StateAt, as_of: str, nonzero: bool = False) -> bytes:
    """The JSON body of ``GET /v1/balances?at=``: ``{"seq", "as_of", "balances"}``.

    The same document as :func:`balance_records` would give, encoded straight from the
    stored rows: no record dict is built twice and an empty ``extra`` is not parsed.
    """
    live = state.live.get
    raw = state.raw
    balances = []
    for key in sorted(raw):
        r = raw[key]
        account, venue, wallet, asset, symbol, total, available, locked, updated, vts, extra = r
        if nonzero and _is_zero(total):
            continue
        balances.append({
            "account": account, "venue": venue, "wallet": wallet, "asset": asset,
            "symbol": symbol, "total": total, "available": available, "locked": locked,
            "updated_at": updated, "venue_ts": vts,
            "extra": orjson.loads(extra) if extra and extra != "{}" else _EMPTY_OBJECT,
            "stale": not live(account, False),
        })  # fmt: skip
    return orjson.dumps({"seq": state.seq, "as_of": as_of, "balances": balances})


async def changes_page(
    conn: AsyncConnection,
    *,
    accounts: Sequence[str] | None,
    assets: Sequence[str] | None,
    from_us: int | None,
    to_us: int | None,
    after_seq: int,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to ``limit`` changes with seq > ``after_seq``, oldest first."""
    c = schema.changes
    where = [c.c.seq > after_seq, *_filters(c, accounts, assets)]
    if from_us is not None:
        where.append(c.c.time_us >= from_us)
    if to_us is not None:
        where.append(c.c.time_us < to_us)
    result = await conn.execute(select(c).where(*where).order_by(c.c.seq).limit(limit))
    out = []
    for row in result:
        doc = {"seq": row.seq, "time": iso_us(row.time_us), "type": row.kind}
        doc.update(_record(row))
        if row.kind == "removed":
            doc["extra"] = None
        out.append(doc)
    return out


async def gaps_between(
    conn: AsyncConnection, from_us: int | None = None, to_us: int | None = None
) -> list[dict[str, Any]]:
    g = schema.gaps
    where: list[Any] = []
    if from_us is not None:
        where.append(g.c.to_time_us > from_us)
    if to_us is not None:
        where.append(g.c.from_time_us < to_us)
    result = await conn.execute(select(g).where(*where).order_by(g.c.from_seq))
    return [
        {"from_seq": r.from_seq, "to_seq": r.to_seq, "from": iso_us(r.from_time_us),
         "to": iso_us(r.to_time_us)}
        for r in result
    ]  # fmt: skip


async def series(
    conn: AsyncConnection,
    *,
    accounts: Sequence[str] | None,
    assets: Sequence[str],
    from_us: int,
    to_us: int,
    step_us: int,
) -> AsyncIterator[dict[str, Any]]:
    """The summed amounts (over the selected accounts and wallets) at each step boundary.

    Points are at ``from_us``, ``from_us + step_us``, … and a last one at ``to_us``.

    Each point is the exact state at its time (one indexed query per point, bounded by
    :data:`MAX_POINTS`); a point history cannot know (before it starts, or inside a gap)
    has null amounts and a ``reason``.
    """
    times = list(range(from_us, to_us + 1, step_us))
    if times[-1] != to_us:
        times.append(to_us)  # the last, partial step ends at `to`
    for t in times:
        try:
            state = await state_at(conn, t, accounts, assets)
        except NotCovered as exc:
            yield {"time": iso_us(t), "total": None, "available": None, "locked": None,
                   "reason": exc.code}  # fmt: skip
        else:
            sums = [Decimal(0), Decimal(0), Decimal(0)]
            add = EXACT.add  # a balance sum: exact, never rounded to 28 digits
            for r in state.raw.values():  # total, available, locked as stored
                sums[0] = add(sums[0], Decimal(r[5]))
                sums[1] = add(sums[1], Decimal(r[6]))
                sums[2] = add(sums[2], Decimal(r[7]))
            yield {"time": iso_us(t), "total": decimal_str(sums[0]),
                   "available": decimal_str(sums[1]), "locked": decimal_str(sums[2]),
                   "seq": state.seq}  # fmt: skip


async def apply_retention(engine: AsyncEngine, cutoff_us: int) -> bool:
    """Keep history from ``cutoff_us`` on: fold everything older into one base snapshot.

    The state at the cutoff becomes a snapshot (reason ``retention``); older changes,
    statuses, snapshots, gaps and prices are deleted. Returns False when the state at the
    cutoff is unknown (a gap or before history started) and nothing was changed.
    """
    async with schema.writes(engine).begin() as conn:
        try:
            state = await state_at(conn, cutoff_us)
        except NotCovered:
            return False
        seq = state.seq
        exists = (
            await conn.execute(select(schema.snapshots.c.seq).where(schema.snapshots.c.seq == seq))
        ).first()
        if exists is None:
            await insert_ignore(
                conn, schema.snapshots, [{"seq": seq, "time_us": cutoff_us, "reason": "retention"}]
            )
            # the stored values carried over as they are (extra is already its JSON text)
            rows = [
                {"snapshot_seq": seq, **dict(zip(RECORD_COLUMNS[:-1], r[:-1], strict=True)),
                 "extra": r[-1] or "{}"}
                for r in state.raw.values()
            ]  # fmt: skip
            if rows:
                await insert_ignore(conn, schema.snapshot_rows, rows)
        # the statuses at the base, also when a snapshot (a checkpoint) already sits there:
        # older statuses are deleted below
        states = [
            {"seq": seq, "account": a, "state": _live_or_stale(ok), "time_us": cutoff_us}
            for a, ok in state.live.items()
        ]  # fmt: skip
        if states:
            await insert_ignore(conn, schema.statuses, states)
        await conn.execute(delete(schema.changes).where(schema.changes.c.seq <= seq))
        await conn.execute(delete(schema.statuses).where(schema.statuses.c.seq < seq))
        await conn.execute(
            delete(schema.snapshot_rows).where(schema.snapshot_rows.c.snapshot_seq < seq)
        )
        await conn.execute(delete(schema.snapshots).where(schema.snapshots.c.seq < seq))
        await conn.execute(delete(schema.gaps).where(schema.gaps.c.to_time_us <= cutoff_us))
        await conn.execute(delete(schema.prices).where(schema.prices.c.time_us < cutoff_us))
    return True


def _live_or_stale(live: bool) -> str:
    return (AccountState.LIVE if live else AccountState.STALE).value
