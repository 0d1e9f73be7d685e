"""The Redis-backed balance state: atomic writes, the numbered change stream, and reads.

Layout (``P`` is the configurable prefix; ``{acct}`` is a Redis Cluster hash tag so one
account's keys share a slot)::

    P:{acct}:bal     hash  "wallet|ASSET" -> record content JSON (amounts as strings)
    P:{acct}:ts      hash  "wallet|ASSET" -> ["updated_at", venue_ts or null]
    P:{acct}:status  hash  doc -> lifecycle JSON, last_message_at -> ISO time
    P:{acct}:lease   string owner token (see app.leases); checked by every write
    P:{acct}:holder  string token of the last acquisition (no expiry; see app.leases)
    P:seq            string the deployment-wide change counter
    P:changes        stream entry id "<seq>-0"; fields a (account), s (asset), m (message),
                     t (write time, epoch µs), r (upstream receive time, epoch µs)
    P:prices         hash  Solana mint -> {"price_usd", "symbol", "name", "decimals"};
                           "source|pair" -> market price doc (app.prices.persistence)
    P:instances      zset  instance id -> last heartbeat (ms), for fair lease sharing
    P:dataset        string random id of this data set: changes when Redis lost its data

Every write is one Lua script: it compares, writes, takes a ``seq`` per real change and
appends the ready-to-send downstream message to ``P:changes`` in the same atomic step, so
REST, the WebSocket and resume can never disagree. :class:`BalanceWriter` batches every
write that arrives within one loop iteration into one pipeline (one round trip), and
keeps the newest state per key in memory while Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.domain import AssetBalance, BalanceRecord

log = logging.getLogger(__name__)

FIELD_SEP = "|"

# The fence: the lease must hold the writer's token. A lease that lapsed while Redis was
# unreachable still counts as the writer's when nobody acquired the account since (the
# holder is the writer's token): the owner's pending writes are then kept, not refused
# (see app.leases). Lease and holder both gone means Redis lost its data: a write now
# would show the account's latest changes alone, as if they were its whole state, so it
# waits (code 2) until the owner takes the lease back and sends the full state with it.
# fence(): 0 the write goes, 1 another instance owns the account, 2 the data set was lost.
_FENCE_LUA = """
local function fence(lease, holder, token)
  if token == '' then return 0 end
  local current = redis.call('GET', lease)
  if current == token then return 0 end
  if current then return 1 end
  local last = redis.call('GET', holder)
  if last == false then return 2 end
  if last ~= token then return 1 end
  return 0
end
"""

_APPLY_LUA = (
    _FENCE_LUA
    + """
-- KEYS: bal, ts, status, lease, seq, changes, holder
-- ARGV: fence, now, maxlen, account, last_message_at, received, now_us, nscopes, scope...,
--       (field, content, vts)...   received: upstream receive time (epoch µs) or ''.
--       now_us: the same instant as now (ISO, ms) in epoch µs, kept in each entry as t.
local fenced = fence(KEYS[4], KEYS[7], ARGV[1])
if fenced ~= 0 then return {-fenced, 0} end
local now, maxlen, account = ARGV[2], ARGV[3], ARGV[4]
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], 'last_message_at', ARGV[5]) end
local recv, now_us = ARGV[6], ARGV[7]
local nscopes = tonumber(ARGV[8])
local scopes = {}
for i = 1, nscopes do scopes[ARGV[8 + i]] = true end
local count, last = 0, 0
local keep = {}
local i = 9 + nscopes
while i <= #ARGV do
  local f, content, vts = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  keep[f] = true
  if redis.call('HGET', KEYS[1], f) ~= content then
    redis.call('HSET', KEYS[1], f, content)
    redis.call('HSET', KEYS[2], f, '["' .. now .. '",' .. vts .. ']')
    last = redis.call('INCR', KEYS[5])
    count = count + 1
    local sep = string.find(f, '|', 1, true)
    local msg = '{"type":"balance","seq":' .. last .. ',"balance":' ..
      string.sub(content, 1, -2) .. ',"updated_at":"' .. now .. '","venue_ts":' .. vts ..
      ',"stale":false}}'
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, last .. '-0',
      'a', account, 's', string.sub(f, sep + 1), 'm', msg, 'r', recv, 't', now_us)
  end
  i = i + 3
