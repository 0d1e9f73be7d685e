"""Portfolio value over time: past balances valued at past prices (``/v1/history/value``).

For each point ``t`` the state at ``t`` comes from :func:`app.history.queries.state_at`
and the prices from ``history_prices`` (the newest kept price of each pair and source at
or before ``t``, see :mod:`app.history.prices`). A :class:`~app.prices.graph.PriceGraph`
is built from exactly those prices with the live valuation's rules (per-source max ages,
pegs, stablecoin identities, static prices) and a clock fixed at ``t``, then
:func:`~app.prices.totals.value_totals` values the holdings: the same path choice, exact
arithmetic and coverage as ``/v1/totals``, and the same honesty — a price older than its
source's max age at ``t`` gives ``stale_price``, none at all ``no_price``, no route to the
quote ``no_path``. A point history cannot know (inside a gap, or before history starts)
has a null value and a ``reason`` (``gap``, ``not_covered``), never a guess.

Static prices and pegs are today's settings: they are assumptions, not market history,
and a value resting on one says so only through the live totals' ``assumptions`` list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.history import queries, schema
from app.history.times import iso_us
from app.prices.graph import PriceGraph
from app.prices.model import MARKET_SOURCES, Price, PriceSource
from app.prices.report import resolve_quote
from app.prices.totals import Holding, value_totals
from app.store import decimal_str

GAP_REASONS = {"history_gap": "gap", "not_covered": "not_covered"}
"""The point reason for each way history cannot know a state."""


@dataclass(frozen=True, slots=True)
class ValuationRules:
    """What a past graph is built with besides the prices: the live settings."""

    max_age: float = 120.0
    max_ages: Mapping[str, float] = field(default_factory=dict)
    pegs: Mapping[str, str] | None = None
    identities: Mapping[str, str] = field(default_factory=dict)
    static: Mapping[str, Decimal] = field(default_factory=dict)

    def graph_at(self, t_s: float, prices: Sequence[Price]) -> PriceGraph:
        """A graph holding ``prices`` whose clock reads ``t_s`` (ages measured from it)."""
        graph = PriceGraph(
            max_age=self.max_age,
            max_ages=self.max_ages,
            pegs=self.pegs,
            identities=self.identities,
            static=self.static,
            clock=lambda: t_s,
        )
        for price in prices:
            graph.put(price)
        return graph


async def prices_at(conn: AsyncConnection, time_us: int) -> list[Price]:
    """The newest recorded price of every (pair, source) at or before ``time_us``."""
    p = schema.prices
    newest = (
        select(p.c.pair, p.c.source, func.max(p.c.time_us).label("time_us"))
        .where(p.c.time_us <= time_us)
        .group_by(p.c.pair, p.c.source)
        .subquery()
    )
    result = await conn.execute(
        select(p.c.pair, p.c.source, p.c.price, p.c.time_us).join(
            newest,
            and_(
                p.c.pair == newest.c.pair,
                p.c.source == newest.c.source,
                p.c.time_us == newest.c.time_us,
            ),
        )
    )
    out: dict[tuple[str, str], Price] = {}
    for row in result:
        base, sep, quote = str(row.pair).rpartition("/")
        try:
            source = PriceSource(row.source)
        except ValueError:
            continue
        if not sep or source not in MARKET_SOURCES:
            continue
        out[(row.pair, row.source)] = Price(
            source, row.pair, base, quote, Decimal(row.price), int(row.time_us) / 1_000_000
        )
    return list(out.values())


def point_times(from_us: int, to_us: int, step_us: int) -> list[int]:
    """``from``, ``from + step``, … and a last point at ``to``."""
    times = list(range(from_us, to_us + 1, step_us))
    if times[-1] != to_us:
        times.append(to_us)
    return times


async def value_points(
    conn: AsyncConnection,
    rules: ValuationRules,
    *,
    quote: str,
    accounts: Sequence[str] | None,
    from_us: int,
    to_us: int,
    step_us: int,
) -> AsyncIterator[dict[str, Any]]:
    """One point per step: ``t``, ``value``, ``coverage``, ``unpriced``, ``reason``."""
    for t in point_times(from_us, to_us, step_us):
        try:
            state = await queries.state_at(conn, t, accounts)
        except queries.NotCovered as exc:
            yield {"t": iso_us(t), "value": None, "coverage": None, "unpriced": [],
                   "reason": GAP_REASONS.get(exc.code, exc.code)}  # fmt: skip
            continue
        view = rules.graph_at(t / 1_000_000, await prices_at(conn, t)).view()
        node = resolve_quote(view, quote) or quote.upper()
        holdings = [
            Holding(r["account"], r["venue"] or "", r["asset"], r["symbol"] or r["asset"],
                    Decimal(r["total"]))
            for r in state.records.values()
        ]  # fmt: skip
        totals = value_totals(view, holdings, node)
        cov = totals.coverage
        yield {
            "t": iso_us(t),
            "value": decimal_str(totals.value),
            "coverage": {
                "by_count": None if cov.by_count is None else decimal_str(cov.by_count),
                "by_value": None if cov.by_value is None else decimal_str(cov.by_value),
                "priced": cov.priced,
                "holdings": cov.held,
            },
            "unpriced": [{"symbol": s, "reason": r.value} for s, r in totals.unpriced],
            "reason": None,
        }


def csv_row(point: Mapping[str, Any]) -> dict[str, Any]:
    """A point flattened for :data:`app.history.export.VALUE_COLUMNS`."""
    cov = point["coverage"] or {}
    return {
        "t": point["t"],
        "value": point["value"],
        "by_count": cov.get("by_count"),
        "by_value": cov.get("by_value"),
        "priced": cov.get("priced"),
        "holdings": cov.get("holdings"),
        "unpriced": ";".join(f"{u['symbol']}:{u['reason']}" for u in point["unpriced"]),
        "reason": point["reason"],
    }
