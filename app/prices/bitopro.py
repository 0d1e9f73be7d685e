"""BitoPro public tickers: the pure parser, the socket URL and the subscription URL.

Prices are public data, so ONE socket per distinct ticker URL serves every BitoPro
account (:mod:`app.prices.feed` owns that socket). The URL is the account's ``ws_url``
with its trailing ``/ws/v1/pub/auth/account-balance`` replaced by ``/ws/v1/pub/tickers``
(SPEC §3), or the account's ``price_url``; the pairs go in ``?pairs=BTC_TWD,USDT_TWD``.
Pairs are mostly TWD-quoted, so reaching USD takes a conversion edge such as ``USDT_TWD``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from app.accounts import AccountConfig
from app.prices import wire as pw
from app.prices.model import Price, PriceSource
from app.venues import _wire as w
from app.venues import urls
from app.venues.bitopro import DEFAULT_WS_URL

ACCOUNT_PATH: Final = "/ws/v1/pub/auth/account-balance"
TICKERS_PATH: Final = "/ws/v1/pub/tickers"
TICKER_EVENT: Final = "TICKER"


def ticker_url(account: AccountConfig) -> str:
    """The public ticker socket URL for a BitoPro account (without ``?pairs=``)."""
    if account.price_url:
        return account.price_url
    return _ticker_url_of(account.ws_url or DEFAULT_WS_URL)


@functools.lru_cache(maxsize=256)
def _ticker_url_of(base: str) -> str:
    """Asked every second for every owned account: parsed once per distinct URL."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    if path.endswith(ACCOUNT_PATH):
        path = path[: -len(ACCOUNT_PATH)]
    return urlunsplit(parts._replace(path=path + TICKERS_PATH, query="", fragment=""))


def subscribe_url(url: str, pairs: Iterable[str]) -> str:
    """``url`` with the wanted pairs, sorted and upper-cased: ``?pairs=BTC_TWD,USDT_TWD``."""
    wanted = ",".join(sorted({p.upper() for p in pairs}))
    return urls.with_query_param(url, "pairs", wanted)


def parse_ticker(raw: str | bytes, received: float) -> Price:
    """Read one public ticker frame, exactly. Verbatim sample (``ws/public/ticker_stream.md``)::

        {
          "event": "TICKER",
          "pair": "BTC_TWD",
          "lastPrice": "1314234",
          "isBuyer": true,
          "priceChange24hr": "0.92",
          "volume24hr": "126.45623456",
          "high24hr": "1331000",
          "low24hr": "1290000",
          "timestamp": 1638166524003,
          "datetime": "2021-11-29T06:15:24.003Z"
        }

    Raises :class:`~app.venues.base.ProtocolError` (the whole frame is rejected).
    """
    return w.decode(raw, lambda doc: _read(doc, received))


def _read(doc: Any, received: float) -> Price:
    doc = w.obj(doc, "frame")
    event = doc.get("event")
    if event != TICKER_EVENT:
        if type(event) is not str:
            raise w.reject(w.SCHEMA, "event: expected a string")
        raise w.reject(w.UNKNOWN_EVENT, f"event {event[:40]!r} is not a ticker")
    pair, base, quote = pw.split_underscore(doc.get("pair"), "pair")
    last = pw.price(doc.get("lastPrice"), "lastPrice")
    stamp = doc.get("timestamp")
    venue_ts = w.iso_from_epoch(stamp, "timestamp") if stamp is not None else None
    return Price(PriceSource.BITOPRO, pair, base, quote, last, received, venue_ts)
