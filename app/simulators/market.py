"""The venues' price streams in the simulators: a board of prices and one feed per venue.

Every simulator serves its venue's price channel the way the venue does (VENUES.md):

- BitoPro: a public, unauthenticated ticker socket at ``/ws/v1/pub/tickers`` (``?pairs=``)
  or ``/ws/v1/pub/tickers/<pair>``, pushing ``TICKER`` frames with decimal strings;
- sFOX: ``ticker.sfox.<pair>`` feeds on the authenticated account socket, sharing the
  connection's sequence counter with the balance feed;
- DeltaDeFi: ``/market/market-price/<symbol>?api_key=<key>``, pushing
  ``{"type":"Market","sub_type":"market_price","price":<number>}``;
- SolanaTracker: ``price:aggregated:<mint>`` and ``price:<mint>`` rooms on the account
  socket (USD prices as JSON numbers), using the simulator's own mint prices, so swaps,
  REST and price rooms agree.

A :class:`PriceBoard` holds the exact prices (the truth) and which pairs are stalled.
Prices are pushed when set, and re-pushed every ``interval`` seconds as a venue's ticker
does; a stalled pair sends nothing (its socket stays up), so a client's price goes stale.
:meth:`PriceFeed.walk` moves every price a little (the ``demo`` random walk).

Control routes (beside :mod:`.control`'s)::

    GET  /_sim/prices              {"prices": {pair: str}, "stalled": [pair], "sockets": counts}
    PUT  /_sim/prices/{pair}       {"price"} -> set it and push it -> {"frames"}
    POST /_sim/prices/stall        {"stall": bool = true, "pairs"?: [pair]} -> {"stalled"}
    POST /_sim/prices/malformed    {"kind", "pair"?} -> {"frames"}

Malformed kinds: ``bad_json``, ``wrong_types``, ``negative``, ``non_numeric``, ``zero``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from aiohttp import WSMsgType, web

from app.simulators.connection import CLIENT_MAX_MSG, Connection
from app.simulators.control import PREFIX, control_route, json_error, pick
from app.simulators.types import Amount, ConnectionCounts, SimulatorError
from app.simulators.wire import dumps, iso_ms, now_ms, to_decimal


class FeedHost(Protocol):
    """What a price feed uses of its simulator (:class:`app.simulators.server.VenueSimulator`)."""

    ping_interval: float

    @property
    def venue(self) -> str: ...
    @property
    def every_connection(self) -> set[Connection]: ...
    async def keepalive(self, conn: Connection) -> None: ...
    async def close_connection(self, conn: Connection, code: int, message: bytes) -> None: ...
    async def send(self, conn: Connection, payload: bytes) -> bool: ...
    def is_accepted(self, key: str | None) -> bool: ...
    def note_refused(self, key: str | None) -> None: ...


MALFORMED_KINDS = ("bad_json", "wrong_types", "negative", "non_numeric", "zero")
DEFAULT_INTERVAL = 3.0
"""sFOX sends its ticker "about every 3 s"; every simulated feed re-pushes that often."""

BITOPRO_PRICES: Mapping[str, str] = {
    "BTC_TWD": "3050000",
    "ETH_TWD": "112500",
    "ADA_TWD": "26.35",
    "BITO_TWD": "4.12",
    "SOL_TWD": "4875",
    "USDT_TWD": "31.47",
    "ETH_BTC": "0.0369",
}
SFOX_PRICES: Mapping[str, str] = {
    "btcusd": "96912.57",
    "ethusd": "3574.12",
    "solusd": "154.83",
    "adausd": "0.8371",
    "usdcusd": "1.0001",
    "usdxrp": "0.4512",
}
DELTADEFI_PRICES: Mapping[str, str] = {"ADAUSDM": "0.8365", "ADAUSDT": "0.8369"}


def walk_price(rng: random.Random, price: Decimal) -> Decimal:
    """``price`` moved by up to 0.5 %, exactly, in units of its own last digit (or 0.01)."""
    exponent = price.as_tuple().exponent
    places = min(exponent if isinstance(exponent, int) else -2, -2)
    unit = Decimal(1).scaleb(places)
    factor = Decimal(10_000 + rng.randint(-50, 50)).scaleb(-4)
    return max((price * factor).quantize(unit), unit)


class PriceBoard:
    """The exact prices one simulator serves, by the venue's pair name, and stalled pairs."""

    def __init__(self, prices: Mapping[str, Amount], *, normalise: Any = str) -> None:
        self._normalise = normalise
        self.prices: dict[str, Decimal] = {}
        for pair, value in prices.items():
            self.set(pair, value)
        self.stalled: set[str] = set()

    def pair(self, name: str) -> str:
        return str(self._normalise(name))

    def set(self, pair: str, value: Amount) -> Decimal:
        price = to_decimal(value, f"price {pair[:32]}")
        if not price > 0:
            raise SimulatorError(f"price {pair[:32]}: must be positive")
        self.prices[self.pair(pair)] = price
        return price

    def get(self, pair: str) -> Decimal | None:
        return self.prices.get(self.pair(pair))

    def stall(self, pairs: Iterable[str] | None, stalled: bool = True) -> list[str]:
        """Stall (or resume) the given pairs, or every pair; the stalled pairs after."""
        chosen = set(self.prices) if pairs is None else {self.pair(p) for p in pairs}
        if stalled:
            self.stalled |= chosen
        else:
            self.stalled -= chosen
        return sorted(self.stalled)

    def live(self, pair: str) -> bool:
        return pair not in self.stalled


