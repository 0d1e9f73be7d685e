"""Price feeds with a socket of their own: BitoPro public tickers and DeltaDeFi market price.

sFOX tickers and SolanaTracker price rooms ride the account sockets (one socket per
account); these two channels need their own:

- BitoPro tickers are public data, so there is ONE socket per distinct ticker URL
  (:func:`bitopro_ticker_urls` groups the accounts), subscribed in its query to the pairs
  the held currencies need plus the conversion pairs (``USDT_TWD``). When the wanted set
  changes, :meth:`PriceFeedClient.resubscribe` reconnects with the new query at once.
- DeltaDeFi market price is one socket per symbol (``ADAUSDM``) carrying one account's
  key in the query; only the redacted ``log_url`` is ever logged.

:class:`PriceFeedClient` is the connection loop both use, with the same rules as the
account streams and the same code for them (:mod:`app.reconnect`): capped exponential
backoff with full jitter (reset only after a connection stayed healthy), liveness by
protocol ping/pong (never message silence), a bad frame rejected whole, counted by reason
and logged once per connection with a short secret-free excerpt; every connection waits
on the shared :class:`~app.ratelimit.VenueLimiter` first. Every good price goes to
``deliver`` synchronously (the :class:`~app.prices.persistence.PriceRecorder`): nothing
here awaits Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Protocol

import aiohttp

from app.accounts import AccountConfig
from app.domain import Venue
from app.prices import bitopro, deltadefi
from app.prices.model import Price
from app.ratelimit import VenueLimiter
from app.reconnect import Backoff, SocketOptions, close_socket, excerpt, open_socket
from app.venues.base import HttpRequest, ProtocolError
from app.venues.urls import redact_url

log = logging.getLogger(__name__)

CONVERSION_PAIRS: Final = frozenset({"USDT_TWD"})
"""BitoPro pairs always wanted: they take TWD-quoted prices to USD (via the USDT peg)."""
BITOPRO_QUOTE: Final = "TWD"
DELTADEFI_QUOTE: Final = "USDM"


class PriceChannel(Protocol):
    """One price socket: where to connect and how to read its frames (pure)."""

    @property
    def name(self) -> str:
        """A secret-free label for logs and metrics (``bitopro-tickers``)."""
        ...

    @property
    def venue(self) -> str:
        """The venue whose limits the socket counts against (``bitopro``)."""
        ...

    def request(self) -> HttpRequest: ...

    def parse(self, raw: str | bytes, received: float) -> Price: ...


class BitoproTickerChannel:
    """BitoPro's public ticker socket at ``url``, subscribed to ``pairs`` in its query."""

    def __init__(self, url: str, pairs: Iterable[str]) -> None:
        self.url = url
        self.pairs = frozenset(p.upper() for p in pairs)

    @property
    def name(self) -> str:
        return "bitopro-tickers"

    @property
    def venue(self) -> str:
        return Venue.BITOPRO

    def request(self) -> HttpRequest:
        full = bitopro.subscribe_url(self.url, self.pairs)
        return HttpRequest("GET", full, redact_url(full))

    def parse(self, raw: str | bytes, received: float) -> Price:
        price = bitopro.parse_ticker(raw, received)
        if price.pair not in self.pairs:
            raise ProtocolError("schema", "ticker for a pair that was not subscribed")
        return price


class DeltadefiMarketChannel:
    """DeltaDeFi's market price socket for ``symbol``, opened with ``account``'s key."""

    def __init__(self, account: AccountConfig, symbol: str) -> None:
        self.account = account
        self.symbol = symbol.upper()
        deltadefi.split_symbol(self.symbol)  # refuse a symbol that cannot be read back

    @property
    def name(self) -> str:
        return f"deltadefi-market-{self.symbol}"

    @property
    def venue(self) -> str:
        return Venue.DELTADEFI

    def request(self) -> HttpRequest:
        return deltadefi.market_price_request(self.account, self.symbol)

    def parse(self, raw: str | bytes, received: float) -> Price:
        return deltadefi.parse_market_price(raw, self.symbol, received)


def bitopro_ticker_urls(accounts: Iterable[AccountConfig]) -> dict[str, list[str]]:
    """Ticker URL -> the ids of the enabled BitoPro accounts it serves (one socket each)."""
    out: dict[str, list[str]] = {}
    for account in accounts:
        if account.venue == Venue.BITOPRO and account.enabled:
            out.setdefault(bitopro.ticker_url(account), []).append(account.id)
    return out


def bitopro_pairs(held: Iterable[str]) -> frozenset[str]:
    """The TWD pairs that price the held currencies, plus :data:`CONVERSION_PAIRS`."""
    pairs = {f"{code.upper()}_{BITOPRO_QUOTE}" for code in held if code.upper() != BITOPRO_QUOTE}
    return frozenset(pairs | CONVERSION_PAIRS)


def deltadefi_symbols(held: Iterable[str]) -> frozenset[str]:
    """The USDM-quoted symbols that price the held assets (``ADA`` -> ``ADAUSDM``)."""
    return frozenset(
        f"{code.upper()}{DELTADEFI_QUOTE}" for code in held if code.upper() != DELTADEFI_QUOTE
    )


