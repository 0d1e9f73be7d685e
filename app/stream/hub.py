"""The stream hub: follows Redis's change stream into the mirror and out to every client.

Where it sits::

    BalanceWriter flush (this process's own changes) --take_local--> StreamHub
    Redis P:changes --XREAD BLOCK (one reader per process, own connection)--> StreamHub
        |-- Mirror (mirror.py): records, statuses, seq   REST and /metrics read it
        |-- Ring (resume.py): the last messages           resume with ``since`` without Redis
        `-- one Subscriber per /v1/stream client         bounded, conflating queue + sender

The mirror is loaded atomically, then changes — this process's own as their flush
returns them, every instance's from the stream read — go in strictly by ``seq``
(:mod:`app.stream.sequencer`). After each batch every client gets its share at once,
from this loop when its connection takes it (:meth:`Subscriber.offer`), the text
serialized once by the Redis write script. A gap in the stream (trimmed past this
reader) or a ``seq`` that went backwards (Redis lost its data) reloads the mirror and
sends every client a fresh snapshot; so does a flip of owner liveness. A client whose
socket accepts nothing while more than ``client_max_lag`` messages arrive for it, or
with ``client_buffer`` replies waiting, is closed with 1013 and can resume (checked on
every batch and on a timer).

Every collaborator comes through the constructor (``build_hub`` in ``app/service.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.accounts import AccountConfig
from app.metrics import BalanceCollector, Metrics
from app.prices.graph import QuoteView
from app.prices.model import Price
from app.store import BalanceReader, Change, Keys
from app.stream.messages import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    control_message,
    normalize_assets,
    price_message,
)
from app.stream.mirror import Mirror
from app.stream.resume import Ring, resume_from_redis
from app.stream.sequencer import Sequencer
from app.stream.source import RedisSource
from app.stream.subscriber import Subscriber, fan_out

log = logging.getLogger(__name__)

_READ_COUNT = 1_000  # changes per XREAD: bounds one fan-out burst between sender turns
_WATCH_S = 0.5  # how often slow clients are looked for when no change arrives


@dataclass(frozen=True, slots=True)
class HubOptions:
    """The settings the hub acts on (``BALAGG_*`` names in ``app/settings.py``).

    ``private_redis``: Redis is embedded in this process, so no other instance can own
    anything in it.
    """

    instance_id: str
    client_max_lag: int
    client_buffer: int
    lease_ms: int
    private_redis: bool
    metrics_balances: bool = True


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
        *,
        redis: aioredis.Redis,
        reader: BalanceReader,
        keys: Keys,
        accounts: Sequence[AccountConfig],
        options: HubOptions,
        metrics: Metrics,
        prices: Callable[[], Iterable[QuoteView]] = list,
        runs_here: Callable[[str], bool] = lambda _account: False,
        block_ms: int = 1_000,
        refresh_s: float = 1.5,
        watch_s: float = _WATCH_S,
    ) -> None:
        self._source = RedisSource(redis, reader, keys, block_ms)
        self._options = options
        self.metrics = metrics
        self._prices = prices
        self.mirror = Mirror(
            accounts,
            instance_id=options.instance_id,
            private_redis=options.private_redis,
            runs_here=runs_here,
        )
        # REST and /metrics read the mirror (see app.stream.mirror for each)
        self.has_account = self.mirror.has_account
        self.balances_body = self.mirror.balances_body
        self.records = self.mirror.records
        self.account_view = self.mirror.account_view
        self.account_views = self.mirror.account_views
        self.orphaned = self.mirror.orphaned
        self.reader_ok = False
        self.last_reader_error = ""
        self.reloads = 0
        self._ring = Ring(options.client_max_lag)
        self._sequencer = Sequencer(self.mirror, self._ring)
        self.subscribers: set[Subscriber] = set()  # every connected client
        self._active: set[Subscriber] = set()  # those still fed (not being closed)
        self._refresh_s = refresh_s
        self._watch_s = watch_s
        self._tasks: list[asyncio.Task[None]] = []
        self._reload_needed = False
        self._loading = False
        self._run_id = ""
        self._collector: BalanceCollector | None = None

    # -- the mirror's position ---------------------------------------------------------

    @property
    def seq(self) -> int:
        return self.mirror.seq

    @property
    def loaded(self) -> bool:
        return self.mirror.loaded

    @property
    def version(self) -> int:
        return self.mirror.version

    @property
    def account_ids(self) -> list[str]:
        return self.mirror.account_ids

    @property
    def ring_size(self) -> int:
        """How many recent messages are kept for resuming without Redis."""
        return self._ring.size

    @ring_size.setter
    def ring_size(self, size: int) -> None:
        self._ring.size = size

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the mirror and start the change-stream reader and the status refresher.

        If Redis does not answer yet the service still starts (serving nothing, readyz
        503) and the reader keeps trying to load.
        """
        self._source.open()
        try:
            await asyncio.wait_for(self._reload(), 10)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("state not loaded yet (%s); retrying in the background", exc)
            self._reload_needed = True
        if self._options.metrics_balances:  # BALAGG_METRICS_BALANCES=false: no gauges
            self._collector = BalanceCollector(self.mirror.balance_sums)
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
        await self._source.close()

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

    # -- loading -----------------------------------------------------------------------

    async def _reload(self) -> None:
        self._loading = True  # own writes wait: the snapshot may be older than they are
        try:
            run_id = await self._source.run_id()  # first: a restart after it is noticed later
            await self._read_owners()
            first = not self.mirror.loaded
            snapshot = await self._source.snapshot(self.mirror.account_ids)
        finally:
            self._loading = False
        self.mirror.install(snapshot)
        self._reload_needed = False
        self._ring.clear()
        if not first:
            self.reloads += 1
            log.info("mirror reloaded at seq %d; sending clients a fresh snapshot", self.seq)
        for sub in self._active:
            self._send_snapshot(sub)
        self._run_id = run_id
        self.reader_ok = True
        if self._sequencer.held:
            self._take(())  # own writes past the snapshot

    async def _read_owners(self) -> int:
        """Owner liveness and ``last_message_at`` into the mirror; returns ``P:seq``."""
        polled = await self._source.poll(self.mirror.account_ids, self._options.lease_ms)
        self.mirror.set_owners(polled.owners.instances, polled.owners.lease_owner)
        self.mirror.set_last_message_at(polled.last_message_at)
        return polled.seq

    def _recheck_owners(self) -> None:
        """Re-derive liveness after the owners were read; tell clients when it changed."""
        if self.mirror.recheck_owners():
            for sub in self._active:
                self._send_snapshot(sub)

    # -- the change-stream reader ------------------------------------------------------

    async def _follow(self) -> None:
        delay = 0.05
        suspect = False  # a read failed: Redis may have restarted with other data
        while True:
            try:
                if suspect and not self._reload_needed:
                    if await self._source.run_id() != self._run_id:
                        log.warning("Redis restarted or failed over; reloading the mirror")
                        self._reload_needed = True
                    suspect = False
                if self._reload_needed:
                    await self._reload()
                    self._reload_needed = False
                changes = await self._source.read_after(self.seq, _READ_COUNT)
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
            if self.mirror.owners_due:
                self.mirror.owners_due = False
                try:
                    await self._read_owners()
                except (RedisError, OSError, TimeoutError):
                    self.mirror.owners_due = True
                    continue
                self._recheck_owners()

    def take_local(self, changes: Iterable[Change]) -> None:
        """This process's own writes, as its flush returned them: applied and fanned out
        now, without waiting for the stream read to bring them back
        (:class:`~app.stream.sequencer.Sequencer` keeps the order)."""
        waiting = self._sequencer.hold(changes)
        if waiting and self.mirror.loaded and not (self._loading or self._reload_needed):
            self._take(())

    def _take(self, changes: Sequence[Change]) -> None:
        """Apply one batch in seq order and fan out what was applied; a gap in the
        stream means the mirror must reload."""
        batch, gap = self._sequencer.take(changes)
        if gap:
            self._reload_needed = True
        if batch:
            self._check_stalled()
            fan_out(self._active, batch)

    # -- slow and abusive clients ------------------------------------------------------

    def _check_stalled(self) -> None:
        limit = self._options.client_max_lag
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

    # -- polled state ------------------------------------------------------------------

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

    def _new_subscriber(
        self, accounts: Iterable[str] | None, assets: Iterable[str] | None
    ) -> Subscriber:
        metrics = self.metrics
        return Subscriber(
            frozenset(accounts) if accounts is not None else None,
            normalize_assets(assets),
            self._options.client_buffer,
            on_conflated=metrics.downstream_conflated.inc,
            on_sent=metrics.downstream_messages.inc,
            observe_lag=metrics.event_lag_seconds.observe,
        )

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
        sub = self._new_subscriber(accounts, assets)
        sub.prices = prices
        self.subscribers.add(sub)
        self._active.add(sub)
        self.metrics.downstream_clients.set(len(self.subscribers))
        # A replay carries only stored statuses, so it would leave a client following an
        # account whose owner is gone with that owner's ``live``: it gets a snapshot.
        if (
            since is None
            or not self._resumable(since)
            or self.mirror.served_state_differs(sub.accounts)
        ):
            self._send_snapshot(sub)
            return sub
        replay = self._ring.after(since, self.seq)
        if replay is not None:
            sub.prepend([m for m in replay if m.text and sub.matches(m)])
            self._send_prices(sub)
            return sub
        await resume_from_redis(
            self._source, self.mirror.has_account, sub, since, self.seq, self._send_snapshot
        )
        self._send_prices(sub)
        return sub

    def _resumable(self, since: int) -> bool:
        return self.loaded and 0 <= self.seq - since <= self._options.client_max_lag

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
        sub.push(control_message(doc))

    def _send_snapshot(self, sub: Subscriber) -> None:
        sub.epoch += 1
        sub.holding = False
        sub.clear()
        sub.push(self.mirror.snapshot_message(sub.accounts, sub.assets))
        self._send_prices(sub)
        sub.stalled = 0

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
        for quote in self._prices():
            sub.push(price_message(quote.price, quote.stale))
