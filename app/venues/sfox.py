"""sFOX WebSocket: authenticate message, then subscribe to ``private.user.balances``.

The opening message authenticates; the subscribe message goes out only after the venue
confirms it. Balance frames hold either the trading account's currencies (a list) or one
web3 wallet (an object), which is a separate wallet scope and never touches the account.
Every message carries a per-connection ``sequence``; a jump or a step back means frames
were lost or reordered, which is reported so the connection can resync.

Prices ride the same socket: once balances are subscribed, :meth:`SfoxSession.follow_holdings`
subscribes ``ticker.sfox.<asset>usd`` for every held currency (and unsubscribes what is no
longer held). Ticker envelopes go through the same sequence check as balance frames (the
counter is shared) and come out as :class:`~app.domain.MarketPrice` events; a refused
ticker subscription is reported, never a reason to drop the balance feed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import orjson

from app.accounts import AccountConfig
from app.domain import (
    EXCHANGE_WALLET,
    AssetBalance,
    BalanceSnapshot,
    BalanceUpdate,
    ControlReply,
    Event,
    ExtraValue,
    MarketPrice,
    SequenceGap,
    Venue,
    adds_up,
)
from app.prices import sfox as tickers
from app.venues import _wire as w
from app.venues import urls
from app.venues.base import AuthRejected, HttpRequest, ProtocolError, VenueSession

DEFAULT_WS_URL: Final = "wss://ws.sfox.com/ws"
DEFAULT_REST_URL: Final = "https://api.sfox.com"
REST_BALANCE_PATH: Final = "/v1/user/balance"
BALANCES_FEED: Final = "private.user.balances"
SUBSCRIBE_MESSAGE: Final = orjson.dumps({"type": "subscribe", "feeds": [BALANCES_FEED]}).decode()

# Per-wallet figures sFOX adds to each currency; kept as extra facts, never as balances.
_EXTRA_FIELDS: Final = ("trading_wallet", "collateral_wallet", "borrow_wallet", "lending_wallet")


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one frame means, decided before any session state changes."""

    events: list[Event]
    replies: list[str]
    last_sequence: int | None
    authenticated: bool
    subscribed: bool


