"""The read side of the store: the state as of a seq, and the numbered change stream.

Flow: ``Redis -> BalanceReader -> hub (mirror, WebSocket), REST, history writer``.
:meth:`BalanceReader.snapshot` reads every record and status of some accounts with the
seq they are current at in one transaction; :meth:`~BalanceReader.changes_since` and
:meth:`~BalanceReader.read_after` read the changes after a seq, so a client resumes with
nothing lost or repeated (:class:`ResyncRequired` when the stream was trimmed past it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from app.domain import AccountState, BalanceRecord
from app.store.keys import Keys
from app.store.records import decode_record, parse_status


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change stream: the downstream message, ready to send."""

    seq: int
    account: str
    asset: str
    message: bytes
    received: float | None = None  # upstream receive time (epoch s), when known


@dataclass(slots=True)
class StateSnapshot:
    """Balances and statuses as of ``seq`` (read atomically)."""

    seq: int
    records: list[BalanceRecord]
    statuses: dict[str, dict[str, Any]]


class ResyncRequired(Exception):
    """The change stream no longer holds everything after the requested seq."""


class BalanceReader:
    """Reads the state and the change stream. Stateless; safe to share."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    async def current_seq(self) -> int:
        value = await self._client.get(self._keys.seq)
        return int(value) if value is not None else 0

    async def snapshot(self, accounts: Sequence[str]) -> StateSnapshot:
        """Every record and status of ``accounts`` with the seq they are current at."""
        k = self._keys
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self._keys.seq)
        for account in accounts:
            pipe.hgetall(k.balances(account))
            pipe.hgetall(k.times(account))
            pipe.hgetall(k.status(account))
        replies = await pipe.execute()
        seq = int(replies[0]) if replies[0] is not None else 0
        records: list[BalanceRecord] = []
        statuses: dict[str, dict[str, Any]] = {}
        for i, account in enumerate(accounts):
            bal, ts, status_hash = replies[1 + 3 * i : 4 + 3 * i]
            status = parse_status(status_hash)
            statuses[account] = status
            stale = status.get("state") != AccountState.LIVE
            for name in sorted(bal):
                records.append(decode_record(bal[name], ts.get(name), stale))
        return StateSnapshot(seq, records, statuses)

    async def changes_since(self, seq: int, limit: int = 10_000) -> list[Change]:
        """The changes after ``seq``, oldest first; :class:`ResyncRequired` if trimmed away."""
        entries: Any = await self._client.xrange(
            self._keys.changes, min=f"{seq + 1}-0", count=limit
        )
        changes = [_change(entry_id, fields) for entry_id, fields in entries]
        if changes and changes[0].seq != seq + 1:
            raise ResyncRequired(f"changes after seq {seq} were trimmed")
        if not changes and seq < await self.current_seq():
            raise ResyncRequired(f"changes after seq {seq} were trimmed")
        return changes

    async def read_after(self, seq: int, block_ms: int, count: int = 10_000) -> list[Change]:
        """Block up to ``block_ms`` for changes after ``seq``."""
        reply: Any = await self._client.xread(
            {self._keys.changes: f"{seq}-0"}, count=count, block=block_ms
        )
        out: list[Change] = []
        for _stream, entries in reply or []:
            out.extend(_change(entry_id, fields) for entry_id, fields in entries)
        return out


def _change(entry_id: bytes | str, fields: Mapping[Any, Any]) -> Change:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    get = fields.get

    def text(name: str) -> str:
        value = get(name.encode(), get(name))
        return value.decode() if isinstance(value, bytes) else str(value or "")

    message = get(b"m", get("m"))
    received = text("r")
    return Change(
        seq=int(eid.partition("-")[0]),
        account=text("a"),
        asset=text("s"),
        message=message if isinstance(message, bytes) else str(message).encode(),
        received=int(received) / 1_000_000 if received else None,
    )
