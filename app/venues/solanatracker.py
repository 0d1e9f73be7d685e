"""SolanaTracker Datastream: the key in the URL path, wallet balance and token transaction rooms.

The account's wallets are followed by joining ``wallet:<addr>:balance`` rooms. For every
mint those wallets hold, :meth:`SolanatrackerSession.follow_holdings` also joins
``transaction:<mint>`` (see :meth:`SolanatrackerSession.transaction_room`) to learn the
mint's USD price and its symbol, name and decimals, and leaves the rooms of mints no
wallet holds any more; swaps made by a tracked wallet are re-broadcast as events.
It also joins ``price:aggregated:<mint>`` (:meth:`SolanatrackerSession.price_room`) for
every held mint; those messages come out as :class:`~app.domain.MarketPrice` events for
the price recorder and never touch balances.
The server's JSON heartbeat ``{"type":"ping"}`` is answered with ``{"type":"pong"}``.
Joining sends no snapshot, so balances are seeded from the Data API when the account has a
``data_api_key`` (one request per wallet).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final

import orjson

from app.accounts import AccountConfig
from app.domain import (
    AssetBalance,
    BalanceSnapshot,
    BalanceUpdate,
    ControlReply,
    Event,
    MarketPrice,
    PriceUpdate,
    Venue,
    VenueEvent,
)
from app.mints import KNOWN_MINTS
from app.prices import solanatracker as price_rooms
from app.venues import _wire as w
from app.venues import urls
from app.venues.base import HttpRequest, VenueSession

DEFAULT_WS_URL: Final = "wss://datastream.solanatracker.io"
DEFAULT_REST_URL: Final = "https://data.solanatracker.io"
SWAP_DEDUP_SIZE: Final = 10_000
PONG: Final = '{"type":"pong"}'

_SWAP_NUMBERS: Final = ("priceUsd", "amount", "volume", "solVolume")
_MAX_TX = 128


class BoundedSet:
    """The most recent ``capacity`` keys, oldest forgotten first (insertion-ordered dict)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: dict[str, None] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add_all(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._keys.pop(key, None)
            self._keys[key] = None
        excess = len(self._keys) - self.capacity
        if excess > 0:
            for old in list(self._keys)[:excess]:
                del self._keys[old]


class SolanatrackerSession(VenueSession):
    """One Datastream connection: room joins out, room messages in."""

    venue = Venue.SOLANATRACKER
    assets_are_token_addresses = True

    def __init__(self, account: AccountConfig) -> None:
        super().__init__(account)
        self._wallets = frozenset(account.wallets)
        self._symbols: dict[str, str] = {}
        self._seen_tx = BoundedSet(SWAP_DEDUP_SIZE)
        self._mint_rooms: set[str] = set()  # transaction and price rooms joined

    # -- connection and rooms ----------------------------------------------------------

    def connect_request(self) -> HttpRequest:
        key = self.account.secret("api_key")
        base = self.account.ws_url or DEFAULT_WS_URL
        url = urls.with_path_segment(base, urls.quote_segment(key))
        log_url = urls.with_path_segment(urls.redact_url(base), urls.REDACTED)
        return HttpRequest("GET", url, log_url)

    def opening_messages(self) -> list[str]:
        """One ``{"type":"join","room":"wallet:<addr>:balance"}`` per tracked wallet."""
        return [self.join_message(self.balance_room(wallet)) for wallet in self.account.wallets]

    def follow_holdings(self, held: Iterable[str]) -> list[str]:
        """Join the transaction and price rooms of every ``held`` mint, leave those of
        mints no wallet holds (the wallet balance rooms stay)."""
        wanted: set[str] = set()
        for mint in held:
            wanted.add(self.transaction_room(mint))
            wanted.add(self.price_room(mint))
        joins, leaves = sorted(wanted - self._mint_rooms), sorted(self._mint_rooms - wanted)
        self._mint_rooms = wanted
        return [self.join_message(r) for r in joins] + [self.leave_message(r) for r in leaves]

    @staticmethod
    def balance_room(wallet: str) -> str:
        return f"wallet:{wallet}:balance"

    @staticmethod
    def transaction_room(mint: str) -> str:
        return f"transaction:{mint}"

    @staticmethod
    def price_room(mint: str) -> str:
        """``price:aggregated:<mint>``: the mint's USD price over its pools."""
        return price_rooms.aggregated_room(mint)

    @staticmethod
    def join_message(room: str) -> str:
        return orjson.dumps({"type": "join", "room": room}).decode()

    @staticmethod
    def leave_message(room: str) -> str:
        return orjson.dumps({"type": "leave", "room": room}).decode()

    def symbol_of(self, mint: str) -> str | None:
        """The mint's symbol: the built-in table for its mints (always, so a venue's
        ``SOL`` never flaps with ``wSOL``), else what transactions taught."""
        return KNOWN_MINTS.get(mint) or self._symbols.get(mint)

    # -- frames ------------------------------------------------------------------------

    def on_frame(self, raw: str | bytes) -> tuple[list[Event], list[str]]:
        """Read one room message: ``joined``/``left`` replies and room ``message`` frames.

        The server's application heartbeat ``{"type": "ping"}`` is answered with
        ``{"type": "pong"}`` (as the official SDK does); it is not a bad frame.

        A join reply, verbatim::

            {
              "type": "joined",
              "room": "wallet:FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1:balance"
            }
        """
        events, new_tx = w.decode(raw, self._read_frame)
        # state changes only after the whole frame was accepted
        if new_tx:
            self._seen_tx.add_all(new_tx)
        replies: list[str] = []
        for event in events:
            if isinstance(event, PriceUpdate) and event.symbol:
                self._symbols[event.mint] = event.symbol
            elif isinstance(event, ControlReply) and event.action == "ping":
                replies.append(PONG)
        return events, replies

    def _read_frame(self, doc: Any) -> tuple[list[Event], list[str]]:
        doc = w.obj(doc, "frame")
        kind = doc.get("type")
        if kind == "message":
            room = w.text(doc.get("room"), "room", max_len=200)
            if room.startswith("wallet:"):
                return [self._read_balance(room, doc.get("data"))], []
            if room.startswith("transaction:"):
                return self._read_transactions(room, doc.get("data"))
            if price_rooms.is_price_room(room):
                return [MarketPrice(price_rooms.read_price_message(doc, time.time()))], []
            raise w.reject(w.UNKNOWN_EVENT, "message from a room that is not handled")
        if kind == "ping" or kind == "pong":
            # the application heartbeat: a ping is answered with PONG (VENUES.md)
            return [ControlReply(kind, True)], []
        if kind == "joined" or kind == "left":
            room = w.text(doc.get("room"), "room", max_len=200)
            return [ControlReply("join" if kind == "joined" else "leave", True, room)], []
        if type(kind) is not str:
            raise w.reject(w.SCHEMA, "type: expected a string")
        raise w.reject(w.UNKNOWN_EVENT, f"type {kind[:40]!r} is not handled")

    def _read_balance(self, room: str, data: object) -> Event:
        """A wallet balance room message, verbatim::

        {
          "type": "message",
          "data": {
            "wallet": "FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1",
            "token": "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB",
            "amount": 78816.844996
          },
          "room": "wallet:FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1:balance"
        }
        """
        parts = room.split(":")
        if not (
            (len(parts) == 3 or len(parts) == 4) and parts[-1] == "balance" and parts[0] == "wallet"
        ):
            raise w.reject(w.SCHEMA, "room: not a wallet balance room")
        room_wallet = w.solana_address(parts[1], "room wallet")
        data = w.obj(data, "data")
        wallet = w.solana_address(data.get("wallet"), "data.wallet")
        mint = w.solana_address(data.get("token"), "data.token")
        total = w.amount(data.get("amount"), "data.amount")
        if wallet != room_wallet:
            raise w.reject(w.SCHEMA, "data.wallet: differs from the room's wallet")
        if len(parts) == 4 and parts[2] != mint:
            raise w.reject(w.SCHEMA, "data.token: differs from the room's token")
        if wallet not in self._wallets:
            raise w.reject(w.UNKNOWN_WALLET, f"wallet {wallet} is not tracked by this account")
        balance = AssetBalance(wallet, mint, total, total, Decimal(0), self.symbol_of(mint), {})
        return BalanceUpdate((balance,))

    def _read_transactions(self, room: str, data: object) -> tuple[list[Event], list[str]]:
        """A token transactions room message (a list of swaps), verbatim::

        {
          "type": "message",
          "data": [
            {
              "tx": "5V4apVkgHf49J5acYPiuh5rB89EGsF8ocSysgnD9vFfZsTtDamhN3MFDKJSq7Dn7Z6Y5XhjghuVYuvvYWnSFpnvW",
              "amount": 90,
              "priceUsd": 6.002467911111111,
              "solVolume": 2.9566243262290475,
              "volume": 540.222112,
              "type": "sell",
              "wallet": "F7R61te4Ac8xZ4pfkJUdF6iaaHy9tnM8nVRUPv8H8EMi",
              "time": 1760201288835,
              "program": "okx",
              "token": {
                "from": {
                  "name": "OFFICIAL TRUMP",
                  "symbol": "TRUMP",
                  "image": "https://image.solanatracker.io/proxy?url=https%3A%2F%2Farweave.net%2FVQrPjACwnQRmxdKBTqNwPiyo65x7LAT773t8Kd7YBzw",
                  "decimals": 6,
                  "amount": 90,
                  "address": "6p6xgHyF7AeE6TZkSmFsko444wqoP15icUSqi2jfGiPN",
                  "price": {
                    "usd": 6.002467911111111
                  }
                },
                "to": {
                  "name": "USD Coin",
                  "symbol": "USDC",
                  "image": "https://image.solanatracker.io/proxy?url=https%3A%2F%2Fraw.githubusercontent.com%2Fsolana-labs%2Ftoken-list%2Fmain%2Fassets%2Fmainnet%2FEPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v%2Flogo.png",
                  "decimals": 6,
                  "amount": 540.222112,
                  "address": "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
                  "price": {
                    "usd": 1
                  }
                }
              }
            }
          ],
          "room": "transaction:6p6xgHyF7AeE6TZkSmFsko444wqoP15icUSqi2jfGiPN"
        }
        """  # noqa: E501
        mint = w.solana_address(room.removeprefix("transaction:"), "room token")
        fresh: list[str] = []
        fresh_set: set[str] = set()
        swap_events: list[Event] = []
        # the newest swap (by time, then by position) decides the price and the metadata
        priced: tuple[int, int, Decimal] | None = None
        described: tuple[int, int, _Meta] | None = None
        for position, item in enumerate(w.arr(data, "data")):
            swap = w.obj(item, "data item")
            sides = _read_sides(swap.get("token"))
            record = _swap_data(swap, mint, sides)  # validates every swap, tracked or not
            tx: str = record["tx"]
            if tx in self._seen_tx or tx in fresh_set:
                continue
            fresh.append(tx)
            fresh_set.add(tx)
            moment = (-1 if record["time"] is None else record["time"], position)
            price = record["priceUsd"]
            if price is not None and (priced is None or moment > priced[:2]):
                priced = (*moment, Decimal(price))
            meta = next((side for side in sides.values() if side.address == mint), None)
            if meta is not None and (described is None or moment > described[:2]):
                described = (*moment, meta)
            if record["wallet"] in self._wallets:
                swap_events.append(VenueEvent("swap", record))
        events: list[Event] = []
        if priced is not None or described is not None:
            meta = described[2] if described is not None else None
            events.append(
                PriceUpdate(
                    mint,
                    priced[2] if priced is not None else None,
                    KNOWN_MINTS.get(mint) or (meta.symbol if meta else None),
                    meta.name if meta else None,
                    meta.decimals if meta else None,
                )
            )
        events.extend(swap_events)
        return events, fresh

    # -- REST --------------------------------------------------------------------------

    def seed_requests(self) -> list[HttpRequest]:
        """``GET /wallet/<owner>/basic`` for every tracked wallet; none without a
        ``data_api_key`` (the stream alone then tells the balances as they change)."""
        if self.account.data_api_key is None:
            return []
        base = (self.account.rest_url or DEFAULT_REST_URL).rstrip("/")
        headers = {"x-api-key": self.account.secret("data_api_key")}
        requests = []
        for wallet in self.account.wallets:
            url = f"{base}/wallet/{wallet}/basic"
            requests.append(HttpRequest("GET", url, urls.redact_url(url), headers, wallet=wallet))
        return requests

    def read_seed(self, request: HttpRequest, body: bytes) -> list[Event]:
        """``{"tokens": [{"address": <mint>, "balance": 1.5, "value": 1.5,
        "price": {"usd": 1, "quote": 0.005}, ...}], "total": ..., "totalSol": ...}``: the
        complete holdings of the request's ``wallet`` (optional when the account tracks
        one wallet), plus a price for each token that has one."""
        wallet = request.wallet
        if wallet is None:
            if len(self.account.wallets) != 1:
                raise ValueError("wallet is required when the account tracks several wallets")
            wallet = self.account.wallets[0]
        if wallet not in self._wallets:
            raise ValueError("wallet is not tracked by this account")
        owner = wallet
        return w.decode(body, lambda doc: self._read_rest(doc, owner))

    def _read_rest(self, doc: Any, wallet: str) -> list[Event]:
        tokens = w.arr(w.obj(doc, "body").get("tokens"), "tokens")
        balances: list[AssetBalance] = []
        prices: list[Event] = []
        for item in tokens:
            token = w.obj(item, "tokens item")
            mint = w.solana_address(token.get("address"), "address")
            total = w.amount(token.get("balance"), "balance")
            info = token.get("token")
            info = info if type(info) is dict else token
            symbol = w.opt_text(info.get("symbol"), "symbol")
            name = w.opt_text(info.get("name"), "name")
            decimals = info.get("decimals")
            decimals = None if decimals is None else w.integer(decimals, "decimals", hi=255)
            symbol = KNOWN_MINTS.get(mint) or symbol or self.symbol_of(mint)
            balances.append(AssetBalance(wallet, mint, total, total, Decimal(0), symbol, {}))
            price = token.get("price")
            if type(price) is dict:
                price = price.get("usd")
            if price is not None:
                prices.append(
                    PriceUpdate(mint, w.amount(price, "price.usd"), symbol, name, decimals)
                )
        w.unique_assets((b.asset for b in balances), len(balances), "tokens")
        return [BalanceSnapshot(wallet, tuple(balances)), *prices]


class _Meta:
    """Token metadata from one side of a swap."""

    __slots__ = ("address", "amount", "decimals", "name", "symbol")

    def __init__(
        self,
        address: str,
        symbol: str | None,
        name: str | None,
        decimals: int | None,
        amount: Decimal | None,
    ) -> None:
        self.address = address
        self.symbol = symbol
        self.name = name
        self.decimals = decimals
        self.amount = amount


def _read_sides(token: object) -> dict[str, _Meta]:
    if token is None:
        return {}
    token = w.obj(token, "token")
    sides: dict[str, _Meta] = {}
    for side in ("from", "to"):
        info = token.get(side)
        if info is None:
            continue
        info = w.obj(info, f"token.{side}")
        decimals = info.get("decimals")
        quantity = info.get("amount")
        sides[side] = _Meta(
            w.solana_address(info.get("address"), f"token.{side}.address"),
            w.opt_text(info.get("symbol"), f"token.{side}.symbol"),
            w.opt_text(info.get("name"), f"token.{side}.name"),
            None if decimals is None else w.integer(decimals, f"token.{side}.decimals", hi=255),
            None if quantity is None else w.amount(quantity, f"token.{side}.amount"),
        )
    return sides


def _swap_data(swap: dict[str, Any], mint: str, sides: Mapping[str, _Meta]) -> dict[str, Any]:
    """The swap as re-broadcast (and validated): the venue's field names, decimals as strings."""
    tx = w.text(swap.get("tx"), "tx", max_len=_MAX_TX)
    if not tx:
        raise w.reject(w.SCHEMA, "tx: empty")
    moment = swap.get("time")
    data: dict[str, Any] = {
        "tx": tx,
        "mint": mint,
        "wallet": w.solana_address(swap.get("wallet"), "wallet"),
        "type": w.opt_text(swap.get("type"), "type", max_len=16),
        "program": w.opt_text(swap.get("program"), "program", max_len=64),
        "time": None if moment is None else w.integer(moment, "time"),
    }
    for key in _SWAP_NUMBERS:
        value = swap.get(key)
        data[key] = None if value is None else w.plain(w.amount(value, key))
    for name, side in sides.items():
        data[name] = {
            "address": side.address,
            "symbol": side.symbol,
            "name": side.name,
            "decimals": side.decimals,
            "amount": None if side.amount is None else w.plain(side.amount),
        }
    return data
