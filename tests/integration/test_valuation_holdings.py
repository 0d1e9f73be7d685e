"""Price subscriptions follow what the accounts hold, end to end, on every venue.

The real service against the real simulators: a currency an account starts to hold gets
its venue's price (a BitoPro ticker pair on the one shared ticker socket, an sFOX ticker
feed and a SolanaTracker price room on the account's own socket, a DeltaDeFi market price
socket) and is valued from it; a currency no longer held loses its subscription at the
simulator. Bad price frames from every venue are rejected whole and counted, and never
touch balances or account state.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

import pytest

from app.simulators.runner import DEMO_WALLETS, Simulators
from tests.integration.conftest import (
    account_for,
    all_default_accounts,
    converge,
    fast_settings,
    go_live,
    metric,
    supervisor_of,
    wait_until,
)
from tests.integration.test_valuation import Api, service, sims

pytestmark = pytest.mark.timeout(120)
_ = sims  # the fixture, re-exported for this module

JUP = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN"  # a mint no demo wallet holds
BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"  # held by the second demo wallet only


async def record(api: Api, account: str, asset: str) -> dict[str, Any] | None:
    """The account's valued record of ``asset`` in USD (None while it has none)."""
    doc = await api.get(f"/v1/balances/{account}", quote="USD", asset=asset)
    rows = [r for r in doc["balances"] if r["asset"] == asset and r["total"] != "0"]
    return rows[0] if rows else None


async def valued_by(api: Api, account: str, asset: str, path: str) -> bool:
    found = await record(api, account, asset)
    return found is not None and found["value"] is not None and found["path"] == path


