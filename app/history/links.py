"""Each stored change's ``prev_seq``: the seq of the change before it of its record.

Where it sits: the history writer (:mod:`app.history.writer`) stores every batch of
change rows through :func:`store_changes`, which inserts them and keeps this invariant,
for every record (account, wallet, asset):

    a stored change's ``prev_seq`` is the largest stored seq of the same record below its
    own (or a seq retention deleted since), null when no earlier change of it was stored.

So a change is superseded at seq ``S`` exactly when a change with ``seq <= S`` names it as
its ``prev_seq``, and ``?at=`` (:mod:`app.history.queries`) finds the changes still
current at ``S`` among those after a checkpoint by excluding the ``prev_seq`` values of
the same range: two range scans instead of grouping the range by record.

The link points backwards so that it is known when a change is inserted: no stored row is
updated on the **fast path**. The writer remembers the newest seq it stored per record
(:class:`LinkMemory`) and the value of a commit counter (``history_links``) its last
batch left; if the counter shows no other writer committed since, and a record's first
change in the batch is above the remembered seq, that seq is its ``prev_seq``. Anything
else goes the **slow path**, which reads the stored seqs around the batch and corrects
every link there: a record this writer has not seen since it started, a redelivered
change, changes another replica stored in between, or a batch that arrives out of order.
Write transactions are serialized (``BEGIN IMMEDIATE`` on SQLite, an advisory transaction
lock on PostgreSQL), so what a transaction reads is what it links to.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from app.history import schema
from app.history.schema import Key

WRITE_LOCK = 7271915
"""PostgreSQL advisory lock held by every transaction that stores changes."""

Span = tuple[Key, int, int]
"""A record and the lowest and highest seq of its changes in one batch."""

Chain = tuple[list[tuple[int, int | None]], bool]
"""A record's stored ``(seq, prev_seq)`` around a batch, oldest first, and whether its
last element is a change after the batch rather than in it."""

CHANGE_COLUMNS = (
    "seq", "time_us", "kind", "account", "venue", "wallet", "asset", "symbol", "total",
    "available", "locked", "updated_at", "venue_ts", "extra",
)  # fmt: skip
"""The order of a change row's values as the writer builds them
(:func:`app.history.rows.balance_row`); stored with ``prev_seq`` appended."""

_STORED_COLUMNS = (*CHANGE_COLUMNS, "prev_seq")


def _insert_changes_sql(dialect: str) -> str:
    marks = (
        [f"${i}" for i in range(1, len(_STORED_COLUMNS) + 1)]
        if dialect == "postgresql"
        else ["?"] * len(_STORED_COLUMNS)
    )
    return (
        f"INSERT INTO {schema.changes.name} ({', '.join(_STORED_COLUMNS)}) "
        f"VALUES ({', '.join(marks)}) ON CONFLICT (seq) DO NOTHING"
    )


_INSERT_CHANGES = {d: _insert_changes_sql(d) for d in ("postgresql", "sqlite")}


async def _insert(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert stored rows (:data:`CHANGE_COLUMNS` and ``prev_seq``), skipping stored seqs.

    The same idempotent insert as :func:`app.history.queries.insert_ignore`, but handed to
    the driver's own ``executemany`` as positional tuples (asyncpg's pipelined
    executemany, sqlite3's C loop): SQLAlchemy's per-row parameter processing of dicts
    cost more than the database did at the writer's rates. It runs in the caller's
    transaction like any statement on ``conn``.
    """
    await conn.exec_driver_sql(_INSERT_CHANGES[conn.dialect.name], list(rows))


