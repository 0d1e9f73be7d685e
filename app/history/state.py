"""The exact state at an instant (``?at=``): a base snapshot plus the changes current then.

Where it sits: :func:`state_at` is what ``GET /v1/balances?at=``, series, value and
retention read (through :mod:`app.history.queries`); the rows come from the tables of
:mod:`app.history.schema`, written by the writer (:mod:`app.history.writer`).

An answer is a short **plan** (:func:`_plan`): a generator that yields SQL statements and
receives their rows, the same SQL on both databases. On PostgreSQL each statement is one
round trip through the connection. On SQLite the whole plan runs in the driver's own
thread in one hop (:func:`app.history.links.in_sqlite_thread`): through the async driver
every statement is a thread hop and an event-loop wake-up, and on a busy machine those
waits, not the database, were most of an answer's time.

The changes current at seq ``S`` among those after the base snapshot ``B`` are the ones in
``(B, S]`` that no change in ``(B, S]`` names as its ``prev_seq`` (see
:mod:`app.history.links`): two scans of one primary-key range, no grouping by record.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import AccountState
from app.history import schema
from app.history.links import in_sqlite_thread
from app.history.schema import Key, RawRecord
from app.history.snapshot_cache import SnapshotCache
from app.history.times import iso_us

RECORD_COLUMNS = (
    "account", "venue", "wallet", "asset", "symbol", "total", "available", "locked",
    "updated_at", "venue_ts", "extra",
)  # fmt: skip
"""A record's columns as an answer reads them (same names in ``history_changes`` and
``history_snapshot_rows``)."""

Rows = list[tuple[Any, ...]]
Plan = Generator[tuple[str, tuple[Any, ...]], Rows, Any]
"""Yields ``(sql, params)`` with ``?`` markers, receives the statement's rows."""


