"""Prices in a real Redis: written with the batched writer, read back exactly, and served
stale after a restart until their feed answers."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import orjson
import redis.asyncio as aioredis

from app.prices.graph import PriceGraph, Reason, Unvalued, Valued
from app.prices.model import Price, PriceSource
from app.prices.persistence import PriceRecorder, decode_price, encode_price, load_prices
from app.store import BalanceWriter, Keys
from tests.venues.conftest import TRUMP

TICK = Price(
    PriceSource.SOLANATRACKER, TRUMP, TRUMP, "USD", Decimal("0.000000012345678901"),
    1_764_316_800.123, "2026-11-28T08:00:00.120Z", 14, Decimal("148223455.12"),
)  # fmt: skip


def test_a_price_doc_round_trips_exactly() -> None:
    doc = encode_price(TICK)
    assert orjson.loads(doc)["price"] == "0.000000012345678901"
    assert decode_price(TICK.key, doc) == TICK


def test_damaged_or_foreign_fields_are_skipped() -> None:
    assert decode_price(TRUMP, b'{"price_usd": "6.0"}') is None  # mint metadata
    assert decode_price("sfox|btcusd", b"{not json") is None
    bad = orjson.loads(encode_price(TICK))
    for field, value in (
        ("price", "-1"),
        ("price", "NaN"),
        ("source", "peg"),
        ("received_ms", 1.5),
    ):
        doc = dict(bad, **{field: value})
        assert decode_price(TICK.key, orjson.dumps(doc)) is None
    assert decode_price("sfox|btcusd", encode_price(TICK)) is None  # filed under another key


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def test_recorded_prices_survive_a_restart_as_stale(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    writer = BalanceWriter(redis_client, keys)
    writer.start()
    now = round(time.time(), 3)  # receive times are stored to the millisecond
    graph = PriceGraph()
    record = PriceRecorder(graph, writer)
    btc = Price(PriceSource.SFOX, "btcusd", "BTC", "USD", Decimal("96786.12345678"), now)
    record(btc)
    record(TICK)
    # the mint metadata written by the transactions room shares the hash and is left alone
    writer.submit_price(TRUMP, {"price_usd": "6.0", "symbol": "TRUMP"})

    async def stored() -> bool:
        return len(await load_prices(redis_client, keys)) == 2

    await wait_for(stored)
    assert sorted(await load_prices(redis_client, keys), key=lambda p: p.key) == [btc, TICK]
    assert await redis_client.hexists(keys.prices, TRUMP)

    restarted = PriceGraph()
    assert restarted.restore(await load_prices(redis_client, keys)) == 2
    result = restarted.view().value("BTC", Decimal("2"), "USD", "sfox")
    assert isinstance(result, Unvalued) and result.reason is Reason.STALE_PRICE
    quote = next(q for q in restarted.prices() if q.price.key == btc.key)
    assert quote.stale and quote.restored and quote.age_s < 60  # original receive time kept
    fresh = Price(PriceSource.SFOX, "btcusd", "BTC", "USD", Decimal("96790"), time.time())
    assert restarted.put(fresh)
    valued = restarted.view().value("BTC", Decimal("2"), "USD", "sfox")
    assert isinstance(valued, Valued) and valued.value == Decimal("193580.00000000")


async def test_an_unchanged_price_is_not_written_again(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    class Spy:
        def __init__(self) -> None:
            self.keys: list[str] = []

        def submit_market_price(self, key: str, doc: bytes) -> None:
            self.keys.append(key)

    spy = Spy()
    record = PriceRecorder(PriceGraph(), spy)
    record(TICK)
    record(TICK)
    assert spy.keys == [TICK.key]
