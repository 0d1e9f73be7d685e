"""sFOX ticker feeds (``ticker.sfox.<pair>``): the pure parser and the subscribe message.

Tickers ride the account's own authenticated socket (one socket per account) and share the
connection's ``sequence`` counter with the balance feed, so the account session checks the
envelope's sequence and hands the envelope here. Pairs are USD-quoted (``btcusd``); a few
are inverted (``usdxrp``: the price of one USD in XRP). The docs' example sends numbers
(``"last": 41420.58``) and an ISO-string payload ``timestamp``; decimal strings and epoch
numbers are accepted too, all read exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import orjson

from app.prices import wire as pw
from app.prices.model import Price, PriceSource
from app.venues import _wire as w

FEED_PREFIX: Final = "ticker.sfox."


def feed_name(pair: str) -> str:
    """``btcusd`` -> ``ticker.sfox.btcusd``."""
    return FEED_PREFIX + pair.lower()


def is_ticker_feed(recipient: object) -> bool:
    return type(recipient) is str and recipient.startswith(FEED_PREFIX)


def subscribe_message(pairs: Iterable[str]) -> str:
    """``{"type":"subscribe","feeds":["ticker.sfox.btcusd", ...]}`` (sorted, deduplicated)."""
    feeds = sorted({feed_name(p) for p in pairs})
    return orjson.dumps({"type": "subscribe", "feeds": feeds}).decode()


def unsubscribe_message(pairs: Iterable[str]) -> str:
    feeds = sorted({feed_name(p) for p in pairs})
    return orjson.dumps({"type": "unsubscribe", "feeds": feeds}).decode()


def pair_for(asset: str, quote: str = "usd") -> str:
    """The sFOX pair name that prices ``asset`` in ``quote``: ``BTC`` -> ``btcusd``."""
    return f"{asset.lower()}{quote.lower()}"


def parse_ticker(raw: str | bytes, received: float) -> Price:
    """Read one ticker envelope, exactly. Verbatim sample (docs *market-data/ticker*)::

        {
          "sequence": 2,
          "recipient": "ticker.sfox.btcusd",
          "timestamp": 1643039225796615328,
          "payload": {
            "amount": 0.0196,
            "exchange": "coinbase",
            "high": 42000,
            "last": 41420.58,
            "low": 40000,
            "open": 41500,
            "pair": "btcusd",
            "route": "Smart",
            "source": "ticker-info",
            "timestamp": "2022-01-24T15:47:05.776Z",
            "volume": 12345.67,
            "vwap": 41300.12
          }
        }

    The envelope's ``sequence`` is not checked here (the account session owns the
    counter). Raises :class:`~app.venues.base.ProtocolError` (the whole frame is rejected).
    """
    return w.decode(raw, lambda doc: read_ticker(doc, received))


def read_ticker(doc: Any, received: float) -> Price:
    """The same as :func:`parse_ticker` for an envelope already decoded (exactly)."""
    doc = w.obj(doc, "frame")
    recipient = doc.get("recipient")
    if not is_ticker_feed(recipient):
        raise w.reject(w.UNKNOWN_EVENT, "recipient is not a ticker feed")
    feed_pair = w.text(recipient, "recipient")[len(FEED_PREFIX) :]
    payload = w.obj(doc.get("payload"), "payload")
    pair = payload.get("pair", feed_pair)
    if type(pair) is not str or pair.lower() != feed_pair.lower():
        raise w.reject(w.SCHEMA, "payload.pair: does not match the feed")
    base, quote = pw.split_concatenated(pair, "payload.pair")
    last = pw.price(payload.get("last"), "payload.last")
    venue_ts = _timestamp(payload.get("timestamp"), doc.get("timestamp"))
    return Price(PriceSource.SFOX, pair.lower(), base, quote, last, received, venue_ts)


def _timestamp(inner: object, outer: object) -> str | None:
    """The payload's time (ISO string or epoch number), else the envelope's epoch."""
    if type(inner) is str:
        if inner.isdigit():
            return w.iso_from_epoch(int(inner), "payload.timestamp")
        return w.iso_ms(inner, "payload.timestamp")
    if type(inner) is int:
        return w.iso_from_epoch(inner, "payload.timestamp")
    if inner is not None:
        raise w.reject(w.SCHEMA, "payload.timestamp: expected a time")
    if outer is None:
        return None
    return w.iso_from_epoch(outer, "timestamp")
