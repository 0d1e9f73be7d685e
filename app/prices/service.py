"""The service's prices: the graph, the recorder, the own-socket feeds and the Redis follow.

Built by the app's lifespan (one per process) and shared through the
:class:`~app.services.Services`. Where it sits:

- account sockets (sFOX tickers, SolanaTracker price rooms) hand their prices to
  :meth:`PriceService.record` from the connection loop;
- the supervisor calls :meth:`PriceService.sync` with the accounts this instance owns and
  what they hold: it keeps one BitoPro ticker socket per distinct ticker URL and one
  DeltaDeFi market price socket per held symbol, started, resubscribed and stopped as the
  owned accounts and their holdings change;
- :meth:`PriceService.follow` (every ``price_refresh`` seconds) reads ``P:prices`` so a
  replica that does not own the feeds values the same way.

The follow policy (docs/valuation.md, "Replicas and restarts"): a stored price received
**after this process started** was written by a feed of this deployment that is live now,
so it is taken with its original receive time (its age stays honest and it goes stale on
its own when that feed stops). A stored price received before this process started is
only *restored*: served, marked stale, until a feed answers again. A price feed's failure
never reaches balances or account state: it only leaves prices to go stale.

Price history (docs/operations.md, "Price history"): every price the graph takes is handed
to the optional ``on_price(price, own)`` listener, ``own`` true for a price from a feed
socket of this instance and false for one followed from another replica. Restored prices
are never handed over: no feed confirmed them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.accounts import AccountConfig
from app.domain import Venue
from app.mints import STABLE_MINTS
from app.prices.feed import (
    BitoproTickerChannel,
    DeltadefiMarketChannel,
    PriceChannel,
    PriceFeedClient,
    bitopro_pairs,
    bitopro_ticker_urls,
    deltadefi_symbols,
)
from app.prices.graph import PriceGraph
from app.prices.model import Price
from app.prices.persistence import PriceRecorder, PriceWriter, load_prices
from app.ratelimit import VenueLimiter
from app.reconnect import SocketOptions
from app.settings import Settings
from app.store import Keys

log = logging.getLogger(__name__)


def price_graph(settings: Settings, clock: Callable[[], float] = time.time) -> PriceGraph:
    """The price graph with the service's ages, pegs and static prices."""
    return PriceGraph(
        max_age=settings.price_max_age,
        max_ages=settings.price_max_ages,
        pegs=settings.price_pegs,
        identities=STABLE_MINTS,
        static=settings.static_prices,
        clock=clock,
    )


class PriceService:
    """Owns the price graph and every price socket this instance runs."""

    def __init__(
        self,
        settings: Settings,
        graph: PriceGraph,
        writer: PriceWriter,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        on_reject: Callable[[str, str], None] | None = None,
        on_price: Callable[[Price, bool], object] | None = None,
        on_announce: Callable[[Price], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``graph`` (see :func:`price_graph`) is shared with the readers that value
        balances; ``on_announce`` is told of every new market price (the stream hub)."""
        s = settings
        self.settings = settings
        self.graph = graph
        self._on_announce = on_announce
        self._recorder = PriceRecorder(self.graph, writer, self._announce)
        self._redis = redis
        self._keys = keys
        self._on_reject = on_reject
        self._on_price = on_price
        self.started = clock()
        self.options = SocketOptions.of(s)
        self.feeds: dict[str, PriceFeedClient] = {}

    # -- prices in -----------------------------------------------------------------------

    def _announce(self, price: Price) -> None:
        if self._on_announce is None:
            return
        try:
            self._on_announce(price)
        except Exception as exc:  # a listener's fault never loses the price
            log.warning("price listener failed (%s)", type(exc).__name__)

    def _history(self, price: Price, own: bool) -> None:
        if self._on_price is not None:
            try:
                self._on_price(price, own)
            except Exception as exc:  # history's fault never loses the live price
                log.warning("price history listener failed (%s)", type(exc).__name__)

    def record(self, price: Price) -> None:
        """A price from a live feed of this instance: into the graph, queued for Redis."""
        if self._recorder(price):
            self._history(price, True)

    async def restore(self, timeout: float = 2.0) -> int:
        """Startup: what Redis holds, served as stale until a feed answers. Best effort."""
        try:
            prices = await asyncio.wait_for(load_prices(self._redis, self._keys), timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("stored prices not loaded (%s)", type(exc).__name__)
            return 0
        count = self.follow_prices(prices)
        log.info("loaded %d stored price(s) (%d restored as stale)", len(prices), count)
        return count

    def follow_prices(self, prices: Iterable[Price]) -> int:
        """Take stored prices by the follow policy; how many were only restored (stale)."""
        before: list[Price] = []
        for price in prices:
            if price.received >= self.started:
                # a live feed of this deployment confirmed it
                if self.graph.put(price):
                    self._announce(price)
                    self._history(price, False)
            else:
                before.append(price)
        return self.graph.restore(before)

    async def follow(self, timeout: float = 2.0) -> None:
        """Read ``P:prices`` once (other replicas' feeds). Redis being away changes nothing."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            self.follow_prices(
                await asyncio.wait_for(load_prices(self._redis, self._keys), timeout)
            )

    # -- own sockets ---------------------------------------------------------------------

    def wanted(
        self, accounts: Iterable[AccountConfig], held: Mapping[str, Iterable[str]]
    ) -> dict[str, PriceChannel]:
        """The price sockets the owned ``accounts`` need, by a stable key."""
        enabled = [a for a in accounts if a.enabled]
        channels: dict[str, PriceChannel] = {}
        for url, ids in sorted(bitopro_ticker_urls(enabled).items()):
            pairs = bitopro_pairs(code for i in ids for code in held.get(i, ()))
            channels[f"bitopro|{url}"] = BitoproTickerChannel(url, pairs)
        for account in enabled:
            if account.venue != Venue.DELTADEFI or account.api_key is None:
                continue
            for symbol in sorted(deltadefi_symbols(held.get(account.id, ()))):
                key = f"deltadefi|{symbol}"
                if key not in channels:
                    with contextlib.suppress(Exception):  # a symbol that cannot be read back
                        channels[key] = DeltadefiMarketChannel(account, symbol)
        return channels

    def sync(
        self,
        http: aiohttp.ClientSession,
        limiter: VenueLimiter,
        accounts: Iterable[AccountConfig],
        held: Mapping[str, Iterable[str]],
    ) -> None:
        """Start, resubscribe and stop the own price sockets to match what is wanted now."""
        wanted = self.wanted(accounts, held)
        for key in list(self.feeds):
            if key not in wanted:
                client = self.feeds.pop(key)
                log.info("%s: no longer needed; closing", client.channel.name)
                asyncio.get_running_loop().create_task(client.stop())
        for key, channel in wanted.items():
            current = self.feeds.get(key)
            if current is None:
                started = PriceFeedClient(
                    http,
                    channel,
                    self.record,
                    self.options,
                    on_reject=self._on_reject,
                    limiter=limiter,
                )
                self.feeds[key] = started
                started.start()
            elif _pairs(current.channel) != _pairs(channel):
                current.resubscribe(channel)

    async def stop(self) -> None:
        feeds, self.feeds = list(self.feeds.values()), {}
        await asyncio.gather(*(client.stop() for client in feeds), return_exceptions=True)


def _pairs(channel: PriceChannel) -> frozenset[str]:
    pairs = getattr(channel, "pairs", None)
    return frozenset(pairs) if pairs is not None else frozenset({channel.name})
