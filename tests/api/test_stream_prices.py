"""``/v1/stream`` price messages: opt-in only, the known prices first, then every new one."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import aiohttp

from app.domain import AccountState
from app.prices import Price, PriceSource
from tests.api.conftest import VENUE, ServiceFactory, account, bal, status_doc
from tests.api.streamclient import read_one


def btc_twd(price: str) -> Price:
    return Price(PriceSource.BITOPRO, "BTC_TWD", "BTC", "TWD", Decimal(price), time.time())


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        doc: dict[str, Any] = await read_one(ws, timeout=5)
        if doc["type"] == kind:
            return doc


async def test_prices_are_sent_only_to_clients_that_ask(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        svc.owner.submit_snapshot("ex-a", VENUE, "", [bal("BTC", "1")])
        svc.owner.submit_status("ex-a", status_doc("ex-a", AccountState.LIVE))
        await svc.settle()
        svc.services.prices.record(btc_twd("3012345.12345678"))
        opted = await svc.ws(prices="true")
        plain = await svc.ws()
        later = await svc.ws()
        try:
            assert (await read_one(opted))["type"] == "snapshot"
            known = await read_one(opted)  # what is known already follows the snapshot
            assert known["type"] == "price" and known["price"] == "3012345.12345678"
            assert known["path"] == "bitopro:BTC_TWD" and known["stale"] is False
            assert (await read_one(plain))["type"] == "snapshot"
            assert (await read_one(later))["type"] == "snapshot"
            await later.send_json({"op": "subscribe", "prices": True})

            svc.services.prices.record(btc_twd("3012399.5"))
            doc = await next_of(opted, "price")
            assert doc["price"] == "3012399.5" and doc["source"] == "bitopro"
            assert (await read_one(later))["type"] == "snapshot"
            assert (await next_of(later, "price"))["price"] == "3012399.5"

            # the client that did not ask gets balances, never prices
            svc.owner.submit_update("ex-a", VENUE, [bal("BTC", "2")])
            assert (await read_one(plain))["type"] == "balance"

            await later.send_json({"op": "subscribe", "prices": "yes"})
            assert (await next_of(later, "error"))["error"]["code"] == "bad_request"
        finally:
            for ws in (opted, plain, later):
                await ws.close()


async def test_prices_parameter_is_validated(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        try:
            ws = await svc.ws(prices="maybe")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 400
        else:
            await ws.close()
            raise AssertionError("prices=maybe was accepted")


async def test_a_slow_client_keeps_only_the_newest_price_per_pair(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory([account("ex-a")], client_buffer=10) as svc:
        ws = await svc.ws(prices="true")
        try:
            assert (await read_one(ws))["type"] == "snapshot"
            (sub,) = svc.hub.subscribers
            pairs = ("BTC_TWD", "ETH_TWD", "USDT_TWD")
            newest: dict[str, str] = {}
            for i in range(3_000):  # faster than any socket: nothing is sent in between
                pair = pairs[i % len(pairs)]
                newest[pair] = f"{i + 1}.5"
                base = pair.split("_")[0]
                svc.services.prices.record(
                    Price(
                        PriceSource.BITOPRO, pair, base, "TWD", Decimal(newest[pair]), time.time()
                    )
                )
            assert sub.peak_pending <= sub.limit + 1
            assert sub.conflated > 0
            seen: dict[str, str] = {}
            while seen != newest:
                doc = await next_of(ws, "price")
                seen[doc["pair"]] = doc["price"]
            assert seen == newest
        finally:
            await ws.close()
