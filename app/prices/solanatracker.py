"""SolanaTracker price rooms on the account's Datastream socket: pure parser, room names.

``price:aggregated:<mint>`` (recommended by the SDK) carries an aggregate over the mint's
pools; its ``aggregated.median`` is preferred over the single-pool ``price`` because a
thin pool can be moved. ``poolCount`` and the summed top-pool liquidity are kept as
quality signals. ``price:<mint>`` and the deprecated ``price-by-token:<mint>`` carry one
pool's ``price``. Every price is in **USD**; ``price_quote`` (SOL) is not used. Numbers
are JSON numbers and are read exactly as Decimal.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from app.prices import wire as pw
from app.prices.model import Price, PriceSource
from app.venues import _wire as w

AGGREGATED_PREFIX: Final = "price:aggregated:"
POOL_PREFIXES: Final = ("price:", "price-by-token:")
QUOTE: Final = "USD"
_MAX_POOLS = 100


def aggregated_room(mint: str) -> str:
    return AGGREGATED_PREFIX + mint


def is_price_room(room: object) -> bool:
    return type(room) is str and room.startswith(("price:", "price-by-token:"))


def parse_price_message(raw: str | bytes, received: float) -> Price:
    """Read one price room message, exactly. Verbatim sample (SDK ``datastream.ts``)::

        {
          "type": "message",
          "room": "price:aggregated:6p6xgHyF7AeE6TZkSmFsko444wqoP15icUSqi2jfGiPN",
          "data": {
            "token": "6p6xgHyF7AeE6TZkSmFsko444wqoP15icUSqi2jfGiPN",
            "timestamp": 1760201288835,
            "price": 6.0031,
            "pool": "9d9mb8kooFfaD3SctgZtkxQypkshx6ezhbKio89ixyy2",
            "aggregated": {"median": 6.00246791, "average": 6.0011,
                           "min": 5.98, "max": 6.02, "poolCount": 14},
            "topPools": [{"poolId": "9d9mb8kooFfaD3SctgZtkxQypkshx6ezhbKio89ixyy2",
                          "price": 6.0031, "liquidity": 148223455.12,
                          "market": "meteora-dlmm"}]
          }
        }

    Raises :class:`~app.venues.base.ProtocolError` (the whole frame is rejected).
    """
    return w.decode(raw, lambda doc: read_price_message(doc, received))


def read_price_message(doc: Any, received: float) -> Price:
    """The same as :func:`parse_price_message` for a frame already decoded (exactly)."""
    doc = w.obj(doc, "frame")
    if doc.get("type") != "message":
        raise w.reject(w.UNKNOWN_EVENT, "not a room message")
    room = w.text(doc.get("room"), "room", max_len=200)
    data = w.obj(doc.get("data"), "data")
    if room.startswith(AGGREGATED_PREFIX):
        mint = w.solana_address(room[len(AGGREGATED_PREFIX) :], "room")
        return _aggregated(mint, data, received)
    for prefix in POOL_PREFIXES:
        if room.startswith(prefix):
            mint = w.solana_address(room[len(prefix) :], "room")
            return _single_pool(mint, data, received)
    raise w.reject(w.UNKNOWN_EVENT, "message from a room that is not a price room")


def _check_token(mint: str, data: dict[str, Any]) -> None:
    token = data.get("token")
    if token is not None and token != mint:
        raise w.reject(w.SCHEMA, "data.token: does not match the room")


def _aggregated(mint: str, data: dict[str, Any], received: float) -> Price:
    _check_token(mint, data)
    aggregated = w.obj(data.get("aggregated"), "data.aggregated")
    median = aggregated.get("median")
    value = pw.price(median if median is not None else data.get("price"), "data.aggregated.median")
    pool_count = aggregated.get("poolCount")
    if pool_count is not None:
        pool_count = w.integer(pool_count, "data.aggregated.poolCount", hi=1_000_000)
    liquidity: Decimal | None = None
    pools = data.get("topPools")
    if pools is not None:
        pools = w.arr(pools, "data.topPools")
        if len(pools) > _MAX_POOLS:
            raise w.reject(w.SCHEMA, f"data.topPools: more than {_MAX_POOLS} pools")
        for pool in pools:
            pool = w.obj(pool, "data.topPools[]")
            amount = pool.get("liquidity")
            if amount is not None:
                found = w.amount(amount, "data.topPools[].liquidity")
                liquidity = found if liquidity is None else w.add(liquidity, found)
    venue_ts = _epoch(data.get("timestamp"), "data.timestamp")
    return Price(
        PriceSource.SOLANATRACKER, mint, mint, QUOTE, value, received, venue_ts,
        pool_count, liquidity,
    )  # fmt: skip


def _single_pool(mint: str, data: dict[str, Any], received: float) -> Price:
    _check_token(mint, data)
    value = pw.price(data.get("price"), "data.price")
    venue_ts = _epoch(data.get("time", data.get("timestamp")), "data.time")
    return Price(PriceSource.SOLANATRACKER, mint, mint, QUOTE, value, received, venue_ts, 1)


def _epoch(value: object, field: str) -> str | None:
    return None if value is None else w.iso_from_epoch(value, field)
