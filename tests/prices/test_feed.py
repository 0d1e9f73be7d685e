"""The standalone price sockets against the simulators over real WebSockets: one BitoPro
ticker socket for all accounts, resubscribing, bad frames, reconnects, ping/pong liveness,
staleness, and a DeltaDeFi key that never reaches a log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import aiohttp
import pytest

from app.accounts import AccountConfig
from app.prices.feed import (
    BitoproTickerChannel,
    PriceFeedClient,
    bitopro_pairs,
    feed_clients,
)
from app.prices.graph import PriceGraph, Reason, Unvalued, Valued
from app.prices.model import Price
from app.ratelimit import VenueLimiter
from app.reconnect import SocketOptions
from app.simulators.bitopro import BitoproSimulator
from app.simulators.deltadefi import DeltaDefiSimulator
from tests.venues.conftest import CANARY_KEY

FAST = SocketOptions(heartbeat=5.0, backoff_initial=0.02, backoff_max=0.1, healthy_after=5.0)
NO_LIMITS = VenueLimiter({})  # these tests are about the feed itself, not the venue limits


async def until(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]], timeout: float = 5.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def bitopro_sim() -> AsyncIterator[BitoproSimulator]:
    sim = BitoproSimulator(price_interval=0.05)
    for n in (1, 2):
        sim.add_account(f"key-{n}", f"secret-{n}", f"user{n}@example.invalid", {"BTC": "1"})
    await sim.start()
    yield sim
    await sim.stop()


def bitopro_account(sim: BitoproSimulator, n: int) -> AccountConfig:
    return AccountConfig.model_validate(
        {
            "id": f"bito-{n}", "venue": "bitopro", "api_key": f"key-{n}",
            "api_secret": f"secret-{n}", "email": f"user{n}@example.invalid",
            "ws_url": sim.ws_url,
        }
    )  # fmt: skip


async def test_one_ticker_socket_serves_every_bitopro_account(
    bitopro_sim: BitoproSimulator, http: aiohttp.ClientSession
) -> None:
    got: list[Price] = []
    accounts = [bitopro_account(bitopro_sim, 1), bitopro_account(bitopro_sim, 2)]
    held = {"bito-1": ["BTC", "TWD"], "bito-2": ["ETH"]}
    clients = feed_clients(http, accounts, held, got.append, FAST, limiter=NO_LIMITS)
    assert len(clients) == 1
    [client] = clients
    assert client.channel.pairs == {"BTC_TWD", "ETH_TWD", "USDT_TWD"}  # type: ignore[attr-defined]
    client.start()
    try:
        await until(lambda: {p.pair for p in got} >= {"BTC_TWD", "ETH_TWD", "USDT_TWD"})
        assert bitopro_sim.price_feed.socket_counts().open == 1
        await bitopro_sim.price_feed.set_price("BTC_TWD", "3012345.12345678")
        await until(
            lambda: (
                got[-1].price == Decimal("3012345.12345678")
                or any(p.price == Decimal("3012345.12345678") for p in got[-3:])
            )
        )
        # the held currencies change: the same single socket is reopened with the new pairs
        client.resubscribe(BitoproTickerChannel(client.channel.url, bitopro_pairs(["ADA"])))  # type: ignore[attr-defined]
        await until(lambda: any(p.pair == "ADA_TWD" for p in got))
        counts = bitopro_sim.price_feed.socket_counts()
        await until(lambda: bitopro_sim.price_feed.socket_counts().open == 1)
        assert counts.total == 2
        assert client.reconnects["resubscribe"] == 1
    finally:
        await client.stop()


async def test_bad_frames_are_rejected_whole_and_counted(
    bitopro_sim: BitoproSimulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[Price] = []
    rejects: list[tuple[str, str]] = []
    channel = BitoproTickerChannel(
        bitopro_sim.ws_url.replace("/auth/account-balance", "/tickers"), ["BTC_TWD"]
    )
    client = PriceFeedClient(
        http,
        channel,
        got.append,
        FAST,
        limiter=NO_LIMITS,
        on_reject=lambda n, r: rejects.append((n, r)),
    )
    client.start()
    try:
        await until(lambda: len(got) > 0)
        bitopro_sim.price_feed.board.stall(None)  # only the bad frames go out now
        await asyncio.sleep(0.1)
        before = len(got)
        for kind in ("bad_json", "negative", "non_numeric", "zero", "wrong_types"):
            assert await bitopro_sim.price_feed.send_malformed(kind, "BTC_TWD") == 1
        await until(lambda: sum(client.rejected.values()) == 5)
        assert client.rejected == {"parse": 1, "amount": 3, "schema": 1}
        assert len(got) == before and [r for _, r in rejects].count("amount") == 3
        assert client.connections == 1  # the connection carried on
        bitopro_sim.price_feed.board.stall(None, stalled=False)
        await bitopro_sim.price_feed.set_price("BTC_TWD", "3100000")
        await until(lambda: got[-1].price == Decimal("3100000"))
        assert sum("rejected a frame" in r.message for r in caplog.records) == 3  # once per reason
    finally:
        await client.stop()


async def test_a_stalled_feed_goes_stale_and_recovers(
    bitopro_sim: BitoproSimulator, http: aiohttp.ClientSession
) -> None:
    graph = PriceGraph(max_age=0.5)
    channel = BitoproTickerChannel(
        bitopro_sim.ws_url.replace("/auth/account-balance", "/tickers"), ["BTC_TWD", "USDT_TWD"]
    )
    client = PriceFeedClient(http, channel, graph.put, FAST, limiter=NO_LIMITS)
    client.start()

    def btc() -> Valued | Unvalued:
        return graph.view().value("BTC", Decimal("2"), "USD", "bitopro")

    try:
        await until(lambda: isinstance(btc(), Valued))
        bitopro_sim.price_feed.board.stall(["BTC_TWD"])
        await until(lambda: isinstance(btc(), Unvalued))
        result = btc()
        assert isinstance(result, Unvalued) and result.reason is Reason.STALE_PRICE
        bitopro_sim.price_feed.board.stall(["BTC_TWD"], stalled=False)
        await until(lambda: isinstance(btc(), Valued))
        assert client.connections == 1  # staleness came from the price age, not a reconnect
    finally:
        await client.stop()


async def test_reconnects_when_the_socket_closes(
    bitopro_sim: BitoproSimulator, http: aiohttp.ClientSession
) -> None:
    got: list[Price] = []
    channel = BitoproTickerChannel(
        bitopro_sim.ws_url.replace("/auth/account-balance", "/tickers"), ["BTC_TWD"]
    )
    client = PriceFeedClient(http, channel, got.append, FAST, limiter=NO_LIMITS)
    client.start()
    try:
        await until(lambda: client.connections == 1 and len(got) > 0)
        await bitopro_sim.price_feed.close()  # closes the price sockets (1001)
        bitopro_sim.price_feed.start()
        await until(lambda: client.connections == 2)
        count = len(got)
        await until(lambda: len(got) > count)
        assert client.reconnects["closed"] >= 1
    finally:
        await client.stop()


async def test_a_price_socket_that_stops_answering_pings_is_replaced(
    bitopro_sim: BitoproSimulator, http: aiohttp.ClientSession
) -> None:
    """Liveness is the ping/pong deadline, as on the account sockets: a ticker socket that
    is still open but answers nothing (no pongs, no prices) is closed and opened again."""
    got: list[Price] = []
    channel = BitoproTickerChannel(
        bitopro_sim.ws_url.replace("/auth/account-balance", "/tickers"), ["BTC_TWD"]
    )
    options = SocketOptions(heartbeat=0.3, backoff_initial=0.02, backoff_max=0.1, healthy_after=5.0)
    client = PriceFeedClient(http, channel, got.append, options, limiter=NO_LIMITS)
    client.start()
    try:
        await until(lambda: client.connections == 1 and len(got) > 0)
        (conn,) = bitopro_sim.price_feed.socket_subscribers("BTC_TWD")
        conn.stalled = True  # the socket stays open; nothing answers on it any more
        await until(lambda: client.connections == 2)
        assert sum(client.reconnects.values()) == 1
        count = len(got)
        await until(lambda: len(got) > count)  # the new socket delivers again
    finally:
        await client.stop()


async def test_deltadefi_market_price_key_never_logged(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = DeltaDefiSimulator(price_interval=0.05)
    sim.add_account(CANARY_KEY, {"ada": "10"})
    await sim.start()
    got: list[Price] = []
    account = AccountConfig.model_validate(
        {"id": "ddf", "venue": "deltadefi", "api_key": CANARY_KEY, "ws_url": sim.ws_url}
    )
    [client] = feed_clients(
        http, [account], {"ddf": ["ADA", "USDM"]}, got.append, FAST, limiter=NO_LIMITS
    )
    client.start()
    try:
        await until(lambda: len(got) > 0)
        assert (got[0].pair, got[0].base, got[0].quote) == ("ADAUSDM", "ADA", "USDM")
        sim.refuse_auth(CANARY_KEY)
        await sim.price_feed.close()
        await until(lambda: client.reconnects["auth"] >= 1)
        assert "auth" in client.last_error
    finally:
        await client.stop()
        await sim.stop()
    text = caplog.text + repr(client)
    assert "api_key=***" in text
    assert CANARY_KEY not in text
