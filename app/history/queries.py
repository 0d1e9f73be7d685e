"""Reads of the history tables: the state at an instant, changes by seq, per-step series.

Also the two writes every part shares: the idempotent insert and retention. Everything
here is dialect-neutral SQLAlchemy Core, so SQLite and PostgreSQL answer alike. Amounts
leave the database as the canonical strings they were stored as and become ``Decimal``
only where they are summed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Table, and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.domain import EXACT, AccountState
from app.history import schema
from app.history.schema import Key, RawRecord
from app.history.snapshot_cache import SnapshotCache
from app.history.times import iso_us
from app.store import decimal_str

MAX_PAGE = 10_000
MAX_POINTS = 1_000


class NotCovered(Exception):
    """History holds no state for that instant (before it started, or inside a gap)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def insert_ignore(
    conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert ``rows``, skipping any whose primary key is already stored (idempotent)."""
    if conn.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    await conn.execute(stmt, list(rows))


RECORD_COLUMNS = (
    "account", "venue", "wallet", "asset", "symbol", "total", "available", "locked",
    "updated_at", "venue_ts", "extra",
)  # fmt: skip
"""A record's columns, in the order :func:`_raw_records` reads them (same names in
``history_changes`` and ``history_snapshot_rows``)."""


def _from_raw(raw: RawRecord) -> dict[str, Any]:
    account, venue, wallet, asset, symbol, total, available, locked, updated, vts, extra = raw
    return {
        "account": account, "venue": venue, "wallet": wallet, "asset": asset,
        "symbol": symbol, "total": total, "available": available, "locked": locked,
        "updated_at": updated, "venue_ts": vts,
        # most records carry no extra fields: skip the parse for the empty object
        "extra": orjson.loads(extra) if extra and extra != "{}" else {},
    }  # fmt: skip


@dataclass(slots=True)
class StateAt:
    """The records at ``time_us``; ``seq`` is the newest change they include.

    ``raw`` holds each record as stored (:data:`RECORD_COLUMNS`); :attr:`records` builds
    the record dicts on first use. The REST body is encoded straight from ``raw``
    (:func:`balances_json`), so an answer builds each record once, as JSON.
    """

    seq: int
    time_us: int
    raw: dict[Key, RawRecord]
    live: dict[str, bool]
    _records: dict[Key, dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def records(self) -> dict[Key, dict[str, Any]]:
        if self._records is None:
            self._records = {key: _from_raw(r) for key, r in self.raw.items()}
        return self._records


async def _raw_records(
    conn: AsyncConnection, base_seq: int, where: Sequence[Any]
) -> dict[Key, RawRecord]:
    """The rows of snapshot ``base_seq`` (also matching ``where``) as stored, by key.

    Rows stay plain tuples until the state is complete: most of a snapshot's records are
    replaced by a later change in the window, and building a record only to drop it was
    most of an answer's time.
    """
    rows = schema.snapshot_rows
    result = await conn.execute(
        select(*[rows.c[n] for n in RECORD_COLUMNS]).where(rows.c.snapshot_seq == base_seq, *where)
    )
    # all() fetches the rows in one call; iterating the result fetches them one by one
    return {(r[0], r[2], r[3]): tuple(r) for r in result.all()}


async def _snapshot(
    conn: AsyncConnection,
    base_seq: int,
    accounts: Sequence[str] | None,
    assets: Sequence[str] | None,
    snapshots: SnapshotCache | None,
) -> dict[Key, RawRecord]:
    """The rows of snapshot ``base_seq`` matching the filters, by key (a dict of its own)."""
    kept = snapshots.get(base_seq) if snapshots is not None else None
    if kept is None:
        if accounts is not None or assets is not None:  # a part: read only that
            return await _raw_records(
                conn, base_seq, _filters(schema.snapshot_rows, accounts, assets)
            )
        kept = await _raw_records(conn, base_seq, [])
        if snapshots is None:
            return kept
        snapshots.put(base_seq, kept)
    if accounts is None and assets is None:
        return dict(kept)
    # the same rows the SQL filters select: exact matches on the stored text
    want_accounts = set(accounts) if accounts is not None else None
    want_assets = set(assets) if assets is not None else None
    return {
        key: r
        for key, r in kept.items()
        if (want_accounts is None or key[0] in want_accounts)
        and (want_assets is None or key[2] in want_assets)
    }


def _record(row: Any) -> dict[str, Any]:
    return _from_raw(tuple(row._mapping[n] for n in RECORD_COLUMNS))


def _filters(
    table: Table, accounts: Sequence[str] | None, assets: Sequence[str] | None
) -> list[Any]:
    out: list[Any] = []
    if accounts is not None:
        out.append(table.c.account.in_(list(accounts)))
    if assets is not None:
        out.append(table.c.asset.in_(list(assets)))
    return out


async def _base(conn: AsyncConnection, time_us: int) -> tuple[int, int]:
    """The newest snapshot at or before ``time_us``, unless a gap covers the instant."""
    gap = (
        await conn.execute(
            select(schema.gaps)
            .where(and_(schema.gaps.c.from_time_us <= time_us, schema.gaps.c.to_time_us > time_us))
            .limit(1)
        )
    ).first()
    if gap is not None:
        raise NotCovered(
            "history_gap",
            f"history has a gap from {iso_us(gap.from_time_us)} to {iso_us(gap.to_time_us)} "
            f"(changes {gap.from_seq}..{gap.to_seq} were never written): the state at that "
            "instant is unknown",
        )
    base = (
        await conn.execute(
            select(schema.snapshots.c.seq, schema.snapshots.c.time_us)
            .where(schema.snapshots.c.time_us <= time_us)
            .order_by(schema.snapshots.c.seq.desc())
            .limit(1)
        )
    ).first()
    if base is None:
        first = (await conn.execute(select(func.min(schema.snapshots.c.time_us)))).scalar()
        since = f"starts at {iso_us(int(first))}" if first is not None else "is empty"
        raise NotCovered("not_covered", f"history {since}; nothing is known before that")
    return int(base.seq), int(base.time_us)


async def state_at(
    conn: AsyncConnection,
    time_us: int,
    accounts: Sequence[str] | None = None,
    assets: Sequence[str] | None = None,
    snapshots: SnapshotCache | None = None,
) -> StateAt:
    """The exact records at ``time_us``: the base snapshot plus every later change up to it.

    "Up to it" is stream order: every change up to the newest one written at or before
    ``time_us``, so the answer is always a state the change stream really passed through
    (with one clock, exactly the changes timed at or before the instant). ``snapshots``
    (one per database) keeps base snapshots read in full for the next answers.
    """
    base_seq, _base_time = await _base(conn, time_us)
    raw = await _snapshot(conn, base_seq, accounts, assets, snapshots)
    c = schema.changes
    # The newest change written at or before the instant (by the time index, one lookup),
    # and of the changes sharing that µs the last one; the state is every change up to it
    # in stream order. Both ends of the window are seqs, so it is one primary-key range
    # no longer than the checkpoint interval, however long history is (a window open at
    # the top would walk to the newest change).
    newest_time = select(func.max(c.c.time_us)).where(c.c.time_us <= time_us).scalar_subquery()
    last = (
        await conn.execute(select(func.max(c.c.seq)).where(c.c.time_us == newest_time))
    ).scalar()
    seq = max(base_seq, int(last or 0))
    window = [c.c.seq > base_seq, c.c.seq <= seq, *_filters(c, accounts, assets)]
    await _apply_latest(conn, raw, window)
    s = schema.statuses
    newest_status = (
        select(s.c.account, func.max(s.c.seq).label("seq"))
        .where(s.c.time_us <= time_us)
        .group_by(s.c.account)
        .subquery()
    )
    live: dict[str, bool] = {}
    result = await conn.execute(
        select(s.c.account, s.c.state).join(
            newest_status,
            and_(s.c.account == newest_status.c.account, s.c.seq == newest_status.c.seq),
        )
    )
    for row in result:
        live[row.account] = row.state == AccountState.LIVE
    return StateAt(seq, time_us, raw, live)


async def _apply_latest(
    conn: AsyncConnection, records: dict[Key, RawRecord], window: Sequence[Any]
) -> None:
    """Apply the newest change per key among the changes matching ``window``."""
    c = schema.changes
    # The window is read first, by its seq range, as a subquery the planner cannot flatten
    # (the LIMIT): grouped directly, SQLite scans the whole (account, wallet, asset, seq)
    # index instead, which grows with all of history rather than with the window.
    window_rows = (
        select(c.c.seq, c.c.account, c.c.wallet, c.c.asset)
        .where(*window)
        .order_by(c.c.seq)
        .limit(2**62)
        .subquery()
    )
    w = window_rows.c
    latest = select(func.max(w.seq).label("seq")).group_by(w.account, w.wallet, w.asset).subquery()
    result = await conn.execute(
        select(c.c.kind, *[c.c[n] for n in RECORD_COLUMNS]).join(latest, c.c.seq == latest.c.seq)
    )
    for row in result.all():
        key = (row[1], row[3], row[4])
        if row[0] == "removed":
            records.pop(key, None)
        else:
            records[key] = tuple(row)[1:]


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
    records = await _raw_records(conn, base_seq, [])
    await _apply_latest(conn, records, window)
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
