"""Live valuation from the venues' own price streams (SPEC §6, docs/valuation.md).

The pure parsers (:mod:`.bitopro`, :mod:`.sfox`, :mod:`.deltadefi`, :mod:`.solanatracker`)
read each venue's price frames into :class:`~.model.Price` values.
"""

from app.prices.model import MARKET_SOURCES, Price, PriceSource

__all__ = ["MARKET_SOURCES", "Price", "PriceSource"]
