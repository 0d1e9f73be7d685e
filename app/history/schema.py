"""The history database: tables, engine, and the versioned migrations the service runs.

Owns the storage layout of :mod:`app.history`. Amounts are stored as **canonical decimal
strings** (``TEXT``, as in Redis and every response), not ``NUMERIC``: SQLite gives
``NUMERIC`` columns float affinity (``0.1`` would come back as a binary float), and one
exact representation on both databases keeps the code and the tests identical. Times are
integer epoch **microseconds** (``time_us``): exact, indexable, and free of time-zone
handling differences between SQLite and PostgreSQL.

Migrations: ``history_schema`` holds one row with the applied version; :data:`MIGRATIONS`
is an append-only list of steps, each run in its own transaction at start-up. An upgraded
service applies the steps it finds missing; a database newer than the code is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    event,
    inspect,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

Key = tuple[str, str, str]
"""A balance record's identity: account, wallet, asset."""

RawRecord = tuple[Any, ...]
"""One stored balance record as read: the values of
:data:`app.history.queries.RECORD_COLUMNS` from ``history_changes`` or
``history_snapshot_rows``."""

WRITE_OPTION = "history_write"
"""Execution option marking a write transaction (``BEGIN IMMEDIATE`` on SQLite)."""

metadata = MetaData()

schema_version = Table(
    "history_schema",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
)


def _change_columns() -> list[Any]:
    """The columns and indexes of ``history_changes`` as version 1 created them (new
    objects on each call: one table per metadata)."""
    return [
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("time_us", BigInteger, nullable=False),
        Column("kind", String(8), nullable=False),
        Column("account", String(64), nullable=False),
        Column("venue", String(32)),
        Column("wallet", String(160), nullable=False),
        Column("asset", String(160), nullable=False),
        Column("symbol", String(64)),
        Column("total", Text),
        Column("available", Text),
        Column("locked", Text),
        Column("updated_at", String(40)),
        Column("venue_ts", String(40)),
        Column("extra", Text),  # JSON object as stored in Redis
        Index("ix_history_changes_account_asset_time", "account", "asset", "time_us"),
        Index("ix_history_changes_key_seq", "account", "wallet", "asset", "seq"),
        Index("ix_history_changes_time", "time_us"),
    ]


# One row per change on the stream that history needs: a balance record written
# (kind "balance") or removed (kind "removed"). Amount columns are null for removals.
# prev_seq (version 2) is the seq of the change before it of the same record (account,
# wallet, asset), null for the first one stored: a change is the record's state from its
# seq until the first change naming it as prev_seq. The writer keeps it exact
# (app.history.links).
changes = Table("history_changes", metadata, *_change_columns(), Column("prev_seq", BigInteger))

# One row (id 1): the number of transactions that stored changes. A writer that finds it
# one above what its own last batch left knows no other writer stored changes in between
# (app.history.links).
link_state = Table(
    "history_links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("commits", BigInteger, nullable=False),
)