async def test_a_newly_held_currency_is_subscribed_and_valued_and_a_dropped_one_is_left(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    accounts = all_default_accounts(sims)
    async with service(fast_settings(redis_url, key_prefix), accounts, sims) as api:
        rt = api.runtime
        for account in accounts:
            await go_live(rt, sims, account)
        keys = sims.default_keys
        bitopro_feed = sims.bitopro.price_feed
        bito = "bitopro:BITO_TWD / bitopro:USDT_TWD * peg:USDT=USD"
        assert await wait_until(functools.partial(valued_by, api, "bitopro-main", "BITO", bito))
        # nobody holds these yet: nothing subscribes their prices
        assert bitopro_feed.subscribers("SOL_TWD") == []
        assert sims.sfox.price_feed.subscribers("solusd") == []
        assert sims.solanatracker.price_feed.subscribers(JUP) == []
        assert sims.deltadefi.price_feed.subscribers("BTCUSDM") == []

        await api.control("deltadefi", "PUT", "/_sim/prices/BTCUSDM", {"price": "97012.5"})
        await api.control("solanatracker", "PUT", f"/_sim/prices/{JUP}", {"price": "0.5123"})
        await sims.bitopro.push(keys["bitopro"], {"SOL": "2", "BITO": "0"})
        await sims.sfox.push(keys["sfox"], {"sol": "4", "btc": "0"})
        await sims.deltadefi.push(keys["deltadefi"], {"btc": "0.5"})
        await sims.solanatracker.push(
            keys["solanatracker"], {DEMO_WALLETS[0]: {JUP: "7"}, DEMO_WALLETS[1]: {BONK: "0"}}
        )

        expected = {
            ("bitopro-main", "SOL"): "bitopro:SOL_TWD / bitopro:USDT_TWD * peg:USDT=USD",
            ("sfox-main", "SOL"): "sfox:solusd",
            ("deltadefi-main", "BTC"): "deltadefi:BTCUSDM * peg:USDM=USD",
            ("solanatracker-main", JUP): f"solanatracker:{JUP}",
        }
        for (account_id, asset), path in expected.items():
            check = functools.partial(valued_by, api, account_id, asset, path)
            assert await wait_until(check, 20), await record(api, account_id, asset)

        # the new subscriptions ride the sockets the rules name: still one BitoPro ticker
        # socket, sFOX and SolanaTracker on the account socket
        assert bitopro_feed.socket_counts().open == 1
        for venue in ("sfox", "solanatracker"):
            conns = sims[venue].connection_counts(keys[venue])
            assert (conns.open, conns.total) == (1, 1)
        # what is no longer held is no longer subscribed
        assert await wait_until(lambda: _none(bitopro_feed.subscribers("BITO_TWD")), 10)
        assert await wait_until(lambda: _none(sims.sfox.price_feed.subscribers("btcusd")), 10)
        assert await wait_until(lambda: _none(sims.solanatracker.price_feed.subscribers(BONK)), 10)
        assert len(bitopro_feed.subscribers("SOL_TWD")) == 1


async def _none(items: list[Any]) -> bool:
    return not items


async def test_bad_price_frames_from_deltadefi_and_solanatracker_are_rejected_and_counted(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    accounts = [account_for(sims, "deltadefi"), account_for(sims, "solanatracker")]
    async with service(fast_settings(redis_url, key_prefix), accounts, sims) as api:
        rt = api.runtime
        for account in accounts:
            await go_live(rt, sims, account)

        async def both_priced() -> bool:
            sources = {p["source"] for p in (await api.get("/v1/prices"))["prices"]}
            return {"deltadefi", "solanatracker"} <= sources

        assert await wait_until(both_priced, 20)
        runners = supervisor_of(rt).runners
        attempts = {a.id: runners[a.id].attempts for a in accounts}
        before = {p["pair"]: p["price"] for p in (await api.get("/v1/prices"))["prices"]}
        kinds = ("bad_json", "wrong_types", "negative", "non_numeric", "zero")
        for kind in kinds:
            for venue, pair in (("deltadefi", "ADAUSDM"), ("solanatracker", BONK)):
                body = {"kind": kind, "pair": pair}
                sent = await api.control(venue, "POST", "/_sim/prices/malformed", body)
                assert sent["frames"], (venue, kind)

        def market_errors() -> float:
            return sum(
                metric(
                    rt,
                    "balagg_price_feed_errors_total",
                    {"feed": "deltadefi-market-ADAUSDM", "reason": r},
                )
                for r in ("parse", "schema", "amount")
            )

        def room_errors() -> float:
            labels = {"account": "solanatracker-main", "venue": "solanatracker"}
            return sum(
                metric(rt, "balagg_upstream_errors_total", {**labels, "reason": r})
                for r in ("parse", "schema", "amount")
            )

        async def counted() -> bool:
            return market_errors() == len(kinds) and room_errors() == len(kinds)

        assert await wait_until(counted, 10), (market_errors(), room_errors())
        after = {p["pair"]: p["price"] for p in (await api.get("/v1/prices"))["prices"]}
        assert after["ADAUSDM"] == before["ADAUSDM"] and after[BONK] == before[BONK]
        for account in accounts:  # the account sockets and states never noticed
            runner = runners[account.id]
            assert str(runner.state) == "live" and runner.attempts == attempts[account.id]
            ours, truth = await converge(rt, sims, account.venue, account.id)
            assert ours == truth


async def test_coverage_is_exported_by_count_when_a_holding_has_no_price(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    """The by-value share is unknowable while a holding has no price at all (nobody knows
    what it is worth), so the count share is what tells an alert the total is incomplete."""
    key = sims.bitopro.add_account_json(
        {
            "api_key": "sim-bitopro-unpriced",
            "api_secret": "sim-bitopro-unpriced-secret",
            "email": "unpriced@bitopro.sim.invalid",
            "balances": {"BTC": "1.5", "TWD": "1000", "XYZ": "42"},  # nothing prices XYZ
        }
    )
    account = account_for(sims, "bitopro", "bitopro-unpriced", key=key)
    async with service(fast_settings(redis_url, key_prefix), [account], sims) as api:
        await go_live(api.runtime, sims, account)

        async def btc_valued() -> bool:
            rows = {t["symbol"]: t for t in (await api.totals())["totals"]}
            return "BTC" in rows and rows["BTC"]["value"] is not None

        assert await wait_until(btc_valued, 20)
        doc = await api.totals()
        assert doc["unpriced"] == [{"symbol": "XYZ", "reason": "no_price"}]
        assert doc["coverage"]["by_value"] is None and doc["coverage"]["by_count"] == "0.6666"
        registry = api.runtime.metrics.registry
        assert registry.get_sample_value("balagg_value_coverage", {"quote": "USD"}) is None
        by_count = registry.get_sample_value("balagg_value_coverage_symbols", {"quote": "USD"})
        assert by_count == Decimal(doc["coverage"]["by_count"])
