"""Valuation metrics, computed at scrape time from the price graph and the balance mirror.

- ``balagg_price{base,quote,source}``: every known market price (the exposition format
  is float text; the exact value is in ``GET /v1/prices``);
- ``balagg_price_age_seconds{source}``: the age of the source's YOUNGEST price, i.e. how
  long since the source last delivered anything (a whole feed down, not one quiet pair);
- ``balagg_prices_stale{source}``: how many of the source's prices are stale now;
- ``balagg_value{account,quote}``: the account's valued holdings in USD (unvalued ones
  left out, see ``balagg_value_coverage``);
- ``balagg_value_coverage{quote}``: the share of everything held that has a value, by
  value (absent while some holding has no price at all: the share is unknowable);
- ``balagg_value_coverage_symbols{quote}``: the share of the held symbols that have a value
  (``coverage.by_count``), present whenever anything is held, so a holding with no price
  or no path shows (``< 1`` while ``balagg_value_coverage`` is absent).

Computed on scrape, so a price or an account that is gone leaves no stale series behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.domain import BalanceRecord
from app.prices.graph import CONTEXT, PriceGraph
from app.prices.totals import Holding, value_totals

QUOTE = "USD"


class ValuationCollector(Collector):
    """The valuation families above, from ``graph`` and the ``records`` of the mirror."""

    def __init__(self, graph: PriceGraph, records: Callable[[], Iterable[BalanceRecord]]) -> None:
        self._graph = graph
        self._records = records

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "balagg_price", "Latest market price (1 base = value quote)",
                labels=["base", "quote", "source"],
            ),
            GaugeMetricFamily(
                "balagg_price_age_seconds",
                "Age of the source's youngest price (time since it last delivered one)",
                labels=["source"],
            ),
            GaugeMetricFamily(
                "balagg_prices_stale", "Prices of the source that are stale now",
                labels=["source"],
            ),
            GaugeMetricFamily(
                "balagg_value", "Valued holdings of the account in the quote currency",
                labels=["account", "quote"],
            ),
            GaugeMetricFamily(
                "balagg_value_coverage",
                "Share of the held value that has a value (1 = everything valued)",
                labels=["quote"],
            ),
            GaugeMetricFamily(
                "balagg_value_coverage_symbols",
                "Share of the held symbols that have a value (1 = every symbol valued)",
                labels=["quote"],
            ),
        ]  # fmt: skip

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        price, age, stale, value, coverage, by_count = self._families()
        youngest: dict[str, float] = {}
        stale_count: dict[str, int] = {}
        for quote in self._graph.prices():
            p = quote.price
            source = p.source.value
            # the exposition format is float text; prometheus_client converts it there
            price.add_metric([p.base, p.quote, source], p.price)  # type: ignore[arg-type]
            youngest[source] = min(youngest.get(source, quote.age_s), quote.age_s)
            stale_count[source] = stale_count.get(source, 0) + (1 if quote.stale else 0)
        for source in sorted(youngest):
            age.add_metric([source], youngest[source])
            stale.add_metric([source], stale_count[source])
        records = list(self._records())
        view = self._graph.view()
        per_account: dict[str, list[Holding]] = {}
        for record in records:
            per_account.setdefault(record.account, []).append(Holding.of(record))
        for account in sorted(per_account):
            totals = value_totals(view, per_account[account], QUOTE)
            value.add_metric([account, QUOTE], totals.value)  # type: ignore[arg-type]
        whole = value_totals(view, (Holding.of(r) for r in records), QUOTE)
        if whole.coverage.by_value is not None:
            share = CONTEXT.plus(whole.coverage.by_value)
            coverage.add_metric([QUOTE], share)  # type: ignore[arg-type]
        if whole.coverage.by_count is not None:
            share = CONTEXT.plus(whole.coverage.by_count)
            by_count.add_metric([QUOTE], share)  # type: ignore[arg-type]
        return [price, age, stale, value, coverage, by_count]
