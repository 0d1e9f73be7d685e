"""The supervisor: one :class:`AccountRunner` task per account this instance owns.

It gets its collaborators through its constructor (settings, accounts, Redis and key
names, writer and reader, metrics, the lease manager, the price service, the registry of
running accounts the stream hub reads, the queue of fenced accounts the writer fills, an
HTTP session factory) and hands each :class:`AccountRunner` what that one needs. It is
the service's default :class:`~app.services.UpstreamFactory`. It shares one aiohttp
``ClientSession`` and one :class:`~app.ratelimit.VenueLimiter` across all upstream
sockets, keeps the account leases (:mod:`app.leases`) — acquiring its fair share,
renewing, giving back surplus so replicas balance, stepping down when fenced — and
routes ``resync`` requests to whichever instance owns the account (through the
``P:resync`` stream).

It also drives the price sockets of its own (:class:`~app.prices.service.PriceService`):
once a second they are matched to the accounts this instance owns and what those hold
(one BitoPro ticker socket per distinct ticker URL, one DeltaDeFi market price socket per
held symbol), and every ``price_refresh`` seconds the prices other replicas' feeds stored
are followed. Nothing there can stop a runner or touch balances.

While Redis does not answer, nothing is given up: no other instance can acquire a lease
then either, so the runners keep their sockets and folds and the writer keeps their
pending writes. When Redis answers again, ownership is re-checked (a lapsed lease nobody
else took is taken back; one another instance acquired means stepping down, and only
then are the pending writes discarded), and if Redis came back without its data or as a
different server (``P:dataset`` or its ``run_id`` changed) every owned account's full
state is written again from its fold, so nothing only the stream delivered is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.accounts import AccountConfig
from app.domain import AccountState, AccountStatus, AssetBalance
from app.fold import AccountFold
from app.leases import Fence, LeaseManager
from app.metrics import Metrics
from app.prices.service import PriceService
from app.ratelimit import VenueLimiter
from app.reconnect import http_session
from app.settings import Settings
from app.store import BalanceReader, BalanceWriter, Keys
from app.upstream import AccountRunner
from app.venues import make_session

log = logging.getLogger(__name__)


class Supervisor:
    """The upstream side of one instance: leases, one runner per owned account, prices.

    ``seq_seen`` is the highest change ``seq`` clients may have been given (the stream
    hub's): after Redis lost its data the counter is raised above it.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        accounts: Sequence[AccountConfig],
        redis: aioredis.Redis,
        keys: Keys,
        writer: BalanceWriter,
        reader: BalanceReader,
        metrics: Metrics,
        prices: PriceService,
        seq_seen: Callable[[], int],
        leases: LeaseManager | None = None,
        runners: dict[str, AccountRunner] | None = None,
        fenced: asyncio.Queue[str] | None = None,
        http_factory: Callable[[], aiohttp.ClientSession] = http_session,
    ) -> None:
        s = self.settings = settings
        self.accounts: Mapping[str, AccountConfig] = {a.id: a for a in accounts}
        self.redis = redis
        self.keys = keys
        self.writer = writer
        self.reader = reader
        self.metrics = metrics
        self.prices = prices
        self._seq_seen = seq_seen
        self._http_factory = http_factory
        self.leases = leases or LeaseManager(redis, keys, s.instance_id, s.lease_ms)
        self.fence = Fence(self.leases, [a.id for a in accounts if not a.enabled])
        # shared with the stream hub (its ``runs_here``): filled and emptied only here
        self.runners: dict[str, AccountRunner] = runners if runners is not None else {}
        self._fenced = fenced
        self._fenced_task: asyncio.Task[None] | None = None
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.http: aiohttp.ClientSession | None = None
        # one per process: every account and price socket of a venue host shares it
        self.limiter = VenueLimiter(s.resolved_venue_limits(), metrics)
        self._loop_task: asyncio.Task[None] | None = None
        self._price_task: asyncio.Task[None] | None = None
        self._resync_id: str | None = None  # the last P:resync entry read (None: not yet)
        self._stopping = False
        self._last_renew = 0.0
        self._known_takeover: set[str] = set()
        self._orphans: set[str] = set()
        self._dataset = ""  # P:dataset as first seen; a different one means lost data
        self._run_id = ""
        self._redis_failed = False  # a lease tick failed since the last good one
        self._outage_logged = False

    # -- public ------------------------------------------------------------------------

    async def start(self) -> None:
        self.http = self._http_factory()
        self._submit_disabled()
        planned = [
            (a.venue, make_session(a).connect_request().url)
            for a in self.accounts.values()
            if a.enabled
        ]
        for warning in self.limiter.over_capacity(planned):
            log.warning("venue limits: %s", warning)
        if self.settings.redis_url is None:
            with contextlib.suppress(RedisError, OSError):
                await self._void_predecessors()
        self._loop_task = asyncio.create_task(self._lease_loop(), name="lease-loop")
        self._price_task = asyncio.create_task(self._price_loop(), name="price-feeds")
        if self._fenced is not None:
            self._fenced_task = asyncio.create_task(self._fenced_loop(), name="fenced-writes")

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._loop_task, self._price_task, self._fenced_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.prices.stop()
        await asyncio.gather(*(self._stop_runner(a, stale=True) for a in list(self.runners)))
        await self.writer.drain(5)
        with contextlib.suppress(RedisError, OSError):
            for account in list(self.leases.owned()):
                await self.leases.release(account)
            await self.leases.leave()
        self.metrics.leases_held.set(0)
        if self.http is not None:
            await self.http.close()

    async def _fenced_loop(self) -> None:
        """Step down from each account the writer reports fenced."""
        assert self._fenced is not None
        while True:
            self.on_fenced(await self._fenced.get())

    async def _price_loop(self) -> None:
        """Keep the own price sockets matched to the owned accounts; follow ``P:prices``."""
        refresh = self.settings.price_refresh
        last_follow = time.monotonic()
        seen: tuple[tuple[object, ...], ...] = ()
        while True:
            await asyncio.sleep(1.0)
            try:
                # what the held assets depend on: an account that read no frame, took no
                # seed and did not reconnect holds what it held (quiet accounts cost nothing)
                now_seen = tuple(
                    (r, r.frames, r.reconnects, r.state) for r in self.runners.values()
                )
                if self.http is not None and now_seen != seen:
                    runners = list(self.runners.values())
                    self.prices.sync(
                        self.http,
                        self.limiter,
                        [r.account for r in runners],
                        {r.account.id: r.fold.held_assets() for r in runners},
                    )
                    seen = now_seen
                if time.monotonic() - last_follow >= refresh:
                    last_follow = time.monotonic()
                    await self.prices.follow()
            except Exception as exc:  # prices must never take the supervisor down
                log.warning("price feeds: %s", type(exc).__name__)

    async def _void_predecessors(self) -> None:
        """Embedded Redis: every lease in it belongs to a process that is gone.

        The embedded Redis lives in a data directory this process holds locked, so no
        other instance can be running against it; a predecessor that crashed left its
        leases and heartbeat behind. Dropping them lets this instance take its accounts
        over at once instead of after a lease time.
        """
        me = self.leases.instance_id
        keys = [self.keys.lease(a) for a in self.accounts]
        if keys:
            await self.redis.delete(*keys)
        members: Any = await self.redis.zrange(self.keys.instances, 0, -1)
        names = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        gone = [m for m in names if m != me]
        if gone:
            await self.redis.zrem(self.keys.instances, *gone)
        log.info("embedded redis: leases of earlier runs dropped; taking the accounts now")

    def _submit_disabled(self) -> None:
        for account in self.accounts.values():
            if not account.enabled:
                status = AccountStatus.initial(account.id, account.venue, AccountState.DISABLED)
                self.writer.submit_status(account.id, status.doc())

    async def resync(self, account_id: str) -> None:
        """Reconnect and re-seed an account, on whichever instance owns it."""
        if account_id not in self.accounts:
            raise KeyError(account_id)
        runner = self.runners.get(account_id)
        if runner is not None:
            runner.request_resync()
            return
        await self.redis.xadd(self.keys.resync, {"a": account_id}, maxlen=1000)

    def fence_token(self, account_id: str) -> str | None:
        """The lease token every write for the account must still match (:class:`Fence`)."""
        return self.fence(account_id)

    def on_fenced(self, account_id: str) -> None:
        """A write was refused: another instance owns the account now. Step down."""
        if account_id in self.runners:
            log.warning("%s: lease lost (write fenced); stepping down", account_id)
            self.leases.forget(account_id)
            asyncio.get_running_loop().create_task(self._stop_runner(account_id, stale=False))

    def runner(self, account_id: str) -> AccountRunner | None:
        return self.runners.get(account_id)

    # -- leases ------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        lease_s = self.settings.lease_ms / 1000
        tick = min(1.0, lease_s / 4)
        first = True
        while True:
            try:
                await self._lease_tick(lease_s, first)
                first = False
                self.metrics.redis_up.set(1 if self.writer.healthy else 0)
            except (RedisError, OSError) as exc:
                self.metrics.redis_up.set(0)
                self.metrics.redis_errors.labels("lease").inc()
                log.debug("lease tick failed: %s", type(exc).__name__)
                self._redis_failed = True
                self._last_renew = 0.0  # renew (or take back) at once when Redis answers
                lapsed = self.leases.expired_locally()
                if lapsed and not self._outage_logged:
                    # nobody else can acquire them while Redis is away: keep everything
                    log.warning(
                        "redis has not answered for longer than the lease; keeping %d "
                        "account(s), their sockets and pending writes until it does",
                        len(lapsed),
                    )
                    self._outage_logged = True
            self.metrics.leases_held.set(len(self.leases.tokens))
            await asyncio.sleep(tick)

    async def _lease_tick(self, lease_s: float, first: bool) -> None:
        instances = await self.leases.heartbeat()
        if first:
            # give replicas starting together a moment to announce themselves
            await asyncio.sleep(min(0.5, lease_s / 8))
            instances = await self.leases.heartbeat()
        # before the leases are taken back: the full state must be queued by the time a
        # write can pass the fence again, so it goes in together with what was held
        await self._check_data_set()
        now = time.monotonic()
        renewing = now - self._last_renew >= lease_s / 3 or self.writer.data_lost
        if renewing:
            lost, retaken = await self.leases.renew_all()
            self._last_renew = now
            for lost_id in lost:
                log.warning("%s: lease lost to another instance; stepping down", lost_id)
                await self._stop_runner(lost_id, stale=False)
            if retaken:
                log.info("%d lease(s) had lapsed while redis was away; held again", len(retaken))
        enabled = [a for a in self.accounts.values() if a.enabled]
        fair = self.leases.fair_share(len(enabled), instances)
        owned = self.leases.owned()
        if len(owned) > fair:
            # give back the surplus, one per tick, so other replicas can take it
            surplus = sorted(owned)[-1]
            log.info("%s: releasing lease to rebalance (%d > fair %d)", surplus, len(owned), fair)
            await self._stop_runner(surplus, stale=False, discard=False)
            await self.writer.drain(2)
            await self.leases.release(surplus)
        elif len(owned) < fair or renewing or self._orphans:
            # holding a fair share, the owners are read with each renewal (and while an
            # orphan waits to be confirmed), not every tick: with thousands of accounts
            # that read was an idle service's largest cost
            owners = await self.leases.owners([a.id for a in enabled])
            orphans = {a.id for a in enabled if a.id not in owners}
            # an account nobody holds for two ticks in a row is taken even beyond the fair
            # share: an unowned account is worse than an uneven spread (rebalanced later)
            overdue = orphans & self._orphans
            self._orphans = orphans
            room = fair - len(self.leases.tokens)
            wanted: list[str] = []
            for account in enabled:
                if account.id in owned:
                    continue
                had_owner = owners.get(account.id)
                if had_owner is not None:
                    if had_owner != self.leases.instance_id:
                        self._known_takeover.add(account.id)
                elif len(wanted) < room or account.id in overdue:
                    wanted.append(account.id)
            # one round trip for every lease and one for every stored state: acquiring
            # and loading account by account made a 2,000-account start take ~25 s
            acquired = await self.leases.acquire_many(wanted)
            for account_id in acquired:
                if account_id in self._known_takeover:
                    self.metrics.lease_takeovers.inc()
            await self._start_runners(acquired)
        await self._poll_resync()

    async def _check_data_set(self) -> None:
        """Rewrite every owned account when Redis came back empty, older or different."""
        dataset = self.leases.dataset
        # a write that found lease and holder gone saw the loss first
        lost = (bool(self._dataset) and dataset != self._dataset) or self.writer.data_lost
        self._dataset = dataset
        if self._redis_failed or not self._run_id:
            run_id = await self.leases.run_id()
            # a restart that kept its data may still have lost the last second of the AOF
            lost = lost or (bool(self._run_id) and run_id != self._run_id)
            self._run_id = run_id
            self._redis_failed = False
            self._outage_logged = False
        if lost:
            log.warning(
                "redis restarted or was replaced; writing the full state of %d account(s) again",
                len(self.runners),
            )
            await self.writer.raise_seq_floor(self._seq_seen())
            self.rewrite_state()
            self.writer.data_lost = False

    def rewrite_state(self) -> None:
        """Submit the full state and status of every owned account from its fold.

        Each wallet scope goes as a snapshot replace (compare-and-set: what Redis already
        holds emits nothing), so a Redis that lost its data gets everything back, web3
        wallets and stream-only balances included.
        """
        for runner in self.runners.values():
            runner.fold.resubmit()
            runner.fold.report_status(runner.status_doc())
        self._submit_disabled()

    async def _poll_resync(self) -> None:
        """Run the resyncs other instances routed here through ``P:resync``.

        Read on from the entry that was last when this instance first looked: a
        non-blocking ``XREAD`` of ``$`` never returns an entry, so ``$`` cannot be used.
        """
        if self._resync_id is None:
            last: Any = await self.redis.xrevrange(self.keys.resync, count=1)
            self._resync_id = _entry_id(last[0][0]) if last else "0-0"
        reply: Any = await self.redis.xread({self.keys.resync: self._resync_id}, count=100)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self._resync_id = _entry_id(entry_id)
                account = fields.get(b"a", fields.get("a"))
                name = account.decode() if isinstance(account, bytes) else str(account)
                runner = self.runners.get(name)
                if runner is not None:
                    runner.request_resync()

    # -- runners -----------------------------------------------------------------------

    async def _start_runners(self, account_ids: list[str]) -> None:
        """Start the upstream of each newly owned account from its stored state."""
        accounts = [
            account
            for account in (self.accounts.get(a) for a in account_ids)
            if account is not None and account.id not in self.runners
        ]
        if not accounts or self._stopping:
            return
        assert self.http is not None
        snapshot = await self.reader.snapshot([a.id for a in accounts])
        stored: dict[str, list[AssetBalance]] = {a.id: [] for a in accounts}
        for r in snapshot.records:
            amounts = Decimal(r.total), Decimal(r.available), Decimal(r.locked)
            balance = AssetBalance(r.wallet, r.asset, *amounts, r.symbol, dict(r.extra))
            stored[r.account].append(balance)
        for account in accounts:
            fold = AccountFold(account.id, account.venue, self.writer, market=self.prices.record)
            fold.load(stored[account.id])
            runner = AccountRunner(
                account,
                fold,
                http=self.http,
                limiter=self.limiter,
                settings=self.settings,
                metrics=self.metrics,
                owner=self.settings.instance_id,
                stored_token_meta=self._stored_token_meta,
            )
            previous = snapshot.statuses.get(account.id, {})
            runner.reconnects = int(previous.get("reconnects") or 0)
            self.runners[account.id] = runner
            self.tasks[account.id] = asyncio.create_task(
                runner.run(), name=f"upstream-{account.id}"
            )
            log.info("%s: owned by this instance; starting upstream", account.id)

    async def _stored_token_meta(self) -> Mapping[Any, Any]:
        meta: Mapping[Any, Any] = await self.redis.hgetall(self.keys.prices)
        return meta

    async def _stop_runner(self, account_id: str, *, stale: bool, discard: bool = True) -> None:
        runner = self.runners.pop(account_id, None)
        task = self.tasks.pop(account_id, None)
        if runner is None:
            return
        await runner.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if stale and runner.state not in (AccountState.DISABLED, AccountState.AUTH_FAILED):
            runner.set_state(AccountState.STALE, "service stopped")
        if stale:
            runner.mark_disconnected()
        else:
            # handed over: the new owner exports this account's connection series now
            runner.forget_metrics()
        if not stale and discard:
            self.writer.discard(account_id)


def _entry_id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
