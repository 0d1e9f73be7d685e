"""The exact conversion graph: from the latest prices to a value in any reachable quote.

Nodes are currencies (``BTC``, ``TWD``) and Solana mints; edges are

- market prices (:class:`~app.prices.model.Price`), usable both ways: ``base -> quote``
  multiplies by the price, ``quote -> base`` divides by it;
- pegs (``USDT=USD`` by default for USDT, USDC and USDM): rate 1, always reported as an
  assumption (``peg:USDT=USD``), never as a market fact;
- identities (a known stablecoin mint is that stablecoin): rate 1 (``identity:<mint>=USDC``);
- static prices from the settings, ``asset -> USD``, the last resort (``static:BTC=USD``).

Choosing a path (paths of at most :data:`MAX_HOPS` edges, searched best first by):

1. every market edge fresh, before any path that has a stale one;
2. no static price, before paths that need one;
3. fewest market edges from a venue other than the one the asset sits on ("the price from
   the venue where it sits");
4. fewest edges; 5. fewest pegs and identities; 6. youngest oldest price; 7. the name.

A value is never guessed: no edge at the asset gives ``no_price``; edges that never reach
the quote give ``no_path``; a best path with a stale price gives ``stale_price`` (the value
is null, the path and age are still reported).

Arithmetic (exact where it can be, documented where it cannot): with ``p`` the prices
multiplied along the path and ``q`` the prices divided,
``num = amount * p1 * p2 ...`` and ``den = q1 * q2 ...`` are computed in
:data:`CONTEXT` (50 significant digits, ROUND_HALF_EVEN; every product of an 8-decimal
balance below 10^12 and a price of up to 20 digits is exact), then ``value = num / den`` in
the same context, then quantized to :data:`VALUE_PLACES` (8 decimal places,
ROUND_HALF_EVEN). The unit price is ``(p1 * p2 ...) / (q1 * q2 ...)`` in the same context,
not quantized: a single market price is passed through exactly as the venue sent it.
Floats never appear.
"""

from __future__ import annotations

import enum
import heapq
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from typing import Final

from app.prices.model import MARKET_SOURCES, Price, PriceSource

CONTEXT: Final = Context(
    prec=50, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)
"""Multiplication and division of values and prices: 50 significant digits, half-even."""

VALUE_PLACES: Final = Decimal("1E-8")
"""Values are quantized to 8 decimal places (ROUND_HALF_EVEN)."""

_QUANTIZE: Final = Context(prec=120, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation])
MAX_HOPS: Final = 4
USD: Final = "USD"
_ONE = Decimal(1)


class Reason(enum.StrEnum):
    """Why a value is null."""

    NO_PRICE = "no_price"  # nothing at all prices this asset
    STALE_PRICE = "stale_price"  # the best path has a price older than its age limit
    NO_PATH = "no_path"  # the asset is priced, but never in (or via) the wanted quote


@dataclass(frozen=True, slots=True)
class Step:
    """One edge of a path. ``inverse``: the value is divided by ``price`` (quote -> base)."""

    label: str
    source: PriceSource
    price: Decimal
    inverse: bool
    age_s: float | None  # None for pegs, identities and static prices
    stale: bool
    restored: bool = False  # read back from Redis, not yet confirmed by its feed

    @property
    def is_assumption(self) -> bool:
        return self.source not in MARKET_SOURCES


@dataclass(frozen=True, slots=True)
class Conversion:
    """How one unit of ``asset`` converts into ``quote``: the path and the unit price."""

    asset: str
    quote: str
    steps: tuple[Step, ...]
    unit_price: Decimal

    @property
    def path(self) -> str:
        """``bitopro:BTC_TWD / bitopro:USDT_TWD * peg:USDT=USD`` (``1 / x`` when it starts
        with a division; empty for the quote itself)."""
        parts: list[str] = []
        for i, step in enumerate(self.steps):
            op = "/" if step.inverse else "*"
            if i == 0:
                parts.append(f"1 / {step.label}" if step.inverse else step.label)
            else:
                parts.append(f"{op} {step.label}")
        return " ".join(parts)

    @property
    def source(self) -> str:
        """The distinct sources along the path, in order: ``bitopro+peg``."""
        seen: list[str] = []
        for step in self.steps:
            if step.source.value not in seen:
                seen.append(step.source.value)
        return "+".join(seen) if seen else PriceSource.IDENTITY.value

    @property
    def age_s(self) -> float | None:
        """The age of the oldest market price on the path (None when none is a market)."""
        ages = [s.age_s for s in self.steps if s.age_s is not None]
        return max(ages) if ages else None

    @property
    def stale(self) -> bool:
        return any(s.stale for s in self.steps)

    @property
    def assumptions(self) -> tuple[str, ...]:
        """Pegs, identities and static prices the value rests on (``peg:USDT=USD``)."""
        return tuple(s.label for s in self.steps if s.is_assumption)

    def apply(self, amount: Decimal) -> Decimal:
        """``amount`` in ``quote``, by the rule in the module docstring."""
        num = amount
        den = _ONE
        for step in self.steps:
            if step.inverse:
                den = CONTEXT.multiply(den, step.price)
            else:
                num = CONTEXT.multiply(num, step.price)
        value = CONTEXT.divide(num, den) if den != _ONE else CONTEXT.plus(num)
        return value.quantize(VALUE_PLACES, context=_QUANTIZE)


