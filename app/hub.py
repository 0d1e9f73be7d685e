"""The stream hub: an in-memory mirror of the Redis state and the ``/v1/stream`` fan-out.

Where it sits::

    Redis P:changes --XREAD BLOCK (one reader per process, own connection)--> StreamHub
        |-- mirror: records, statuses, seq       REST and /metrics read it (no Redis trip)
        |-- ring: the last messages              resume with ``since`` without Redis
        `-- one Subscriber per /v1/stream client bounded, conflating queue + a sender task

The mirror is loaded atomically (:meth:`BalanceReader.snapshot`) and then applies every
change in ``seq`` order, so ``seq`` and the state it describes always agree. A gap in
``seq`` (the stream was trimmed past this reader) or a ``seq`` that went backwards (Redis
lost its data) reloads the mirror and sends every client a fresh snapshot.

Staleness is an account property: a record is ``stale`` while its account's state is not
``live``. Balance messages carry ``"stale": false`` (the venue just confirmed the value);
REST, snapshots and the metrics apply the account's current state, and clients apply
``status`` messages the same way.

A status is only as good as the instance that wrote it: one whose owner is gone — its
lease is not held by that owner, or the owner has no heartbeat in ``P:instances`` within
a lease time, or (embedded Redis, private to this process) it is any other instance — is
shown ``stale`` at once (``connecting``/``syncing``/``live`` alike), so a crashed
instance's last ``live`` is never served as current by its successor. Owner liveness is
read with the mirror and on every refresh; when it flips, clients get a fresh snapshot.

Each change is serialized once, by the Redis write script, and the same text object is
handed to every client. A client that cannot keep up has its pending messages conflated
(the newest per (account, wallet, asset) wins), so its memory is bounded by the number of
keys, not by the update rate; one whose socket accepts nothing while more than
``client_max_lag`` messages arrive for it is closed with code 1013 and can resume. That
is checked on every batch of changes and on a timer, so a client is closed even when
nothing changes upstream. Per-client replies (pong, errors) are never conflated; at most
``client_buffer`` of them may wait, past that the client is closed with 1013 too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, cast

import orjson
import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from app.domain import AccountState, AccountStatus, BalanceRecord
from app.prices.model import Price
from app.runtime import Runtime
from app.store import (
    BalanceReader,
    Change,
    ResyncRequired,
    StateSnapshot,
    decimal_str,
    field_name,
    iso_time,
)

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013

_OWNED_STATES = frozenset({AccountState.CONNECTING, AccountState.SYNCING, AccountState.LIVE})
_STALE_FALSE = b'"stale":false}'
_STALE_TRUE = b'"stale":true}'
_BALANCE_AT = b',"balance":'
_READ_COUNT = 1_000  # changes per XREAD: bounds one fan-out burst between sender turns
_REPLAY_CHUNK = 10_000
_RING_MAX = 10_000
_CLOSE_WAIT = 3.0
_CACHE_MAX = 64
_WATCH_S = 0.5  # how often slow clients are looked for when no change arrives

Key = tuple[str, str, str]
"""Conflation key: (account, wallet, asset) for balances, (account, "", "") for status,
(:data:`PRICE_KEY`, source, pair) for prices."""
PRICE_KEY = "\x00price"  # never an account id


_READ_REFRESH_LUA = """
-- KEYS: seq, instances, then each account's status and lease; ARGV: oldest live heartbeat
-- (ms). One reply for any number of accounts: seq, the live instances, and the accounts'
-- lease values and last_message_at joined by \\31 (parsing thousands of replies was most
-- of an idle service's CPU). Read-only.
local leases, seen = {}, {}
for i = 3, #KEYS, 2 do
  seen[#seen + 1] = redis.call('HGET', KEYS[i], 'last_message_at') or ''
  leases[#leases + 1] = redis.call('GET', KEYS[i + 1]) or ''
end
return {
  redis.call('GET', KEYS[1]) or '0',
  redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf'),
  table.concat(leases, '\\31'),
  table.concat(seen, '\\31'),
}
"""


class ClientSocket(Protocol):
    """What the hub needs from a downstream connection (a Starlette ``WebSocket`` fits)."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass(slots=True)
class Message:
    """One frame for downstream clients, shared by all of them (serialized once)."""

    seq: int  # 0 for per-client control frames (snapshot, pong, error)
    account: str
    asset: str
    key: Key | None  # None: never conflated (events, control frames)
    text: str  # "" for a change about an account this instance does not serve
    received: float = 0.0  # perf_counter when the hub read it; 0 for control frames
    data: bytes | None = None  # ``text`` encoded, once, for every client's direct write
    control: bool = False  # a reply to one client (pong, error): counted against its bound

    def encoded(self) -> bytes:
        data = self.data
        if data is None:
            data = self.data = self.text.encode()
        return data


@dataclass(slots=True)
class _Entry:
    """One record of the mirror, kept as the exact JSON the stream carried."""

    raw: bytes  # record JSON ending in "stale":false}
    wallet: str
    asset: str
    symbol: str | None
    total: str
    available: str
    locked: str

    @property
    def nonzero(self) -> bool:
        return not (self.total == "0" and self.available == "0" and self.locked == "0")

    def json(self, stale: bool) -> bytes:
        if stale and self.raw.endswith(_STALE_FALSE):
            return self.raw[: -len(_STALE_FALSE)] + _STALE_TRUE
        return self.raw


class _AccountMirror:
    """The records of one account, kept sorted by field name (wallet|asset) for output."""

    __slots__ = ("entries", "venue")

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.entries: dict[str, _Entry] = {}

    def put(self, name: str, entry: _Entry) -> None:
        known = name in self.entries
        self.entries[name] = entry
        if not known:
            # values change in place far more often than keys appear: sort only then
            self.entries = dict(sorted(self.entries.items()))

    def remove(self, name: str) -> None:
        self.entries.pop(name, None)


def record_json(record: BalanceRecord) -> bytes:
    """A record in the field order the Redis write script produces (``stale`` last)."""
    return orjson.dumps(
        {
            "account": record.account,
            "venue": record.venue,
            "wallet": record.wallet,
            "asset": record.asset,
            "symbol": record.symbol,
            "total": decimal_str(record.total),
            "available": decimal_str(record.available),
            "locked": decimal_str(record.locked),
            "extra": dict(record.extra),
            "updated_at": record.updated_at,
            "venue_ts": record.venue_ts,
            "stale": False,
        }
    )


_DIRECT_BATCH = 512


class _DirectWriter(Protocol):
    """The parts of uvicorn's sans-I/O WebSocket protocol a batched send needs."""

    conn: Any
    transport: Any
    writable: asyncio.Event
    disconnected: bool
    close_sent: bool


def _direct_writer(socket: ClientSocket) -> _DirectWriter | None:
    """uvicorn's connection behind a Starlette WebSocket, if the ASGI send is its own.

    Anything else (another server, a wrapped send, a test double) gets the portable path:
    one ``send_text`` per message.
    """
    proto = getattr(getattr(socket, "_send", None), "__self__", None)
    if type(proto).__name__ != "WebSocketsSansIOProtocol":
        return None
    needed = ("conn", "transport", "writable", "disconnected", "close_sent")
    if not all(hasattr(proto, name) for name in needed):
        return None
    return cast(_DirectWriter, proto)


def _parse_change(change: Change, received: float) -> tuple[Message, dict[str, Any]]:
    """The shared frame of a change, plus its decoded form for the mirror."""
    doc: dict[str, Any] = orjson.loads(change.message)
    kind = doc.get("type")
    key: Key | None = None
    if kind == "balance":
        record = doc["balance"]
        key = (change.account, str(record["wallet"]), str(record["asset"]))
    elif kind == "removed":
        key = (change.account, str(doc["wallet"]), str(doc["asset"]))
    elif kind == "status":
        key = (change.account, "", "")
    text = change.message.decode()
    return Message(change.seq, change.account, change.asset, key, text, received), doc


def price_message(price: Price, stale: bool = False) -> Message:
    """``{"type": "price", ...}``: one market price, conflated per (source, pair)."""
    doc = {
        "type": "price",
        "source": price.source.value,
        "pair": price.pair,
        "base": price.base,
        "quote": price.quote,
        "price": decimal_str(price.price),
        "path": price.label,
        "received_at": iso_time(price.received),
        "venue_ts": price.venue_ts,
        "stale": stale,
    }
    return Message(
        0, "", "", (PRICE_KEY, price.source.value, price.pair), orjson.dumps(doc).decode()
    )


def normalize_assets(assets: Iterable[str] | None) -> frozenset[str] | None:
    """Asset filters match the code as given and upper-cased (``btc`` finds ``BTC``)."""
    if assets is None:
        return None
    out: set[str] = set()
    for asset in assets:
        out.add(asset)
        out.add(asset.upper())
    return frozenset(out)


class Subscriber:
    """One ``/v1/stream`` client: its filter, its bounded queue and its sender task.

    The queue keeps every message while it holds at most ``limit``; past that it switches
    to conflation, keeping only the newest message per key (events and control frames are
    never dropped), and stays conflating until it drains. A replaced message is removed
    and its successor appended, so the queue stays in ``seq`` order and the last ``seq`` a
    client received is always a correct resume point.
    """

    def __init__(
        self,
        hub: StreamHub,
        accounts: frozenset[str] | None,
        assets: frozenset[str] | None,
        limit: int,
    ) -> None:
        self._hub = hub
        self.accounts = accounts
        self.assets = assets
        self.limit = limit
        self.prices = False  # opted in to ``price`` messages (``prices=true``)
        self._queue: OrderedDict[object, Message] = OrderedDict()
        self._conflating = False
        self._allowance = 0  # extra room a resume replay may use without being conflated
        self.controls = 0  # per-client replies (pong, error) waiting: bounded by ``limit``
        self._serial = 0
        self._wake = asyncio.Event()
        self.close_code: int | None = None
        self.holding = False  # a replay is being read from Redis: do not send yet
        self.epoch = 0  # bumped whenever a fresh snapshot supersedes the queue
        self.stalled = 0  # messages queued since the socket last accepted one
        self.conflated = 0
        self.sent = 0
        self.peak_pending = 0
        self.closed = asyncio.Event()
        self._socket: ClientSocket | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_send = False
        self._closer: asyncio.Task[None] | None = None

    # -- filter ------------------------------------------------------------------------

    def matches(self, msg: Message) -> bool:
        if self.accounts is not None and msg.account not in self.accounts:
            return False
        if self.assets is not None and msg.key is not None and msg.key[2]:
            return msg.asset in self.assets
        return True

    # -- queue -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._queue)

    def push(self, msg: Message) -> None:
        queue = self._queue
        if self._conflating and msg.key is not None:
            if queue.pop(msg.key, None) is not None:
                self.conflated += 1
                self._hub.count_conflated(1)
            queue[msg.key] = msg
        else:
            self._serial += 1
            queue[self._serial] = msg
            if msg.control:
                self.controls += 1
            if not self._conflating and len(queue) > self.limit + self._allowance:
                self._conflate()
        self.stalled += 1
        if len(queue) > self.peak_pending:
            self.peak_pending = len(queue)
        self._wake.set()

    def _conflate(self) -> None:
        """Keep the newest message per key, in order; from now on conflate on arrival."""
        newest: set[Key] = set()
        kept: list[tuple[object, Message]] = []
        for slot, msg in reversed(self._queue.items()):
            if msg.key is None:
                kept.append((slot, msg))
            elif msg.key not in newest:
                newest.add(msg.key)
                kept.append((msg.key, msg))
        dropped = len(self._queue) - len(kept)
        self._queue = OrderedDict(reversed(kept))
        self._conflating = True
        if dropped:
            self.conflated += dropped
            self._hub.count_conflated(dropped)

    def clear(self) -> None:
        self._queue.clear()
        self.controls = 0
        self._conflating = False
        self._allowance = 0
        self.stalled = 0

    def prepend(self, messages: Sequence[Message]) -> None:
        """Put a replay before what arrived live while it was being read.

        A replay is delivered exactly (each missed message once), so it gets room of its
        own on top of ``limit``; it is bounded by ``client_max_lag``, which decides
        whether a client may resume at all.
        """
        live = list(self._queue.values())
        self.clear()
        self._allowance = len(messages)
        for msg in (*messages, *live):
            self.push(msg)
        self.stalled = 0

    # -- sending -----------------------------------------------------------------------

    def attach(self, socket: ClientSocket) -> None:
        """Start the sender: from now on it is the only writer of ``socket``."""
        self._socket = socket
        self._task = asyncio.create_task(self._pump(socket), name="stream-client")

    async def _pump(self, socket: ClientSocket) -> None:
        metrics = self._hub.metrics
        observe = metrics.event_lag_seconds.observe
        queue_pop = self._pop
        direct = _direct_writer(socket)
        try:
            while self.close_code is None:
                await self._wake.wait()
                self._wake.clear()
                sent = 0
                while direct is not None and self.close_code is None and not self.holding:
                    # Everything queued goes out as one write: each message is framed
                    # into the connection's buffer and the frames leave in one syscall,
                    # instead of one awaited ASGI send (and syscall) per message.
                    self._in_send = True
                    await direct.writable.wait()  # the transport's flow control
                    self._in_send = False
                    if direct.disconnected or direct.close_sent:
                        raise ConnectionError("stream client went away")
                    batch = 0
                    conn = direct.conn
                    while batch < _DIRECT_BATCH and self.close_code is None and not self.holding:
                        msg = queue_pop()
                        if msg is None:
                            break
                        conn.send_text(msg.encoded())
                        batch += 1
                        if msg.received:
                            observe(time.perf_counter() - msg.received)
                    if not batch:
                        break
                    direct.transport.write(b"".join(conn.data_to_send()))
                    self.stalled = 0
                    sent += batch
                while direct is None and self.close_code is None and not self.holding:
                    msg = queue_pop()
                    if msg is None:
                        break
                    self._in_send = True
                    await socket.send_text(msg.text)
                    self._in_send = False
                    self.stalled = 0
                    sent += 1
                    if msg.received:
                        observe(time.perf_counter() - msg.received)
                if sent:
                    self.sent += sent
                    metrics.downstream_messages.inc(sent)
        except Exception as exc:  # the peer went away mid-send
            log.debug("stream client send failed: %s", type(exc).__name__)
            self.closed.set()
            return
        await self._close_socket(socket, self.close_code)

    def _pop(self) -> Message | None:
        if not self._queue:
            return None
        _slot, msg = self._queue.popitem(last=False)
        if msg.control:
            self.controls -= 1
        if self._allowance:
            self._allowance -= 1
        if not self._queue:
            self._conflating = False
        return msg

    def request_close(self, code: int) -> None:
        """Close with ``code`` after the message being sent; a stuck send is abandoned."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.clear()  # nothing more will be sent: release it now
        self._wake.set()
        task, socket = self._task, self._socket
        if task is None or socket is None:
            self.closed.set()
        elif self._in_send and not task.done():
            # the peer reads nothing, so the send never finishes: cancel it and close
            task.cancel()
            self._closer = asyncio.create_task(self._close_socket(socket, code))

    async def _close_socket(self, socket: ClientSocket, code: int) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(socket.close(code), _CLOSE_WAIT)
        self.closed.set()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    async def detach(self) -> None:
        """Stop the sender (the connection ended)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.closed.set()


class _BalanceCollector(Collector):
    """``balagg_balance{account,asset,field}`` for non-zero balances, from the mirror.

    Wallets of one account holding the same asset are summed, so every label set is
    unique (a Solana account may track several wallets holding one mint).
    """

    def __init__(self, hub: StreamHub) -> None:
        self._hub = hub

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "balagg_balance",
            "Current balance per account and asset (non-zero only; wallets summed)",
            labels=["account", "asset", "field"],
        )

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = self._family()
        for (account, asset), sums in self._hub.balance_sums().items():
            for name, value in zip(("total", "available", "locked"), sums, strict=True):
                # the exposition format is float text; prometheus_client converts it there
                family.add_metric([account, asset, name], value)  # type: ignore[arg-type]
        return [family]


class StreamHub:
    """In-memory mirror of the balance state plus the downstream fan-out (one per process).

    Public surface used by :mod:`app.api` and the service lifespan:

    - ``start()`` / ``stop()`` (stop closes every client with 1001); ``close_clients(code)``
    - ``seq``, ``loaded``, ``reader_ok``: the mirror's position and health
    - ``balances_body(accounts, assets, nonzero)``: the ``GET /v1/balances`` JSON bytes
    - ``records(accounts)``, ``account_views(accounts)``, ``has_account(account)``
    - ``subscribe(accounts, assets, since)`` -> :class:`Subscriber`; ``resubscribe``,
      ``send_control``, ``unsubscribe``
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        block_ms: int = 1_000,
        refresh_s: float = 1.5,
        watch_s: float = _WATCH_S,
    ) -> None:
        self.rt = runtime
        self.metrics = runtime.metrics
        self.seq = 0
        self.loaded = False
        self.version = 0  # bumped on every mirror change; response caches key on it
        self.reader_ok = False
        self.last_reader_error = ""
        self.reloads = 0
        self.ring_size = max(1, min(runtime.settings.client_max_lag, _RING_MAX))
        self._ring: deque[Message] = deque()
        self._accounts: dict[str, _AccountMirror] = {
            a.id: _AccountMirror(a.venue) for a in runtime.accounts
        }
        self._enabled = {a.id: a.enabled for a in runtime.accounts}
        self._statuses: dict[str, dict[str, Any]] = {}
        self._last_message_at: dict[str, str] = {}
        self._live: dict[str, bool] = dict.fromkeys(self._accounts, False)
        # owner liveness (see the module docstring); the embedded Redis is this process's
        self._private_redis = runtime.settings.redis_url is None
        self._lease_owner: dict[str, str] = {}
        self._instances: set[str] = set()
        self._owners_read = False
        self._orphans: frozenset[str] = frozenset()
        self._owners_due = False
        self.subscribers: set[Subscriber] = set()  # every connected client
        self._active: set[Subscriber] = set()  # those still fed (not being closed)
        self._block_ms = block_ms
        self._refresh_s = refresh_s
        self._read_refresh = runtime.redis.register_script(_READ_REFRESH_LUA)
        self._watch_s = watch_s
        self._tasks: list[asyncio.Task[None]] = []
        self._stream_client: aioredis.Redis | None = None
        self._stream_reader: BalanceReader | None = None
        self._reload_needed = False
        self._run_id = ""
        self._collector: _BalanceCollector | None = None
        self._cache: dict[object, bytes] = {}
        self._cache_version = -1
        self._snapshots: dict[object, Message] = {}
        self._snapshots_version = -1

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the mirror and start the change-stream reader and the status refresher.

        If Redis does not answer yet the service still starts (serving nothing, readyz
        503) and the reader keeps trying to load.
        """
        pool = self.rt.redis.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # XREAD BLOCK holds its connection: give it one of its own, with room for the block
        kwargs["socket_timeout"] = self._block_ms / 1000 + 10
        self._stream_client = aioredis.Redis(
            connection_pool=aioredis.ConnectionPool(
                connection_class=pool.connection_class, max_connections=2, **kwargs
            )
        )
        self._stream_reader = BalanceReader(self._stream_client, self.rt.keys)
        try:
            await asyncio.wait_for(self._reload(), 10)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("state not loaded yet (%s); retrying in the background", exc)
            self._reload_needed = True
        if self.rt.settings.metrics_balances:  # BALAGG_METRICS_BALANCES=false: no gauges
            self._collector = _BalanceCollector(self)
            self.metrics.registry.register(self._collector)
        self._tasks = [
            asyncio.create_task(self._follow(), name="hub-follow"),
            asyncio.create_task(self._refresh(), name="hub-refresh"),
            asyncio.create_task(self._watch(), name="hub-watch"),
        ]

    async def stop(self) -> None:
        """Close every client with 1001, stop the reader, release its connection."""
        await self.close_clients(CLOSE_GOING_AWAY)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._collector is not None:
            with contextlib.suppress(KeyError):
                self.metrics.registry.unregister(self._collector)
            self._collector = None
        if self._stream_client is not None:
            await self._stream_client.aclose()
            self._stream_client = None

    async def close_clients(self, code: int = CLOSE_GOING_AWAY, timeout: float = 3.0) -> None:
        """Ask every client to close with ``code`` and wait (bounded) until they have."""
        subs = list(self.subscribers)
        for sub in subs:
            self.close(sub, code)
        if subs:
            waits = [asyncio.ensure_future(s.wait_closed()) for s in subs]
            _done, pending = await asyncio.wait(waits, timeout=timeout)
            for fut in pending:
                fut.cancel()

    # -- the mirror --------------------------------------------------------------------

    async def _reload(self) -> None:
        run_id = await self._redis_run_id()  # first: a restart after it is noticed later
        await self._read_owners()
        self._install(await self.rt.reader.snapshot(self.rt.account_ids))
        self._run_id = run_id
        self.reader_ok = True

    async def _redis_run_id(self) -> str:
        """Changes whenever Redis restarts or fails over: its data may then be different."""
        assert self._stream_client is not None
        info: dict[str, Any] = await self._stream_client.info("server")
        return str(info.get("run_id", ""))

    def _install(self, snapshot: StateSnapshot) -> None:
        first = not self.loaded
        for mirror in self._accounts.values():
            mirror.entries = {}
        for record in snapshot.records:
            target = self._accounts.get(record.account)
            if target is None:
                continue
            target.put(
                field_name(record.wallet, record.asset),
                _Entry(
                    raw=record_json(record),
                    wallet=record.wallet,
                    asset=record.asset,
                    symbol=record.symbol,
                    total=decimal_str(record.total),
                    available=decimal_str(record.available),
                    locked=decimal_str(record.locked),
                ),
            )
        self._statuses = {}
        self._last_message_at = {}
        for account, status in snapshot.statuses.items():
            status = dict(status)
            last = status.pop("last_message_at", None)
            if last:
                self._last_message_at[account] = str(last)
            if status:
                self._statuses[account] = status
        for account in self._accounts:
            self._live[account] = self._state_of(account) == AccountState.LIVE
        self._orphans = frozenset(a for a in self._accounts if self.orphaned(a))
        self.seq = snapshot.seq
        self._ring.clear()
        self.loaded = True
        self.version += 1
        if not first:
            self.reloads += 1
            log.info("mirror reloaded at seq %d; sending clients a fresh snapshot", self.seq)
        for sub in self._active:
            self._send_snapshot(sub)

    def _state_of(self, account: str) -> str:
        if not self._enabled.get(account, True):
            return AccountState.DISABLED
        status = self._statuses.get(account)
        state = status.get("state") if status else None
        if state in _OWNED_STATES and not self._owner_alive(account):
            return AccountState.STALE
        return str(state) if state else AccountState.CONNECTING

    async def _read_owners(self) -> int:
        """Which instances are alive and who holds each account's lease, and each
        account's ``last_message_at`` (one round trip, one reply); returns ``P:seq``."""
        ids = self.rt.account_ids
        keys = [self.rt.keys.seq, self.rt.keys.instances]
        for account in ids:
            keys += (self.rt.keys.status(account), self.rt.keys.lease(account))
        oldest = int(time.time() * 1000) - self.rt.settings.lease_ms
        seq, instances, leases, seen = await self._read_refresh(keys=keys, args=[oldest])
        self._instances = {_text(m) for m in instances}
        owners = _text(leases).split("\x1f") if ids else []
        self._lease_owner = {
            account: value.rsplit(":", 1)[0]
            for account, value in zip(ids, owners, strict=True)
            if value
        }
        self._owners_read = True
        changed = False
        for account, text in zip(ids, _text(seen).split("\x1f") if ids else [], strict=True):
            if text and self._last_message_at.get(account) != text:
                self._last_message_at[account] = text
                changed = True
        if changed:
            self.version += 1
        return int(seq)

    def _owner_alive(self, account: str) -> bool:
        """False when the instance named as the status's owner is known to be gone."""
        status = self._statuses.get(account)
        owner = status.get("owner") if status else None
        if not owner:
            return True
        if owner == self.rt.settings.instance_id:
            runner = getattr(getattr(self.rt, "supervisor", None), "runner", None)
            return runner is not None and runner(account) is not None
        if self._private_redis:
            return False  # nobody else can reach this process's own Redis
        if not self._owners_read:
            return False
        return self._lease_owner.get(account) == owner and owner in self._instances

    def orphaned(self, account: str) -> bool:
        """The account's status was written by an instance that is gone (not taken over)."""
        return self._enabled.get(account, True) and not self._owner_alive(account)

    def _recheck_owners(self) -> None:
        """Re-derive liveness after the owners were read; tell clients when it changed."""
        changed = False
        for account in self._accounts:
            live = self._state_of(account) == AccountState.LIVE
            if self._live[account] != live:
                self._live[account] = live
                changed = True
        orphans = frozenset(a for a in self._accounts if self.orphaned(a))
        if orphans != self._orphans:
            self._orphans = orphans
            changed = True
        if changed:
            self.version += 1
            for sub in self._active:
                self._send_snapshot(sub)

    def _apply(self, msg: Message, doc: Mapping[str, Any], raw: bytes) -> bool:
        """Apply one change to the mirror; False if its account is not served here."""
        mirror = self._accounts.get(msg.account)
        if mirror is None:
            return False
        kind = doc.get("type")
        if kind == "balance":
            record = doc["balance"]
            at = raw.find(_BALANCE_AT)
            body = raw[at + len(_BALANCE_AT) : -1] if at >= 0 else orjson.dumps(record)
            entry = _Entry(
                raw=body,
                wallet=str(record["wallet"]),
                asset=str(record["asset"]),
                symbol=record.get("symbol"),
                total=str(record["total"]),
                available=str(record["available"]),
                locked=str(record["locked"]),
            )
            mirror.put(field_name(entry.wallet, entry.asset), entry)
        elif kind == "removed":
            mirror.remove(field_name(str(doc["wallet"]), str(doc["asset"])))
        elif kind == "status":
            status = dict(doc["account"])
            status.pop("last_message_at", None)
            self._statuses[msg.account] = status
            owner = status.get("owner")
            if (
                owner
                and not self._private_redis
                and owner != self.rt.settings.instance_id
                and (self._lease_owner.get(msg.account) != owner or owner not in self._instances)
            ):
                self._owners_due = True  # a new owner: read the leases before trusting it
            self._live[msg.account] = self._state_of(msg.account) == AccountState.LIVE
        return True

    # -- the change-stream reader ------------------------------------------------------

    async def _follow(self) -> None:
        delay = 0.05
        suspect = False  # a read failed: Redis may have restarted with other data
        while True:
            try:
                if suspect and not self._reload_needed:
                    if await self._redis_run_id() != self._run_id:
                        log.warning("Redis restarted or failed over; reloading the mirror")
                        self._reload_needed = True
                    suspect = False
                if self._reload_needed:
                    await self._reload()
                    self._reload_needed = False
                assert self._stream_reader is not None
                changes = await self._stream_reader.read_after(
                    self.seq, self._block_ms, count=_READ_COUNT
                )
            except (RedisError, OSError, TimeoutError) as exc:
                if self.reader_ok:
                    log.warning("change stream read failed (%s); retrying", type(exc).__name__)
                self.reader_ok = False
                suspect = True
                self.last_reader_error = type(exc).__name__
                self.metrics.redis_errors.labels("stream_read").inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            self.reader_ok = True
            self.last_reader_error = ""
            if changes:
                self._take(changes)
            if self._owners_due:
                self._owners_due = False
                try:
                    await self._read_owners()
                except (RedisError, OSError, TimeoutError):
                    self._owners_due = True
                    continue
                self._recheck_owners()

    def _take(self, changes: Sequence[Change]) -> None:
        """Apply and fan out one batch in seq order; a gap means the mirror must reload."""
        self._check_stalled()
        self.version += 1
        received = time.perf_counter()
        clock_offset = received - time.time()
        ring = self._ring
        ring_size = self.ring_size
        subscribers = self._active
        for change in changes:
            if change.seq <= self.seq:
                continue
            if change.seq != self.seq + 1:
                log.warning(
                    "change stream skipped from seq %d to %d (trimmed); reloading",
                    self.seq,
                    change.seq,
                )
                self._reload_needed = True
                return
            try:
                # upstream receive time when the writer recorded it (same clock
                # across processes on one host), else when the hub read the change
                at = received if change.received is None else change.received + clock_offset
                msg, doc = _parse_change(change, at)
                visible = self._apply(msg, doc, change.message)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("unreadable change at seq %d (%s); skipped", change.seq, exc)
                msg = Message(change.seq, change.account, change.asset, None, "")
                visible = False
            self.seq = change.seq
            if not visible:
                msg.text = ""
            ring.append(msg)
            if len(ring) > ring_size:
                ring.popleft()
            if visible:
                for sub in subscribers:
                    if sub.matches(msg):
                        sub.push(msg)

    def _check_stalled(self) -> None:
        limit = self.rt.settings.client_max_lag
        for sub in list(self._active):
            if sub.pending and sub.stalled > limit and not sub.holding:
                log.info(
                    "closing a stream client that accepted nothing while %d messages queued",
                    sub.stalled,
                )
                self.close_slow(sub)

    def close_slow(self, sub: Subscriber) -> None:
        """Close a client that does not read: 1013, it can resume with ``since``."""
        if sub in self._active:
            self.metrics.downstream_disconnects.labels("slow").inc()
            self.close(sub, CLOSE_TRY_AGAIN_LATER)

    def close_abusive(self, sub: Subscriber) -> None:
        """Close a client that sends more ops than allowed: 1008 policy violation."""
        if sub in self._active:
            log.info("closing a stream client that exceeded the client op rate")
            self.metrics.downstream_disconnects.labels("rate_limited").inc()
            self.close(sub, CLOSE_POLICY_VIOLATION)

    async def _watch(self) -> None:
        """Slow clients are closed even while no change arrives to trigger the check."""
        while True:
            await asyncio.sleep(self._watch_s)
            self._check_stalled()

    def close(self, sub: Subscriber, code: int) -> None:
        """Stop feeding ``sub`` and close its connection with ``code``."""
        self._active.discard(sub)
        sub.request_close(code)

    async def _refresh(self) -> None:
        """``last_message_at`` is not streamed: poll it; also notice a Redis that lost data."""
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh_once()
            except (RedisError, OSError, TimeoutError) as exc:
                self.metrics.redis_errors.labels("status_read").inc()
                log.debug("status refresh failed: %s", type(exc).__name__)

    async def refresh_once(self) -> None:
        seen = self.seq  # Redis can only be at or past this unless it lost data
        current = await self._read_owners()
        if self.loaded:
            self._recheck_owners()
        if self.loaded and current < seen:
            log.warning("Redis seq went back from %d to %d; reloading", seen, current)
            self._reload_needed = True

    # -- subscribers -------------------------------------------------------------------

    async def subscribe(
        self,
        accounts: Iterable[str] | None,
        assets: Iterable[str] | None,
        since: int | None,
        *,
        prices: bool = False,
    ) -> Subscriber:
        """Register a client; queue a snapshot, or the replay after ``since`` if resumable.
        With ``prices``, every known price follows (then each new one, see
        :meth:`publish_price`).

        Returns before anything is sent; call :meth:`Subscriber.attach` to start sending.
        """
        sub = Subscriber(
            self,
            frozenset(accounts) if accounts is not None else None,
            normalize_assets(assets),
            self.rt.settings.client_buffer,
        )
        sub.prices = prices
        self.subscribers.add(sub)
        self._active.add(sub)
        self.metrics.downstream_clients.set(len(self.subscribers))
        if since is None or not self._resumable(since) or self._served_state_differs(sub):
            self._send_snapshot(sub)
            return sub
        replay = self._from_ring(since)
        if replay is not None:
            sub.prepend([m for m in replay if m.text and sub.matches(m)])
            self._send_prices(sub)
            return sub
        await self._replay_from_redis(sub, since)
        self._send_prices(sub)
        return sub

    def _resumable(self, since: int) -> bool:
        return self.loaded and 0 <= self.seq - since <= self.rt.settings.client_max_lag

    def _served_state_differs(self, sub: Subscriber) -> bool:
        """Whether an account the client follows is served in another state than its stored
        status says (its owner is gone). A replay carries only stored statuses, so it would
        leave the client with the dead owner's ``live``; such a client gets a snapshot."""
        for account in self._accounts:
            if sub.accounts is not None and account not in sub.accounts:
                continue
            status = self._statuses.get(account)
            stored = status.get("state") if status else None
            if stored is not None and self._state_of(account) != stored:
                return True
        return False

    def _from_ring(self, since: int) -> list[Message] | None:
        if since == self.seq:
            return []
        ring = self._ring
        if not ring or ring[0].seq > since + 1:
            return None
        start = since + 1 - ring[0].seq
        return [ring[i] for i in range(start, len(ring))]

    async def _replay_from_redis(self, sub: Subscriber, since: int) -> None:
        """Live messages queue behind while the missed ones are read from the stream."""
        upto = self.seq
        epoch = sub.epoch
        sub.holding = True
        replay: list[Message] = []
        try:
            cursor = since
            while cursor < upto:
                batch = await self.rt.reader.changes_since(
                    cursor, limit=min(_REPLAY_CHUNK, upto - cursor)
                )
                if not batch:
                    raise ResyncRequired(f"changes after seq {cursor} are gone")
                for change in batch:
                    if change.seq > upto:
                        break
                    msg, _doc = _parse_change(change, 0.0)
                    if msg.account in self._accounts and sub.matches(msg):
                        replay.append(msg)
                    cursor = change.seq
        except (ResyncRequired, RedisError, OSError, TimeoutError, ValueError, KeyError) as exc:
            log.info("resume after seq %d not possible (%s); sending a snapshot", since, exc)
            if sub.epoch == epoch:
                self._send_snapshot(sub)
            return
        if sub.epoch != epoch:
            return  # a fresh snapshot superseded the replay meanwhile
        sub.holding = False
        sub.prepend(replay)

    def resubscribe(
        self,
        sub: Subscriber,
        accounts: Iterable[str] | None,
        assets: Iterable[str] | None,
        prices: bool | None = None,
    ) -> None:
        """Replace the filter; everything pending is superseded by a fresh snapshot.
        ``prices`` None keeps the client's choice of ``price`` messages."""
        sub.accounts = frozenset(accounts) if accounts is not None else None
        sub.assets = normalize_assets(assets)
        if prices is not None:
            sub.prices = prices
        self._send_snapshot(sub)

    # -- prices ------------------------------------------------------------------------

    def publish_price(self, price: Price) -> None:
        """A new market price to every client that opted in, conflated per (source, pair)
        like balances: a slow client keeps only the newest price of each pair."""
        subscribers = [s for s in self._active if s.prices and not s.holding]
        if not subscribers:
            return
        msg = price_message(price)
        for sub in subscribers:
            sub.push(msg)

    def _send_prices(self, sub: Subscriber) -> None:
        """Every known price, after the snapshot of a client that opted in."""
        if not sub.prices:
            return
        for quote in self.rt.prices.graph.prices():
            sub.push(price_message(quote.price, quote.stale))

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self._active.discard(sub)
        self.metrics.downstream_clients.set(len(self.subscribers))

    def send_control(self, sub: Subscriber, doc: Mapping[str, Any]) -> None:
        """A per-client frame (pong, error), sent in order with everything else.

        Replies are never conflated, so they are bounded instead: a client with
        ``client_buffer`` replies still waiting reads nothing and is closed.
        """
        if sub.controls >= sub.limit:
            self.close_slow(sub)
            return
        sub.push(Message(0, "", "", None, orjson.dumps(doc).decode(), control=True))

    def count_conflated(self, n: int) -> None:
        self.metrics.downstream_conflated.inc(n)

    def _send_snapshot(self, sub: Subscriber) -> None:
        sub.epoch += 1
        sub.holding = False
        sub.clear()
        sub.push(self._snapshot_message(sub.accounts, sub.assets))
        self._send_prices(sub)
        sub.stalled = 0

    def _snapshot_message(
        self, accounts: frozenset[str] | None, assets: frozenset[str] | None
    ) -> Message:
        """One shared snapshot frame per filter and state version (a reload or a burst of
        connections with the same filter builds it once)."""
        key = ("snapshot", accounts, assets)
        cache = self._snapshots
        if self._snapshots_version != self.version:
            cache.clear()
            self._snapshots_version = self.version
        msg = cache.get(key)
        if msg is None:
            body = b'{"type":"snapshot","seq":%d,"balances":%b,"accounts":%b}' % (
                self.seq,
                self._records_array(accounts, assets, nonzero=False),
                orjson.dumps(self.account_views(accounts)),
            )
            msg = Message(0, "", "", None, body.decode())
            if len(cache) < _CACHE_MAX:
                cache[key] = msg
        return msg

    # -- reads (REST, metrics) ---------------------------------------------------------

    def has_account(self, account: str) -> bool:
        return account in self._accounts

    @property
    def account_ids(self) -> list[str]:
        return list(self._accounts)

    def _records_array(
        self,
        accounts: frozenset[str] | None,
        assets: frozenset[str] | None,
        nonzero: bool,
    ) -> bytes:
        parts: list[bytes] = []
        for account, mirror in self._accounts.items():
            if accounts is not None and account not in accounts:
                continue
            stale = not self._live[account]
            for entry in mirror.entries.values():
                if assets is not None and entry.asset not in assets:
                    continue
                if nonzero and not entry.nonzero:
                    continue
                parts.append(entry.json(stale))
        return b"[" + b",".join(parts) + b"]"

    def balances_body(
        self,
        accounts: Iterable[str] | None = None,
        assets: Iterable[str] | None = None,
        nonzero: bool = False,
    ) -> bytes:
        """``{"seq", "balances"}`` as JSON bytes, consistent with ``seq`` (cached per version)."""
        acc = frozenset(accounts) if accounts is not None else None
        ast = normalize_assets(assets)
        if self._cache_version != self.version:
            self._cache.clear()
            self._cache_version = self.version
        key = (acc, ast, nonzero)
        body = self._cache.get(key)
        if body is None:
            body = b'{"seq":%d,"balances":%b}' % (self.seq, self._records_array(acc, ast, nonzero))
            if len(self._cache) < _CACHE_MAX:
                self._cache[key] = body
        return body

    def records(self, accounts: Iterable[str] | None = None) -> Iterator[BalanceRecord]:
        """Every record of ``accounts`` (all by default) with ``stale`` applied."""
        wanted = None if accounts is None else set(accounts)
        for account, mirror in self._accounts.items():
            if wanted is not None and account not in wanted:
                continue
            stale = not self._live[account]
            for entry in mirror.entries.values():
                yield _to_record(account, mirror.venue, entry, stale)

    def balance_sums(self) -> dict[tuple[str, str], tuple[Decimal, Decimal, Decimal]]:
        """Per (account, asset), wallets summed, non-zero records only: the gauges."""
        out: dict[tuple[str, str], tuple[Decimal, Decimal, Decimal]] = {}
        for account, mirror in self._accounts.items():
            for entry in mirror.entries.values():
                if not entry.nonzero:
                    continue
                values = _amounts(entry)
                key = (account, entry.asset)
                prev = out.get(key)
                if prev is not None:
                    values = (prev[0] + values[0], prev[1] + values[1], prev[2] + values[2])
                out[key] = values
        return out

    def account_view(self, account: str) -> dict[str, Any]:
        """The lifecycle status of one configured account, defaults where nothing is known.

        An account with no status yet is ``connecting``; one disabled in this instance's
        configuration is ``disabled`` whatever Redis still holds from an earlier run.
        """
        mirror = self._accounts[account]
        initial = AccountStatus.initial(account, mirror.venue, AccountState.CONNECTING)
        view: dict[str, Any] = initial.view()
        status = self._statuses.get(account)
        if status:
            view.update({k: v for k, v in status.items() if k in view})
        view["account"] = account
        view["venue"] = mirror.venue
        view["state"] = self._state_of(account)
        view["last_message_at"] = self._last_message_at.get(account, view["last_message_at"])
        return view

    def account_views(self, accounts: Iterable[str] | None = None) -> list[dict[str, Any]]:
        wanted = None if accounts is None else set(accounts)
        return [self.account_view(a) for a in self._accounts if wanted is None or a in wanted]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _amounts(entry: _Entry) -> tuple[Decimal, Decimal, Decimal]:
    try:
        return Decimal(entry.total), Decimal(entry.available), Decimal(entry.locked)
    except InvalidOperation:
        return Decimal(0), Decimal(0), Decimal(0)


def _to_record(account: str, venue: str, entry: _Entry, stale: bool) -> BalanceRecord:
    doc = orjson.loads(entry.raw)
    total, available, locked = _amounts(entry)
    return BalanceRecord(
        account=account,
        venue=venue,
        wallet=entry.wallet,
        asset=entry.asset,
        symbol=entry.symbol,
        total=total,
        available=available,
        locked=locked,
        updated_at=str(doc.get("updated_at") or ""),
        venue_ts=doc.get("venue_ts"),
        stale=stale,
        extra=doc.get("extra") or {},
    )