# Account lifecycle states over time (from status messages and snapshots): a record at a
# past instant is `stale` unless its account was `live` then.
statuses = Table(
    "history_status",
    metadata,
    Column("seq", BigInteger, nullable=False),
    Column("account", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("time_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("seq", "account"),
    Index("ix_history_status_account_time", "account", "time_us"),
)

# A full state at `seq`: the genesis (seq 0, empty), the start of history on a deployment
# whose stream was already trimmed, the new starting point after a gap, or the base kept
# when retention deletes older changes.
snapshots = Table(
    "history_snapshots",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time_us", BigInteger, nullable=False),
    Column("reason", String(16), nullable=False),
    Index("ix_history_snapshots_time", "time_us"),
)

snapshot_rows = Table(
    "history_snapshot_rows",
    metadata,
    Column("snapshot_seq", BigInteger, nullable=False),
    Column("account", String(64), nullable=False),
    Column("venue", String(32)),
    Column("wallet", String(160), nullable=False),
    Column("asset", String(160), nullable=False),
    Column("symbol", String(64)),
    Column("total", Text, nullable=False),
    Column("available", Text, nullable=False),
    Column("locked", Text, nullable=False),
    Column("updated_at", String(40)),
    Column("venue_ts", String(40)),
    Column("extra", Text),
    PrimaryKeyConstraint("snapshot_seq", "account", "wallet", "asset"),
)

# Changes the stream no longer held when the writer came to them: seqs from_seq..to_seq
# are not stored, and the state between from_time_us and to_time_us is unknown.
gaps = Table(
    "history_gaps",
    metadata,
    Column("from_seq", BigInteger, primary_key=True, autoincrement=False),
    Column("to_seq", BigInteger, nullable=False),
    Column("from_time_us", BigInteger, nullable=False),
    Column("to_time_us", BigInteger, nullable=False),
)

# Prices over time (see app.history.prices): pair "BASE/QUOTE", where it came from.
prices = Table(
    "history_prices",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("pair", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("price", Text, nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Index("ix_history_prices_pair_time", "pair", "time_us"),
)


def _v1(conn: Connection) -> None:
    # version 1 as shipped: history_changes without prev_seq
    for table in (statuses, snapshots, snapshot_rows, gaps, prices):
        table.create(conn, checkfirst=True)
    Table(changes.name, MetaData(), *_change_columns()).create(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    # prev_seq, filled in for the changes already stored: each one's predecessor among
    # the changes of its record (one pass over the table: about 10 s per million changes
    # on SQLite, see docs/operations.md)
    t = changes.name
    conn.exec_driver_sql(f"ALTER TABLE {t} ADD COLUMN prev_seq BIGINT")
    conn.exec_driver_sql(
        f"UPDATE {t} SET prev_seq = n.prev_seq FROM ("
        "SELECT seq, lag(seq) OVER (PARTITION BY account, wallet, asset ORDER BY seq) "
        f"AS prev_seq FROM {t}) AS n WHERE {t}.seq = n.seq AND n.prev_seq IS NOT NULL"
    )
    if conn.dialect.name == "postgresql":
        # the UPDATE wrote every row anew, in record order: put the table back in seq
        # order (?at= reads ranges of seqs) and drop the old row versions
        conn.exec_driver_sql(f"CLUSTER {t} USING {t}_pkey")
        conn.exec_driver_sql(f"ANALYZE {t}")
    link_state.create(conn)
    conn.execute(link_state.insert().values(id=1, commits=0))


MIGRATIONS: Sequence[Callable[[Connection], None]] = (_v1, _v2)
"""Append-only: step ``i`` upgrades version ``i`` to ``i + 1``. Never edit a shipped step."""

LATEST = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was migrated by a newer version of the service."""


def _current_version(conn: Connection) -> int:
    if not inspect(conn).has_table(schema_version.name):
        schema_version.create(conn)
        return 0
    value = conn.execute(select(schema_version.c.version)).scalar()
    return int(value or 0)


def _set_version(conn: Connection, version: int) -> None:
    conn.execute(schema_version.delete())
    conn.execute(schema_version.insert().values(version=version))


async def migrate(engine: AsyncEngine) -> int:
    """Apply every missing migration step; return the version now in force.

    Each step runs in its own transaction together with the version bump, so a crash
    leaves the database at a consistent version. On PostgreSQL a transaction-level
    advisory lock keeps replicas that start together from migrating at once.
    """
    while True:
        async with writes(engine).begin() as conn:
            if engine.dialect.name == "postgresql":
                await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7271914)")
            version = await conn.run_sync(_current_version)
            if version > LATEST:
                raise SchemaTooNew(
                    f"history schema version {version} is newer than this service ({LATEST})"
                )
            if version == LATEST:
                return version
            await conn.run_sync(MIGRATIONS[version])
            await conn.run_sync(_set_version, version + 1)


def default_url(data_dir: Path) -> str:
    """The embedded SQLite file under the data directory."""
    return f"sqlite+aiosqlite:///{(data_dir / 'history.sqlite3').resolve()}"


def make_engine(url: str) -> AsyncEngine:
    """An engine for ``url``; SQLite gets WAL mode so readers never wait for the writer,
    and durable commits (``synchronous=FULL``)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 10})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: object) -> None:
            # the driver's implicit BEGIN is replaced by ours (below)
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is synced at every commit. The writer acknowledges stream
            # entries once their batch committed; with NORMAL a power loss could drop the
            # last committed batches after their XACK, a hole in history nobody recorded.
            # With 2,000-row batches that is one sync per batch, within the bench's noise.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            # Writers take the write lock up front (BEGIN IMMEDIATE): a deferred
            # transaction that reads and then writes can fail with "database is locked"
            # instead of waiting when another connection writes at the same moment.
            if conn.get_execution_options().get(WRITE_OPTION):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def writes(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool) with write transactions marked (see :data:`WRITE_OPTION`)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def redacted(url: str) -> str:
    """``url`` with any password masked, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