class SfoxSession(VenueSession):
    """One sFOX connection: authenticate, subscribe, then balance frames."""

    venue = Venue.SFOX

    def __init__(self, account: AccountConfig) -> None:
        super().__init__(account)
        self._last_sequence: int | None = None
        self._envelope_sequence: int | None = None
        self._authenticated = False
        self._subscribed = False
        self._ticker_pairs: frozenset[str] = frozenset()

    def _api_key(self) -> str:
        return self.account.secret("api_key")

    # -- connection --------------------------------------------------------------------

    def connect_request(self) -> HttpRequest:
        url = self.account.ws_url or DEFAULT_WS_URL
        return HttpRequest("GET", url, urls.redact_url(url))

    def opening_messages(self) -> list[str]:
        """``{"type":"authenticate","apiKey":"<API_KEY>"}`` (the key is in the message)."""
        return [orjson.dumps({"type": "authenticate", "apiKey": self._api_key()}).decode()]

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    @property
    def last_sequence(self) -> int | None:
        return self._last_sequence

    def follow_holdings(self, held: Iterable[str]) -> list[str]:
        """Subscribe the ticker of every held currency (``BTC`` -> ``ticker.sfox.btcusd``)
        and unsubscribe those no longer held; nothing before balances are subscribed."""
        if not self._subscribed:
            return []
        wanted = frozenset(
            tickers.pair_for(code) for code in held if code.upper() != "USD" and code.isalnum()
        )
        added, removed = wanted - self._ticker_pairs, self._ticker_pairs - wanted
        self._ticker_pairs = wanted
        messages: list[str] = []
        if added:
            messages.append(tickers.subscribe_message(added))
        if removed:
            messages.append(tickers.unsubscribe_message(removed))
        return messages

    # -- frames ------------------------------------------------------------------------

    def on_frame(self, raw: str | bytes) -> tuple[list[Event], list[str]]:
        """Read one message: a control reply or a balance frame.

        Balance events come before a :class:`SequenceGap` in the returned list, so a
        caller that resyncs on the gap has applied the (newer) balances first. A stale
        frame (sequence not above the last one) yields only the gap. A rejected frame
        changes nothing but the sequence counter, and that only when it came in order.
        """
        self._envelope_sequence = None
        try:
            outcome = w.decode(raw, self._read_frame)
        except ProtocolError:
            # A refused frame that arrived in order still used up its sequence number:
            # without this the next good frame would look like a gap and force a resync,
            # while the connection is meant to carry on past a bad frame. Nothing of the
            # frame is applied, and a frame out of order leaves the counter alone.
            seq, last = self._envelope_sequence, self._last_sequence
            if seq is not None and (last is None or seq == last + 1):
                self._last_sequence = seq
            raise
        self._last_sequence = outcome.last_sequence
        self._authenticated = outcome.authenticated
        self._subscribed = outcome.subscribed
        return outcome.events, outcome.replies

    def _read_frame(self, doc: Any) -> _Outcome:
        doc = w.obj(doc, "frame")
        sequence = doc.get("sequence")
        last = self._last_sequence
        gap: SequenceGap | None = None
        if sequence is not None:
            sequence = self._envelope_sequence = w.integer(sequence, "sequence")
            if last is not None and sequence != last + 1:
                gap = SequenceGap(last + 1, sequence)
                if sequence <= last:  # older than what is applied: ignore its content
                    return _Outcome([gap], [], last, self._authenticated, self._subscribed)
            last = sequence
        stamp = doc.get("timestamp")
        venue_ts = None if stamp is None else w.iso_from_epoch(stamp, "timestamp")
        events: list[Event] = []
        replies: list[str] = []
        authenticated, subscribed = self._authenticated, self._subscribed
        kind = doc.get("type")
        recipient = doc.get("recipient")
        if kind == "success" or kind == "error":
            reply = self._read_control(doc, kind == "success")
            events.append(reply)
            if reply.ok and reply.action == "authenticate" and not authenticated:
                authenticated = True
                replies.append(SUBSCRIBE_MESSAGE)
            elif reply.ok and reply.action == "subscribe":
                subscribed = True
        elif recipient == BALANCES_FEED:
            update = _read_balances(doc.get("payload"), venue_ts)
            if update.balances:
                events.append(update)
        elif tickers.is_ticker_feed(recipient):
            events.append(MarketPrice(tickers.read_ticker(doc, time.time())))
        elif recipient is not None:
            feed = w.text(recipient, "recipient")
            raise w.reject(w.UNKNOWN_EVENT, f"feed {feed[:40]!r} is not handled")
        else:
            label = kind[:40] if type(kind) is str else type(kind).__name__
            raise w.reject(w.UNKNOWN_EVENT, f"message type {label!r} is not handled")
        if gap is not None:
            events.append(gap)
        return _Outcome(events, replies, last, authenticated, subscribed)

    def _read_control(self, doc: dict[str, Any], ok: bool) -> ControlReply:
        """A ``success`` or ``error`` reply. The authenticate reply, verbatim::

            {
              "type": "success",
              "sequence": 1,
              "timestamp": 1727391983733911769,
              "payload": {
                "action": "authenticate"
              },
              "action": "authenticate"
            }

        An ``error`` reply has the same shape; refusing authenticate or subscribe raises.
        """
        payload = doc.get("payload")
        payload = payload if type(payload) is dict else {}
        action = w.first_present(doc, "action")
        if action is None:
            action = payload.get("action")
        action = "" if action is None else w.text(action, "action", max_len=64)
        if ok:
            return ControlReply(action, True, "")
        reason = w.first_present(payload, "error", "message", "reason")
        if reason is None:
            reason = w.first_present(doc, "error", "message", "reason")
        detail = urls.scrub(reason if type(reason) is str else "", [self._api_key()])
        if not action:  # an error naming no action refuses whatever we are waiting for
            action = "authenticate" if not self._authenticated else "subscribe"
        if self._subscribed and action in ("subscribe", "unsubscribe") and _only_tickers(payload):
            # a refused price feed costs the prices, never the balance feed
            return ControlReply(action, False, detail or "ticker subscription refused")
        if action == "authenticate":
            raise AuthRejected(
                f"authenticate refused: {detail}" if detail else "authenticate refused"
            )
        if action == "subscribe":
            raise w.reject(
                w.SUBSCRIBE, f"subscribe refused: {detail}" if detail else "subscribe refused"
            )
        return ControlReply(action, False, detail)

    # -- REST --------------------------------------------------------------------------

    def seed_requests(self) -> list[HttpRequest]:
        """``GET /v1/user/balance``: every connection is seeded (the stream has no snapshot)."""
        base = (self.account.rest_url or DEFAULT_REST_URL).rstrip("/")
        url = base + REST_BALANCE_PATH
        headers = {"Authorization": f"Bearer {self._api_key()}"}
        return [HttpRequest("GET", url, urls.redact_url(url), headers)]

    def read_seed(self, request: HttpRequest, body: bytes) -> list[Event]:
        """``[{"currency": "btc", "balance": 0.5, "available": 0.5, "held": 0, ...}]``:
        the trading account (wallet ``""``); web3 wallets are not part of it."""
        return [w.decode(body, _read_rest)]


