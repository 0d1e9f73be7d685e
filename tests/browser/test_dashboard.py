"""The dashboard in headless Chromium against the real service and a real change stream.

The service runs in the test's loop on a free port. The test plays the instance that
owns the accounts' upstream sockets (§12): it holds their leases, so the service under
test opens no upstream socket and serves the accounts from the change stream, and it
writes balances and statuses with :class:`BalanceWriter` under those leases, exactly as
an owner's upstream readers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from app.accounts import AccountConfig
from app.dashboard import install_dashboard
from app.domain import AccountState, AccountStatus, AssetBalance, Venue
from app.settings import Settings
from app.store import BalanceReader, BalanceWriter, Keys
from tests.browser.cdp import Browser, Page, find_chromium

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

WALLET = "FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1"
WEB3 = "web3:Ethereum:0x5e1f00000000000000000000000000000000c0de"
MINT = "Xss1111111111111111111111111111111111111111"
HOSTILE = '<img src=x onerror="window.__xss=1">'
TOKEN = "dash-token-123"

OWNER = "owner-elsewhere"
LEASE = f"{OWNER}:0123456789abcdef"
WS_NOWHERE, REST_NOWHERE = "ws://127.0.0.1:9", "http://127.0.0.1:9"  # never dialled

ACCOUNTS = [
    AccountConfig(
        id="dash-a",
        venue="bitopro",
        api_key=SecretStr("k"),
        api_secret=SecretStr("s"),
        email=SecretStr("e@example.com"),
        ws_url=WS_NOWHERE,
        rest_url=REST_NOWHERE,
    ),
    AccountConfig(
        id="dash-b", venue="sfox", api_key=SecretStr("k"), ws_url=WS_NOWHERE, rest_url=REST_NOWHERE
    ),
    AccountConfig(
        id="dash-c",
        venue="solanatracker",
        api_key=SecretStr("k"),
        wallets=(WALLET,),
        ws_url=WS_NOWHERE,
        rest_url=REST_NOWHERE,
    ),
]


def bal(
    asset: str, total: str, available: str | None = None, wallet: str = "", symbol: str = ""
) -> AssetBalance:
    return AssetBalance.from_total_available(
        wallet,
        asset,
        Decimal(total),
        Decimal(available if available is not None else total),
        symbol=symbol or asset,
    )


def status(account: str, venue: Venue, state: AccountState, **more: Any) -> dict[str, Any]:
    initial = AccountStatus.initial(account, venue, state)
    return dataclasses.replace(initial, owner=OWNER, **more).doc()


@dataclass
class Service:
    app: FastAPI
    base: str
    writer: BalanceWriter
    reader: BalanceReader

    async def flush(self) -> int:
        """Write everything submitted; return the seq it reached."""
        assert await self.writer.drain(5)
        return await self.reader.current_seq()


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is required under CI (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium, or set $CHROMIUM)")
    return binary


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """Where a screenshot goes: ``$BALAGG_ARTIFACTS`` (or the older name) or pytest's tmp dir."""
    folder = os.environ.get("BALAGG_ARTIFACTS") or os.environ.get("BALAGG_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
    return (Path(folder) if folder else tmp_path) / name


@contextlib.asynccontextmanager
async def running_service(
    redis_url: str,
    key_prefix: str,
    data_dir: Path,
    tokens: tuple[str, ...] = (),
    static_prices: dict[str, Decimal] | None = None,
    history: bool = True,
) -> AsyncIterator[Service]:
    from app.service import create_app

    settings = Settings(
        redis_url=SecretStr(redis_url),
        key_prefix=key_prefix,
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        api_tokens=tuple(SecretStr(t) for t in tokens),
        instance_id="test-instance",
        static_prices=static_prices or {},
        history=history,
    )
    app = create_app(settings, accounts=ACCOUNTS)
    if not any(getattr(route, "path", None) == "/" for route in app.router.routes):
        install_dashboard(app)
    keys = Keys(key_prefix)
    async with contextlib.AsyncExitStack() as stack:
        client = aioredis.Redis.from_url(redis_url)
        stack.push_async_callback(client.aclose)
        for account in ACCOUNTS:  # another instance owns them: this one only serves them
            await client.set(keys.lease(account.id), LEASE, px=120_000)
        # ... and heartbeats, as a live instance does
        await client.zadd(keys.instances, {OWNER: int(time.time() * 1000) + 120_000})
        writer = BalanceWriter(client, keys, fence=lambda _account: LEASE)
        writer.start()
        stack.push_async_callback(writer.close)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="auto",
            # as in production (run_service): a connection the browser left half-open
            # must not hold the shutdown forever
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        stack.push_async_callback(_stop_server, server, serving)
        deadline = time.monotonic() + 15
        while not server.started:
            assert not serving.done(), "the service failed to start"
            assert time.monotonic() < deadline, "the service did not start in time"
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Service(app, f"http://127.0.0.1:{port}", writer, BalanceReader(client, keys))


async def _stop_server(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    server.should_exit = True
    # a guard against a shutdown that hangs, not a measure of its speed: on a loaded
    # 2-core machine the orderly shutdown (sockets, writer, history) took over 15 s
    done, _ = await asyncio.wait([serving], timeout=30)
    if not done:
        stuck = _running_tasks()  # before the cancel, which would move every stack
        serving.cancel()
        raise AssertionError("the service did not shut down within 30 s; still running:\n" + stuck)
    serving.result()


def _running_tasks() -> str:
    """Every unfinished task and the chain of awaits it waits in: what held a shutdown."""
    lines: list[str] = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task() or task.done():
            continue
        chain: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None:  # a task's own stack shows only its outermost frame
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                code = frame.f_code
                chain.append(f"{code.co_name} ({code.co_filename}:{frame.f_lineno})")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        lines.append(f"{task.get_name()}: " + " -> ".join(chain))
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def browser_page(
    chromium: str, tmp_path: Path, width: int = 1280, height: int = 900
) -> AsyncIterator[Page]:
    async with await Browser.launch(chromium, tmp_path / "profile") as browser:
        page = await browser.new_page(width, height)
        yield page
        assert page.exceptions == [], page.exceptions


def query(attr: str, value: str, inner: str = "") -> str:
    """JavaScript: the element whose ``attr`` is exactly ``value`` (then ``inner`` within it)."""
    selector = f'[{attr}="${{CSS.escape({json.dumps(value)})}}"] {inner}'.strip()
    return f"document.querySelector(`{selector}`)"


def cell(account: str, wallet: str, asset: str, field: str) -> str:
    """JavaScript: the text of one balance cell, or null."""
    return f"{query('data-cell', f'{account}|{wallet}|{asset}|{field}')}?.textContent ?? null"


def total_cell(symbol: str, field: str) -> str:
    return f"{query('data-total-cell', f'{symbol}|{field}')}?.textContent ?? null"


def account_attr(account: str, attr: str) -> str:
    return f"{query('data-account', account)}?.getAttribute({json.dumps(attr)}) ?? null"


def account_text(account: str, inner: str) -> str:
    return f"{query('data-account', account, inner)}?.textContent ?? null"


async def expect(page: Page, expression: str, expected: Any, timeout: float = 10.0) -> None:
    """Wait until ``expression`` evaluates to ``expected``."""
    want = json.dumps(expected)
    probe = f"(() => {{ const v = ({expression}); return {{v, ok: v === {want}}}; }})()"
    try:
        await page.wait_for(f"{probe}.ok", timeout)
    except TimeoutError:
        last = await page.evaluate(probe)
        raise AssertionError(f"{expression} is {last['v']!r}, expected {expected!r}") from None


async def test_dashboard_follows_the_stream_live(
    chromium: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with running_service(redis_url, key_prefix, tmp_path / "data") as svc:
        # the state before the page opens: it must arrive in the snapshot
        w = svc.writer
        w.submit_status("dash-a", status("dash-a", Venue.BITOPRO, AccountState.LIVE))
        w.submit_snapshot("dash-a", "bitopro", "", [bal("BTC", "0.1", "0.05"), bal("ETH", "2")])
        w.submit_status("dash-b", status("dash-b", Venue.SFOX, AccountState.LIVE, reconnects=2))
        w.submit_update("dash-b", "sfox", [bal("BTC", "0.2"), bal("USDC", "1000.5", "1000")])
        w.submit_update("dash-b", "sfox", [bal("USDC", "5", wallet=WEB3)])
        w.submit_status("dash-c", status("dash-c", Venue.SOLANATRACKER, AccountState.LIVE))
        w.submit_update("dash-c", "solanatracker", [bal(MINT, "3", wallet=WALLET, symbol=HOSTILE)])
        seq = await svc.flush()

        async with browser_page(chromium, tmp_path) as page:
            await page.goto(svc.base + "/")
            await expect(page, "document.querySelector('#conn').dataset.conn", "connected")
            await expect(page, "document.querySelector('#seq').textContent", str(seq))
            await expect(page, cell("dash-a", "", "BTC", "total"), "0.1")
            assert await page.evaluate(cell("dash-a", "", "BTC", "available")) == "0.05"
            assert await page.evaluate(cell("dash-a", "", "BTC", "locked")) == "0.05"
            assert await page.evaluate(cell("dash-b", WEB3, "USDC", "total")) == "5"
            # exact sums: 0.1 + 0.2 is 0.30000000000000004 in floating point
            await expect(page, total_cell("BTC", "total"), "0.3")
            assert await page.evaluate(total_cell("BTC", "available")) == "0.25"
            assert await page.evaluate(total_cell("BTC", "locked")) == "0.05"
            assert await page.evaluate(total_cell("BTC", "accounts")) == "2"
            # grouped by thousands for reading, exact in the cell's data-value
            assert await page.evaluate(total_cell("USDC", "total")) == "1,005.5"
            usdc_total = query("data-total-cell", "USDC|total")
            assert await page.evaluate(f"{usdc_total}.dataset.value") == "1005.5"
            await expect(page, total_cell("USDC", "value"), "1,005.50")
            assert await page.evaluate(account_attr("dash-a", "data-state")) == "live"
            assert await page.evaluate(account_text("dash-a", "[data-badge]")) == "live"
            assert await page.evaluate(account_text("dash-b", "[data-reconnects]")) == "2"
            # strings from venues are text, never markup
            assert await page.evaluate(cell("dash-c", WALLET, MINT, "symbol")) == HOSTILE
            assert await page.evaluate("document.querySelectorAll('main img').length") == 0
            assert await page.evaluate("window.__xss === undefined")
            assert (
                await page.evaluate(
                    "window.balanceDashboard.sumDec(['999999999999.99999999', '0.00000001', '-1'])"
                )
                == "999999999999"
            )

            # changes arrive without a reload
            await page.evaluate("window.__samePage = true")
            w.submit_snapshot("dash-a", "bitopro", "", [bal("BTC", "0.15", "0.1")])  # ETH gone
            w.submit_event("dash-b", "order", {"id": "o-1", "side": "buy", "qty": "0.5"})
            await svc.flush()
            await expect(page, cell("dash-a", "", "BTC", "total"), "0.15")
            await expect(page, total_cell("BTC", "total"), "0.35")
            await expect(page, cell("dash-a", "", "ETH", "total"), None)
            await expect(page, total_cell("ETH", "total"), None)
            changed = query("data-cell", "dash-a||BTC|total")
            assert await page.evaluate(f"{changed}.dataset.changed") == "1"
            await expect(page, "document.querySelector('#events [data-kind=order]') !== null", True)
            assert await page.evaluate("window.__samePage") is True

            # the account goes stale: shown dimmed, never hidden or zeroed
            w.submit_status(
                "dash-a",
                status(
                    "dash-a", Venue.BITOPRO, AccountState.STALE, reconnects=1, last_error="timeout"
                ),
            )
            await svc.flush()
            await expect(page, account_attr("dash-a", "data-state"), "stale")
            assert await page.evaluate(account_text("dash-a", "[data-badge]")) == "stale"
            assert await page.evaluate(account_text("dash-a", "[data-reconnects]")) == "1"
            assert await page.evaluate(account_text("dash-a", "[data-error]")) == "timeout"
            stale_row = query("data-row", "dash-a||BTC")
            assert await page.evaluate(f"{stale_row}.dataset.stale") == "true"
            assert await page.evaluate(f"{stale_row}.querySelector('.tag').textContent") == "stale"
            assert await page.evaluate(cell("dash-a", "", "BTC", "total")) == "0.15"
            assert await page.evaluate(account_attr("dash-b", "data-state")) == "live"
            shot = await page.screenshot(screenshot_path(tmp_path, "dashboard-stale.png"))
            print(f"screenshot: {shot}")

            # and recovers
            w.submit_status(
                "dash-a", status("dash-a", Venue.BITOPRO, AccountState.LIVE, reconnects=1)
            )
            await svc.flush()
            await expect(page, account_attr("dash-a", "data-state"), "live")
            await expect(page, f"{stale_row}.dataset.stale", "false")
            assert await page.evaluate(f"{stale_row}.querySelector('.tag')") is None

            # a dropped connection resumes from the last seq and misses nothing
            await page.evaluate("window.balanceDashboard.reconnect()")
            w.submit_update("dash-b", "sfox", [bal("BTC", "0.25")])
            seq = await svc.flush()
            await expect(page, cell("dash-b", "", "BTC", "total"), "0.25")
            await expect(page, total_cell("BTC", "total"), "0.4")
            await expect(page, "document.querySelector('#seq').textContent", str(seq))
            await expect(page, "document.querySelector('#conn').dataset.conn", "connected")
            assert await page.evaluate("window.__samePage") is True
            shot = await page.screenshot(screenshot_path(tmp_path, "dashboard.png"))
            print(f"screenshot: {shot}")
    assert time.monotonic() - started < 40


async def test_dashboard_asks_for_a_token_when_the_service_requires_one(
    chromium: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with running_service(redis_url, key_prefix, tmp_path / "data", (TOKEN,)) as svc:
        svc.writer.submit_status("dash-a", status("dash-a", Venue.BITOPRO, AccountState.LIVE))
        svc.writer.submit_update("dash-a", "bitopro", [bal("BTC", "1.5", "1")])
        await svc.flush()
        # the page and its assets hold no data and load without a token
        async with aiohttp.ClientSession() as http:
            for path in ("/", "/static/app.js", "/static/app.css"):
                async with http.get(svc.base + path) as resp:
                    assert resp.status == 200, path
            async with http.get(svc.base + "/v1/accounts") as resp:
                assert resp.status == 401

        async with browser_page(chromium, tmp_path) as page:
            await page.goto(svc.base + "/")
            await expect(page, "document.querySelector('#token-form').hidden", False)
            await expect(page, "document.querySelector('#conn').dataset.conn", "unauthorized")
            await page.evaluate(
                f"document.querySelector('#token-input').value = {json.dumps(TOKEN)};"
                "document.querySelector('#token-form').requestSubmit()"
            )
            await expect(page, cell("dash-a", "", "BTC", "total"), "1.5")
            await expect(page, "document.querySelector('#conn').dataset.conn", "connected")
            assert await page.evaluate("document.querySelector('#token-form').hidden") is True
            await expect(page, total_cell("BTC", "total"), "1.5")

            # ?token= in the page address works too, and is taken out of the address bar
            await page.evaluate("sessionStorage.clear()")
            await page.goto(f"{svc.base}/?token={TOKEN}")
            await expect(page, cell("dash-a", "", "BTC", "total"), "1.5")
            assert await page.evaluate("location.search") == ""


async def test_a_late_refusal_without_a_token_keeps_the_token_given_since(
    chromium: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """A 401 to a request sent before the token was entered must not throw the token away."""
    async with running_service(redis_url, key_prefix, tmp_path / "data", (TOKEN,)) as svc:
        svc.writer.submit_status("dash-a", status("dash-a", Venue.BITOPRO, AccountState.LIVE))
        svc.writer.submit_update("dash-a", "bitopro", [bal("BTC", "1.5", "1")])
        await svc.flush()
        async with browser_page(chromium, tmp_path) as page:
            # hold the answer to the page's first history request (sent without a token)
            await page.send("Network.enable")
            await page.send(
                "Fetch.enable",
                {"patterns": [{"urlPattern": "*/v1/history/*", "requestStage": "Response"}]},
            )
            await page.goto(svc.base + "/")
            await expect(page, "document.querySelector('#token-form').hidden", False)
            deadline = time.monotonic() + 10
            while not page.paused:
                assert time.monotonic() < deadline, "the page asked for no history"
                await asyncio.sleep(0.02)
            held = page.paused[0]
            assert held["responseStatusCode"] == 401
            await page.evaluate(
                f"document.querySelector('#token-input').value = {json.dumps(TOKEN)};"
                "document.querySelector('#token-form').requestSubmit()"
            )
            await expect(page, cell("dash-a", "", "BTC", "total"), "1.5")
            await expect(page, "document.querySelector('#conn').dataset.conn", "connected")
            # now the old refusal arrives
            await page.send("Fetch.continueResponse", {"requestId": held["requestId"]})
            deadline = time.monotonic() + 10
            while held["networkId"] not in page.finished:
                assert time.monotonic() < deadline, "the held response was not delivered"
                await asyncio.sleep(0.02)
            for _ in range(2):  # let the page's tasks queued behind the response run
                await page.evaluate("new Promise((resolve) => setTimeout(resolve, 0))")
            assert await page.evaluate("document.querySelector('#token-form').hidden") is True
            assert await page.evaluate("document.querySelector('#conn').dataset.conn") == (
                "connected"
            )
            assert await page.evaluate("sessionStorage.getItem('balagg.token')") == TOKEN
