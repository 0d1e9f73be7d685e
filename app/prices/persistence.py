"""Prices in Redis, so every replica and a restarted service value alike.

Market prices share the ``P:prices`` hash with the Solana mint metadata: a market price's
field is its key ``source|pair`` (a mint address never contains ``|``) and its value a JSON
doc with every number as an exact string::

    {"source": "bitopro", "pair": "BTC_TWD", "base": "BTC", "quote": "TWD",
     "price": "1314234.5", "received_ms": 1764316800123,
     "venue_ts": "2026-11-28T08:00:00.120Z", "pool_count": null, "liquidity": null}

Receive times are kept to the millisecond. Writes go through the batched
:class:`~app.store.BalanceWriter` (one pipeline with the balances; the newest doc per key
kept in memory while Redis is away), so a feed never waits on Redis. :func:`load_prices`
reads them back; the graph keeps their original receive time and serves them as stale
until their feed answers (:meth:`PriceGraph.restore`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from app.prices.graph import PriceGraph
from app.prices.model import MARKET_SOURCES, Price, PriceSource
from app.store import Keys

log = logging.getLogger(__name__)

KEY_SEP = "|"


class PriceWriter(Protocol):
    """What :class:`PriceRecorder` needs of :class:`~app.store.BalanceWriter`."""

    def submit_market_price(self, key: str, doc: bytes) -> None: ...


def encode_price(price: Price) -> bytes:
    return orjson.dumps(
        {
            "source": price.source.value,
            "pair": price.pair,
            "base": price.base,
            "quote": price.quote,
            "price": format(price.price, "f"),
            "received_ms": round(price.received * 1000),
            "venue_ts": price.venue_ts,
            "pool_count": price.pool_count,
            "liquidity": None if price.liquidity is None else format(price.liquidity, "f"),
        }
    )


def decode_price(field: str, raw: bytes | str) -> Price | None:
    """A stored market price, or None for a field that is not one (mint metadata) or is
    damaged (logged, skipped: one bad doc must not hide every other price)."""
    if KEY_SEP not in field:
        return None
    try:
        doc = orjson.loads(raw)
        source = PriceSource(doc["source"])
        if source not in MARKET_SOURCES:
            raise ValueError("not a market source")
        value = Decimal(doc["price"])
        if not value.is_finite() or value <= 0:
            raise ValueError("not a positive price")
        liquidity = None if doc.get("liquidity") is None else Decimal(doc["liquidity"])
        pool_count = doc.get("pool_count")
        if pool_count is not None and type(pool_count) is not int:
            raise ValueError("pool_count")
        received_ms = doc["received_ms"]
        if type(received_ms) is not int:
            raise ValueError("received_ms")
        price = Price(
            source, str(doc["pair"]), str(doc["base"]), str(doc["quote"]), value,
            received_ms / 1000, _opt_str(doc.get("venue_ts")), pool_count, liquidity,
        )  # fmt: skip
    except (ValueError, KeyError, TypeError, InvalidOperation, orjson.JSONDecodeError):
        log.warning("skipping a damaged stored price (field %.80r)", field)
        return None
    if price.key != field:
        log.warning("skipping a stored price filed under the wrong key (field %.80r)", field)
        return None
    return price


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


async def load_prices(client: aioredis.Redis, keys: Keys) -> list[Price]:
    """Every market price stored in ``P:prices``."""
    raw: dict[Any, Any] = await client.hgetall(keys.prices)
    prices: list[Price] = []
    for field, doc in raw.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        price = decode_price(name, doc)
        if price is not None:
            prices.append(price)
    return prices


class PriceRecorder:
    """The callback every price feed delivers to: into the graph now, into Redis batched.

    Never blocks and never awaits: :meth:`PriceGraph.put` is in memory and the writer only
    queues the newest doc per key.
    """

    def __init__(
        self,
        graph: PriceGraph,
        writer: PriceWriter,
        on_new: Callable[[Price], None] | None = None,
    ) -> None:
        self._graph = graph
        self._writer = writer
        self._on_new = on_new  # e.g. the stream hub's fan-out; must not block either

    def __call__(self, price: Price) -> bool:
        """Take ``price``; True when it was new to the graph (and so stored and announced)."""
        if not self._graph.put(price):
            return False
        self._writer.submit_market_price(price.key, encode_price(price))
        if self._on_new is not None:
            self._on_new(price)
        return True
