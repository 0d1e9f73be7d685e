"""The write side of the store: :class:`BalanceWriter` batches balances, statuses, events
and prices into one Redis round trip per loop iteration.

Flow: ``venue parser -> fold -> BalanceWriter -> Redis (lua/apply.lua, lua/note.lua)``.
Every write is one Lua script: it checks the account's lease (the fence), compares,
writes, takes a ``seq`` per real change and appends the ready-to-send downstream message
to ``P:changes`` in the same atomic step, so REST, the WebSocket and resume can never
disagree. The writer keeps the newest state per key in memory while Redis is unreachable.
Key names are in :mod:`app.store.keys`, the record shape in :mod:`app.store.records`,
what is held between flushes in :mod:`app.store.pending`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.canonical import iso_time, iso_time_us
from app.domain import AssetBalance
from app.store import scripts
from app.store.keys import FIELD_SEP, Keys, field_name
from app.store.pending import Content, Note, PendingAccount
from app.store.reader import Change
from app.store.records import STATUS_PREFIX, encode_content, encode_venue_ts, event_prefix

log = logging.getLogger(__name__)


_FENCED = -1  # a write script's answer: another instance owns the account
_DATA_LOST = -2  # a write script's answer: lease and holder gone with a lost data set
_HELD_RETRY_S = 0.1
KEEP_PER_SECOND = 1_000
KEEP_PER_KEY = 200
"""Superseded values kept per second, in all and per key: below them every value of a
key reaches the change stream (and so every client and the history) even when it
changes faster than the writer flushes; past them (a burst) only the newest of a flush.
So a key changing 100 times a second shows every value, one changing 5,000 times a
second costs at most 200 extra entries a second."""


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What one account's write did; ``written`` holds each change exactly as it was
    appended to ``P:changes``, in seq order, so the stream hub of this process can apply
    its own writes without reading them back."""

    account: str
    changes: int
    last_seq: int
    fenced: bool
    written: tuple[Change, ...] = ()


def _written(account: str, reply: list[Any], received: float | None) -> tuple[Change, ...]:
    """The ``seq, asset, message`` triples after a write script's ``count, last``."""
    out: list[Change] = []
    for i in range(2, len(reply) - 2, 3):
        asset, message = reply[i + 1], reply[i + 2]
        out.append(
            Change(
                seq=int(reply[i]),
                account=account,
                asset=asset.decode() if isinstance(asset, bytes) else str(asset),
                message=message if isinstance(message, bytes) else str(message).encode(),
                received=received,
            )
        )
    return tuple(out)


def _vts(content: Content) -> bytes:
    return encode_venue_ts(content.venue_ts)


FenceLookup = Callable[[str], str | None]
"""account -> lease token that must still be current ('' = no fencing, ``None`` = this
process holds no lease for it: its pending writes are refused, never written unfenced)."""


