"""The price value every feed produces and the valuation graph consumes.

A :class:`Price` is one venue's quote of ``base`` in ``quote`` (``1 base = price quote``),
read exactly from the wire by a pure parser (:mod:`app.prices.bitopro`, :mod:`.sfox`,
:mod:`.deltadefi`, :mod:`.solanatracker`). It carries where it came from (``source`` and
the venue's own ``pair`` name), the venue's timestamp when the frame has one, and the local
receive time, which is what its age is measured from (venue clocks are not ours).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from app.names import Venue


class PriceSource(enum.StrEnum):
    """Where a price came from. Market sources are the venues; the rest are assumptions.

    The market sources are the venues (:class:`app.names.Venue`).
    """

    BITOPRO = Venue.BITOPRO.value
    SFOX = Venue.SFOX.value
    DELTADEFI = Venue.DELTADEFI.value
    SOLANATRACKER = Venue.SOLANATRACKER.value
    PEG = "peg"
    STATIC = "static"
    IDENTITY = "identity"


MARKET_SOURCES = frozenset(
    {PriceSource.BITOPRO, PriceSource.SFOX, PriceSource.DELTADEFI, PriceSource.SOLANATRACKER}
)


@dataclass(frozen=True, slots=True)
class Price:
    """``1 base = price quote`` as one venue reported it.

    ``base``/``quote`` are upper-cased currency codes, or a Solana mint address unchanged
    (SolanaTracker prices a mint in ``USD``). ``pair`` is the venue's own name for the
    market (``BTC_TWD``, ``btcusd``, ``ADAUSDM``, the mint), used in conversion paths as
    ``<source>:<pair>``. ``venue_ts`` is the venue's time (ISO 8601 UTC millis) or None;
    ``received`` is the local receive time (epoch seconds). ``pool_count`` and
    ``liquidity`` are SolanaTracker's quality signals (pools aggregated, and the summed
    USD liquidity of the top pools); None elsewhere.
    """

    source: PriceSource
    pair: str
    base: str
    quote: str
    price: Decimal
    received: float
    venue_ts: str | None = None
    pool_count: int | None = None
    liquidity: Decimal | None = None

    @property
    def key(self) -> str:
        """Identity of the market: one price per key is current (``source|pair``)."""
        return f"{self.source.value}|{self.pair}"

    @property
    def label(self) -> str:
        """How the market is named in a conversion path: ``bitopro:BTC_TWD``."""
        return f"{self.source.value}:{self.pair}"