end
if nscopes > 0 then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    local sep = string.find(f, '|', 1, true)
    local wallet = string.sub(f, 1, sep - 1)
    if scopes[wallet] and not keep[f] then
      redis.call('HDEL', KEYS[1], f)
      redis.call('HDEL', KEYS[2], f)
      last = redis.call('INCR', KEYS[5])
      count = count + 1
      local asset = string.sub(f, sep + 1)
      local msg = '{"type":"removed","seq":' .. last .. ',"account":' .. cjson.encode(account) ..
        ',"wallet":' .. cjson.encode(wallet) .. ',"asset":' .. cjson.encode(asset) .. '}'
      redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, last .. '-0',
        'a', account, 's', asset, 'm', msg, 'r', recv, 't', now_us)
    end
  end
end
return {count, last}
"""
)

_NOTE_LUA = (
    _FENCE_LUA
    + """
-- A status change or a venue event. KEYS: status, lease, seq, changes, holder
-- ARGV: fence, maxlen, account, kind ('status' | 'event'), body JSON, message prefix, now_us
local fenced = fence(KEYS[2], KEYS[5], ARGV[1])
if fenced ~= 0 then return {-fenced, 0} end
if ARGV[4] == 'status' then
  if redis.call('HGET', KEYS[1], 'doc') == ARGV[5] then return {0, 0} end
  redis.call('HSET', KEYS[1], 'doc', ARGV[5])
end
local seq = redis.call('INCR', KEYS[3])
local msg = '{"seq":' .. seq .. ',' .. ARGV[6] .. ARGV[5] .. '}'
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'a', ARGV[3], 's', '', 'm', msg,
  't', ARGV[7])
return {1, seq}
"""
)


_SEQ_FLOOR_LUA = """
-- KEYS: seq; ARGV: floor. Raise the counter to at least floor (never lower it).
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 0
"""


def decimal_str(value: Decimal) -> str:
    """Canonical text of an exact amount: no exponent, no trailing zeros (``1.50`` -> ``1.5``)."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def utc_now_iso() -> str:
    return iso_time(time.time())