_T = schema.changes.name
_COUNT = f"UPDATE {schema.link_state.name} SET commits = commits + 1 WHERE id = 1 RETURNING commits"
_SQLITE_UPDATE = f"UPDATE {_T} SET prev_seq = ? WHERE seq = ?"
_PG_UPDATE = (
    f"UPDATE {_T} AS c SET prev_seq = v.p "
    "FROM unnest($1::bigint[], $2::bigint[]) AS v(p, s) WHERE c.seq = v.s"
)
_KEY = "c.account = k.account AND c.wallet = k.wallet AND c.asset = k.asset"
_PG_BOUNDS = (
    f"SELECT k.i, (SELECT max(c.seq) FROM {_T} c WHERE {_KEY} AND c.seq < k.lo), "
    f"(SELECT min(c.seq) FROM {_T} c WHERE {_KEY} AND c.seq > k.hi) "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) "
    "WITH ORDINALITY AS k(account, wallet, asset, lo, hi, i)"
)
_PG_CHAINS = (
    f"SELECT k.i, c.seq, c.prev_seq FROM unnest($1::text[], $2::text[], $3::text[], "
    "$4::bigint[], $5::bigint[]) WITH ORDINALITY AS k(account, wallet, asset, lo, hi, i) "
    f"JOIN {_T} c ON {_KEY} AND c.seq >= k.lo AND c.seq <= k.hi ORDER BY k.i, c.seq"
)
_SQLITE_WHERE = "account = ? AND wallet = ? AND asset = ?"
_SQLITE_PRED = f"SELECT max(seq) FROM {_T} WHERE {_SQLITE_WHERE} AND seq < ?"
_SQLITE_SUCC = f"SELECT min(seq) FROM {_T} WHERE {_SQLITE_WHERE} AND seq > ?"
_SQLITE_CHAIN = (
    f"SELECT seq, prev_seq FROM {_T} WHERE {_SQLITE_WHERE} AND seq >= ? AND seq <= ? ORDER BY seq"
)


class LinkMemory:
    """What one writer knows between its batches: the newest seq it stored per record,
    and the commit counter its last batch left (None: trust nothing remembered)."""

    def __init__(self) -> None:
        self.newest: dict[Key, int] = {}
        self.commits: int | None = None

    def forget(self) -> None:
        """After a batch whose commit failed (it may have committed all the same)."""
        self.newest.clear()
        self.commits = None


class Linked:
    """What :func:`store_changes` learned; :meth:`remember` it once the batch committed."""

    def __init__(self, newest: dict[Key, int | None], commits: int, trusted: bool) -> None:
        self.newest = newest
        self.commits = commits
        self.trusted = trusted  # else another writer committed since: start afresh

    def remember(self, memory: LinkMemory) -> None:
        if not self.trusted:
            memory.newest.clear()
        for key, seq in self.newest.items():
            if seq is None:
                memory.newest.pop(key, None)
            else:
                memory.newest[key] = seq
        memory.commits = self.commits


def _seq(row: Sequence[Any]) -> int:
    return int(row[0])


def key_of(row: Sequence[Any]) -> Key:
    """The record of a change row in :data:`CHANGE_COLUMNS` order."""
    return (row[3], row[5], row[6])


def link_batch(
    rows: Sequence[tuple[Any, ...]], known: dict[Key, int]
) -> tuple[list[tuple[Any, ...]], dict[Key, tuple[int, int]], set[Key]]:
    """The batch's rows in seq order with ``prev_seq`` appended (a seq given twice is kept
    once); each record's lowest and highest seq in the batch; and the records linked from
    ``known`` (the newest stored seq per record, when below the batch's first change).
    Within the batch each change links to the one before it; a record's first change
    links to its ``known`` seq, else to nothing yet (the slow path links it)."""
    out: list[tuple[Any, ...]] = []
    last: dict[Key, int] = {}
    first: dict[Key, int] = {}
    fast: set[Key] = set()
    previous = None
    for row in sorted(rows, key=_seq):  # one pass; already in order almost always
        seq = row[0]
        if seq == previous:
            continue
        previous = seq
        key = (row[3], row[5], row[6])
        prev = last.get(key)
        if prev is None:
            first[key] = seq
            prev = known.get(key)
            if prev is not None and prev < seq:
                fast.add(key)
            else:
                prev = None
        last[key] = seq
        out.append((*row, prev))
    return out, {k: (first[k], last[k]) for k in first}, fast


