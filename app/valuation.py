"""Live valuation: the hub's current records valued with the in-memory price graph.

Where it sits: ``GET /v1/balances[/{account}]?quote=`` and ``GET /v1/totals``
(:mod:`app.api.routes`) ask :class:`LiveValuation` for their JSON documents. It takes the
records from the :class:`~app.stream.hub.StreamHub` mirror and one
:class:`~app.prices.graph.GraphView` (one instant) of the price service's graph, which
lives in memory: neither read touches Redis (the graph is filled in the background by the
price feeds and the follow of ``P:prices``, :mod:`app.prices.service`). The rules
themselves, which price path values a holding and how a symbol is totalled, live in
:mod:`app.prices.graph` and :mod:`app.prices.totals`; the document shapes in
:mod:`app.prices.report`. This module only puts one consistent state together: records
and ``seq`` are read without an ``await`` between them, so they describe the same state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from app.prices.graph import GraphView, PriceGraph
from app.prices.report import balance_value, resolve_quote, totals_doc
from app.store.records import record_json
from app.stream.hub import StreamHub
from app.stream.messages import normalize_assets


class UnknownQuote(Exception):
    """No price, peg or static price reaches the quote currency asked for."""

    def __init__(self, quote: str) -> None:
        super().__init__(quote)
        self.quote = quote


class LiveValuation:
    """Values the hub's records in a quote currency, at the graph's current instant."""

    def __init__(self, hub: StreamHub, graph: PriceGraph) -> None:
        self._hub = hub
        self._graph = graph

    def _view(self, quote: str) -> tuple[GraphView, str]:
        view = self._graph.view()
        node = resolve_quote(view, quote)
        if node is None:
            raise UnknownQuote(quote)
        return view, node

    def balances(
        self,
        accounts: Iterable[str] | None,
        assets: Iterable[str] | None,
        nonzero: bool,
        quote: str,
    ) -> dict[str, Any]:
        """``{"seq", "quote", "balances"}``: each record with its value, price, source, age.

        Filters as for the plain balances (``assets`` matched as given and upper-cased).
        """
        view, node = self._view(quote)
        wanted = normalize_assets(assets)
        out: list[dict[str, Any]] = []
        for record in self._hub.records(accounts):
            if wanted is not None and record.asset not in wanted:
                continue
            if nonzero and not (record.total or record.available or record.locked):
                continue
            doc = orjson.loads(record_json(record))
            doc["stale"] = record.stale
            doc.update(balance_value(view, record, node))
            out.append(doc)
        return {"seq": self._hub.seq, "quote": node, "balances": out}

    def totals(self, accounts: Iterable[str] | None, quote: str) -> dict[str, Any]:
        """``GET /v1/totals``: per-symbol sums and values, coverage, unpriced, assumptions."""
        view, node = self._view(quote)
        return totals_doc(view, self._hub.records(accounts), node, self._hub.seq)
