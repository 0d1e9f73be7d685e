"""The own-socket price feeds wait on the venue limiter like the account sockets do."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from app.metrics import Metrics
from app.prices.feed import BitoproTickerChannel, PriceFeedClient
from app.prices.model import Price
from app.ratelimit import VenueLimiter, VenueLimits
from app.reconnect import SocketOptions
from app.simulators.bitopro import BitoproSimulator

FAST = SocketOptions(heartbeat=5.0, backoff_initial=0.02, backoff_max=0.1, healthy_after=5.0)


async def test_a_price_socket_reconnects_only_within_the_venue_connect_budget() -> None:
    sim = BitoproSimulator(price_interval=0.05)
    await sim.start()
    metrics = Metrics()
    limiter = VenueLimiter({"bitopro": VenueLimits(connect=((2, 3600.0),))}, metrics)
    got: list[Price] = []
    url = sim.ws_url.replace("/auth/account-balance", "/tickers")
    async with aiohttp.ClientSession() as http:
        client = PriceFeedClient(
            http, BitoproTickerChannel(url, ["BTC_TWD"]), got.append, FAST, limiter=limiter
        )
        client.start()
        try:
            for expected in (1, 2):
                deadline = time.monotonic() + 5
                while client.connections < expected or not client.connected:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
                await sim.price_feed.close()  # the venue closes the price socket
                sim.price_feed.start()
            # the third connection is beyond the budget: it waits, counted, unconnected
            labels = {"venue": "bitopro", "kind": "connect"}
            deadline = time.monotonic() + 5
            while not metrics.registry.get_sample_value("balagg_upstream_throttled_total", labels):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # ample for a reconnect that ignored the limiter
            assert client.connections == 2 and not client.connected
            assert sim.price_feed.socket_counts().total == 2
        finally:
            await client.stop()
            await sim.stop()
