"""The dashboard's valuation against the real service and the real simulators' price feeds.

The simulators speak each venue's protocol over real sockets; the service values their
balances with the venues' own price streams and serves the page on a free port. The test
compares what the page shows with what ``/v1/totals`` answers at the same moment, exactly,
then stalls the price feed through the simulator's control route (``/_sim/prices/stall``)
with a short ``BALAGG_PRICE_MAX_AGE``: the page must show the stale prices as stale, with
their reason, and recover once the feed resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from fastapi import FastAPI

from app.accounts import AccountConfig
from app.service import create_app
from app.settings import Settings
from app.simulators.runner import Simulators, start_simulators
from tests.browser.cdp import Page
from tests.browser.test_dashboard import browser_page, chromium, expect, screenshot_path
from tests.integration.conftest import account_for, fast_settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
_ = chromium  # the fixture, re-exported for this module


@pytest.fixture
async def sims() -> AsyncIterator[Simulators]:
    # prices re-sent every 0.2 s, so a short age limit trips only on a stalled feed
    simulators = await start_simulators(ping_interval=1.0, price_interval=0.2)
    try:
        yield simulators
    finally:
        await simulators.stop()


@contextlib.asynccontextmanager
async def serve(settings: Settings, accounts: list[AccountConfig]) -> AsyncIterator[str]:
    """The whole service (supervisor, price feeds, API, page) on a free port; its base URL."""
    app: FastAPI = create_app(settings, accounts)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, log_level="warning",
        access_log=False, lifespan="on", ws="auto", timeout_graceful_shutdown=10,
    )  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert not serving.done(), "the service failed to start"
            assert time.monotonic() < deadline, "the service did not start in time"
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


# What the page shows, as exact strings from its data attributes and visible text.
PAGE_VALUATION = """(() => {
  const cov = document.querySelector('#coverage');
  const unpriced = {};
  for (const li of document.querySelectorAll('#unpriced li')) {
    unpriced[li.dataset.unpriced] = [li.dataset.reason, li.textContent];
  }
  const prices = {};
  for (const td of document.querySelectorAll('td[data-total-cell$="|price"]')) {
    const symbol = td.dataset.totalCell.split('|')[0];
    prices[symbol] = {value: td.dataset.value ?? null, source: td.dataset.source ?? null,
                      age: td.dataset.age ?? null, stale: td.dataset.stale ?? null,
                      text: td.innerText};
  }
  return {
    quote: document.querySelector('#value-quote').textContent,
    headline: document.querySelector('#value').dataset.value ?? null,
    text: cov.textContent,
    by_count: cov.dataset.byCount ?? null, by_value: cov.dataset.byValue ?? null,
    priced: cov.dataset.priced ?? null, holdings: cov.dataset.holdings ?? null,
    unpriced_visible: !document.querySelector('#unpriced-box').hidden,
    unpriced, prices,
  };
})()"""


def percent(share: str) -> str:
    """``"0.1071"`` -> ``"10.71"``, ``"1"`` -> ``"100"``: the exact percentage, no padding."""
    text = f"{Decimal(share) * 100:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def agrees(page: dict[str, Any], rest: dict[str, Any]) -> list[str]:
    """Every way the page differs from the REST valuation (empty when it shows the same)."""
    out: list[str] = []
    if page["quote"] != rest["quote"]:
        out.append(f"quote {page['quote']} != {rest['quote']}")
    if not page["headline"] or Decimal(page["headline"]) != Decimal(rest["value"]):
        out.append(f"headline {page['headline']} != {rest['value']}")
    cov = rest["coverage"]
    if page["by_count"] != cov["by_count"] or page["by_value"] != (cov["by_value"] or ""):
        out.append(f"coverage {page['by_count']}/{page['by_value']} != {cov}")
    if (page["priced"], page["holdings"]) != (str(cov["priced"]), str(cov["holdings"])):
        out.append(f"counts {page['priced']}/{page['holdings']} != {cov}")
    if cov["by_value"] is not None and f"{percent(cov['by_value'])}% of value" not in page["text"]:
        out.append(f"coverage text {page['text']!r} does not show {cov['by_value']}")
    wanted = {u["symbol"]: u["reason"] for u in rest["unpriced"]}
    shown = {s: r for s, (r, _text) in page["unpriced"].items()}
    if shown != wanted:
        out.append(f"unpriced {shown} != {wanted}")
    if bool(wanted) != page["unpriced_visible"]:
        out.append("unpriced list visibility")
    for row in rest["totals"]:
        cell = page["prices"].get(row["symbol"])
        if cell is None or row["price"] is None:
            continue
        if Decimal(cell["value"] or "NaN") != Decimal(row["price"]):
            out.append(f"{row['symbol']} price {cell['value']} != {row['price']}")
        if cell["source"] != (row["price_source"] or ""):
            out.append(f"{row['symbol']} source {cell['source']} != {row['price_source']}")
        if cell["stale"] != ("true" if row["reason"] == "stale_price" else "false"):
            out.append(f"{row['symbol']} stale {cell['stale']} but reason {row['reason']}")
    return out


async def page_matches_rest(
    page: Page, http: aiohttp.ClientSession, url: str, timeout: float = 15.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Poll until the page shows exactly what REST answers; return both."""
    deadline = time.monotonic() + timeout
    while True:
        rest = await get_json(http, url)
        seen = await page.evaluate(PAGE_VALUATION)
        problems = agrees(seen, rest)
        if not problems:
            return seen, rest
        assert time.monotonic() < deadline, problems
        await asyncio.sleep(0.1)


