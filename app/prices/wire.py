"""Field readers the price parsers share, on top of :mod:`app.venues._wire`.

A price must be a finite, strictly positive exact decimal: a zero price would make every
inverse conversion divide by zero, and "free" is not something a market reports. Rejections
raise :class:`~app.venues.base.ProtocolError` with the venue readers' fixed reasons.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final

from app.venues import _wire as w

_PAIR_PART = re.compile(r"[A-Za-z0-9]{1,20}")

# Quote currencies a concatenated pair name (``btcusd``, ``ADAUSDM``) can end with,
# longest first so ``usdt`` wins over ``usd``.
CONCAT_QUOTES: Final = ("USDM", "USDT", "USDC", "USD", "TWD", "EUR", "BTC", "ETH", "ADA")


def price(value: object, field: str) -> Decimal:
    """A strictly positive exact price from a decimal string or a JSON number."""
    result = w.amount(value, field)
    if not result:
        raise w.reject(w.AMOUNT, f"{field}: zero is not a price")
    return result


def currency(value: str, field: str) -> str:
    """One side of a pair, upper-cased: ASCII letters and digits only."""
    if _PAIR_PART.fullmatch(value) is None:
        raise w.reject(w.SCHEMA, f"{field}: not a currency code")
    return value.upper()


def split_underscore(pair: object, field: str) -> tuple[str, str, str]:
    """``BTC_TWD`` -> (``BTC_TWD``, ``BTC``, ``TWD``); the case is normalised to upper."""
    if type(pair) is not str:
        raise w.reject(w.SCHEMA, f"{field}: expected a string")
    base, sep, quote = pair.partition("_")
    if not sep:
        raise w.reject(w.SCHEMA, f"{field}: expected BASE_QUOTE")
    base, quote = currency(base, field), currency(quote, field)
    return f"{base}_{quote}", base, quote


def split_concatenated(pair: str, field: str) -> tuple[str, str]:
    """``btcusd`` -> (``BTC``, ``USD``); ``usdxrp`` (an inverted pair) -> (``USD``, ``XRP``).

    The quote is recognised by its suffix (:data:`CONCAT_QUOTES`); a pair that only starts
    with ``usd`` is inverted (the price of one USD in the other currency).
    """
    upper = currency(pair, field)
    for quote in CONCAT_QUOTES:
        if upper.endswith(quote) and len(upper) > len(quote):
            return upper[: -len(quote)], quote
    if upper.startswith("USD") and len(upper) > 3:
        return "USD", upper[3:]
    raise w.reject(w.SCHEMA, f"{field}: quote currency not recognised")
