"""Live valuation end to end: the real simulators' price streams, the real service, the API.

Prices are set, stalled and broken through the simulators' control routes over HTTP; the
service is read through its own HTTP API (ASGI, in process) while its lifespan runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import pytest
from fastapi import FastAPI

from app.accounts import AccountConfig
from app.service import create_app
from app.services import Services
from app.settings import Settings
from app.simulators.runner import Simulators, start_simulators
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

pytestmark = pytest.mark.timeout(90)

BIG = "999999999999.99999999"
BTC_TWD = "3012345.12345678"
USDT_TWD = "31.12345678"


@pytest.fixture
async def sims() -> AsyncIterator[Simulators]:
    # prices pushed every 0.2 s, so a short age limit only trips on a stalled pair
    simulators = await start_simulators(ping_interval=1.0, price_interval=0.2)
    try:
        yield simulators
    finally:
        await simulators.stop()


class Api:
    """The service's HTTP API in process, and the simulators' control routes."""

    def __init__(self, app: FastAPI, sims: Simulators, http: aiohttp.ClientSession) -> None:
        self.app = app
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service"
        )
        self.sims = sims
        self.http = http

    @property
    def runtime(self) -> Services:
        runtime: Services = self.app.state.services
        return runtime

    async def get(self, path: str, **params: str) -> Any:
        response = await self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def control(self, venue: str, method: str, path: str, body: Any) -> Any:
        url = self.sims[venue].base_url + path
        async with self.http.request(method, url, json=body) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def prices(self) -> dict[str, str]:
        """Every known price by pair, as ``/v1/prices`` lists it."""
        return {p["pair"]: p["price"] for p in (await self.get("/v1/prices"))["prices"]}

    async def totals(self, quote: str = "USD") -> dict[str, Any]:
        doc: dict[str, Any] = await self.get("/v1/totals", quote=quote)
        return doc

    async def total(self, symbol: str, quote: str = "USD") -> dict[str, Any]:
        """The symbol's row; a row with nothing known while the balance is not loaded yet."""
        rows = {t["symbol"]: t for t in (await self.totals(quote))["totals"]}
        empty = {"value": None, "price": None, "price_age_s": None, "reason": None}
        return dict(rows.get(symbol, empty))


@contextlib.asynccontextmanager
async def service(
    settings: Settings, accounts: list[AccountConfig], sims: Simulators
) -> AsyncIterator[Api]:
    app = create_app(settings, accounts)
    async with app.router.lifespan_context(app), aiohttp.ClientSession() as http:
        api = Api(app, sims, http)
        try:
            yield api
        finally:
            await api.client.aclose()


REJECT_REASONS = ("parse", "schema", "amount")
"""The reasons a frame that cannot be read whole is counted under."""


def rejected(rt: Services, name: str, labels: dict[str, str]) -> float:
    """Frames counted in ``name`` under ``labels`` for any of :data:`REJECT_REASONS`."""
    return sum(metric(rt, name, {**labels, "reason": r}) for r in REJECT_REASONS)


async def live_and_priced(
    api: Api, accounts: list[AccountConfig], sources: set[str], timeout: float
) -> dict[str, int]:
    """Every account live and a price from each of ``sources``; each runner's reconnects
    so far (counted when a connection ends, attempts only when the next one is made)."""
    for account in accounts:
        await go_live(api.runtime, api.sims, account)

    async def priced() -> bool:
        listed = {p["source"] for p in (await api.get("/v1/prices"))["prices"]}
        return sources <= listed

    assert await wait_until(priced, timeout)
    runners = supervisor_of(api.runtime).runners
    return {a.id: runners[a.id].reconnects for a in accounts}


async def assert_untouched(
    api: Api, accounts: list[AccountConfig], reconnects: dict[str, int]
) -> None:
    """The account sockets and states never noticed: no reconnect, live, state exact."""
    runners = supervisor_of(api.runtime).runners
    for account in accounts:
        runner = runners[account.id]
        assert runner.reconnects == reconnects[account.id], (account.id, runner.last_error)
        assert str(runner.state) == "live"
        ours, truth = await converge(api.runtime, api.sims, account.venue, account.id)
        assert ours == truth


def big_bitopro(sims: Simulators) -> AccountConfig:
    key = sims.bitopro.add_account_json(
        {
            "api_key": "sim-bitopro-big",
            "api_secret": "sim-bitopro-big-secret",
            "email": "big@bitopro.sim.invalid",
            "balances": {"BTC": BIG, "TWD": "1000"},
        }
    )
    return account_for(sims, "bitopro", "bitopro-big", key=key)