class NotCovered(Exception):
    """History holds no state for that instant (before it started, or inside a gap)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def from_raw(raw: RawRecord) -> dict[str, Any]:
    """A stored record (:data:`RECORD_COLUMNS`) as the REST record dict."""
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
    (:func:`app.history.queries.balances_json`), so an answer builds each record once.
    """

    seq: int
    time_us: int
    raw: dict[Key, RawRecord]
    live: dict[str, bool]
    _records: dict[Key, dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def records(self) -> dict[Key, dict[str, Any]]:
        if self._records is None:
            self._records = {key: from_raw(r) for key, r in self.raw.items()}
        return self._records


_COLS = ", ".join(RECORD_COLUMNS)
_CH = schema.changes.name
_GAP = (
    f"SELECT from_seq, to_seq, from_time_us, to_time_us FROM {schema.gaps.name} "
    "WHERE from_time_us <= ? AND to_time_us > ? LIMIT 1"
)
_BASE = f"SELECT seq FROM {schema.snapshots.name} WHERE time_us <= ? ORDER BY seq DESC LIMIT 1"
_FIRST = f"SELECT min(time_us) FROM {schema.snapshots.name}"
_SNAPSHOT = f"SELECT {_COLS} FROM {schema.snapshot_rows.name} WHERE snapshot_seq = ?"
# The newest change written at or before the instant (by the time index), and of the
# changes sharing that µs the last one: the state is every change up to it in stream order.
_NEWEST = (
    f"SELECT max(seq) FROM {_CH} WHERE time_us = "
    f"(SELECT max(time_us) FROM {_CH} WHERE time_us <= ?)"
)
_WINDOW = f"SELECT kind, {_COLS} FROM {_CH} WHERE seq > ? AND seq <= ?"
_SUPERSEDED = (
    f" AND seq NOT IN (SELECT prev_seq FROM {_CH} "
    "WHERE seq > ? AND seq <= ? AND prev_seq IS NOT NULL)"
)
_STATUS = (
    f"SELECT s.account, s.state FROM {schema.statuses.name} s JOIN "
    f"(SELECT account, max(seq) AS seq FROM {schema.statuses.name} WHERE time_us <= ? "
    "GROUP BY account) n ON s.account = n.account AND s.seq = n.seq"
)


def _filtered(
    sql: str, params: tuple[Any, ...], accounts: Sequence[str] | None, assets: Sequence[str] | None
) -> tuple[str, tuple[Any, ...]]:
    """``sql`` (its outer query ending in a WHERE) narrowed to those accounts and assets."""
    for column, values in (("account", accounts), ("asset", assets)):
        if values is not None:
            values = list(values)
            marks = ", ".join("?" * len(values)) or "NULL"
            sql += f" AND {column} IN ({marks})"
            params += tuple(values)
    return sql, params


def current_changes(
    base_seq: int, seq: int, accounts: Sequence[str] | None, assets: Sequence[str] | None
) -> Plan:
    """Plan: the changes in ``(base_seq, seq]`` still current at ``seq`` (one per record
    changed there), as ``(kind, *RECORD_COLUMNS)``."""
    sql, args = _filtered(_WINDOW, (base_seq, seq), accounts, assets)
    rows = yield (sql + _SUPERSEDED, (*args, base_seq, seq))
    return rows


@dataclass(slots=True)
class _Found:
    base_seq: int
    seq: int
    snapshot: Rows | None  # None: the cache holds it
    current: Rows
    statuses: Rows


def _plan(
    time_us: int,
    accounts: Sequence[str] | None,
    assets: Sequence[str] | None,
    kept: frozenset[int],
) -> Plan:
    gap = yield (_GAP, (time_us, time_us))
    if gap:
        from_seq, to_seq, from_us, to_us = gap[0]
        raise NotCovered(
            "history_gap",
            f"history has a gap from {iso_us(from_us)} to {iso_us(to_us)} "
            f"(changes {from_seq}..{to_seq} were never written): the state at that "
            "instant is unknown",
        )
    base = yield (_BASE, (time_us,))
    if not base:
        first = (yield (_FIRST, ()))[0][0]
        since = f"starts at {iso_us(int(first))}" if first is not None else "is empty"
        raise NotCovered("not_covered", f"history {since}; nothing is known before that")
    base_seq = int(base[0][0])
    snapshot = None
    if base_seq not in kept:
        snapshot = yield _filtered(_SNAPSHOT, (base_seq,), accounts, assets)
    last = (yield (_NEWEST, (time_us,)))[0][0]
    seq = max(base_seq, int(last or 0))
    current = yield from current_changes(base_seq, seq, accounts, assets)
    statuses = yield (_STATUS, (time_us,))
    return _Found(base_seq, seq, snapshot, current, statuses)


_NO_CACHE: frozenset[int] = frozenset()


@functools.lru_cache(maxsize=64)
def _numbered(sql: str) -> str:
    """``?`` markers as PostgreSQL's ``$1, $2, …``."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


async def run_plan(conn: AsyncConnection, plan: Plan) -> Any:
    """Run ``plan`` on ``conn`` in its transaction (on SQLite in one thread hop).

    As any statement on ``conn`` would, it begins the connection's transaction when none
    is open, so several answers on one connection (a series) read one snapshot."""
    if conn.dialect.name == "sqlite":
        if not conn.in_transaction():
            await conn.begin()
        return await in_sqlite_thread(conn, functools.partial(_run_sync, plan=plan))
    rows: Rows | None = None
    while True:
        try:
            sql, params = plan.send(rows)  # type: ignore[arg-type]
        except StopIteration as stop:
            return stop.value
        result = await conn.exec_driver_sql(_numbered(sql), params)
        rows = [tuple(r) for r in result.all()]


def _run_sync(db: Any, plan: Plan) -> Any:
    own = not db.in_transaction  # one snapshot for the whole plan in any case
    if own:
        db.execute("BEGIN")
    try:
        rows: Rows | None = None
        while True:
            try:
                sql, params = plan.send(rows)  # type: ignore[arg-type]
            except StopIteration as stop:
                return stop.value
            rows = db.execute(sql, params).fetchall()
    finally:
        if own:
            db.execute("ROLLBACK")


async def state_at(
    conn: AsyncConnection,
    time_us: int,
    accounts: Sequence[str] | None = None,
    assets: Sequence[str] | None = None,
    snapshots: SnapshotCache | None = None,
) -> StateAt:
    """The exact records at ``time_us``: the base snapshot plus the changes current then.

    "Then" is stream order: every change up to the newest one written at or before
    ``time_us``, so the answer is always a state the change stream really passed through
    (with one clock, exactly the changes timed at or before the instant). ``snapshots``
    (one per database) keeps base snapshots read in full for the next answers.
    """
    kept = frozenset(snapshots.seqs()) if snapshots is not None else _NO_CACHE
    found: _Found = await run_plan(conn, _plan(time_us, accounts, assets, kept))
    raw = _base_records(found, accounts, assets, snapshots)
    if raw is None:  # dropped from the cache since: read it again
        rows = await run_plan(conn, _snapshot_plan(found.base_seq, accounts, assets))
        raw = {(r[0], r[2], r[3]): tuple(r) for r in rows}
    for row in found.current:
        key = (row[1], row[3], row[4])
        if row[0] == "removed":
            raw.pop(key, None)
        else:
            raw[key] = tuple(row[1:])
    live = {account: state == AccountState.LIVE for account, state in found.statuses}
    return StateAt(found.seq, time_us, raw, live)


def _snapshot_plan(
    base_seq: int, accounts: Sequence[str] | None, assets: Sequence[str] | None
) -> Plan:
    rows = yield _filtered(_SNAPSHOT, (base_seq,), accounts, assets)
    return rows


def _base_records(
    found: _Found,
    accounts: Sequence[str] | None,
    assets: Sequence[str] | None,
    snapshots: SnapshotCache | None,
) -> dict[Key, RawRecord] | None:
    """The base snapshot's records matching the filters, by key (a dict of its own)."""
    if found.snapshot is not None:
        read = {(r[0], r[2], r[3]): tuple(r) for r in found.snapshot}
        if snapshots is None:
            return read
        if accounts is not None or assets is not None:
            return read  # only the part asked for: not for the cache
        snapshots.put(found.base_seq, read)
        return dict(read)
    kept = snapshots.get(found.base_seq) if snapshots is not None else None
    if kept is None:
        return None
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
