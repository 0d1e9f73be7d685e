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
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.simulators.runner import DEMO_WALLETS, Simulators
from tests.integration.conftest import (
    account_for,
    all_default_accounts,
    fast_settings,
    free_port,
    go_live,
    wait_until,
)
from tests.integration.test_data_dir_lock import VENUES, _ready, _serve
from tests.integration.test_valuation import (
    Api,
    assert_untouched,
    live_and_priced,
    rejected,
    service,
    sims,
)

pytestmark = pytest.mark.timeout(120)
_ = sims  # the fixture, re-exported for this module

JUP = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN"  # a mint no demo wallet holds
BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"  # held by the second demo wallet only
TRUMP = "6p6xgHyF7AeE6TZkSmFsko444wqoP15icUSqi2jfGiPN"
WSOL = "So11111111111111111111111111111111111111112"


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


async def price_age_metric(http: httpx.AsyncClient, source: str) -> float:
    """``balagg_price_age_seconds{source}`` as ``/metrics`` exposes it."""
    text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "balagg_price_age_seconds" and sample.labels == {"source": source}:
                return float(sample.value)
    raise AssertionError(f"no balagg_price_age_seconds for {source}")


async def _none(items: list[Any]) -> bool:
    return not items


async def test_bad_price_frames_from_deltadefi_and_solanatracker_are_rejected_and_counted(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    accounts = [account_for(sims, "deltadefi"), account_for(sims, "solanatracker")]
    async with service(fast_settings(redis_url, key_prefix), accounts, sims) as api:
        rt = api.runtime
        reconnects = await live_and_priced(api, accounts, {"deltadefi", "solanatracker"}, 20)
        before = await api.prices()
        kinds = ("bad_json", "wrong_types", "negative", "non_numeric", "zero")
        for kind in kinds:
            for venue, pair in (("deltadefi", "ADAUSDM"), ("solanatracker", BONK)):
                body = {"kind": kind, "pair": pair}
                sent = await api.control(venue, "POST", "/_sim/prices/malformed", body)
                assert sent["frames"], (venue, kind)

        def market_errors() -> float:
            labels = {"feed": "deltadefi-market-ADAUSDM"}
            return rejected(rt, "balagg_price_feed_errors_total", labels)

        def room_errors() -> float:
            labels = {"account": "solanatracker-main", "venue": "solanatracker"}
            return rejected(rt, "balagg_upstream_errors_total", labels)

        async def counted() -> bool:
            return market_errors() == len(kinds) and room_errors() == len(kinds)

        assert await wait_until(counted, 10), (market_errors(), room_errors())
        after = await api.prices()
        assert after["ADAUSDM"] == before["ADAUSDM"] and after[BONK] == before[BONK]
        # good prices after the bad ones are read on the same sockets
        await api.control("deltadefi", "PUT", "/_sim/prices/ADAUSDM", {"price": "0.91234567"})
        await api.control("solanatracker", "PUT", f"/_sim/prices/{BONK}", {"price": "0.0000251"})

        async def good_ones_read() -> bool:
            now = await api.prices()
            return now["ADAUSDM"] == "0.91234567" and now[BONK] == "0.0000251"

        assert await wait_until(good_ones_read, 10)
        await assert_untouched(api, accounts, reconnects)


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


async def test_a_killed_service_serves_its_last_prices_as_stale_until_the_feeds_answer(
    sims: Simulators, tmp_path: Path
) -> None:
    """``serve`` SIGKILLed (no shutdown, no last flush), restarted on the same data
    directory while the price feeds are silent: the last prices come back from the
    embedded Redis, marked stale, the values resting on them are null with
    ``stale_price``; once the feed answers they are values again."""
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    btc_path = "bitopro:BTC_TWD / bitopro:USDT_TWD * peg:USDT=USD"

    async def btc_row(http: httpx.AsyncClient) -> dict[str, Any]:
        doc = (await http.get("/v1/totals", params={"quote": "USD"})).json()
        rows: dict[str, dict[str, Any]] = {t["symbol"]: t for t in doc["totals"]}
        return rows.get("BTC", {})

    async def listed(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
        prices = (await http.get("/v1/prices")).json()["prices"]
        return {p["pair"]: p for p in prices if p["source"] == "bitopro"}

    first = _serve(sims, data_dir, port, lease_ms=None)
    try:
        assert await _ready(port), "first service never became ready"
        async with httpx.AsyncClient(base_url=base) as http:

            async def valued() -> bool:  # from the BitoPro tickers, not sFOX's
                row = await btc_row(http)
                return row.get("value") is not None and row["path"] == btc_path

            assert await wait_until(valued, 30)
            await sims.bitopro.price_feed.set_price("BTC_TWD", "3012345.12345678")
            for venue in VENUES:  # every feed silent from here on (sFOX prices BTC too)
                sims[venue].price_feed.board.stall(None)

            async def last_price_kept() -> bool:
                # older than the embedded Redis' once-a-second append-only sync
                btc = (await listed(http)).get("BTC_TWD", {})
                return btc.get("price") == "3012345.12345678" and btc["age_s"] > 2

            assert await wait_until(last_price_kept, 15), await listed(http)
            before = await listed(http)
            # the stale-source alert reads the age of the source's YOUNGEST price: it lies
            # between the youngest ages listed just before and just after the scrape
            age = await price_age_metric(http, "bitopro")
            after = await listed(http)
            youngest = [min(p["age_s"] for p in doc.values()) for doc in (before, after)]
            assert youngest[0] - 0.001 <= age <= youngest[1] + 0.001, (youngest, age)
    finally:
        first.kill()
        first.wait()

    second = _serve(sims, data_dir, port, lease_ms=None)
    try:
        assert await _ready(port), "restarted service never became ready"
        async with httpx.AsyncClient(base_url=base) as http:
            now = await listed(http)
            assert set(now) == set(before)
            for pair, price in now.items():
                assert price["price"] == before[pair]["price"], pair
                assert price["stale"] is True and price["restored"] is True, price
            btc = await btc_row(http)
            assert btc["value"] is None and btc["reason"] == "stale_price"
            assert btc["path"] == btc_path

            for venue in VENUES:
                sims[venue].price_feed.board.stall(None, stalled=False)

            async def confirmed() -> bool:
                row = await btc_row(http)
                btc_twd = (await listed(http)).get("BTC_TWD", {})
                return row.get("value") is not None and btc_twd.get("restored") is False

            assert await wait_until(confirmed, 30)
            assert (await btc_row(http))["path"] == btc_path
    finally:
        second.kill()
        second.wait()


async def test_a_solana_mint_is_a_quote_as_given(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    """docs/api.md: ``quote`` may be a Solana mint, exactly (mints are case-sensitive):
    totals and balances value in it alike."""
    account = account_for(sims, "solanatracker")
    async with service(fast_settings(redis_url, key_prefix), [account], sims) as api:
        await go_live(api.runtime, sims, account)

        async def priced() -> bool:
            doc = await api.totals()
            return bool(doc["totals"]) and doc["coverage"]["by_count"] == "1"

        assert await wait_until(priced, 20)
        doc = await api.totals(WSOL)
        assert doc["quote"] == WSOL
        rows = {t["symbol"]: t for t in doc["totals"]}
        assert rows["wSOL"]["value"] == "12.5" and rows["wSOL"]["path"] == ""
        trump = rows[TRUMP]  # no swap seen yet: its symbol is the mint
        assert trump["value"] is not None and trump["reason"] is None
        assert trump["path"] == f"solanatracker:{TRUMP} / solanatracker:{WSOL}"
        assert doc["unpriced"] == [] and doc["coverage"]["by_count"] == "1"
        balances = await api.get("/v1/balances", quote=WSOL, asset=TRUMP)
        (record,) = balances["balances"]
        assert balances["quote"] == WSOL and record["value"] == trump["value"]
