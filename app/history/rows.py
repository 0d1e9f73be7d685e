"""The history database rows the writer stores: changes, snapshots, statuses.

Where it sits: the history writer (:mod:`app.history.writer`) turns each batch of
change-stream entries into change rows (:func:`balance_row`, in
:data:`app.history.links.CHANGE_COLUMNS` order) and stores them with
:func:`app.history.links.store_changes`; a gap or checkpoint stores the full state with
:func:`write_snapshot`. The tables are :mod:`app.history.schema`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.history import schema
from app.history.queries import insert_ignore
from app.store import decimal_str


def balance_row(seq: int, time_us: int, b: dict[str, Any]) -> tuple[Any, ...]:
    extra = b.get("extra")
    return (
        seq, time_us, "balance", b["account"], b.get("venue"), b["wallet"], b["asset"],
        b.get("symbol"), b["total"], b["available"], b["locked"], b.get("updated_at"),
        b.get("venue_ts"), orjson.dumps(extra).decode() if extra else "{}",
    )  # fmt: skip


async def time_before(conn: AsyncConnection, seq: int) -> int:
    """Time of the newest stored change or snapshot before ``seq`` (0 if none)."""
    change = (
        await conn.execute(
            select(func.max(schema.changes.c.time_us)).where(schema.changes.c.seq < seq)
        )
    ).scalar()
    snap = (
        await conn.execute(
            select(func.max(schema.snapshots.c.time_us)).where(schema.snapshots.c.seq < seq)
        )
    ).scalar()
    return int(max(change or 0, snap or 0))


async def write_snapshot(
    conn: AsyncConnection,
    seq: int,
    time_us: int,
    reason: str,
    records: Sequence[Any],
    statuses: dict[str, dict[str, Any]],
) -> None:
    await insert_ignore(
        conn, schema.snapshots, [{"seq": seq, "time_us": time_us, "reason": reason}]
    )
    rows = [
        {
            "snapshot_seq": seq, "account": r.account, "venue": r.venue, "wallet": r.wallet,
            "asset": r.asset, "symbol": r.symbol, "total": decimal_str(r.total),
            "available": decimal_str(r.available), "locked": decimal_str(r.locked),
            "updated_at": r.updated_at or None, "venue_ts": r.venue_ts,
            "extra": orjson.dumps(dict(r.extra)).decode(),
        }
        for r in records
    ]  # fmt: skip
    if rows:
        await insert_ignore(conn, schema.snapshot_rows, rows)
    states = [
        {"seq": seq, "account": account, "state": str(doc.get("state") or "unknown")[:16],
         "time_us": time_us}
        for account, doc in statuses.items()
    ]  # fmt: skip
    if states:
        await insert_ignore(conn, schema.statuses, states)