def iso_time(epoch: float) -> str:
    """``2026-11-21T10:00:00.123Z`` for an epoch time in seconds."""
    dt = datetime.fromtimestamp(epoch, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def iso_time_us(epoch_us: int) -> str:
    """``2026-11-21T10:00:00.123Z`` for an epoch time in µs (truncated to the ms, exactly)."""
    seconds, micros = divmod(epoch_us, 1_000_000)
    dt = datetime.fromtimestamp(seconds, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{micros // 1000:03d}Z"


def field_name(wallet: str, asset: str) -> str:
    return f"{wallet}{FIELD_SEP}{asset}"


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = "balagg") -> None:
        self.prefix = prefix
        self.seq = f"{prefix}:seq"
        self.changes = f"{prefix}:changes"
        self.prices = f"{prefix}:prices"
        self.instances = f"{prefix}:instances"
        self.dataset = f"{prefix}:dataset"
        self.resync = f"{prefix}:resync"

    def account(self, account: str, kind: str) -> str:
        return f"{self.prefix}:{{{account}}}:{kind}"


def encode_content(account: str, venue: str, balance: AssetBalance) -> bytes:
    """The comparable part of a record: everything but the times and the stale flag."""
    return orjson.dumps(
        {
            "account": account,
            "venue": venue,
            "wallet": balance.wallet,
            "asset": balance.asset,
            "symbol": balance.symbol,
            "total": decimal_str(balance.total),
            "available": decimal_str(balance.available),
            "locked": decimal_str(balance.locked),
            "extra": dict(balance.extra),
        }
    )


def decode_record(content: bytes | str, ts: bytes | str | None, stale: bool) -> BalanceRecord:
    doc = orjson.loads(content)
    updated_at, venue_ts = orjson.loads(ts) if ts else ("", None)
    return BalanceRecord(
        account=doc["account"],
        venue=doc["venue"],
        wallet=doc["wallet"],
        asset=doc["asset"],
        symbol=doc["symbol"],
        total=Decimal(doc["total"]),
        available=Decimal(doc["available"]),
        locked=Decimal(doc["locked"]),
        updated_at=updated_at,
        venue_ts=venue_ts,
        stale=stale,
        extra=doc["extra"],
    )


# ---------------------------------------------------------------------------------------
# Writing


@dataclass(slots=True)
class _Content:
    """A pending record; encoded only at flush, so conflated values cost no encoding."""

    balance: AssetBalance
    venue_ts: str | None


@dataclass(slots=True)
class _PendingAccount:
    """Everything not yet written for one account, conflated to the newest value per key.

    Invariant: a field whose wallet has a pending replace lives in ``replaces``, never in
    ``updates``, so writing replaces and updates in one script keeps arrival order.
    """

    venue: str
    replaces: dict[str, dict[str, _Content]] = field(default_factory=dict)
    updates: dict[str, _Content] = field(default_factory=dict)
    last_message_ts: float = 0.0  # newest upstream receive time (epoch s)
    first_received: float = 0.0  # oldest upstream receive time not yet written (epoch s)

    def add_replace(self, wallet: str, contents: dict[str, _Content]) -> None:
        self.replaces[wallet] = contents
        prefix = wallet + FIELD_SEP
        for name in [n for n in self.updates if n.startswith(prefix)]:
            del self.updates[name]

    def add_update(self, name: str, content: _Content) -> None:
        wallet = name.partition(FIELD_SEP)[0]
        scope = self.replaces.get(wallet)
        if scope is not None:
            scope[name] = content
        else:
            self.updates[name] = content

    def merge_newer(self, newer: _PendingAccount) -> None:
        """Fold ``newer`` (arrived later) on top of this older pending set."""
        for wallet, contents in newer.replaces.items():
            self.add_replace(wallet, dict(contents))
        for name, content in newer.updates.items():
            self.add_update(name, content)
        self.last_message_ts = max(self.last_message_ts, newer.last_message_ts)
        if newer.first_received and (
            not self.first_received or newer.first_received < self.first_received
        ):
            self.first_received = newer.first_received

    def key_count(self) -> int:
        return len(self.updates) + sum(len(c) for c in self.replaces.values())


@dataclass(frozen=True, slots=True)
class _Note:
    account: str
    kind: str  # "status" | "event"
    body: bytes
    prefix: bytes


_FENCED = -1  # a write script's answer: another instance owns the account
_DATA_LOST = -2  # a write script's answer: lease and holder gone with a lost data set
_HELD_RETRY_S = 0.1


@dataclass(frozen=True, slots=True)
class FlushResult:
    account: str
    changes: int
    last_seq: int
    fenced: bool


def _vts(content: _Content) -> bytes:
    return b"null" if content.venue_ts is None else orjson.dumps(content.venue_ts)


FenceLookup = Callable[[str], str | None]
"""account -> lease token that must still be current ('' = no fencing, ``None`` = this
process holds no lease for it: its pending writes are refused, never written unfenced)."""


class BalanceWriter:
    """Batches writes into one pipeline per loop iteration; never blocks the callers.

    ``submit_*`` only touch memory. A single flusher task drains everything pending into
    one Redis round trip. On a Redis error nothing is lost: the taken batch is merged back
    under anything newer and retried with backoff, and memory stays bounded by the
    number of keys (values are conflated), not by the number of frames.
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
    ) -> None:
        self._client = client
        self._keys = keys
        self._maxlen = str(stream_maxlen)
        self._fence = fence or (lambda _account: "")
        self._on_flush = on_flush
        self._on_error = on_error
        self._pending: dict[str, _PendingAccount] = {}
        self._notes: deque[_Note] = deque()
        self._prices: dict[str, bytes] = {}
        self._max_notes = max_pending_notes
        self.dropped_notes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._apply = client.register_script(_APPLY_LUA)
        self._note = client.register_script(_NOTE_LUA)
        self._seq_floor = client.register_script(_SEQ_FLOOR_LUA)
        self.max_seq = 0  # the highest seq a write of this process took
        # Redis lost its data (a write found lease and holder gone): the writes of those
        # accounts are kept until the owner has taken the lease back and resent the full
        # state (see Supervisor), so they never go in alone
        self.data_lost = False
        self.healthy = True
        self.last_error: str = ""
        self._closing = False

    # -- submitting (memory only) ------------------------------------------------------

    def _account(self, account: str, venue: str) -> _PendingAccount:
        pending = self._pending.get(account)
        if pending is None:
            pending = self._pending[account] = _PendingAccount(venue)
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
        contents = {field_name(b.wallet, b.asset): _Content(b, venue_ts) for b in balances}
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
        """New values for some assets; others untouched."""
        pending = self._account(account, venue)
        for b in balances:
            pending.add_update(f"{b.wallet}{FIELD_SEP}{b.asset}", _Content(b, venue_ts))
        self._kick()

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
        self._add_note(
            _Note(account, "status", orjson.dumps(dict(status)), b'"type":"status","account":')
        )

    def submit_event(self, account: str, kind: str, data: Mapping[str, Any]) -> None:
        """A venue event to re-broadcast (order, points, swap); bounded while Redis is down."""
        prefix = b'"type":"event","account":' + orjson.dumps(account) + b',"kind":'
        prefix += orjson.dumps(kind) + b',"data":'
        self._add_note(_Note(account, "event", orjson.dumps(dict(data)), prefix))

    def _add_note(self, note: _Note) -> None:
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
        """Write everything pending in one pipeline. On error, everything is kept."""
        pending, self._pending = self._pending, {}
        notes, self._notes = self._notes, deque()
        prices, self._prices = self._prices, {}
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
        calls: list[tuple[str, bool]] = []  # (account, is_apply)
        pipe = self._client.pipeline(transaction=False)
        try:
            for account, acc in pending.items():
                k = self._keys.account
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
                for name, c in acc.updates.items():
                    args += (name, encode_content(account, venue, c.balance), _vts(c))
                keys = [
                    k(account, "bal"), k(account, "ts"), k(account, "status"),
                    k(account, "lease"), self._keys.seq, self._keys.changes,
                    k(account, "holder"),
                ]  # fmt: skip
                await self._apply(keys=keys, args=args, client=pipe)
                calls.append((account, True))
            for note in notes:
                keys = [
                    self._keys.account(note.account, "status"),
                    self._keys.account(note.account, "lease"),
                    self._keys.seq,
                    self._keys.changes,
                    self._keys.account(note.account, "holder"),
                ]
                args = [
                    self._fence(note.account), self._maxlen, note.account, note.kind,
                    note.body, note.prefix, now_us,
                ]  # fmt: skip
                await self._note(keys=keys, args=args, client=pipe)
                calls.append((note.account, False))
            if prices:
                pipe.hset(self._keys.prices, mapping=prices)  # type: ignore[arg-type]
            replies = await pipe.execute(raise_on_error=False)
        except BaseException:
            self._restore(pending, notes, prices)
            raise
        results = [FlushResult(account, 0, 0, True) for account in sorted(unowned)]
        failed: BaseException | None = None
        if prices:
            price_reply = replies.pop()
            if isinstance(price_reply, BaseException):
                failed = price_reply
        held: set[str] = set()
        for (account, _is_apply), reply in zip(calls, replies, strict=True):
            if isinstance(reply, BaseException):
                failed = reply
                continue
            count, last = (int(x) for x in cast(list[Any], reply))
            if count == _DATA_LOST:
                held.add(account)
                continue
            if last > self.max_seq:
                self.max_seq = last
            results.append(FlushResult(account, max(count, 0), last, count == _FENCED))
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
        pending: dict[str, _PendingAccount],
        notes: deque[_Note],
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


# ---------------------------------------------------------------------------------------
# Reading


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
        k = self._keys.account
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self._keys.seq)
        for account in accounts:
            pipe.hgetall(k(account, "bal"))
            pipe.hgetall(k(account, "ts"))
            pipe.hgetall(k(account, "status"))
        replies = await pipe.execute()
        seq = int(replies[0]) if replies[0] is not None else 0
        records: list[BalanceRecord] = []
        statuses: dict[str, dict[str, Any]] = {}
        for i, account in enumerate(accounts):
            bal, ts, status_hash = replies[1 + 3 * i : 4 + 3 * i]
            status = parse_status(status_hash)
            statuses[account] = status
            stale = status.get("state") != "live"
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


def parse_status(status_hash: Mapping[Any, Any]) -> dict[str, Any]:
    """Status hash -> status JSON (lifecycle doc plus last_message_at)."""
    doc = status_hash.get(b"doc", status_hash.get("doc"))
    status: dict[str, Any] = orjson.loads(doc) if doc else {}
    last = status_hash.get(b"last_message_at", status_hash.get("last_message_at"))
    if last is not None:
        status["last_message_at"] = last.decode() if isinstance(last, bytes) else last
    return status


def totals_by_symbol(records: Iterable[BalanceRecord]) -> dict[str, dict[str, Any]]:
    """Exact sums per symbol (the asset code when no symbol is known)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        symbol = r.symbol or r.asset
        row = out.get(symbol)
        if row is None:
            row = out[symbol] = {
                "symbol": symbol,
                "total": Decimal(0),
                "available": Decimal(0),
                "locked": Decimal(0),
                "accounts": set(),
            }
        row["total"] += r.total
        row["available"] += r.available
        row["locked"] += r.locked
        row["accounts"].add(r.account)
    return out
