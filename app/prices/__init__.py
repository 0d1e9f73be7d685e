"""Live valuation from the venues' own price streams (SPEC §6, docs/valuation.md).

Flow: a feed (BitoPro public tickers and DeltaDeFi market price in :mod:`.feed`; sFOX
tickers and SolanaTracker price rooms on the account sockets) reads frames with the pure
parsers (:mod:`.bitopro`, :mod:`.sfox`, :mod:`.deltadefi`, :mod:`.solanatracker`) into
:class:`~.model.Price` values and hands them to a :class:`~.persistence.PriceRecorder`,
which puts them in the :class:`~.graph.PriceGraph` and queues them for Redis. The API
values holdings through a :class:`~.graph.GraphView` and :func:`~.totals.value_totals`.
"""

from app.prices.graph import (
    CONTEXT,
    VALUE_PLACES,
    Conversion,
    GraphView,
    PriceGraph,
    QuoteView,
    Reason,
    Step,
    Unvalued,
    Valuation,
    Valued,
)
from app.prices.model import MARKET_SOURCES, Price, PriceSource
from app.prices.persistence import PriceRecorder, decode_price, encode_price, load_prices
from app.prices.totals import Coverage, Holding, SymbolTotal, Totals, value_totals

__all__ = [
    "CONTEXT",
    "MARKET_SOURCES",
    "VALUE_PLACES",
    "Conversion",
    "Coverage",
    "GraphView",
    "Holding",
    "Price",
    "PriceGraph",
    "PriceRecorder",
    "PriceSource",
    "QuoteView",
    "Reason",
    "Step",
    "SymbolTotal",
    "Totals",
    "Unvalued",
    "Valuation",
    "Valued",
    "decode_price",
    "encode_price",
    "load_prices",
    "value_totals",
]