class PriceFeed(abc.ABC):
    """How one venue serves a :class:`PriceBoard`; registered by :meth:`add_routes`."""

    venue: ClassVar[str]

    def __init__(
        self,
        sim: FeedHost,
        board: PriceBoard,
        *,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.sim = sim
        self.board = board
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._sockets: set[Connection] = set()  # price-only sockets (BitoPro, DeltaDeFi)
        self._total = 0

    # -- what a venue supplies ----------------------------------------------------------

    @abc.abstractmethod
    def subscribers(self, pair: str) -> list[Connection]:
        """Connections that receive ``pair``'s prices."""

    @abc.abstractmethod
    def payload(self, pair: str, price: Any) -> dict[str, Any]:
        """The frame for ``pair`` carrying ``price`` (a Decimal, or a bad value)."""

    def encode(self, doc: dict[str, Any]) -> bytes:
        return dumps(doc)

    async def deliver(self, conn: Connection, pair: str, frame: bytes) -> bool:
        """Send one price frame (sFOX numbers it under the connection's lock)."""
        return await self.sim.send(conn, frame)

    def add_socket_routes(self, router: web.UrlDispatcher) -> None:
        """Register the venue's price socket, if it has one of its own."""
        del router  # sFOX and SolanaTracker prices ride the account sockets

    # -- shared ---------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        self.add_socket_routes(router)
        router.add_get(PREFIX + "/prices", control_route(self._control_list))
        router.add_put(PREFIX + "/prices/{pair}", control_route(self._control_set))
        router.add_post(PREFIX + "/prices/stall", control_route(self._control_stall))
        router.add_post(PREFIX + "/prices/malformed", control_route(self._control_malformed))

    def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._republish(), name=f"{self.venue}-prices")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sockets = list(self._sockets)
        if sockets:
            await asyncio.gather(
                *(self.sim.close_connection(c, 1001, b"server shutdown") for c in sockets)
            )

    async def _republish(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.publish_all()

    async def publish(self, pair: str) -> int:
        """Push ``pair``'s current price to its subscribers (nothing while stalled)."""
        pair = self.board.pair(pair)
        price = self.board.prices.get(pair)
        if price is None or not self.board.live(pair):
            return 0
        frame = self.encode(self.payload(pair, price))
        sent = 0
        for conn in self.subscribers(pair):
            sent += await self.deliver(conn, pair, frame)
        return sent

    async def publish_all(self) -> int:
        sent = 0
        for pair in list(self.board.prices):
            sent += await self.publish(pair)
        return sent

    async def set_price(self, pair: str, value: Amount) -> int:
        self.board.set(pair, value)
        return await self.publish(pair)

    async def walk(self, rng: random.Random) -> int:
        """Move every live price a little and push it (the demo's random walk)."""
        sent = 0
        for pair, price in list(self.board.prices.items()):
            if self.board.live(pair):
                self.board.prices[pair] = walk_price(rng, price)
                sent += await self.publish(pair)
        return sent

    def malformed_frame(self, pair: str, kind: str) -> bytes:
        if kind == "bad_json":
            return b'{"price": 1,'
        bad: Any = {
            "wrong_types": {"value": "1"},
            "negative": Decimal("-1.5"),
            "non_numeric": "lots",
            "zero": Decimal(0),
        }.get(kind)
        if bad is None:
            known = ", ".join(MALFORMED_KINDS)
            raise SimulatorError(f"{self.venue}: unknown malformed kind (one of {known})")
        return self.encode(self.payload(pair, bad))

    async def send_malformed(self, kind: str, pair: str | None = None) -> int:
        """One bad price frame of ``kind`` to every subscriber of ``pair`` (or of each pair)."""
        pairs = [self.board.pair(pair)] if pair is not None else list(self.board.prices)
        sent = 0
        for name in pairs:
            frame = self.malformed_frame(name, kind)
            for conn in self.subscribers(name):
                sent += await self.deliver(conn, name, frame)
        return sent

    def socket_counts(self) -> ConnectionCounts:
        """The venue's own price sockets: open now and accepted in total."""
        return ConnectionCounts(len(self._sockets), self._total, 0)

    async def serve_price_socket(
        self, request: web.Request, pairs: set[str]
    ) -> web.WebSocketResponse:
        """A price-only socket: keepalive pings as the account sockets, then the pushes."""
        ws = web.WebSocketResponse(
            autoping=False, compress=False, max_msg_size=CLIENT_MAX_MSG, timeout=2.0
        )
        await ws.prepare(request)
        conn = Connection(request, ws)
        conn.feeds = pairs
        conn.ready = True
        self._sockets.add(conn)
        self._total += 1
        if self.sim.ping_interval > 0:
            conn.tasks.append(asyncio.create_task(self.sim.keepalive(conn)))
        try:
            for pair in sorted(pairs):
                price = self.board.prices.get(pair)
                if price is not None and self.board.live(pair):
                    await self.sim.send(conn, self.encode(self.payload(pair, price)))
            async for msg in ws:
                if msg.type is WSMsgType.PING and not conn.stalled:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    conn.pong.set()
                elif msg.type is WSMsgType.ERROR:
                    break
        except ConnectionError:
            pass
        finally:
            for task in conn.tasks:
                task.cancel()
            self._sockets.discard(conn)
        return ws

    def socket_subscribers(self, pair: str) -> list[Connection]:
        return [c for c in self._sockets if pair in c.feeds]

    # -- control routes -------------------------------------------------------------------

    async def _control_list(self, _r: web.Request, _b: dict[str, Any]) -> Any:
        return {
            "prices": {pair: str(p) for pair, p in sorted(self.board.prices.items())},
            "stalled": sorted(self.board.stalled),
            "sockets": self.socket_counts().as_json(),
            "malformed_kinds": list(MALFORMED_KINDS),
        }

    async def _control_set(self, request: web.Request, body: dict[str, Any]) -> Any:
        if "price" not in body:
            raise SimulatorError("price: required")
        return {"frames": await self.set_price(request.match_info["pair"], body["price"])}

    async def _control_stall(self, _r: web.Request, body: dict[str, Any]) -> Any:
        pairs = pick(body, "pairs", list)
        if pairs is not None and not all(isinstance(p, str) for p in pairs):
            raise SimulatorError("pairs: expected a list of strings")
        return {"stalled": self.board.stall(pairs, bool(pick(body, "stall", bool, True)))}

    async def _control_malformed(self, _r: web.Request, body: dict[str, Any]) -> Any:
        kind = pick(body, "kind", str)
        if kind is None:
            raise SimulatorError("kind: required")
        return {"frames": await self.send_malformed(kind, pick(body, "pair", str))}


class BitoproTickerFeed(PriceFeed):
    """BitoPro's public ticker socket: no auth, pairs in the query or the path."""

    venue = "bitopro"
    PATH: ClassVar[str] = "/ws/v1/pub/tickers"

    def add_socket_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(self.PATH, self._ws)
        router.add_get(self.PATH + "/{pair}", self._ws)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        named = request.match_info.get("pair")
        raw = [named] if named else request.query.get("pairs", "").split(",")
        pairs = {self.board.pair(p.strip()) for p in raw if p.strip()}
        if not pairs or len(pairs) > 200:
            return json_error(400, "pairs: name 1 to 200 pairs")
        return await self.serve_price_socket(request, pairs)

    def subscribers(self, pair: str) -> list[Connection]:
        return self.socket_subscribers(pair)

    def payload(self, pair: str, price: Any) -> dict[str, Any]:
        ms = now_ms()
        last = str(price) if isinstance(price, Decimal) else price
        return {
            "event": "TICKER",
            "pair": pair,
            "lastPrice": last,
            "isBuyer": True,
            "priceChange24hr": "0.92",
            "volume24hr": "126.45623456",
            "high24hr": last,
            "low24hr": last,
            "timestamp": ms,
            "datetime": iso_ms(ms),
        }


class SfoxTickerFeed(PriceFeed):
    """sFOX tickers on the authenticated socket, numbered with the connection's sequence."""

    venue = "sfox"
    PREFIX: ClassVar[str] = "ticker.sfox."

    def subscribers(self, pair: str) -> list[Connection]:
        feed = self.PREFIX + pair
        return [c for c in self.sim.every_connection if feed in c.feeds and c.key is not None]

    def payload(self, pair: str, price: Any) -> dict[str, Any]:
        return {
            "amount": Decimal("0.0196"),
            "exchange": "coinbase",
            "high": price,
            "last": price,
            "low": price,
            "open": price,
            "pair": pair,
            "route": "Smart",
            "source": "ticker-info",
            "timestamp": iso_ms(now_ms()),
            "volume": Decimal("12345.67"),
            "vwap": price,
        }

    def encode(self, doc: dict[str, Any]) -> bytes:
        # the envelope is built per connection, with its own sequence number
        return dumps(doc)

    async def deliver(self, conn: Connection, pair: str, frame: bytes) -> bool:
        if conn.stalled or conn.closed:
            return False
        async with conn.lock:
            head = b'{"sequence":%d,"recipient":"%s","timestamp":%d,"payload":' % (
                conn.next_seq(),
                (self.PREFIX + pair).encode(),
                now_ms() * 1_000_000,
            )
            try:
                await conn.ws.send_frame(head + frame + b"}", WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                return False
        return True

    def malformed_frame(self, pair: str, kind: str) -> bytes:
        if kind == "bad_json":
            return b'{"last": 1,'  # still wrapped: the envelope itself becomes invalid JSON
        return super().malformed_frame(pair, kind)


class DeltadefiMarketFeed(PriceFeed):
    """DeltaDeFi's market price socket, one symbol per socket, an account key in the query."""

    venue = "deltadefi"
    PATH: ClassVar[str] = "/market/market-price/{symbol}"

    def add_socket_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(self.PATH, self._ws)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("api_key")
        if not self.sim.is_accepted(key):
            self.sim.note_refused(key)
            return json_error(401, "invalid api key")
        symbol = self.board.pair(request.match_info["symbol"])
        return await self.serve_price_socket(request, {symbol})

    def subscribers(self, pair: str) -> list[Connection]:
        return self.socket_subscribers(pair)

    def payload(self, pair: str, price: Any) -> dict[str, Any]:
        return {"type": "Market", "sub_type": "market_price", "price": price}


class SolanaPriceFeed(PriceFeed):
    """SolanaTracker price rooms on the account socket; the board is the simulator's own
    mint prices (``SolanaTrackerSimulator.prices``)."""

    venue = "solanatracker"
    AGGREGATED: ClassVar[str] = "price:aggregated:"
    POOL: ClassVar[str] = "price:"

    def subscribers(self, pair: str) -> list[Connection]:
        rooms = (self.AGGREGATED + pair, self.POOL + pair)
        return [c for c in self.sim.every_connection if any(r in c.rooms for r in rooms)]

    async def deliver(self, conn: Connection, pair: str, frame: bytes) -> bool:
        # one frame per joined room: the aggregated one, and the single-pool one
        sent = False
        if self.AGGREGATED + pair in conn.rooms:
            sent = await self.sim.send(conn, frame.replace(b"@ROOM@", self.AGGREGATED.encode()))
        if self.POOL + pair in conn.rooms:
            doc = frame.replace(b"@ROOM@", self.POOL.encode())
            sent = await self.sim.send(conn, doc) or sent
        return sent

    def payload(self, pair: str, price: Any) -> dict[str, Any]:
        ms = now_ms()
        return {
            "type": "message",
            "room": "@ROOM@" + pair,
            "data": {
                "token": pair,
                "timestamp": ms,
                "time": ms,
                "price": price,
                "pool": "9d9mb8kooFfaD3SctgZtkxQypkshx6ezhbKio89ixyy2",
                "aggregated": {
                    "median": price,
                    "average": price,
                    "min": price,
                    "max": price,
                    "poolCount": 12,
                },
                "topPools": [
                    {
                        "poolId": "9d9mb8kooFfaD3SctgZtkxQypkshx6ezhbKio89ixyy2",
                        "price": price,
                        "liquidity": Decimal("1482234.12"),
                        "market": "raydium",
                    }
                ],
            },
        }


def make_price_feed(sim: FeedHost, interval: float = DEFAULT_INTERVAL) -> PriceFeed:
    """The price feed of ``sim``'s venue, with that venue's plausible demo prices."""
    if sim.venue == "bitopro":
        return BitoproTickerFeed(
            sim, PriceBoard(BITOPRO_PRICES, normalise=str.upper), interval=interval
        )
    if sim.venue == "sfox":
        return SfoxTickerFeed(sim, PriceBoard(SFOX_PRICES, normalise=str.lower), interval=interval)
    if sim.venue == "deltadefi":
        board = PriceBoard(DELTADEFI_PRICES, normalise=str.upper)
        return DeltadefiMarketFeed(sim, board, interval=interval)
    if sim.venue == "solanatracker":
        board = PriceBoard({})
        board.prices = sim.prices  # type: ignore[attr-defined]
        return SolanaPriceFeed(sim, board, interval=interval)
    raise SimulatorError(f"no price feed for venue {sim.venue!r}")
