"""The simulated price streams over real WebSockets, read back with the service's parsers."""

from __future__ import annotations

import random
import time
from decimal import Decimal

import aiohttp
import pytest

from app.prices import bitopro as bitopro_prices
from app.prices import deltadefi as deltadefi_prices
from app.prices import sfox as sfox_prices
from app.prices import solanatracker as solana_prices
from app.simulators.bitopro import BitoproSimulator
from app.simulators.deltadefi import DeltaDefiSimulator
from app.simulators.market import walk_price
from app.simulators.sfox import SfoxSimulator
from app.simulators.solanatracker import TRUMP, WSOL, SolanaTrackerSimulator
from app.venues.base import ProtocolError
from tests.simulators.wsclient import (
    DELTADEFI_KEY,
    SFOX_KEY,
    SOLANA_KEY,
    expect_silence,
    loads,
    recv_json,
    recv_text,
)


def tickers_url(sim: BitoproSimulator) -> str:
    return "ws" + sim.base_url.removeprefix("http") + "/ws/v1/pub/tickers"


async def test_bitopro_public_tickers_by_query_and_by_path(
    bitopro: BitoproSimulator, session: aiohttp.ClientSession
) -> None:
    feed = bitopro.price_feed
    async with session.ws_connect(tickers_url(bitopro) + "?pairs=btc_twd,USDT_TWD") as ws:
        first = [loads(await recv_text(ws)) for _ in range(2)]
        assert sorted(f["pair"] for f in first) == ["BTC_TWD", "USDT_TWD"]
        assert all(f["event"] == "TICKER" and isinstance(f["lastPrice"], str) for f in first)
        assert await feed.set_price("BTC_TWD", "3012345.12345678") == 1
        price = bitopro_prices.parse_ticker(await recv_text(ws), time.time())
        assert (price.pair, price.price) == ("BTC_TWD", Decimal("3012345.12345678"))
        async with session.ws_connect(tickers_url(bitopro) + "/ETH_TWD") as one:
            assert (await recv_json(one))["pair"] == "ETH_TWD"
            assert feed.socket_counts().open == 2
            await feed.set_price("USDT_TWD", "31.5")
            assert (await recv_json(ws))["lastPrice"] == "31.5"
            await expect_silence(one)
    async with session.get(bitopro.base_url + "/_sim/prices") as answer:
        body = await answer.json()
    assert body["prices"]["BTC_TWD"] == "3012345.12345678"
    assert body["sockets"]["total"] == 2


async def test_bitopro_ticker_needs_pairs(
    bitopro: BitoproSimulator, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError):
        async with session.ws_connect(tickers_url(bitopro)):
            pass


