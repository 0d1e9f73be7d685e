"""The dashboard's overview, tables and events in headless Chromium at 1400 px and 400 px.

The service runs in the test's loop and serves accounts another (simulated) instance
owns, as in ``test_dashboard``; the test writes their balances, statuses and events with
:class:`BalanceWriter`, and compares what the page shows with what the REST API answers,
as exact decimals. Screenshots of both widths go to ``$BALAGG_ARTIFACTS`` (or pytest's
tmp dir).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app import mints
from app.domain import AccountState, AssetBalance, Venue
from tests.browser.cdp import Page
from tests.browser.test_dashboard import (
    MINT,
    WALLET,
    bal,
    browser_page,
    cell,
    chromium,
    expect,
    query,
    running_service,
    screenshot_path,
    status,
    total_cell,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
_ = chromium  # the fixture, re-exported for this module

BIG_ADA = "1005153193511.66927422"
MINT_LEARNT = "Bonk111111111111111111111111111111111111111"
MINT_FROM = "Trump11111111111111111111111111111111111111"
MINT_TO = mints.USDC
ORDER_ID = "550e8400-e29b-41d4-a716-446655440000"
PRICES = {"ADA": Decimal("0.5"), "BTC": Decimal("97000")}


def mint_bal(asset: str, total: str, symbol: str) -> AssetBalance:
    return AssetBalance.from_total_available(
        WALLET, asset, Decimal(total), Decimal(total), symbol=symbol
    )


SLICES = """((id) => [...document.querySelectorAll(`#${id} rect[data-slice]`)]
    .map((r) => [r.dataset.slice, r.dataset.value]))"""


async def slices(page: Page, picture: str) -> dict[str, Decimal]:
    pairs = await page.evaluate(f"{SLICES}({json.dumps(picture)})")
    return {key: Decimal(value) for key, value in pairs}


async def rest_totals(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(base + "/v1/totals?quote=USD") as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def no_horizontal_scroll(page: Page) -> list[str]:
    """Every scroller inside an account card, and the page, that scrolls sideways."""
    found: list[str] = await page.evaluate(
        """(() => {
          const out = [];
          for (const s of document.querySelectorAll('.account .scroll')) {
            if (s.scrollWidth > s.clientWidth) {
              const id = s.closest('.account').dataset.account;
              out.push(`${id}: ${s.scrollWidth}>${s.clientWidth}`);
            }
          }
          const doc = document.documentElement;
          if (doc.scrollWidth > doc.clientWidth) {
            out.push(`page: ${doc.scrollWidth}>${doc.clientWidth}`);
          }
          return out;
        })()"""
    )
    return found


async def test_overview_tables_and_events(
    chromium: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with running_service(
        redis_url, key_prefix, tmp_path / "data", static_prices=PRICES
    ) as svc:
        w = svc.writer
        w.submit_status("dash-a", status("dash-a", Venue.BITOPRO, AccountState.LIVE))
        w.submit_snapshot(
            "dash-a", "bitopro", "", [bal("ADA", BIG_ADA, "1005153193500"), bal("BTC", "0.5")]
        )
        w.submit_status("dash-b", status("dash-b", Venue.SFOX, AccountState.LIVE))
        w.submit_update(
            "dash-b", "sfox", [bal("BTC", "0.25"), bal("USDC", "1000.5"), bal("XYZ", "12")]
        )
        w.submit_status("dash-c", status("dash-c", Venue.SOLANATRACKER, AccountState.LIVE))
        w.submit_update(
            "dash-c",
            "solanatracker",
            [mint_bal(MINT, "3", ""), mint_bal(MINT_LEARNT, "7", "BONK")],
        )
        await svc.flush()

        async with browser_page(chromium, tmp_path, 1400, 1000) as page:
            await page.goto(svc.base + "/")
            await expect(page, "document.querySelector('#conn').dataset.conn", "connected")
            await expect(page, cell("dash-a", "", "ADA", "total"), "1,005,153,193,511.66927422")
            # the mint loses its symbol (as after a reconnect): the known one stays shown
            w.submit_update("dash-c", "solanatracker", [mint_bal(MINT_LEARNT, "7", "")])
            await svc.flush()
            await expect(page, cell("dash-c", WALLET, MINT_LEARNT, "symbol"), "BONK")
            # a mint never given a symbol is named by its shortened address
            assert await page.evaluate(cell("dash-c", WALLET, MINT, "symbol")) == "Xss1…1111"

            # the headline is the REST valuation, exactly; so is each picture's sum
            doc = await rest_totals(svc.base)
            want = sum(
                (Decimal(t["usd"]) for t in doc["totals"] if t["usd"] is not None), Decimal(0)
            )
            assert want == Decimal(BIG_ADA) * PRICES["ADA"] + Decimal("0.75") * 97000 + Decimal(
                "1000.5"
            )
            await expect(page, "document.querySelector('#value').dataset.value", str(want))
            by_asset = await slices(page, "alloc-symbol")
            assert sum(by_asset.values()) == want
            assert by_asset == {
                t["symbol"]: Decimal(t["usd"])
                for t in doc["totals"]
                if t["usd"] is not None and Decimal(t["usd"]) != 0
            }
            # hovering a slice (or its legend entry) tells its value exactly, every digit
            hover = await page.evaluate(
                """[document.querySelector('#alloc-symbol rect[data-slice="ADA"] title')
                      .textContent,
                    document.querySelector('#alloc-symbol [data-legend="ADA"]').title]"""
            )
            exact_ada = f"{by_asset['ADA']:,f} USD"
            assert exact_ada == "502,576,596,755.83463711 USD"
            assert all(text.startswith(f"ADA: {exact_ada} (") for text in hover), hover
            by_account = await slices(page, "alloc-account")
            assert sum(by_account.values()) == want
            assert by_account["dash-a"] == Decimal(BIG_ADA) * PRICES["ADA"] + 48500
            assert by_account["dash-b"] == Decimal("24250") + Decimal("1000.5")
            # the unpriced assets are in plain view, with the reason
            await expect(
                page,
                "[...document.querySelectorAll('#unpriced li')].map(li => li.textContent).join()",
                "BONK: no price,XYZ: no price,Xss1…1111: no price",
            )
            assert await page.evaluate("document.querySelector('#unpriced-box').hidden") is False

            # tables: every column visible at 1400 px, amounts grouped and aligned on the point
            assert await no_horizontal_scroll(page) == []
            ints = await page.evaluate(
                f"""[...{query("data-account", "dash-a")}
                    .querySelectorAll('td[data-cell$="|total"] .int')]
                    .map(e => Math.round(e.getBoundingClientRect().right))"""
            )
            assert len(ints) == 2 and len(set(ints)) == 1, ints
            exact = query("data-cell", "dash-a||ADA|total")
            assert await page.evaluate(f"{exact}.dataset.value") == BIG_ADA

            # events read as sentences; the raw JSON is one click away
            order = {
                "id": ORDER_ID,
                "status": "closed",
                "side": "buy",
                "symbol": "BTC-USD",
                "base_qty": "0.5",
                "executed_base_qty": "0.5",
                "executed_price": "97000",
            }
            swap = {
                "tx": "5xTx",
                "mint": MINT_FROM,
                "wallet": WALLET,
                "type": "sell",
                "from": {"address": MINT_FROM, "symbol": "TRUMP", "amount": "90"},
                "to": {"address": MINT_TO, "symbol": "USDC", "amount": "540.22"},
            }
            w.submit_event("dash-b", "order", order)
            w.submit_event("dash-c", "swap", swap)
            await svc.flush()
            sentence = "document.querySelector('#events [data-kind={}] .ev-text')?.textContent"
            await expect(
                page, sentence.format("order"), "dash-b: buy order 550e… filled 0.5 BTC @ 97,000"
            )
            await expect(page, sentence.format("swap"), "dash-c: swap 90 TRUMP → 540.22 USDC")
            raw = await page.evaluate(
                "document.querySelector('#events [data-kind=order] details pre').textContent"
            )
            assert json.loads(raw) == order

            # an account goes stale: marked on the card and its rows, with the age
            w.submit_status(
                "dash-c",
                status(
                    "dash-c",
                    Venue.SOLANATRACKER,
                    AccountState.STALE,
                    reconnects=1,
                    last_error="ping timeout",
                ),
            )
            await svc.flush()
            card = query("data-account", "dash-c")
            await expect(page, f"{card}.dataset.state", "stale")
            await page.wait_for(f"/^\\d+$/.test({card}.dataset.staleFor)")
            note = await page.evaluate(f"{card}.querySelector('[data-stale-note]').textContent")
            assert re.fullmatch(r"⚠ Not confirmed for \d+ (s|min): last known balances", note), note
            row = query("data-row", f"dash-c|{WALLET}|{MINT}")
            assert await page.evaluate(f"{row}.dataset.stale") == "true"
            assert await page.evaluate(f"{row}.querySelector('.tag').textContent") == "stale"
            assert re.fullmatch(
                r"\d+ (s|min)", await page.evaluate(f"{row}.querySelector('.age').textContent")
            )
            await expect(
                page,
                sentence.format("status"),
                "dash-c: connection lost, now stale (ping timeout): showing last known balances",
            )
            w.submit_status(
                "dash-c", status("dash-c", Venue.SOLANATRACKER, AccountState.LIVE, reconnects=1)
            )
            await svc.flush()
            await expect(page, f"{card}.dataset.state", "live")
            back = await page.evaluate(sentence.format("status"))
            assert re.fullmatch(r"dash-c: reconnected after \d+ s \(ping timeout\)", back), back

            # a change updates the headline, the pictures and the table together
            w.submit_update("dash-b", "sfox", [bal("USDC", "2000.5")])
            await svc.flush()
            want += 1000
            await expect(page, "document.querySelector('#value').dataset.value", str(want), 1.0)
            assert (await slices(page, "alloc-symbol"))["USDC"] == Decimal("2000.5")
            assert sum((await slices(page, "alloc-account")).values()) == want
            assert await page.evaluate(total_cell("USDC", "total")) == "2,000.5"

            # a slice filters the tables, from the keyboard too; Escape shows all again
            await page.evaluate(
                """document.querySelector('#alloc-symbol button[data-legend="BTC"]').focus()"""
            )
            for kind in ("keyDown", "keyUp"):
                await page.send(
                    "Input.dispatchKeyEvent",
                    {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
                     "text": "\r" if kind == "keyDown" else ""},
                )  # fmt: skip
            await expect(page, f"{card}.hidden", True)
            assert await page.evaluate(f"{query('data-account', 'dash-a')}.hidden") is False
            assert await page.evaluate(f"{query('data-row', 'dash-a||ADA')}.hidden") is True
            assert await page.evaluate(f"{query('data-total', 'USDC')}.hidden") is True
            assert await page.evaluate("document.querySelector('#filter-bar').hidden") is False
            await page.send(
                "Input.dispatchKeyEvent",
                {"type": "keyDown", "key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27},
            )
            await expect(page, f"{card}.hidden", False)
            assert await page.evaluate(f"{query('data-total', 'USDC')}.hidden") is False

            # a quote this service does not offer is said so, never shown as a number
            await page.evaluate(
                "const q = document.querySelector('#quote'); q.value = 'TWD';"
                "q.dispatchEvent(new Event('change'))"
            )
            await expect(page, "document.querySelector('#value').textContent", "—")
            await expect(
                page,
                "document.querySelector('#coverage').textContent",
                "TWD valuation is not offered by this service.",
            )
            await page.evaluate(
                "const q2 = document.querySelector('#quote'); q2.value = 'USD';"
                "q2.dispatchEvent(new Event('change'))"
            )
            await expect(page, "document.querySelector('#value').dataset.value", str(want))
            shot = await page.screenshot(screenshot_path(tmp_path, "overview-1400.png"))
            print(f"screenshot: {shot}")

            # 400 px wide, dark: nothing scrolls sideways, the figures are the same
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": 400, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            )
            await page.send(
                "Emulation.setEmulatedMedia",
                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
            )
            await page.wait_for("document.documentElement.clientWidth === 400")
            assert await no_horizontal_scroll(page) == []
            assert sum((await slices(page, "alloc-symbol")).values()) == want
            # a price and its source read as two words, not "0.5static"
            crowded = await page.evaluate(
                """[...document.querySelectorAll('#totals td .price-meta')].filter((meta) => {
                     const num = meta.parentElement.querySelector('.price-num')
                       .getBoundingClientRect();
                     const m = meta.getBoundingClientRect();
                     return m.top < num.bottom && m.left - num.right < 4;
                   }).map((meta) => meta.parentElement.textContent)"""
            )
            assert crowded == [], crowded
            background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(15, 18, 22)", background
            shot = await page.screenshot(screenshot_path(tmp_path, "overview-400.png"))
            print(f"screenshot: {shot}")


async def test_value_over_time_only_with_a_history_api_and_with_its_gaps(
    chromium: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with running_service(redis_url, key_prefix, tmp_path / "data", history=False) as svc:
        svc.writer.submit_status("dash-b", status("dash-b", Venue.SFOX, AccountState.LIVE))
        svc.writer.submit_update("dash-b", "sfox", [bal("USDC", "10")])
        await svc.flush()
        async with browser_page(chromium, tmp_path, 1400, 1000) as page:
            # history is off, so its routes answer 503: once the page has its answer, the
            # section stays hidden (nothing is drawn without data)
            await page.goto(svc.base + "/")
            await expect(page, "document.querySelector('#value').dataset.value", "10")
            await expect(page, "document.querySelector('#history').dataset.loaded", "true")
            assert await page.evaluate("document.querySelector('#history').hidden") is True

            # the history contract with exact control over nulls and gaps, served by a
            # stand-in route (test_history_view draws a real gap from the real route):
            # a null and a listed gap both break the line
            points = [
                {"t": 1000, "value": "1", "coverage": "1"},
                {"t": 1060, "value": "2", "coverage": "1"},
                {"t": 1120, "value": None, "coverage": "0"},
                {"t": 1180, "value": "3", "coverage": "1"},
                {"t": 1240, "value": "4", "coverage": "1"},
                {"t": 1300, "value": "5", "coverage": "1"},
            ]

            @svc.app.get("/v1/history/value")
            async def history_value() -> dict[str, Any]:
                return {"points": points, "gaps": [{"from": 1250, "to": 1290}]}

            # the stand-in answers before the service's own route of the same path
            svc.app.router.routes.insert(0, svc.app.router.routes.pop())

            await page.goto(svc.base + "/")
            await expect(page, "document.querySelector('#history').hidden", False)
            path = await page.evaluate(
                "document.querySelector('#history-chart path.line').getAttribute('d')"
            )
            assert re.findall(r"[ML]", path) == ["M", "L", "M", "L", "M"], path