async def test_exact_value_through_twd_with_the_peg_as_an_assumption(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    account = big_bitopro(sims)
    async with service(fast_settings(redis_url, key_prefix), [account], sims) as api:
        await api.control("bitopro", "PUT", "/_sim/prices/BTC_TWD", {"price": BTC_TWD})
        await api.control("bitopro", "PUT", "/_sim/prices/USDT_TWD", {"price": USDT_TWD})

        async def priced() -> bool:
            row = await api.total("BTC")
            return row["value"] is not None and row["price_age_s"] is not None

        assert await wait_until(priced, 15)
        doc = await api.totals("usd")  # the quote is case-insensitive
        rows = {t["symbol"]: t for t in doc["totals"]}
        btc = rows["BTC"]
        # docs/valuation.md: num = amount * 3012345.12345678 (exact), / 31.12345678 in 50
        # digits half-even, quantized to 8 places half-even
        assert btc["value"] == "96786971471386154.94014147" == btc["usd"]
        assert btc["path"] == "bitopro:BTC_TWD / bitopro:USDT_TWD * peg:USDT=USD"
        assert btc["price_source"] == "bitopro+peg" and btc["reason"] is None
        assert rows["TWD"]["path"] == "1 / bitopro:USDT_TWD * peg:USDT=USD"
        assert doc["quote"] == "USD" and doc["assumptions"] == ["peg:USDT=USD"]
        assert doc["coverage"]["by_count"] == "1" and doc["coverage"]["by_value"] == "1"
        assert doc["unpriced"] == []

        in_twd = await api.get("/v1/balances/bitopro-big", quote="twd", asset="BTC")
        (record,) = in_twd["balances"]
        assert in_twd["quote"] == "TWD" and record["total"] == BIG
        assert record["value"] == "3012345123456779999.96987655"
        assert record["price"] == BTC_TWD and record["path"] == "bitopro:BTC_TWD"
        assert record["value_reason"] is None and record["stale"] is False

        # in TWD, value is in TWD; usd keeps its meaning: the value in USD
        twd = {t["symbol"]: t for t in (await api.totals("twd"))["totals"]}
        assert twd["BTC"]["value"] == "3012345123456779999.96987655"
        assert twd["BTC"]["usd"] == btc["value"] and twd["TWD"]["value"] == "1000"
        assert twd["TWD"]["usd"] == rows["TWD"]["value"] is not None

        unknown = await api.client.get("/v1/totals", params={"quote": "EUR"})
        assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_quote"

        listed = {p["pair"]: p for p in (await api.get("/v1/prices"))["prices"]}
        assert listed["BTC_TWD"]["price"] == BTC_TWD and listed["BTC_TWD"]["stale"] is False
        assert "peg:USDT=USD" in (await api.get("/v1/prices"))["assumptions"]

        rt = api.runtime
        labels = {"account": "bitopro-big", "quote": "USD"}
        assert metric(rt, "balagg_value", labels) > 9.6e16  # the float exposition of it
        assert metric(rt, "balagg_value_coverage", {"quote": "USD"}) == 1
        btc_labels = {"base": "BTC", "quote": "TWD", "source": "bitopro"}
        assert metric(rt, "balagg_price", btc_labels) == Decimal(BTC_TWD)
        assert metric(rt, "balagg_prices_stale", {"source": "bitopro"}) == 0


async def test_a_stalled_feed_goes_stale_and_comes_back(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    account = big_bitopro(sims)
    settings = fast_settings(redis_url, key_prefix, price_max_age=1.5)
    async with service(settings, [account], sims) as api:

        async def valued() -> bool:
            return (await api.total("BTC"))["value"] is not None

        assert await wait_until(valued, 15)
        await api.control("bitopro", "POST", "/_sim/prices/stall", {"pairs": ["BTC_TWD"]})

        async def stale() -> bool:
            reason: str | None = (await api.total("BTC"))["reason"]
            return reason == "stale_price"

        assert await wait_until(stale, 10)
        doc = await api.totals()
        btc = {t["symbol"]: t for t in doc["totals"]}["BTC"]
        assert btc["value"] is None and btc["usd"] is None  # never 0, never silently old
        assert btc["path"].startswith("bitopro:BTC_TWD") and btc["price_age_s"] > 1.5
        assert {"symbol": "BTC", "reason": "stale_price"} in doc["unpriced"]
        assert {t["symbol"]: t for t in doc["totals"]}["TWD"]["value"] is not None
        stalled = {p["pair"]: p for p in (await api.get("/v1/prices"))["prices"]}["BTC_TWD"]
        assert stalled["stale"] is True
        (record,) = (await api.get("/v1/balances", quote="USD", asset="BTC"))["balances"]
        assert record["value"] is None and record["value_reason"] == "stale_price"
        assert record["stale"] is False  # the balance itself is live: only its price is not
        assert metric(api.runtime, "balagg_prices_stale", {"source": "bitopro"}) == 1
        assert metric(api.runtime, "balagg_value_coverage", {"quote": "USD"}) < 1

        await api.control(
            "bitopro", "POST", "/_sim/prices/stall", {"stall": False, "pairs": ["BTC_TWD"]}
        )
        assert await wait_until(valued, 10)


async def test_a_restart_serves_the_last_prices_as_stale_until_the_feed_answers(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    account = big_bitopro(sims)
    settings = fast_settings(redis_url, key_prefix)
    async with service(settings, [account], sims) as api:
        await api.control("bitopro", "PUT", "/_sim/prices/BTC_TWD", {"price": BTC_TWD})

        async def has_price() -> bool:
            listed = {p["pair"]: p for p in (await api.get("/v1/prices"))["prices"]}
            btc = await api.total("BTC")
            return listed.get("BTC_TWD", {}).get("price") == BTC_TWD and btc["value"] is not None

        assert await wait_until(has_price, 15)
        await api.runtime.writer.drain(2)
        # the feed goes silent, then the service goes away; it stays silent while the
        # service comes back
        await api.control("bitopro", "POST", "/_sim/prices/stall", {})
    async with service(settings, [account], sims) as api:
        listed = {p["pair"]: p for p in (await api.get("/v1/prices"))["prices"]}
        assert listed["BTC_TWD"]["price"] == BTC_TWD
        assert listed["BTC_TWD"]["stale"] is True and listed["BTC_TWD"]["restored"] is True
        btc = await api.total("BTC")
        assert btc["value"] is None and btc["reason"] == "stale_price"
        assert btc["path"] == "bitopro:BTC_TWD / bitopro:USDT_TWD * peg:USDT=USD"

        await api.control("bitopro", "POST", "/_sim/prices/stall", {"stall": False})

        async def confirmed() -> bool:
            return (await api.total("BTC"))["value"] is not None

        assert await wait_until(confirmed, 15)
        listed = {p["pair"]: p for p in (await api.get("/v1/prices"))["prices"]}
        assert listed["BTC_TWD"]["restored"] is False and listed["BTC_TWD"]["stale"] is False


async def test_bad_ticker_frames_are_rejected_whole_and_counted(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    accounts = [account_for(sims, "bitopro"), account_for(sims, "sfox")]
    async with service(fast_settings(redis_url, key_prefix), accounts, sims) as api:
        rt = api.runtime
        reconnects = await live_and_priced(api, accounts, {"bitopro", "sfox"}, 15)
        runners = supervisor_of(rt).runners
        before = await api.prices()
        kinds = ("bad_json", "wrong_types", "negative", "non_numeric", "zero")
        # every kind but bad_json is a readable ticker envelope with a bad price in it; a
        # frame that is not JSON at all is tried on sFOX below
        sfox_kinds = kinds[1:]
        for kind in kinds:
            body = {"kind": kind, "pair": "BTC_TWD"}
            assert (await api.control("bitopro", "POST", "/_sim/prices/malformed", body))["frames"]
        for kind in sfox_kinds:
            body = {"kind": kind, "pair": "btcusd"}
            assert (await api.control("sfox", "POST", "/_sim/prices/malformed", body))["frames"]

        def feed_errors() -> float:
            return rejected(rt, "balagg_price_feed_errors_total", {"feed": "bitopro-tickers"})

        def sfox_errors() -> float:
            labels = {"account": "sfox-main", "venue": "sfox"}
            return rejected(rt, "balagg_upstream_errors_total", labels)

        async def counted() -> bool:
            return feed_errors() == len(kinds) and sfox_errors() == len(sfox_kinds)

        assert await wait_until(counted, 10), (feed_errors(), sfox_errors())
        after = await api.prices()
        assert after["BTC_TWD"] == before["BTC_TWD"] and after["btcusd"] == before["btcusd"]

        # good tickers after the bad ones: the next sFOX frame would show a sequence gap
        await api.control("bitopro", "PUT", "/_sim/prices/BTC_TWD", {"price": "3012399.5"})
        await api.control("sfox", "PUT", "/_sim/prices/btcusd", {"price": "96999.5"})

        async def good_ones_read() -> bool:
            now = await api.prices()
            return now["BTC_TWD"] == "3012399.5" and now["btcusd"] == "96999.5"

        assert await wait_until(good_ones_read, 10)
        await assert_untouched(api, accounts, reconnects)

        # sFOX: a frame that is not JSON has no readable sequence number or recipient, so
        # nothing tells a broken ticker from a lost balance frame; the next frame shows
        # the gap and the account is re-seeded (docs/valuation.md), never left unsure
        sfox = runners["sfox-main"]
        body = {"kind": "bad_json", "pair": "btcusd"}
        assert (await api.control("sfox", "POST", "/_sim/prices/malformed", body))["frames"]
        await api.control("sfox", "PUT", "/_sim/prices/btcusd", {"price": "97000.25"})

        async def resynced() -> bool:
            return sfox.reconnects == reconnects["sfox-main"] + 1 and str(sfox.state) == "live"

        assert await wait_until(resynced, 15), (sfox.reconnects, sfox.last_error)
        gaps = {"account": "sfox-main", "venue": "sfox", "reason": "sequence_gap"}
        assert metric(rt, "balagg_upstream_reconnects_total", gaps) == 1
        assert sfox_errors() == len(kinds)
        ours, truth = await converge(rt, sims, "sfox", "sfox-main")
        assert ours == truth


async def test_one_ticker_socket_for_every_bitopro_account_and_prices_on_account_sockets(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    second = sims.bitopro.add_account_json(
        {
            "api_key": "sim-bitopro-key-2",
            "api_secret": "sim-bitopro-secret-2",
            "email": "second@bitopro.sim.invalid",
            "balances": {"ETH": "3", "BITO": "100"},
        }
    )
    accounts = [
        *all_default_accounts(sims),
        account_for(sims, "bitopro", "bitopro-2", key=second),
    ]
    async with service(fast_settings(redis_url, key_prefix), accounts, sims) as api:
        rt = api.runtime
        for account in accounts:
            await go_live(rt, sims, account)

        async def every_source() -> bool:
            sources = {p["source"] for p in (await api.get("/v1/prices"))["prices"]}
            return sources == {"bitopro", "sfox", "deltadefi", "solanatracker"}

        assert await wait_until(every_source, 20)

        async def both_accounts_priced() -> bool:
            doc = await api.totals()
            rows = {t["symbol"]: t for t in doc["totals"]}
            return all(rows[s]["value"] is not None for s in ("BITO", "ETH", "BTC"))

        assert await wait_until(both_accounts_priced, 15)
        counts = sims.bitopro.price_feed.socket_counts()
        assert (counts.open, counts.total) == (1, 1)  # one public socket serves both
        for venue in ("sfox", "solanatracker"):
            sim = sims[venue]
            conns = sim.connection_counts(sims.default_keys[venue])
            assert (conns.open, conns.total) == (1, 1)  # prices ride the account socket
            assert sim.price_feed.socket_counts().total == 0
        sources = {p["source"] for p in (await api.get("/v1/prices"))["prices"]}
        assert sources == {"bitopro", "sfox", "deltadefi", "solanatracker"}


async def test_prices_follow_what_another_replica_stored(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    """A replica without the feeds values with the prices the owner's feeds stored."""
    account = big_bitopro(sims)
    owner = fast_settings(redis_url, key_prefix, instance_id="owner", price_refresh=0.2)
    other = fast_settings(redis_url, key_prefix, instance_id="other", price_refresh=0.2)
    async with service(owner, [account], sims) as first:

        async def valued_by_owner() -> bool:
            return (await first.total("BTC"))["value"] is not None

        assert await wait_until(valued_by_owner, 15)
        async with service(other, [account], sims) as second:
            await second.control("bitopro", "PUT", "/_sim/prices/BTC_TWD", {"price": BTC_TWD})

            async def followed() -> bool:
                listed = {p["pair"]: p for p in (await second.get("/v1/prices"))["prices"]}
                quote = listed.get("BTC_TWD")
                return quote is not None and quote["price"] == BTC_TWD and not quote["stale"]

            assert await wait_until(followed, 15)
            # it owns no account and runs no price socket: the prices came through Redis
            assert not supervisor_of(second.runtime).runners and not second.runtime.prices.feeds
