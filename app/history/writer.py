"""The history writer: the change stream -> the history database, each change once.

Sits beside the fold, never in it: it is its own task with its own Redis connection and
reads ``P:changes`` through a Redis Streams **consumer group** (one group per deployment,
the consumer name is the instance id), so with several replicas every change is handed
to exactly one writer. A batch is inserted in one transaction, idempotently on ``seq``
(``ON CONFLICT DO NOTHING``), and acknowledged (``XACK``) only after it committed: a
crash or a database outage leaves the entries pending, and they are written on retry
(the writer re-reads its own pending entries first) or claimed by another replica
(``XAUTOCLAIM`` after ``claim_idle_ms``). While full batches keep coming, the next batch
is read while the previous one commits (up to :data:`OVERLAP_BATCHES` per round); a batch
read ahead is pending like any other until its own commit. Once caught up, it lets the
next changes gather for ``gather_s`` before reading again: a read and commit per writer
flush cost nearly half the service's CPU per update at 5,000 updates/s.

If the writer falls further behind than the capped stream keeps, the changes it never
read are gone. It then records a **gap** (the seqs and the time span whose state is
unknown), writes a full snapshot of the current state as a new starting point, and moves
the group past it. History never claims continuity it does not have.

Every ``checkpoint_every`` seqs the writer also stores a **checkpoint**: the full state as
a snapshot (reason ``checkpoint``), so ``?at=`` reads one snapshot plus the changes after
it, however long history grows (:func:`app.history.queries.write_checkpoint`). Only a seq
below every unacknowledged entry of the group is checkpointed: a change another replica
read and has not committed yet is never left out of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.history import schema
from app.history.entries import (
    READ_NEW,
    Entry,
    entry_of,
    field_text,
    iso_to_us,
    seq_of,
    unframe,
    wall_us,
)
from app.history.links import Linked, LinkMemory, store_changes
from app.history.queries import apply_retention, insert_ignore, write_checkpoint
from app.history.rows import balance_row, time_before, write_snapshot
from app.metrics import Metrics
from app.store import BalanceReader, Keys

log = logging.getLogger(__name__)

GROUP = "history"

OVERLAP_BATCHES = 8
"""Most batches one round takes while full batches keep coming (each next batch is read
while the previous one commits); the round then checkpoints and reports lag."""


class ForeignHistory(Exception):
    """The history database was written by another deployment (its seqs are ahead)."""


class HistoryWriter:
    """Consumes the change stream into the history tables (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        engine: AsyncEngine,
        accounts: Callable[[], Sequence[str]],
        *,
        consumer: str,
        group: str = GROUP,
        batch: int = 2_000,
        claim_idle_ms: int = 30_000,
        block_ms: int = 500,
        retention_days: int = 0,
        checkpoint_every: int = 10_000,
        checkpoint_check_s: float = 5.0,
        gather_s: float = 0.05,
        metrics: Metrics | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._engine = schema.writes(engine)
        self._accounts = accounts
        self._reader = BalanceReader(redis, keys)
        self.consumer = consumer
        self.group = group
        self._batch = batch
        self._claim_idle_ms = claim_idle_ms
        self._block_ms = block_ms
        self._retention_days = retention_days
        self._checkpoint_every = checkpoint_every  # 0: no checkpoints
        self._checkpoint_check_s = checkpoint_check_s
        self._gather_s = gather_s
        self._next_checkpoint = 0.0
        self.checkpoints = 0  # checkpoints this writer stored
        self._metrics = metrics
        self._read_script = redis.register_script(READ_NEW)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._retry_pending = True  # re-read our own pending entries first
        self._next_claim = 0.0
        self._next_retention = 0.0
        self._behind_since_us: int | None = None  # oldest entry read but not committed
        self.ready = False  # schema migrated and a starting point recorded
        self.healthy = False
        self.last_error = ""
        self.written = 0  # rows committed by this writer (redeliveries included)
        self._links = LinkMemory()  # for linking each change to the one before it
        # set while no database transaction is in progress: stop waits for one to end
        self._not_committing = asyncio.Event()
        self._not_committing.set()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"history-writer-{self.consumer}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Let a commit in progress finish (bounded by ``timeout``), then stop.

        A read or a wait between rounds is cancelled at once: what was read but not
        committed is still pending in the group and is read again on the next start.
        """
        if self._task is None:
            return
        self._stopping.set()
        task, self._task = self._task, None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._not_committing.wait(), timeout)
        # even a commit cut short is safe: its transaction rolls back and its entries stay
        # pending in the group (writes are idempotent on seq), so the next start redoes it
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                if not self.ready:
                    await self.bootstrap()
                taken = await self.step()
                backoff = 0.1
                self.healthy = True
                if 0 < taken < self._batch:  # caught up: let the next changes gather
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self._gather_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the writer must outlive any database or Redis fault
                self.healthy = False
                self._retry_pending = True
                self.last_error = type(exc).__name__
                if self._behind_since_us is None:  # e.g. the database is down at start-up
                    self._behind_since_us = wall_us()
                # the type only: driver messages can quote connection details
                log.warning(
                    "history write failed (%s); retrying in %.1fs", self.last_error, backoff
                )
                self._report_lag()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)

    # -- starting point ----------------------------------------------------------------

    async def bootstrap(self) -> None:
        """Migrate the schema and make sure history has a starting point and a group."""
        await schema.migrate(self._engine)
        async with self._engine.connect() as conn:
            has_base = (await conn.execute(select(schema.snapshots.c.seq).limit(1))).first()
            stored = (await conn.execute(select(func.max(schema.changes.c.seq)))).scalar() or 0
        group_exists = await self._group_info() is not None
        if has_base and await self._reader.current_seq() < stored:
            # seq never goes back in one deployment: this database recorded another one
            # (another key prefix, or a Redis that was reset); writing would mix the two
            raise ForeignHistory(
                f"the history database holds changes up to seq {stored}, beyond this "
                "deployment's change counter: it belongs to another deployment"
            )
        if has_base:
            if not group_exists:
                await self._create_group(f"{stored}-0")
        else:
            first = await self._first_seq()
            current = await self._reader.current_seq()
            if current == 0 or first == 1:
                # The stream holds the deployment's whole life: history starts empty when
                # its first change was written (or now), and knows nothing before that.
                since = await self._first_time() if first == 1 else None
                genesis = {"seq": 0, "time_us": since or wall_us(), "reason": "genesis"}
                async with self._engine.begin() as conn:
                    await insert_ignore(conn, schema.snapshots, [genesis])
                if not group_exists:
                    await self._create_group("0")
            else:
                seq = await self._snapshot("start")
                if group_exists:
                    await self._redis.xgroup_setid(self._keys.changes, self.group, f"{seq}-0")
                else:
                    await self._create_group(f"{seq}-0")
        self.ready = True
        log.info("history writer %s ready (group %s)", self.consumer, self.group)

    async def _create_group(self, at: str) -> None:
        try:
            await self._redis.xgroup_create(self._keys.changes, self.group, id=at, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _group_info(self) -> dict[str, Any] | None:
        try:
            groups: Any = await self._redis.xinfo_groups(self._keys.changes)
        except ResponseError:  # no such key
            return None
        for info in groups:
            name = info.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                return dict(info)
        return None

    async def _first_time(self) -> int | None:
        entries: Any = await self._redis.xrange(self._keys.changes, count=1)
        t = field_text(entries[0][1], "t") if entries else ""
        return int(t) if t.isdigit() else None

    async def _first_seq(self) -> int | None:
        entries: Any = await self._redis.xrange(self._keys.changes, count=1)
        return seq_of(entries[0][0]) if entries else None

    # -- one round ---------------------------------------------------------------------

    async def step(self) -> int:
        """Claim, retry or read one batch and commit it; return how many entries it took."""
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self._claim_idle_ms / 2000
            claimed = await self._claim()
            if claimed:
                return claimed
        if self._retention_days and now >= self._next_retention:
            self._next_retention = now + 3600
            cutoff = wall_us() - self._retention_days * 86_400_000_000
            await apply_retention(self._engine, cutoff)
        if self._retry_pending:
            reply: Any = await self._redis.xreadgroup(
                self.group, self.consumer, {self._keys.changes: "0"}, count=self._batch
            )
            entries = reply[0][1] if reply else []
            if not entries:
                self._retry_pending = False
                return 0
            await self._commit([entry_of(eid, fields) for eid, fields in entries])
            return len(entries)
        taken, last = 0, 0
        new = await self._checked_read()
        for round_ in range(OVERLAP_BATCHES):
            last = len(new)
            if not new:
                break
            # A full batch means more is waiting: read the next one while this one
            # commits. The read only delivers entries to this consumer; they stay
            # pending until their own commit, as any read entry does.
            more = last == self._batch and round_ + 1 < OVERLAP_BATCHES
            ahead = asyncio.create_task(self._checked_read()) if more else None
            try:
                await self._commit(new)
            except BaseException:
                if ahead is not None:  # its entries stay pending: the retry reads them
                    ahead.cancel()
                    with contextlib.suppress(BaseException):
                        await ahead
                raise
            taken += last
            new = await ahead if ahead is not None else []
        if last < self._batch:
            self._behind_since_us = None
        self._report_lag()
        await self._maybe_checkpoint()
        return taken

    async def _checked_read(self) -> list[Entry]:
        await self._check_trimmed()
        return await self._read_new()

    async def _read_new(self) -> list[Entry]:
        """Up to a batch of entries never delivered to the group (see :data:`READ_NEW`)."""
        blob: Any = await self._read_script(
            keys=[self._keys.changes], args=[self.group, self.consumer, self._batch]
        )
        if blob:
            return unframe(blob.encode() if isinstance(blob, str) else blob)
        reply: Any = await self._redis.xreadgroup(
            self.group,
            self.consumer,
            {self._keys.changes: ">"},
            count=self._batch,
            block=self._block_ms,
        )
        return [entry_of(eid, fields) for eid, fields in (reply[0][1] if reply else [])]

    async def catch_up(self, max_rounds: int = 100_000) -> int:
        """Run rounds until one finds nothing new (used at shutdown and by tests)."""
        total = 0
        for _ in range(max_rounds):
            retrying = self._retry_pending
            taken = await self.step()
            total += taken
            if taken == 0 and not retrying:
                break
        return total

    async def _claim(self) -> int:
        """Take over entries another consumer read and never acknowledged (it died)."""
        reply: Any = await self._redis.xautoclaim(
            self._keys.changes,
            self.group,
            self.consumer,
            self._claim_idle_ms,
            start_id="0-0",
            count=self._batch,
        )
        entries = list(reply[1]) if len(reply) > 1 else []
        deleted = [seq_of(d) for d in reply[2]] if len(reply) > 2 else []
        if deleted:
            # a dead consumer's entries the stream trimmed meanwhile: lost, say so
            await self._gap(min(deleted), move_group=False)
        if entries:
            await self._commit([entry_of(eid, fields) for eid, fields in entries])
        return len(entries) + len(deleted)

    async def _check_trimmed(self) -> None:
        """Record a gap if the stream trimmed entries the group never delivered."""
        info = await self._group_info()
        if info is None:
            # the stream or the group vanished (Redis replaced): start again from here
            self.ready = False
            return
        last = info.get("last-delivered-id")
        delivered = seq_of(last) if last else 0
        first = await self._first_seq()
        if first is not None and first > delivered + 1:
            await self._gap(delivered + 1, move_group=True)

    async def _maybe_checkpoint(self) -> None:
        """Store a checkpoint when enough committed changes passed since the last snapshot."""
        now = time.monotonic()
        if not self._checkpoint_every or now < self._next_checkpoint:
            return
        self._next_checkpoint = now + self._checkpoint_check_s
        safe = await self._committed_through()
        if safe is None:
            return
        async with self._engine.begin() as conn:
            seq = await write_checkpoint(conn, safe, self._checkpoint_every)
        if seq is not None:
            self.checkpoints += 1
            log.debug("history checkpoint at seq %d", seq)

    async def _committed_through(self) -> int | None:
        """A seq at or below which every entry of the stream is committed (or not history's).

        Pending entries are read before the group's last delivered id: an entry delivered
        before that id was read and is not pending any more has been acknowledged, and
        acknowledgement follows the commit.
        """
        pending: Any = await self._redis.xpending(self._keys.changes, self.group)
        info = await self._group_info()
        if info is None:
            return None
        last = info.get("last-delivered-id")
        delivered = seq_of(last) if last else 0
        if pending and pending.get("pending") and pending.get("min") is not None:
            delivered = min(delivered, seq_of(pending["min"]) - 1)
        return delivered if delivered > 0 else None

    # -- writing -----------------------------------------------------------------------

    async def _commit(self, entries: Sequence[Entry]) -> None:
        """Store ``entries`` and acknowledge them; :meth:`stop` lets this finish."""
        self._not_committing.clear()
        try:
            await self._store_and_ack(entries)
        finally:
            self._not_committing.set()

    async def _store_and_ack(self, entries: Sequence[Entry]) -> None:
        rows: list[tuple[Any, ...]] = []  # in CHANGE_COLUMNS order
        states: list[dict[str, Any]] = []
        ids: list[bytes | str] = []
        trimmed: list[int] = []
        fallback_us = wall_us()
        for entry_id, seq, t, m in entries:  # t: epoch µs
            ids.append(entry_id)
            if m is None:
                trimmed.append(seq)  # pending, but the stream no longer holds it
                continue
            message = orjson.loads(m or b"{}")
            kind = message.get("type")
            if t.isdigit():
                time_us = int(t)
            else:  # written before entries carried t: the record's time, else now
                updated = (message.get("balance") or {}).get("updated_at")
                time_us = (iso_to_us(updated) if updated else None) or fallback_us
            if self._behind_since_us is None:
                self._behind_since_us = time_us
            if kind == "balance":
                rows.append(balance_row(seq, time_us, message["balance"]))
            elif kind == "removed":
                rows.append(
                    (seq, time_us, "removed", message["account"], None, message["wallet"],
                     message["asset"], None, None, None, None, None, None, None)
                )  # fmt: skip
            elif kind == "status":
                doc = message.get("account") or {}
                if isinstance(doc, dict) and doc.get("account") and doc.get("state"):
                    states.append(
                        {"seq": seq, "account": doc["account"], "state": str(doc["state"])[:16],
                         "time_us": time_us}
                    )  # fmt: skip
            # venue events never change balances; history does not keep them
        linked: Linked | None = None
        try:
            async with self._engine.begin() as conn:
                if rows:
                    linked = await store_changes(conn, rows, self._links)
                if states:
                    await insert_ignore(conn, schema.statuses, states)
        except BaseException:
            self._links.forget()  # the commit may have happened all the same
            raise
        if linked is not None:
            linked.remember(self._links)
        if trimmed:
            await self._gap(min(trimmed), move_group=False)
        await self._redis.xack(self._keys.changes, self.group, *ids)
        count = len(rows) + len(states)
        self.written += count
        if self._metrics is not None:
            self._metrics.history_writes.inc(count)
        self._behind_since_us = None if len(entries) < self._batch else fallback_us

    async def _gap(self, from_seq: int, *, move_group: bool) -> None:
        """Record the gap from ``from_seq`` and a full snapshot as the new starting point."""
        seq = await self._snapshot("gap", gap_from=from_seq)
        if move_group and seq >= from_seq:
            await self._redis.xgroup_setid(self._keys.changes, self.group, f"{seq}-0")
        if self._metrics is not None:
            self._metrics.history_gaps.inc()
        log.warning(
            "history gap: changes %d..%d were trimmed from the stream before they were "
            "written; recorded a gap and a snapshot at seq %d",
            from_seq,
            seq,
            seq,
        )

    async def _snapshot(self, reason: str, gap_from: int | None = None) -> int:
        """Write the current state from Redis as a snapshot; return its seq."""
        snap = await self._reader.snapshot(list(self._accounts()))
        now_us = wall_us()
        async with self._engine.begin() as conn:
            if gap_from is not None:
                from_time = await time_before(conn, gap_from)
                await insert_ignore(
                    conn,
                    schema.gaps,
                    [{"from_seq": gap_from, "to_seq": max(snap.seq, gap_from),
                      "from_time_us": from_time, "to_time_us": now_us}],
                )  # fmt: skip
            await write_snapshot(conn, snap.seq, now_us, reason, snap.records, snap.statuses)
        return snap.seq

    # -- lag ---------------------------------------------------------------------------

    def lag_seconds(self) -> float:
        if self._behind_since_us is None:
            return 0.0
        return max(0.0, (wall_us() - self._behind_since_us) / 1_000_000)

    def _report_lag(self) -> None:
        if self._metrics is not None:
            self._metrics.history_lag_seconds.set(self.lag_seconds())
