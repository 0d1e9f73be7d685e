"""Totals per symbol in one quote currency, with coverage and the unpriced list.

Each holding (one balance record) is valued on its own, with the price from the venue it
sits on (:meth:`~app.prices.graph.GraphView.value`); a symbol's value is the exact sum of
its holdings' values, or null with a reason when any holding of it has none (a partial sum
would be a wrong total that looks right). Zero balances are not holdings.

Coverage:

- ``by_count``: symbols with a value / symbols held;
- ``by_value``: value of the valued symbols / value of everything held, where the value of
  an unvalued holding is estimated from its stale price. When some holding has no price at
  all, nobody knows what it is worth, so ``by_value`` is null (never a flattering guess).

Shares are rounded DOWN to 4 decimal places, so ``1`` means complete, never "almost".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Final

from app.domain import EXACT, BalanceRecord
from app.prices.graph import CONTEXT, GraphView, Reason, Unvalued, Valuation, Valued

SHARE_PLACES: Final = Decimal("1E-4")
_REASON_ORDER: Final = (Reason.NO_PRICE, Reason.NO_PATH, Reason.STALE_PRICE)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Holding:
    """One non-zero balance to value: ``asset`` is the graph node (code or mint)."""

    account: str
    venue: str
    asset: str
    symbol: str
    amount: Decimal

    @classmethod
    def of(cls, record: BalanceRecord) -> Holding:
        return cls(
            record.account, record.venue, record.asset, record.symbol or record.asset,
            record.total,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class SymbolTotal:
    """One symbol: its exact amount, value (or null and why), and each holding's valuation."""

    symbol: str
    amount: Decimal
    value: Decimal | None
    reason: Reason | None
    valuations: tuple[tuple[Holding, Valuation], ...]


@dataclass(frozen=True, slots=True)
class Coverage:
    priced: int
    held: int
    by_count: Decimal | None
    by_value: Decimal | None


@dataclass(frozen=True, slots=True)
class Totals:
    """``value`` sums the valued symbols only; ``unpriced`` names the rest with a reason."""

    quote: str
    value: Decimal
    rows: tuple[SymbolTotal, ...]
    coverage: Coverage
    unpriced: tuple[tuple[str, Reason], ...] = field(default=())


def value_totals(view: GraphView, holdings: Iterable[Holding], quote: str) -> Totals:
    """Value every non-zero holding in ``quote`` and total them per symbol.

    ``quote`` is a graph node as given when the graph knows it (a Solana mint is
    case-sensitive), else a currency code, upper-cased (``usd`` is ``USD``).
    """
    if not view.knows(quote):
        quote = quote.upper()
    grouped: dict[str, list[tuple[Holding, Valuation]]] = {}
    for holding in holdings:
        if not holding.amount:
            continue
        valuation = view.value(holding.asset, holding.amount, quote, holding.venue)
        grouped.setdefault(holding.symbol, []).append((holding, valuation))
    rows: list[SymbolTotal] = []
    total = _ZERO
    estimate: Decimal | None = _ZERO
    for symbol in sorted(grouped):
        items = grouped[symbol]
        amount = _ZERO
        for holding, _ in items:
            amount = EXACT.add(amount, holding.amount)  # a balance sum: exact, never rounded
        reasons = {v.reason for _, v in items if isinstance(v, Unvalued)}
        if reasons:
            reason = next(r for r in _REASON_ORDER if r in reasons)
            rows.append(SymbolTotal(symbol, amount, None, reason, tuple(items)))
            estimate = _estimate(items, estimate)
            continue
        value = _ZERO
        for _, valuation in items:
            assert isinstance(valuation, Valued)
            value = CONTEXT.add(value, valuation.value)
        total = CONTEXT.add(total, value)
        rows.append(SymbolTotal(symbol, amount, value, None, tuple(items)))
    priced = sum(1 for r in rows if r.value is not None)
    by_value: Decimal | None = None
    if estimate is not None:
        whole = CONTEXT.add(total, estimate)
        by_value = _share(total, whole) if whole else (_share(1, 1) if priced else None)
    coverage = Coverage(priced, len(rows), _share(priced, len(rows)) if rows else None, by_value)
    unpriced = tuple((r.symbol, r.reason) for r in rows if r.reason is not None)
    return Totals(quote, total, tuple(rows), coverage, unpriced)


def _estimate(
    items: Iterable[tuple[Holding, Valuation]], running: Decimal | None
) -> Decimal | None:
    """Add what the symbol's holdings are worth at their last (possibly stale) price."""
    if running is None:
        return None
    for holding, valuation in items:
        if isinstance(valuation, Valued):
            running = CONTEXT.add(running, valuation.value)
        elif valuation.conversion is not None:
            running = CONTEXT.add(running, valuation.conversion.apply(holding.amount))
        else:
            return None
    return running


def _share(part: Decimal | int, whole: Decimal | int) -> Decimal:
    ratio = CONTEXT.divide(Decimal(part), Decimal(whole))
    return ratio.quantize(SHARE_PLACES, rounding=ROUND_DOWN)