class PriceFeedClient:
    """Keeps one price socket up and hands every good price to ``deliver``."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        channel: PriceChannel,
        deliver: Callable[[Price], object],
        options: SocketOptions | None = None,
        *,
        limiter: VenueLimiter,
        on_reject: Callable[[str, str], None] | None = None,
    ) -> None:
        self.http = http
        self.limiter = limiter
        self.channel = channel
        self.deliver = deliver
        self.options = options or SocketOptions()
        self.on_reject = on_reject
        self.prices = 0
        self.rejected: Counter[str] = Counter()
        self.connections = 0
        self.reconnects: Counter[str] = Counter()
        self.connected = False
        self.last_error = ""
        self._restart = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._logged: set[str] = set()

    def __repr__(self) -> str:
        return f"<PriceFeedClient {self.channel.name} {self.channel.request().log_url}>"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"price-{self.channel.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def resubscribe(self, channel: PriceChannel) -> None:
        """Use ``channel`` (a new set of pairs) from now on: reconnect at once, no backoff."""
        self.channel = channel
        self._restart.set()

    async def run(self) -> None:
        backoff = Backoff(self.options)
        while True:
            # venue limits (VENUES.md): a socket slot and a connection attempt in budget,
            # shared with the account sockets of the same venue host
            slot = await self.limiter.connect(self.channel.venue, self.channel.request().url)
            started = time.monotonic()
            try:
                reason = await self._connect_once()
            finally:
                slot.release()
            self.connected = False
            self.reconnects[reason] += 1
            healthy_for = time.monotonic() - started
            if reason == "resubscribe":
                if healthy_for >= self.options.healthy_after:
                    backoff.attempt = 0
                continue
            delay = backoff.next_delay(healthy_for)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._restart.wait(), delay)

    async def _connect_once(self) -> str:
        """One connection, from upgrade to close; the reason it ended."""
        self._restart.clear()
        request = self.channel.request()
        self._logged = set()
        log.info("%s: connecting to %s", self.channel.name, request.log_url)
        try:
            ws = await open_socket(self.http, request, self.options)
        except aiohttp.WSServerHandshakeError as exc:
            reason = "auth" if exc.status in (401, 403) else "handshake"
            self.last_error = f"{reason}: HTTP {exc.status}"
            log.warning("%s: refused (HTTP %s)", self.channel.name, exc.status)
            return reason
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.last_error = f"connect: {type(exc).__name__}"
            log.warning("%s: cannot connect (%s)", self.channel.name, type(exc).__name__)
            return "connect"
        self.connections += 1
        self.connected = True
        self.last_error = ""
        restart = asyncio.ensure_future(self._restart.wait())
        try:
            while True:
                receive = asyncio.ensure_future(ws.receive())
                done, _ = await asyncio.wait(
                    {receive, restart}, return_when=asyncio.FIRST_COMPLETED
                )
                if restart in done:
                    receive.cancel()
                    return "resubscribe"
                msg = receive.result()
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._handle(msg.data, time.time())
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    return "network"
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    return "closed"
        finally:
            restart.cancel()
            await close_socket(ws)

    def _handle(self, raw: str | bytes, received: float) -> None:
        try:
            price = self.channel.parse(raw, received)
        except ProtocolError as exc:
            self.rejected[exc.reason] += 1
            if self.on_reject is not None:
                self.on_reject(self.channel.name, exc.reason)
            if exc.reason not in self._logged:  # once per reason per connection
                self._logged.add(exc.reason)
                log.warning(
                    "%s: rejected a frame (%s: %s): %s",
                    self.channel.name, exc.reason, exc, excerpt(raw),
                )  # fmt: skip
            return
        self.prices += 1
        self.deliver(price)


def feed_clients(
    http: aiohttp.ClientSession,
    accounts: Iterable[AccountConfig],
    held: Mapping[str, Iterable[str]],
    deliver: Callable[[Price], object],
    options: SocketOptions | None = None,
    *,
    limiter: VenueLimiter,
) -> list[PriceFeedClient]:
    """The standalone price sockets a set of accounts needs, given ``held`` (account id ->
    asset codes it holds): one per distinct BitoPro ticker URL, one per DeltaDeFi symbol."""
    accounts = [a for a in accounts if a.enabled]
    clients: list[PriceFeedClient] = []
    for url, ids in sorted(bitopro_ticker_urls(accounts).items()):
        pairs = bitopro_pairs(code for i in ids for code in held.get(i, ()))
        channel = BitoproTickerChannel(url, pairs)
        clients.append(PriceFeedClient(http, channel, deliver, options, limiter=limiter))
    symbols: dict[str, AccountConfig] = {}
    for account in accounts:
        if account.venue == Venue.DELTADEFI:
            for symbol in deltadefi_symbols(held.get(account.id, ())):
                symbols.setdefault(symbol, account)
    for symbol, account in sorted(symbols.items()):
        channel_ = DeltadefiMarketChannel(account, symbol)
        clients.append(PriceFeedClient(http, channel_, deliver, options, limiter=limiter))
    return clients