async def store_changes(
    conn: AsyncConnection, rows: Sequence[tuple[Any, ...]], memory: LinkMemory
) -> Linked:
    """Insert change rows (idempotent on seq) and keep every ``prev_seq`` exact.

    ``rows`` are in :data:`CHANGE_COLUMNS` order, without ``prev_seq``. ``memory`` is
    only read here: :meth:`Linked.remember` the answer after the commit, or
    :meth:`LinkMemory.forget` if the commit failed.
    """
    pg = conn.dialect.name == "postgresql"
    if pg:  # one linking transaction at a time across replicas (SQLite: BEGIN IMMEDIATE)
        await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
    commits = int((await conn.exec_driver_sql(_COUNT)).scalar_one())
    trusted = memory.commits is not None and commits == memory.commits + 1
    linked, spans, fast = link_batch(rows, memory.newest if trusted else {})
    await _insert(conn, linked)
    newest: dict[Key, int | None] = {k: spans[k][1] for k in fast}
    slow = [(k, lo, hi) for k, (lo, hi) in spans.items() if k not in fast]
    if slow:
        chains = await (_chains_pg(conn, slow) if pg else _chains_sqlite(conn, slow))
        fixes: list[tuple[int, int]] = []
        for key, (chain, has_later) in chains.items():
            fixes.extend(_fixes(chain))
            newest[key] = None if has_later or not chain else chain[-1][0]
        if fixes:
            if pg:
                prevs, seqs_ = [p for p, _ in fixes], [s for _, s in fixes]
                await conn.exec_driver_sql(_PG_UPDATE, (prevs, seqs_))
            else:
                await conn.exec_driver_sql(_SQLITE_UPDATE, fixes)
    return Linked(newest, commits, trusted)


def _fixes(chain: list[tuple[int, int | None]]) -> Iterable[tuple[int, int]]:
    """``(prev_seq, seq)`` for every change of ``chain`` whose stored link is wrong."""
    for (seq, _), (after, stored) in itertools.pairwise(chain):
        if stored != seq:
            yield seq, after


async def _chains_pg(conn: AsyncConnection, spans: Sequence[Span]) -> dict[Key, Chain]:
    cols: tuple[list[str], ...] = tuple([sp[0][i] for sp in spans] for i in range(3))
    bounds = await conn.exec_driver_sql(
        _PG_BOUNDS, (*cols, [lo for _, lo, _ in spans], [hi for _, _, hi in spans])
    )
    lows, highs, later = [], [], []
    for i, pred, after in sorted(tuple(r) for r in bounds.all()):
        _, lo, hi = spans[i - 1]
        lows.append(lo if pred is None else int(pred))
        highs.append(hi if after is None else int(after))
        later.append(after is not None)
    found = await conn.exec_driver_sql(_PG_CHAINS, (*cols, lows, highs))
    chains: dict[Key, Chain] = {k: ([], later[i]) for i, (k, _, _) in enumerate(spans)}
    for i, seq, prev in (tuple(r) for r in found.all()):
        chains[spans[i - 1][0]][0].append((int(seq), None if prev is None else int(prev)))
    return chains


async def _chains_sqlite(conn: AsyncConnection, spans: Sequence[Span]) -> dict[Key, Chain]:
    def read(db: sqlite3.Connection) -> dict[Key, Chain]:
        chains: dict[Key, Chain] = {}
        for key, lo, hi in spans:
            pred = db.execute(_SQLITE_PRED, (*key, lo)).fetchone()[0]
            after = db.execute(_SQLITE_SUCC, (*key, hi)).fetchone()[0]
            bounds = (lo if pred is None else pred, hi if after is None else after)
            chain = db.execute(_SQLITE_CHAIN, (*key, *bounds)).fetchall()
            chains[key] = (chain, after is not None)
        return chains

    chains: dict[Key, Chain] = await in_sqlite_thread(conn, read)
    return chains


async def in_sqlite_thread(conn: AsyncConnection, fn: Any) -> Any:
    """Run ``fn(sqlite3_connection)`` in the connection's own thread: one hop for many
    statements (each statement through the driver is one thread hop and one wake-up of
    the event loop). It runs inside whatever transaction ``conn`` has open."""
    raw = await conn.get_raw_connection()
    aio = cast(Any, raw.driver_connection)  # aiosqlite.Connection
    # aiosqlite's own way to run a call in its thread (what each of its methods does);
    # not public API, so an aiosqlite upgrade is checked by the history tests
    return await aio._execute(fn, aio._conn)