async def test_headline_coverage_and_stale_prices_follow_the_service(
    chromium: str, sims: Simulators, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    settings = fast_settings(redis_url, key_prefix, price_max_age=1.5)
    account = account_for(sims, "bitopro")
    control = sims.bitopro.base_url + "/_sim/prices/stall"
    async with (
        serve(settings, [account]) as base,
        aiohttp.ClientSession() as http,
        browser_page(chromium, tmp_path, 1400, 1000) as page,
    ):
        totals = base + "/v1/totals?quote=USD"
        deadline = time.monotonic() + 20
        while True:  # the service has valued what the simulator holds
            doc = await get_json(http, totals)
            rows = {t["symbol"]: t for t in doc["totals"]}
            if "BTC" in rows and rows["BTC"]["value"] is not None:
                break
            assert time.monotonic() < deadline, doc
            await asyncio.sleep(0.2)

        await page.goto(base + "/")
        await expect(page, "document.querySelector('#conn').dataset.conn", "connected")
        seen, rest = await page_matches_rest(page, http, totals)
        btc = next(t for t in rest["totals"] if t["symbol"] == "BTC")
        assert btc["value"] is not None and seen["prices"]["BTC"]["age"] != ""
        assert btc["price_source"] in seen["prices"]["BTC"]["text"]  # shown, not a tooltip

        # the feed goes silent while the socket stays up: prices age past 1.5 s
        async with http.post(control, json={"stall": True}) as resp:
            assert resp.status == 200, await resp.text()
        deadline = time.monotonic() + 15
        while True:
            doc = await get_json(http, totals)
            if any(u["reason"] == "stale_price" for u in doc["unpriced"]):
                break
            assert time.monotonic() < deadline, doc
            await asyncio.sleep(0.2)
        seen, rest = await page_matches_rest(page, http, totals)
        stale = [u["symbol"] for u in rest["unpriced"] if u["reason"] == "stale_price"]
        assert stale
        for symbol in stale:
            reason, text = seen["unpriced"][symbol]
            assert reason == "stale_price" and "price is stale" in text, text
            if symbol in seen["prices"]:
                assert seen["prices"][symbol]["stale"] == "true"
                assert "STALE PRICE" in seen["prices"][symbol]["text"].upper()
        print(f"screenshot: {await page.screenshot(screenshot_path(tmp_path, 'stale-price.png'))}")

        # the feed answers again: the page says so without a reload
        await page.evaluate("window.__samePage = true")
        async with http.post(control, json={"stall": False}) as resp:
            assert resp.status == 200, await resp.text()
        deadline = time.monotonic() + 15
        while True:
            doc = await get_json(http, totals)
            if not any(u["reason"] == "stale_price" for u in doc["unpriced"]):
                break
            assert time.monotonic() < deadline, doc
            await asyncio.sleep(0.2)
        seen, rest = await page_matches_rest(page, http, totals)
        assert not any(p["stale"] == "true" for p in seen["prices"].values()), seen["prices"]

        # in TWD, the service's own figures again
        await page.evaluate(
            """(() => { const s = document.querySelector('#quote'); s.value = 'TWD';
                        s.dispatchEvent(new Event('change')); })()"""
        )
        seen, rest = await page_matches_rest(page, http, base + "/v1/totals?quote=TWD")
        assert seen["quote"] == "TWD" and Decimal(rest["value"]) > 0
        assert await page.evaluate("window.__samePage") is True
        print(f"screenshot: {await page.screenshot(screenshot_path(tmp_path, 'valuation.png'))}")