@dataclass(frozen=True, slots=True)
class Valued:
    """A value in ``conversion.quote``, with the price and path that gave it."""

    amount: Decimal
    value: Decimal
    conversion: Conversion


@dataclass(frozen=True, slots=True)
class Unvalued:
    """No value: ``reason`` says why; ``conversion`` is the stale path when there is one."""

    amount: Decimal
    reason: Reason
    conversion: Conversion | None = None


Valuation = Valued | Unvalued


@dataclass(frozen=True, slots=True)
class _Entry:
    price: Price
    restored: bool


@dataclass(frozen=True, slots=True)
class _Edge:
    target: str
    label: str
    source: PriceSource
    price: Decimal
    inverse: bool
    entry: _Entry | None


@dataclass(frozen=True, slots=True)
class QuoteView:
    """One known price as ``GET /v1/prices`` shows it."""

    price: Price
    age_s: float
    stale: bool
    restored: bool
    max_age_s: float


class PriceGraph:
    """The latest price per market plus the configured pegs, identities and static prices.

    Feeds call :meth:`put` (never blocks, never touches Redis); a restarted service calls
    :meth:`restore` with what Redis held, which is served but stale until the feed
    answers again. :meth:`view` takes a consistent picture at one instant for valuing.
    """

    def __init__(
        self,
        *,
        max_age: float = 120.0,
        max_ages: Mapping[str, float] | None = None,
        pegs: Mapping[str, str] | None = None,
        identities: Mapping[str, str] | None = None,
        static: Mapping[str, Decimal] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_age = max_age
        self.max_ages = dict(max_ages or {})
        self.pegs = dict({"USDT": USD, "USDC": USD, "USDM": USD} if pegs is None else pegs)
        self.identities = dict(identities or {})
        self.static = dict(static or {})
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def age_limit(self, source: PriceSource | str) -> float:
        return self.max_ages.get(str(source), self.max_age)

    def put(self, price: Price) -> bool:
        """Take a price from a live feed; False if an equal or newer one is already held."""
        held = self._entries.get(price.key)
        if held is not None and not held.restored and held.price.received > price.received:
            return False
        if held is not None and not held.restored and held.price == price:
            return False
        self._entries[price.key] = _Entry(price, False)
        return True

    def restore(self, prices: Iterable[Price]) -> int:
        """Prices read back from Redis: kept with their original receive time, stale until
        their feed answers (a live price already held is never replaced). How many."""
        count = 0
        for price in prices:
            if price.key not in self._entries:
                self._entries[price.key] = _Entry(price, True)
                count += 1
        return count

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def prices(self) -> list[QuoteView]:
        """Every known market price with its age and stale flag, by key."""
        now = self._clock()
        out: list[QuoteView] = []
        for key in sorted(self._entries):
            entry = self._entries[key]
            limit = self.age_limit(entry.price.source)
            age = max(0.0, now - entry.price.received)
            stale = entry.restored or age > limit
            out.append(QuoteView(entry.price, age, stale, entry.restored, limit))
        return out

    def view(self) -> GraphView:
        """A consistent picture of the graph at this instant."""
        return GraphView(self, self._clock())

    def _edges(self) -> dict[str, list[_Edge]]:
        adjacency: dict[str, list[_Edge]] = {}

        def add(node: str, edge: _Edge) -> None:
            adjacency.setdefault(node, []).append(edge)

        for entry in self._entries.values():
            p = entry.price
            add(p.base, _Edge(p.quote, p.label, p.source, p.price, False, entry))
            add(p.quote, _Edge(p.base, p.label, p.source, p.price, True, entry))
        for asset, target in self.pegs.items():
            label = f"peg:{asset}={target}"
            add(asset, _Edge(target, label, PriceSource.PEG, _ONE, False, None))
            add(target, _Edge(asset, label, PriceSource.PEG, _ONE, True, None))
        for alias, target in self.identities.items():
            label = f"identity:{alias}={target}"
            add(alias, _Edge(target, label, PriceSource.IDENTITY, _ONE, False, None))
            add(target, _Edge(alias, label, PriceSource.IDENTITY, _ONE, True, None))
        for asset, value in self.static.items():
            if value > 0:
                label = f"static:{asset}={USD}"
                add(asset, _Edge(USD, label, PriceSource.STATIC, value, False, None))
                add(USD, _Edge(asset, label, PriceSource.STATIC, value, True, None))
        return adjacency


class GraphView:
    """The graph at one instant: values holdings, remembering conversions it has found."""

    def __init__(self, graph: PriceGraph, now: float) -> None:
        self._graph = graph
        self.now = now
        self._adjacency = graph._edges()
        self._memo: dict[tuple[str, str, str | None], Conversion | Reason] = {}

    def knows(self, node: str) -> bool:
        """True if some price, peg, identity or static price touches ``node``."""
        return node in self._adjacency

    def convert(self, asset: str, quote: str, venue: str | None = None) -> Conversion | Reason:
        """The best conversion of one ``asset`` into ``quote``; or why there is none.

        ``venue`` is where the asset sits (its prices are preferred). A stale best path is
        returned as a :class:`Conversion` whose ``stale`` is true.
        """
        key = (asset, quote, venue)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._search(asset, quote, venue)
        return found

    def value(self, asset: str, amount: Decimal, quote: str, venue: str | None = None) -> Valuation:
        """``amount`` of ``asset`` (held on ``venue``) in ``quote``: a value, or null with why."""
        found = self.convert(asset, quote, venue)
        if isinstance(found, Reason):
            return Unvalued(amount, found)
        if found.stale:
            return Unvalued(amount, Reason.STALE_PRICE, found)
        return Valued(amount, found.apply(amount), found)

    def _step(self, edge: _Edge) -> Step:
        if edge.entry is None:
            return Step(edge.label, edge.source, edge.price, edge.inverse, None, False)
        price = edge.entry.price
        age = max(0.0, self.now - price.received)
        stale = edge.entry.restored or age > self._graph.age_limit(price.source)
        return Step(
            edge.label, edge.source, edge.price, edge.inverse, age, stale, edge.entry.restored
        )

    def _search(self, asset: str, quote: str, venue: str | None) -> Conversion | Reason:
        if asset == quote:
            return Conversion(asset, quote, (), _ONE)
        if asset not in self._adjacency:
            return Reason.NO_PRICE
        # Best-first search: every part of the rank only grows as a path gets longer, so
        # the first path to reach the quote is the best one, and the first path to reach
        # any node is the best way there.
        counter = 0
        heap: list[tuple[tuple[object, ...], int, str, tuple[Step, ...]]] = [
            (_rank((), venue), counter, asset, ())
        ]
        settled: set[str] = set()
        while heap:
            _, _, node, steps = heapq.heappop(heap)
            if node in settled:
                continue
            settled.add(node)
            if node == quote:
                return Conversion(asset, quote, steps, _unit_price(steps))
            if len(steps) >= MAX_HOPS:
                continue
            for edge in self._adjacency.get(node, ()):
                if edge.target in settled:
                    continue
                path = (*steps, self._step(edge))
                counter += 1
                heapq.heappush(heap, (_rank(path, venue), counter, edge.target, path))
        return Reason.NO_PATH


def _rank(path: tuple[Step, ...], venue: str | None) -> tuple[object, ...]:
    markets = [s for s in path if s.source in MARKET_SOURCES]
    return (
        any(s.stale for s in path),
        any(s.source is PriceSource.STATIC for s in path),
        sum(1 for s in markets if s.source.value != venue),
        len(path),
        len(path) - len(markets),
        max((s.age_s for s in markets if s.age_s is not None), default=0.0),
        " ".join(s.label for s in path),
    )


def _unit_price(steps: tuple[Step, ...]) -> Decimal:
    num = den = _ONE
    for step in steps:
        if step.inverse:
            den = CONTEXT.multiply(den, step.price)
        else:
            num = CONTEXT.multiply(num, step.price)
    return CONTEXT.divide(num, den) if den != _ONE else num
