"""REST over a real socket: filters, errors, valuation, accounts, resync and readiness."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from app import mints
from app.domain import AccountState
from app.prices import Price, PriceSource
from tests.api.conftest import VENUE, Service, ServiceFactory, StubSupervisor, account, bal
from tests.api.conftest import status_doc as doc

WALLET = "FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1"
BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"
USDC_MINT = mints.USDC
FAKE_USDC = "FakeUSDCmint1111111111111111111111111111111"


def assert_error(status: int, body: Any, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


async def seed(svc: Service) -> None:
    o = svc.owner
    o.submit_snapshot(
        "ex-a", VENUE, "", [bal("BTC", "1.5", "1"), bal("ETH", "0"), bal("USDT", "10")]
    )
    o.submit_snapshot("ex-b", VENUE, "", [bal("BTC", "0.25"), bal("USDM", "3.5", "1.5")])
    o.submit_status("ex-a", doc("ex-a", AccountState.LIVE))
    o.submit_status("ex-b", doc("ex-b", AccountState.STALE))
    await svc.settle()


async def test_balances_filters_and_stale(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a"), account("ex-b")]) as svc:
        await seed(svc)
        status, body = await svc.get("/v1/balances")
        assert status == 200 and body["seq"] == svc.hub.seq
        rows = [(r["account"], r["asset"], r["total"], r["stale"]) for r in body["balances"]]
        assert rows == [
            ("ex-a", "BTC", "1.5", False),
            ("ex-a", "ETH", "0", False),
            ("ex-a", "USDT", "10", False),
            ("ex-b", "BTC", "0.25", True),
            ("ex-b", "USDM", "3.5", True),
        ]
        btc = body["balances"][0]
        assert (btc["available"], btc["locked"], btc["wallet"], btc["venue"]) == (
            "1",
            "0.5",
            "",
            VENUE,
        )
        _s, body = await svc.get("/v1/balances", nonzero="true")
        assert "ETH" not in {r["asset"] for r in body["balances"]}
        _s, body = await svc.get("/v1/balances", asset="btc")
        assert [(r["account"], r["asset"]) for r in body["balances"]] == [
            ("ex-a", "BTC"),
            ("ex-b", "BTC"),
        ]
        async with svc.http.get(svc.base + "/v1/balances?account=ex-b&asset=BTC&asset=USDM") as r:
            body = await r.json()
        assert [r["asset"] for r in body["balances"]] == ["BTC", "USDM"]
        _s, body = await svc.get("/v1/balances", account="ex-a,ex-b", asset="USDT,USDM")
        assert len(body["balances"]) == 2
        _s, body = await svc.get("/v1/balances", account="nobody")
        assert body["balances"] == []

        status, one = await svc.get("/v1/balances/ex-b")
        assert status == 200 and [r["asset"] for r in one["balances"]] == ["BTC", "USDM"]
        status, one = await svc.get("/v1/balances/ex-b", nonzero="1", asset="usdm")
        assert [r["asset"] for r in one["balances"]] == ["USDM"]

        # the account goes live: every record of it turns fresh at once
        svc.owner.submit_status("ex-b", doc("ex-b", AccountState.LIVE))
        await svc.settle()
        _s, one = await svc.get("/v1/balances/ex-b")
        assert not any(r["stale"] for r in one["balances"])


async def test_errors_have_one_shape(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        assert_error(*(await svc.get("/v1/balances/nobody")), 404, "unknown_account")
        assert_error(*(await svc.get("/v1/balances", nonzero="maybe")), 422, "invalid_request")
        assert_error(*(await svc.get("/v1/balances", account="Not An Id")), 422)
        assert_error(*(await svc.get("/v1/balances", asset="bad asset!")), 422)
        assert_error(*(await svc.get("/v1/balances/ex-a", asset="$$$")), 422)
        assert_error(*(await svc.get("/v1/totals", quote="EUR")), 422)
        assert_error(*(await svc.get("/v1/nothing-here")), 404, "not_found")
        async with svc.http.delete(svc.base + "/v1/balances") as r:
            assert_error(r.status, await r.json(), 405, "method_not_allowed")
        async with svc.http.post(svc.base + "/v1/accounts/ex-a/resync", data=b"x" * (1 << 20)) as r:
            assert_error(r.status, await r.json(), 413, "payload_too_large")
        async with svc.http.get(svc.base + "/v1/balances?" + "a=1&" * 5000) as r:
            assert_error(r.status, await r.json(), 414)
        async with svc.http.get(svc.base + "/v1/balances/" + "x" * 300) as r:
            assert r.status in (404, 422)
            assert_error(r.status, await r.json(), r.status)


async def test_totals_are_exact_and_valued(service_factory: ServiceFactory) -> None:
    accounts = [account("ex-a"), account("ex-b"), account("sol", venue="solanatracker")]
    async with service_factory(accounts, static_prices={"BTC": Decimal("65000.5")}) as svc:
        await seed(svc)
        o = svc.owner
        o.submit_update(
            "sol",
            "solanatracker",
            [
                bal(BONK, "123456.000001", wallet=WALLET, symbol="BONK"),
                bal(USDC_MINT, "2.25", wallet=WALLET, symbol="USDC"),
                bal(FAKE_USDC, "1000", wallet=WALLET, symbol="USDC"),
                bal("UnknownMint11111111111111111111111111111111", "5", wallet=WALLET),
            ],
        )
        # a mint is valued from its price room (a market price), not from swap metadata
        o.submit_price(BONK, {"price_usd": "0.00002345", "symbol": "BONK", "decimals": 5})
        svc.services.prices.record(
            Price(PriceSource.SOLANATRACKER, BONK, BONK, "USD", Decimal("0.00002345"), time.time())
        )
        await svc.settle()
        status, body = await svc.get("/v1/totals", quote="USD")
        assert status == 200 and body["seq"] == svc.hub.seq
        totals = {t["symbol"]: t for t in body["totals"]}
        assert totals["BTC"] == {
            "symbol": "BTC",
            "total": "1.75",
            "available": "1.25",
            "locked": "0.5",
            "accounts": 2,
            "usd": str(Decimal("1.75") * Decimal("65000.5")),
            "value": str(Decimal("1.75") * Decimal("65000.5")),
            "price": "65000.5",
            "price_source": "static",
            "path": "static:BTC=USD",
            "price_age_s": None,
            "reason": None,
        }
        assert body["quote"] == "USD" and "static:BTC=USD" in body["assumptions"]
        assert totals["USDT"]["usd"] == "10"
        assert totals["USDM"]["usd"] == "3.5" and totals["USDM"]["locked"] == "2"
        # values are quantized to 8 places, half-even (docs/valuation.md)
        assert totals["BONK"]["usd"] == "2.8950432"  # 2.89504320002345
        assert totals["BONK"]["path"] == f"solanatracker:{BONK}"
        assert totals["ETH"]["usd"] == "0"  # nothing held: nothing to price
        # a mint that merely calls itself USDC is not worth a dollar
        assert totals["USDC"]["total"] == "1002.25" and totals["USDC"]["usd"] is None
        assert body["unpriced"] == [
            {"symbol": "USDC", "reason": "no_price"},
            {"symbol": "UnknownMint11111111111111111111111111111111", "reason": "no_price"},
        ]
        for row in body["totals"]:
            for field in ("total", "available", "locked"):
                assert isinstance(row[field], str)
            assert row["usd"] is None or isinstance(row["usd"], str)

        status, body = await svc.get("/v1/totals", account="ex-a")
        assert {t["symbol"] for t in body["totals"]} == {"BTC", "ETH", "USDT"}


async def test_accounts_and_resync(service_factory: ServiceFactory) -> None:
    accounts = [account("ex-a"), account("ex-b"), account("off", enabled=False)]
    async with service_factory(accounts) as svc:
        svc.owner.submit_status("ex-a", doc("ex-a", AccountState.LIVE))
        svc.owner.touch("ex-a", VENUE, 1767323045.678)  # 2026-01-02T03:04:05.678Z
        await svc.settle()
        await svc.hub.refresh_once()  # last_message_at is polled, not streamed
        status, body = await svc.get("/v1/accounts")
        assert status == 200
        views = {a["account"]: a for a in body["accounts"]}
        assert list(views) == ["ex-a", "ex-b", "off"]
        assert views["ex-a"]["state"] == "live" and views["ex-a"]["owner"] == "test-owner"
        assert views["ex-a"]["last_message_at"] == "2026-01-02T03:04:05.678Z"
        assert views["ex-b"]["state"] == "connecting"
        assert views["off"]["state"] == "disabled"
        for view in views.values():
            assert set(view) == {
                "account",
                "venue",
                "state",
                "connected_since",
                "last_message_at",
                "reconnects",
                "last_error",
                "owner",
            }

        async with svc.http.post(svc.base + "/v1/accounts/ex-b/resync") as r:
            assert r.status == 202 and (await r.json())["account"] == "ex-b"
        supervisor = svc.services.supervisor
        assert isinstance(supervisor, StubSupervisor) and supervisor.resyncs == ["ex-b"]
        async with svc.http.post(svc.base + "/v1/accounts/ghost/resync") as r:
            assert_error(r.status, await r.json(), 404, "unknown_account")


async def test_readiness(service_factory: ServiceFactory) -> None:
    accounts = [account("ex-a"), account("ex-b"), account("off", enabled=False)]
    async with service_factory(accounts) as svc:
        async with svc.http.get(svc.base + "/healthz") as r:
            assert r.status == 200 and await r.json() == {"status": "ok"}
        status, body = await svc.get("/readyz")
        assert status == 503 and body["ready"] is False
        assert any("ex-a" in reason and "ex-b" in reason for reason in body["reasons"])
        assert "off" not in " ".join(body["reasons"])
        assert body["error"]["code"] == "not_ready"

        svc.owner.submit_status("ex-a", doc("ex-a", AccountState.LIVE))
        svc.owner.submit_status("ex-b", doc("ex-b", AccountState.CONNECTING))
        await svc.settle()
        status, body = await svc.get("/readyz")
        assert status == 503 and body["reasons"] == ["still connecting: ex-b"]

        svc.owner.submit_status("ex-b", doc("ex-b", AccountState.AUTH_FAILED))
        await svc.settle()
        status, body = await svc.get("/readyz")
        assert status == 200 and body == {"ready": True, "reasons": []}

        svc.services.writer.healthy = False
        status, body = await svc.get("/readyz")
        assert status == 503 and "writes are failing" in body["reasons"][0]
        svc.services.writer.healthy = True


async def test_with_the_real_supervisor(service_factory: ServiceFactory) -> None:
    """The whole app, upstream side included, pointed at a closed port: it serves anyway."""
    accounts = [account("up", venue="sfox"), account("off", enabled=False)]
    async with service_factory(accounts, real_supervisor=True, backoff_initial=0.05) as svc:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            _s, body = await svc.get("/v1/accounts")
            states = {a["account"]: a["state"] for a in body["accounts"]}
            if states["up"] != "connecting" and states["off"] == "disabled":
                break
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"states never moved: {states}")
            await asyncio.sleep(0.05)
        assert states["up"] in ("stale", "syncing")
        status, _body = await svc.get("/v1/balances")
        assert status == 200


async def test_fast_reads_answer_exactly_like_the_route(service_factory: ServiceFactory) -> None:
    """The hot GET path and the FastAPI route (reached with an extra parameter) agree."""
    async with service_factory([account("ex-a"), account("ex-b")]) as svc:
        await seed(svc)
        queries = [
            "/v1/balances",
            "/v1/balances?nonzero=true",
            "/v1/balances?account=ex-a,ex-b&asset=btc",
            "/v1/balances?account=ex-b&account=ex-a&nonzero=0",
            "/v1/balances?asset=",
            "/v1/balances/ex-a",
            "/v1/balances/ex-b?asset=USDM&nonzero=1",
        ]
        for query in queries:
            joiner = "&" if "?" in query else "?"
            async with svc.http.get(svc.base + query) as fast:
                fast_body = await fast.read()
                assert fast.status == 200 and fast.content_type == "application/json"
            async with svc.http.get(svc.base + query + joiner + "via=route") as slow:
                assert slow.status == 200 and await slow.read() == fast_body, query
