"""Prices over time: every price a feed of this instance delivers reaches the history
recorder; prices followed from other replicas are recorded only into a private database.

The real service (SQLite under its data directory, or a private PostgreSQL) on a real
socket; prices enter through the price service exactly as a feed hands them over.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from sqlalchemy import select

from app.history import schema
from app.history.runtime import History
from app.prices.model import Price, PriceSource
from tests.api.conftest import ServiceFactory, account
from tests.history.conftest import postgres_server  # noqa: F401  (fixture)
from tests.pgserver import PrivatePostgres


async def _stored(history: History, want: int, timeout: float = 10.0) -> list[tuple[str, ...]]:
    """Poll the history_prices table until it holds ``want`` rows (or the deadline)."""
    deadline = time.monotonic() + timeout
    rows: list[tuple[str, ...]] = []
    while time.monotonic() < deadline:
        if not history.ready:  # the schema is not migrated yet
            await asyncio.sleep(0.05)
            continue
        await history.prices.flush()
        async with history.engine.connect() as conn:
            result = await conn.execute(
                select(
                    schema.prices.c.pair, schema.prices.c.source, schema.prices.c.price
                ).order_by(schema.prices.c.id)
            )
            rows = [tuple(r) for r in result]
        if len(rows) >= want:
            return rows
        await asyncio.sleep(0.05)
    return rows


def _price(source: PriceSource, pair: str, base: str, quote: str, value: str) -> Price:
    return Price(source, pair, base, quote, Decimal(value), time.time())


async def _feed_and_follow(factory: ServiceFactory, **overrides: object) -> list[tuple[str, ...]]:
    async with factory([account("ex-a")], **overrides) as svc:
        history: History | None = svc.app.state.history
        assert history is not None
        prices = svc.services.prices
        # a price from a feed socket of this instance
        prices.record(_price(PriceSource.BITOPRO, "BTC_TWD", "BTC", "TWD", "3141592.65358979"))
        # a price another replica's feed wrote to P:prices since this process started
        prices.follow_prices([_price(PriceSource.SFOX, "ethusd", "ETH", "USD", "2718.28182845")])
        return await _stored(history, 2, timeout=3.0)


async def test_prices_are_recorded_into_a_private_database(
    service_factory: ServiceFactory,
) -> None:
    rows = await _feed_and_follow(service_factory)
    assert sorted(rows) == [
        ("BTC/TWD", "bitopro", "3141592.65358979"),
        ("ETH/USD", "sfox", "2718.28182845"),
    ]


async def test_a_shared_database_records_only_this_instances_feeds(
    service_factory: ServiceFactory,
    postgres_server: PrivatePostgres,  # noqa: F811
) -> None:
    rows = await _feed_and_follow(service_factory, history_url=postgres_server.create_database())
    # the replica whose feed received ETH records it; here it would be a duplicate
    assert rows == [("BTC/TWD", "bitopro", "3141592.65358979")]
