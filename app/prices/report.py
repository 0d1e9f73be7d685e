"""Valuation as the API shows it: JSON-ready docs for totals, balances and prices.

Pure functions over a :class:`~app.prices.graph.GraphView` (one instant) and balance
records; :mod:`app.valuation` puts them together for the live routes (:mod:`app.api`).
Every amount, value and price is an exact decimal string; a value the graph cannot give
is ``null`` with its reason, never ``0``.
Ages are seconds (not money), rounded to milliseconds for display.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from app.domain import EXACT, BalanceRecord
from app.prices.graph import (
    USD,
    Conversion,
    GraphView,
    QuoteView,
    Unvalued,
    Valuation,
    Valued,
)
from app.prices.totals import Holding, SymbolTotal, value_totals
from app.store import decimal_str

_ZERO = Decimal(0)


def _age(age_s: float | None) -> float | None:
    return None if age_s is None else round(age_s, 3)


def _price_fields(conversion: Conversion | None) -> dict[str, Any]:
    if conversion is None:
        return {"price": None, "price_source": None, "path": None, "price_age_s": None}
    return {
        "price": decimal_str(conversion.unit_price),
        "price_source": conversion.source,
        "path": conversion.path,
        "price_age_s": _age(conversion.age_s),
    }


def valuation_fields(valuation: Valuation) -> dict[str, Any]:
    """``value``, ``price``, ``price_source``, ``path``, ``price_age_s``, ``value_reason``
    for one holding (a stale path is still shown, its value is null)."""
    if isinstance(valuation, Valued):
        return {
            "value": decimal_str(valuation.value),
            **_price_fields(valuation.conversion),
            "value_reason": None,
        }
    assert isinstance(valuation, Unvalued)
    return {
        "value": None,
        **_price_fields(valuation.conversion),
        "value_reason": valuation.reason.value,
    }


def balance_value(view: GraphView, record: BalanceRecord, quote: str) -> dict[str, Any]:
    """The valuation fields added to one balance record by ``?quote=``."""
    valuation = view.value(record.asset, record.total, quote, record.venue)
    return valuation_fields(valuation)


def _row_conversion(row: SymbolTotal) -> Conversion | None:
    """The conversion shown for a symbol: that of its largest holding."""
    best: tuple[Decimal, Conversion] | None = None
    for holding, valuation in row.valuations:
        conversion = valuation.conversion
        if conversion is not None and (best is None or holding.amount > best[0]):
            best = (holding.amount, conversion)
    return None if best is None else best[1]


def totals_doc(
    view: GraphView, records: Iterable[BalanceRecord], quote: str, seq: int
) -> dict[str, Any]:
    """``GET /v1/totals?quote=``: per symbol sums and values, coverage, unpriced, assumptions."""
    sums: dict[str, dict[str, Any]] = {}
    holdings: list[Holding] = []
    for record in records:
        symbol = record.symbol or record.asset
        row = sums.get(symbol)
        if row is None:
            row = sums[symbol] = {"t": _ZERO, "a": _ZERO, "l": _ZERO, "accounts": set()}
        row["t"] = EXACT.add(row["t"], record.total)
        row["a"] = EXACT.add(row["a"], record.available)
        row["l"] = EXACT.add(row["l"], record.locked)
        row["accounts"].add(record.account)
        holdings.append(Holding.of(record))
    totals = value_totals(view, holdings, quote)
    valued = {row.symbol: row for row in totals.rows}
    # ``usd`` keeps the meaning it had before ``quote``: the value in USD, whatever the quote
    in_usd = valued if totals.quote == USD else _usd_values(view, holdings)
    assumptions: set[str] = set()
    out: list[dict[str, Any]] = []
    for symbol in sorted(sums):
        row = sums[symbol]
        doc: dict[str, Any] = {
            "symbol": symbol,
            "total": decimal_str(row["t"]),
            "available": decimal_str(row["a"]),
            "locked": decimal_str(row["l"]),
            "accounts": len(row["accounts"]),
        }
        found = valued.get(symbol)
        if found is None:  # nothing held: worth nothing, nothing to price
            doc.update(usd="0", value="0", **_price_fields(None), reason=None)
        else:
            value = None if found.value is None else decimal_str(found.value)
            usd = in_usd[symbol].value
            conversion = _row_conversion(found)
            doc.update(usd=None if usd is None else decimal_str(usd), value=value)
            doc.update(_price_fields(conversion))
            doc["reason"] = None if found.reason is None else found.reason.value
            for _holding, valuation in found.valuations:
                if isinstance(valuation, Valued):
                    assumptions.update(valuation.conversion.assumptions)
        out.append(doc)
    coverage = totals.coverage
    return {
        "seq": seq,
        "quote": totals.quote,
        "value": decimal_str(totals.value),
        "coverage": {
            "by_count": None if coverage.by_count is None else decimal_str(coverage.by_count),
            "by_value": None if coverage.by_value is None else decimal_str(coverage.by_value),
            "priced": coverage.priced,
            "holdings": coverage.held,
        },
        "totals": out,
        "unpriced": [{"symbol": s, "reason": r.value} for s, r in totals.unpriced],
        "assumptions": sorted(assumptions),
    }


def _usd_values(view: GraphView, holdings: list[Holding]) -> dict[str, SymbolTotal]:
    """Each held symbol valued in USD at the same instant (for ``usd`` in another quote)."""
    return {row.symbol: row for row in value_totals(view, holdings, USD).rows}


def price_doc(quote: QuoteView) -> dict[str, Any]:
    """One known market price as ``GET /v1/prices`` lists it."""
    p = quote.price
    return {
        "source": p.source.value,
        "pair": p.pair,
        "base": p.base,
        "quote": p.quote,
        "price": decimal_str(p.price),
        "path": p.label,
        "age_s": _age(quote.age_s),
        "max_age_s": quote.max_age_s,
        "stale": quote.stale,
        "restored": quote.restored,
        "venue_ts": p.venue_ts,
        "pool_count": p.pool_count,
        "liquidity": None if p.liquidity is None else decimal_str(p.liquidity),
    }


def resolve_quote(view: GraphView, quote: str) -> str | None:
    """The graph node ``quote`` names (currency codes case-insensitively, a mint exactly),
    or None when no price, peg or static price reaches it."""
    if view.knows(quote):
        return quote
    upper = quote.upper()
    if upper == "USD" or view.knows(upper):
        return upper
    return None


def assumptions_doc(pegs: Mapping[str, str], identities: Mapping[str, str]) -> list[str]:
    """The configured pegs and identities, named as they appear in paths."""
    return [f"peg:{a}={t}" for a, t in sorted(pegs.items())] + [
        f"identity:{a}={t}" for a, t in sorted(identities.items())
    ]