class BalanceWriter:
    """Batches writes into one pipeline per loop iteration; never blocks the callers.

    ``submit_*`` only touch memory. A single flusher task drains everything pending into
    one Redis round trip. On a Redis error nothing is lost: the taken batch is merged back
    under anything newer and retried with backoff, and memory stays bounded by the
    number of keys (values are conflated), not by the number of frames.

    Conflation is the answer to load, not the rule: while the writer is healthy, up to
    ``keep_per_second`` superseded values a second (``keep_per_key`` per key) are written
    too, each with its own ``seq`` before the newer one, so a key that changes faster
    than one flush still shows every value on the change stream; past that budget (a
    burst), only the newest.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        *,
        stream_maxlen: int = 100_000,
        fence: FenceLookup | None = None,
        on_flush: Callable[[Sequence[FlushResult]], None] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
        max_pending_notes: int = 10_000,
        keep_per_second: int = KEEP_PER_SECOND,
        keep_per_key: int = KEEP_PER_KEY,
    ) -> None:
        self._client = client
        self._keys = keys
        self._maxlen = str(stream_maxlen)
        self._fence = fence or (lambda _account: "")
        self._on_flush = on_flush
        self._on_error = on_error
        self._pending: dict[str, PendingAccount] = {}
        self._notes: deque[Note] = deque()
        self._prices: dict[str, bytes] = {}
        self._max_notes = max_pending_notes
        self.keep_per_second = keep_per_second
        self.keep_per_key = keep_per_key
        self._keep = keep_per_second  # left in this second's window
        # (account, wallet, asset) -> superseded values kept this second
        self._kept: dict[tuple[str, str, str], int] = {}
        self._window = int(time.monotonic())
        self.dropped_notes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._apply = scripts.PipelinedScript(client, scripts.fenced(scripts.APPLY))
        self._note = scripts.PipelinedScript(client, scripts.fenced(scripts.NOTE))
        self._seq_floor = client.register_script(scripts.lua(scripts.SEQ_FLOOR))
        self._scripts_loaded = False
        self.max_seq = 0  # the highest seq a write of this process took
        # Redis lost its data (a write found lease and holder gone): the writes of those
        # accounts are kept until the owner has taken the lease back and resent the full
        # state (see Supervisor), so they never go in alone
        self.data_lost = False
        self.healthy = True
        self.last_error: str = ""

    # -- submitting (memory only) ------------------------------------------------------

    def _account(self, account: str, venue: str) -> PendingAccount:
        pending = self._pending.get(account)
        if pending is None:
            pending = self._pending[account] = PendingAccount(venue)
        return pending

    def submit_snapshot(
        self,
        account: str,
        venue: str,
        wallet: str,
        balances: Iterable[AssetBalance],
        venue_ts: str | None = None,
    ) -> None:
        """Replace the whole ``wallet`` scope of ``account``: assets not listed are removed."""
        contents = {field_name(b.wallet, b.asset): Content(b, venue_ts) for b in balances}
        for name in contents:
            if name.partition(FIELD_SEP)[0] != wallet:
                raise ValueError(f"snapshot of wallet {wallet!r} holds {name!r}")
        self._account(account, venue).add_replace(wallet, contents)
        self._kick()

    def submit_update(
        self,
        account: str,
        venue: str,
        balances: Iterable[AssetBalance],
        venue_ts: str | None = None,
    ) -> None:
        """New values for some assets; others untouched. While the writer is healthy and
        within its budgets (see KEEP_PER_SECOND), a pending value this supersedes is
        written too, before it, so the change stream carries every value, not only the
        newest."""
        pending = self._account(account, venue)
        for b in balances:
            name = field_name(b.wallet, b.asset)
            older = pending.add_update(name, Content(b, venue_ts))
            if older is not None and self.keeps(account, b.wallet, b.asset):
                key = (account, b.wallet, b.asset)
                self._kept[key] = self._kept.get(key, 0) + 1
                self._keep -= 1
                pending.earlier.append((name, older))
        self._kick()

    def keeps(self, account: str, wallet: str, asset: str) -> bool:
        """A superseded pending value of this balance would still be kept: callers that
        must build the value first ask before they do (a burst of one key costs no more
        than it did before values were kept)."""
        return (
            self._keep > 0
            and self.healthy
            and self._kept.get((account, wallet, asset), 0) < self.keep_per_key
        )

    def _next_window(self) -> None:
        """Renew the budgets of superseded values kept once a second."""
        window = int(time.monotonic())
        if window != self._window:
            self._window = window
            self._keep = self.keep_per_second
            self._kept.clear()

    def touch(self, account: str, venue: str, received: float) -> None:
        """An upstream frame arrived at ``received`` (epoch s).

        Written with the next batch as ``last_message_at`` (no change emitted); the oldest
        receive time of a batch rides along in its change entries (field ``r``), so the
        hub can measure upstream receive -> downstream send.
        """
        pending = self._account(account, venue)
        pending.last_message_ts = received
        if not pending.first_received:
            pending.first_received = received
        self._kick()

    def submit_status(self, account: str, status: Mapping[str, Any]) -> None:
        """A lifecycle change: stored and broadcast in order (unchanged docs are skipped)."""
        self._add_note(Note(account, "status", orjson.dumps(dict(status)), STATUS_PREFIX))

    def submit_event(self, account: str, kind: str, data: Mapping[str, Any]) -> None:
        """A venue event to re-broadcast (order, points, swap); bounded while Redis is down."""
        self._add_note(
            Note(account, "event", orjson.dumps(dict(data)), event_prefix(account, kind))
        )

    def _add_note(self, note: Note) -> None:
        if len(self._notes) >= self._max_notes:
            self._notes.popleft()
            self.dropped_notes += 1
        self._notes.append(note)
        self._kick()

    def submit_price(self, mint: str, doc: Mapping[str, Any]) -> None:
        """A Solana mint's USD price and metadata, kept in ``P:prices`` (no change entry)."""
        self._prices[mint] = orjson.dumps(dict(doc))
        self._kick()

    def submit_market_price(self, key: str, doc: bytes) -> None:
        """A market price (``source|pair`` -> encoded doc) for ``P:prices``, no change entry.

        Only the newest doc per key is kept until it is written, so a feed can never grow
        this while Redis is away.
        """
        self._prices[key] = doc
        self._kick()

    def discard(self, account: str) -> None:
        """Forget everything pending for an account (it was fenced off)."""
        self._pending.pop(account, None)
        self._notes = deque(n for n in self._notes if n.account != account)

    async def raise_seq_floor(self, seq: int) -> None:
        """After Redis lost its data: keep ``seq`` above every seq handed out before.

        ``seq`` is the clients' resume token and must only grow; a Redis that restarted
        empty would count from 1 again.
        """
        await self._seq_floor(keys=[self._keys.seq], args=[max(seq, self.max_seq)])

    def pending_keys(self) -> int:
        return sum(p.key_count() for p in self._pending.values()) + len(self._notes)

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    # -- the flusher -------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="balance-writer")

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            # let every reader that is ready run first, so one round trip carries them all
            await asyncio.sleep(0)
            try:
                await self.flush_once()
            except (RedisError, OSError) as exc:
                self.healthy = False
                self.last_error = type(exc).__name__
                if self._on_error is not None:
                    self._on_error("write", exc)
                log.warning(
                    "redis write failed (%s); retrying in %.2fs", type(exc).__name__, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._wake.set()
                continue
            backoff = 0.05
            self.healthy = True
            if not (self._pending or self._notes or self._prices):
                self._idle.set()
            else:
                if self.data_lost:
                    # held until the lease is taken back: retry at a bounded rate
                    await asyncio.sleep(_HELD_RETRY_S)
                self._wake.set()

    async def flush_once(self) -> list[FlushResult]:
        """Write everything pending in one pipeline. On error, everything is kept.

        The scripts are loaded before the first flush and again after a flush found
        them missing (a restarted Redis, a flushed script cache: that flush fails and
        is retried whole, which the compare-and-set scripts make safe).
        """
        pending, self._pending = self._pending, {}
        notes, self._notes = self._notes, deque()
        prices, self._prices = self._prices, {}
        self._next_window()
        if not pending and not notes and not prices:
            return []
        now_us = time.time_ns() // 1000
        now = iso_time_us(now_us)
        # a write whose lease was released or lost meanwhile is refused here: sent with no
        # fence it could overwrite what the account's new owner already wrote
        unowned = {a for a in {*pending, *(n.account for n in notes)} if self._fence(a) is None}
        for account in unowned:
            pending.pop(account, None)
        if unowned:
            notes = deque(n for n in notes if n.account not in unowned)
        calls: list[tuple[str, float | None]] = []  # (account, received as the stream has it)
        k = self._keys
        pipe = self._client.pipeline(transaction=False)
        try:
            if not self._scripts_loaded and (pending or notes):
                await self._apply.load()
                await self._note.load()
                self._scripts_loaded = True
            for account, acc in pending.items():
                args: list[Any] = [
                    self._fence(account), now, self._maxlen, account,
                    iso_time(acc.last_message_ts) if acc.last_message_ts else "",
                    str(int(acc.first_received * 1_000_000)) if acc.first_received else "",
                    now_us, len(acc.replaces), *acc.replaces.keys(),
                ]  # fmt: skip
                venue = acc.venue
                for contents in acc.replaces.values():
                    for name, c in contents.items():
                        args += (name, encode_content(account, venue, c.balance), _vts(c))
                for name, c in acc.earlier:
                    args += (name, encode_content(account, venue, c.balance), _vts(c))
                for name, c in acc.updates.items():
                    args += (name, encode_content(account, venue, c.balance), _vts(c))
                keys = [
                    k.balances(account), k.times(account), k.status(account),
                    k.lease(account), k.seq, k.changes, k.holder(account),
                ]  # fmt: skip
                self._apply.queue(pipe, keys, args)
                received_us = int(acc.first_received * 1_000_000) if acc.first_received else 0
                calls.append((account, received_us / 1_000_000 if received_us else None))
            for note in notes:
                keys = [
                    k.status(note.account),
                    k.lease(note.account),
                    k.seq,
                    k.changes,
                    k.holder(note.account),
                ]
                args = [
                    self._fence(note.account), self._maxlen, note.account, note.kind,
                    note.body, note.prefix, now_us,
                ]  # fmt: skip
                self._note.queue(pipe, keys, args)
                calls.append((note.account, None))
            if prices:
                pipe.hset(self._keys.prices, mapping=prices)  # type: ignore[arg-type]
            replies = await pipe.execute(raise_on_error=False)
        except BaseException:
            self._restore(pending, notes, prices)
            raise
        if scripts.missing_script(replies):
            self._scripts_loaded = False
        results = [FlushResult(account, 0, 0, True) for account in sorted(unowned)]
        failed: BaseException | None = None
        if prices:
            price_reply = replies.pop()
            if isinstance(price_reply, BaseException):
                failed = price_reply
        held: set[str] = set()
        for (account, received), reply in zip(calls, replies, strict=True):
            if isinstance(reply, BaseException):
                failed = reply
                continue
            values = cast(list[Any], reply)
            count, last = int(values[0]), int(values[1])
            if count == _DATA_LOST:
                held.add(account)
                continue
            if last > self.max_seq:
                self.max_seq = last
            results.append(
                FlushResult(
                    account,
                    max(count, 0),
                    last,
                    count == _FENCED,
                    _written(account, values, received),
                )
            )
        if failed is not None:
            # Scripts are idempotent (compare-and-set), so re-running the whole batch is safe.
            self._restore(pending, notes, prices)
            raise failed
        if held:
            if not self.data_lost:
                log.warning(
                    "redis lost its data: holding the writes of %d account(s) until their "
                    "full state can go in with them",
                    len(held),
                )
            self.data_lost = True
            self._restore(
                {a: p for a, p in pending.items() if a in held},
                deque(n for n in notes if n.account in held),
                {},
            )
        fenced = {r.account for r in results if r.fenced}
        for account in fenced:
            self.discard(account)
        if self._on_flush is not None:
            self._on_flush(results)
        return results

    def _restore(
        self,
        pending: dict[str, PendingAccount],
        notes: deque[Note],
        prices: dict[str, bytes],
    ) -> None:
        prices.update(self._prices)
        self._prices = prices
        for account, newer in self._pending.items():
            older = pending.get(account)
            if older is None:
                pending[account] = newer
            else:
                older.merge_newer(newer)
        self._pending = pending
        notes.extend(self._notes)
        while len(notes) > self._max_notes:
            notes.popleft()
            self.dropped_notes += 1
        self._notes = notes

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written (False on timeout)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is pending (bounded by ``timeout``) and stop the flusher."""
        if self._task is None:
            return
        await self.drain(timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