def _only_tickers(payload: dict[str, Any]) -> bool:
    feeds = payload.get("feeds")
    return (
        type(feeds) is list and bool(feeds) and all(tickers.is_ticker_feed(feed) for feed in feeds)
    )


def _read_balances(payload: object, venue_ts: str | None) -> BalanceUpdate:
    """A ``private.user.balances`` payload: the trading account (a list), verbatim::

        {
          "sequence": 10,
          "recipient": "private.user.balances",
          "timestamp": 1649899310281716289,
          "payload": [
            {
              "currency": "btc",
              "balance": "0.17572419",
              "available": "0.17572419",
              "held": "0",
              "trading_wallet": "0.17572419",
              "collateral_wallet": "0",
              "borrow_wallet": "0",
              "lending_wallet": "0"
            },
            {
              "currency": "usd",
              "balance": "100",
              "available": "100",
              "held": "0",
              "trading_wallet": "100",
              "collateral_wallet": "0",
              "borrow_wallet": "0",
              "lending_wallet": "0"
            }
          ]
        }

    or one web3 wallet (an object), verbatim::

        {
          "sequence": 11,
          "recipient": "private.user.balances",
          "timestamp": 1649899310281716289,
          "payload": {
            "address": "0x0bCdB57ae247F434C91b1d4521fFd6601f7e8999",
            "balance": "250.5",
            "currency": "USDC",
            "network": "Ethereum",
            "type": "web3"
          }
        }
    """
    if type(payload) is list:
        balances = tuple(_read_account_items(payload))
    elif type(payload) is dict:
        if payload.get("type") != "web3":
            raise w.reject(w.SCHEMA, "payload: an object payload must be a web3 wallet")
        balances = (_read_web3(payload),)
    else:
        raise w.reject(w.SCHEMA, "payload: expected a list or an object")
    return BalanceUpdate(balances, venue_ts)


def _read_account_items(items: list[Any]) -> Iterator[AssetBalance]:
    seen: set[str] = set()
    for item in items:
        balance = _read_account_item(item)
        if balance.asset in seen:
            raise w.reject(w.SCHEMA, "payload: lists an asset twice")
        seen.add(balance.asset)
        yield balance


def _read_account_item(item: object) -> AssetBalance:
    item = w.obj(item, "payload item")
    asset = w.ident(item.get("currency"), "currency").upper()
    total = w.amount(item.get("balance"), "balance")
    available = w.amount(item.get("available"), "available")
    held = w.amount(item.get("held"), "held")
    if available > total:
        raise w.reject(w.AMOUNT, "available: exceeds balance")
    extra: dict[str, ExtraValue] = {}
    for name in _EXTRA_FIELDS:
        value = item.get(name)
        if value is not None:
            extra[name] = w.plain(w.signed_decimal(value, name))
    locked = held
    if not adds_up(total, available, held):
        # total == available + locked must hold; keep the venue's two headline figures and
        # derive locked, recording what sFOX called held so nothing is lost
        locked = w.subtract(total, available)
        extra["held"] = w.plain(held)
    return AssetBalance(EXCHANGE_WALLET, asset, total, available, locked, asset, extra)


def _read_web3(payload: dict[str, Any]) -> AssetBalance:
    network = w.ident(payload.get("network"), "network")
    address = w.address(payload.get("address"), "address")
    asset = w.ident(payload.get("currency"), "currency").upper()
    total = w.amount(payload.get("balance"), "balance")
    wallet = f"web3:{network}:{address}"
    return AssetBalance(wallet, asset, total, total, Decimal(0), asset, {})


def _read_rest(doc: Any) -> Event:
    if type(doc) is dict and type(doc.get("data")) is list:
        doc = doc["data"]
    items = w.arr(doc, "body")
    return BalanceSnapshot(EXCHANGE_WALLET, tuple(_read_account_items(items)))
