"""DeltaDeFi market price stream: the pure parser and the per-symbol socket URL.

One socket per symbol (``ADAUSDM``) at the account ``ws_url`` with its trailing
``/accounts/stream`` replaced by ``/market/market-price/<symbol>`` (SPEC §3), or the
account's ``price_url`` with the symbol appended; ``?api_key=`` carries one account's key,
so only :func:`market_price_request`'s ``log_url`` may ever be logged. Frames carry the
last trade price as a JSON number and no timestamp (docs *market-price-streams*); the
symbol is known from the socket. Pricing USDM at 1 USD is a peg, never a market fact.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from app.accounts import AccountConfig
from app.prices import wire as pw
from app.prices.model import Price, PriceSource
from app.venues import _wire as w
from app.venues import urls
from app.venues.base import HttpRequest
from app.venues.deltadefi import DEFAULT_WS_URL

ACCOUNT_PATH: Final = "/accounts/stream"
MARKET_PATH: Final = "/market/market-price"


def split_symbol(symbol: str) -> tuple[str, str]:
    """``ADAUSDM`` -> (``ADA``, ``USDM``)."""
    return pw.split_concatenated(symbol, "symbol")


def market_price_request(account: AccountConfig, symbol: str) -> HttpRequest:
    """The upgrade request for ``symbol``'s market price, with the account's key."""
    split_symbol(symbol)  # refuse a symbol that could not be read back
    key = account.secret("api_key")
    if account.price_url:
        base = urls.with_path_segment(account.price_url, urls.quote_segment(symbol.upper()))
    else:
        parts = urlsplit(account.ws_url or DEFAULT_WS_URL)
        path = parts.path.rstrip("/")
        if path.endswith(ACCOUNT_PATH):
            path = path[: -len(ACCOUNT_PATH)]
        path = f"{path}{MARKET_PATH}/{urls.quote_segment(symbol.upper())}"
        base = urlunsplit(parts._replace(path=path, query="", fragment=""))
    url = urls.with_query_param(base, "api_key", urls.quote_segment(key))
    log_url = urls.with_query_param(urls.redact_url(base), "api_key", urls.REDACTED)
    return HttpRequest("GET", url, log_url)


def parse_market_price(raw: str | bytes, symbol: str, received: float) -> Price:
    """Read one market price frame of ``symbol``'s socket, exactly. Verbatim sample::

        {"type": "Market", "sub_type": "market_price", "price": 0.75}

    ``type`` and ``sub_type`` are compared case-insensitively, as the official SDKs do.
    Raises :class:`~app.venues.base.ProtocolError` (the whole frame is rejected).
    """
    base, quote = split_symbol(symbol)
    return w.decode(raw, lambda doc: _read(doc, symbol.upper(), base, quote, received))


def _read(doc: Any, symbol: str, base: str, quote: str, received: float) -> Price:
    doc = w.obj(doc, "frame")
    kind, sub = doc.get("type"), doc.get("sub_type")
    if type(kind) is not str or type(sub) is not str:
        raise w.reject(w.SCHEMA, "type, sub_type: expected strings")
    if kind.lower() != "market" or sub.lower() != "market_price":
        raise w.reject(w.UNKNOWN_EVENT, f"event {kind[:20]!r}/{sub[:20]!r} is not a price")
    value = pw.price(doc.get("price"), "price")
    return Price(PriceSource.DELTADEFI, symbol, base, quote, value, received)