async def test_stall_and_resume_a_feed_over_the_control_api(
    bitopro: BitoproSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(tickers_url(bitopro) + "?pairs=BTC_TWD") as ws:
        await recv_json(ws)
        async with session.post(
            bitopro.base_url + "/_sim/prices/stall", json={"pairs": ["btc_twd"]}
        ) as answer:
            assert (await answer.json()) == {"stalled": ["BTC_TWD"]}
        async with session.put(
            bitopro.base_url + "/_sim/prices/BTC_TWD", json={"price": "3100000"}
        ) as answer:
            assert (await answer.json()) == {"frames": 0}
        await expect_silence(ws)
        async with session.post(
            bitopro.base_url + "/_sim/prices/stall", json={"stall": False}
        ) as answer:
            assert (await answer.json()) == {"stalled": []}
        assert await bitopro.price_feed.publish("BTC_TWD") == 1
        assert (await recv_json(ws))["lastPrice"] == "3100000"


@pytest.mark.parametrize("kind", ["bad_json", "wrong_types", "negative", "non_numeric", "zero"])
async def test_bad_ticker_frames_are_rejected_by_the_parser(
    bitopro: BitoproSimulator, session: aiohttp.ClientSession, kind: str
) -> None:
    async with session.ws_connect(tickers_url(bitopro) + "?pairs=BTC_TWD") as ws:
        await recv_json(ws)
        async with session.post(
            bitopro.base_url + "/_sim/prices/malformed", json={"kind": kind}
        ) as answer:
            assert (await answer.json()) == {"frames": 1}
        with pytest.raises(ProtocolError):
            bitopro_prices.parse_ticker(await recv_text(ws), time.time())


async def test_sfox_tickers_share_the_connection_sequence(
    sfox: SfoxSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(sfox.ws_url) as ws:
        await ws.send_json({"type": "authenticate", "apiKey": SFOX_KEY})
        assert (await recv_json(ws))["sequence"] == 1
        await ws.send_str(sfox_prices.subscribe_message(["btcusd", "ETHUSD"]))
        await ws.send_json({"type": "subscribe", "feeds": ["private.user.balances"]})
        # every message takes the next number of one counter: the two subscribe replies,
        # whatever the balance feed sends on subscribing (a snapshot, web3 wallets), and
        # the ticker
        expected, replies = 2, 0
        while replies < 2:
            doc = await recv_json(ws)
            assert doc["sequence"] == expected
            expected += 1
            replies += doc.get("type") == "success"
        await sfox.price_feed.set_price("btcusd", "96912.123456789")
        while True:
            raw = await recv_text(ws)
            envelope = loads(raw)
            assert envelope["sequence"] == expected
            expected += 1
            if envelope.get("recipient") == "ticker.sfox.btcusd":
                break
        assert sfox_prices.parse_ticker(raw, time.time()).price == Decimal("96912.123456789")
        await sfox.push(SFOX_KEY, {"btc": "1"})
        assert (await recv_json(ws))["sequence"] == envelope["sequence"] + 1


async def test_deltadefi_market_price_socket_checks_the_key(
    deltadefi: DeltaDefiSimulator, session: aiohttp.ClientSession
) -> None:
    base = "ws" + deltadefi.base_url.removeprefix("http") + "/market/market-price/ADAUSDM"
    with pytest.raises(aiohttp.WSServerHandshakeError):
        async with session.ws_connect(base + "?api_key=wrong"):
            pass
    async with session.ws_connect(f"{base}?api_key={DELTADEFI_KEY}") as ws:
        first = deltadefi_prices.parse_market_price(await recv_text(ws), "ADAUSDM", time.time())
        assert first.price == Decimal("0.8365")
        await deltadefi.price_feed.set_price("ADAUSDM", "0.812345678")
        raw = await recv_text(ws)
        assert '"price":0.812345678' in raw  # a bare JSON number, as the venue sends
        assert deltadefi_prices.parse_market_price(raw, "ADAUSDM", 0).price == Decimal(
            "0.812345678"
        )


async def test_solanatracker_price_rooms(
    solanatracker: SolanaTrackerSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{solanatracker.base_url}/{SOLANA_KEY}") as ws:
        for room in (solana_prices.aggregated_room(TRUMP), f"price:{WSOL}"):
            await ws.send_json({"type": "join", "room": room})
            assert (await recv_json(ws))["type"] == "joined"
        await solanatracker.price_feed.set_price(TRUMP, "6.123456789012")
        price = solana_prices.parse_price_message(await recv_text(ws), time.time())
        assert (price.base, price.price, price.pool_count) == (TRUMP, Decimal("6.123456789012"), 12)
        assert solanatracker.prices[TRUMP] == Decimal("6.123456789012")  # swaps agree
        await solanatracker.price_feed.set_price(WSOL, "151.5")
        pool = solana_prices.parse_price_message(await recv_text(ws), time.time())
        assert (pool.base, pool.price) == (WSOL, Decimal("151.5"))


async def test_republished_on_an_interval(session: aiohttp.ClientSession) -> None:
    sim = BitoproSimulator(price_interval=0.05)
    await sim.start()
    try:
        async with session.ws_connect(tickers_url(sim) + "?pairs=ADA_TWD") as ws:
            frames = [await recv_json(ws) for _ in range(3)]
            assert {f["pair"] for f in frames} == {"ADA_TWD"}
    finally:
        await sim.stop()


def test_walk_price_stays_exact_positive_and_close() -> None:
    rng = random.Random(5)
    for start in (Decimal("3050000"), Decimal("0.00002137"), Decimal("0.01")):
        price = start
        for _ in range(200):
            new = walk_price(rng, price)
            assert new > 0 and abs(new - price) <= max(price / 100, Decimal("0.01"))
            price = new


async def test_walk_moves_and_pushes_prices(
    deltadefi: DeltaDefiSimulator, session: aiohttp.ClientSession
) -> None:
    base = "ws" + deltadefi.base_url.removeprefix("http") + "/market/market-price/ADAUSDM"
    async with session.ws_connect(f"{base}?api_key={DELTADEFI_KEY}") as ws:
        await recv_json(ws)
        before = dict(deltadefi.price_feed.board.prices)
        assert await deltadefi.price_feed.walk(random.Random(3)) == 1
        moved = deltadefi.price_feed.board.prices
        assert set(moved) == set(before) and moved != before
        assert Decimal(str((await recv_json(ws))["price"])) == moved["ADAUSDM"]
