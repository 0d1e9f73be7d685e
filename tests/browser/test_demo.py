"""The README's demo command, end to end, in headless Chromium.

``balance-aggregator demo`` runs as a real process (simulators, embedded Redis, service);
the page must show real balances from the simulators within 30 s, follow their changes
without a reload, and show an account going stale when its simulator drops it, then
recovering.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser.test_dashboard import (
    account_attr,
    browser_page,
    cell,
    chromium,
    expect,
    screenshot_path,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
_ = chromium  # the fixture, re-exported for this module


def _free_port_block(count: int) -> int:
    for _attempt in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65000:
            continue
        ok = True
        for port in range(base, base + count):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free block of ports")


def simulators_in_banner(log: str) -> dict[str, str]:
    """venue -> base URL, from the banner's ``simulators  bitopro http://…, sfox …`` line."""
    line = next(x for x in log.splitlines() if x.strip().startswith("simulators "))
    pairs = line.strip().removeprefix("simulators").split(",")
    return {venue: url for venue, url in (pair.split() for pair in pairs)}


PUSHED_USD = "987654321.123456"

# One look at the page: the pushed cell, every USD cell, the USD slice, all the slices,
# the headline and the USD row of the totals table (exact strings from data-value).
OVERVIEW_PROBE = """(() => {
  const v = (node) => node?.dataset.value ?? null;
  return {
    cell: v(document.querySelector('[data-cell="sfox-main||USD|total"]')),
    usd_cells: [...document.querySelectorAll('td[data-cell$="||USD|total"]')].map(v),
    slice: v(document.querySelector('#alloc-symbol rect[data-slice="USD"]')),
    slices: [...document.querySelectorAll('#alloc-symbol rect[data-slice]')].map(v),
    headline: v(document.querySelector('#value')),
    table: v(document.querySelector('[data-total-cell="USD|total"]')),
  };
})()"""


def _pushed_everywhere(seen: dict[str, Any]) -> bool:
    """The pushed amount is in the table, the USD slice and the headline, exactly."""
    if seen["cell"] != PUSHED_USD or seen["slice"] is None or not seen["headline"]:
        return False
    usd = sum((Decimal(x) for x in seen["usd_cells"]), Decimal(0))
    return (
        Decimal(seen["slice"]) == usd  # USD is valued at 1
        and Decimal(seen["table"]) == usd
        and sum((Decimal(x) for x in seen["slices"]), Decimal(0)) == Decimal(seen["headline"])
    )


async def test_demo_shows_live_balances_and_states(chromium: str, tmp_path: Path) -> None:
    port = _free_port_block(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115, ASYNC230 - closed below
    started = time.monotonic()
    # the simulators take free ports (the default) and the banner says which
    proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, not awaited here
        [sys.executable, "-m", "app", "demo", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            records: list[object] = []
            while time.monotonic() - started < 30:
                try:
                    async with http.get(base + "/v1/balances") as response:
                        if response.status == 200:
                            records = (await response.json())["balances"]
                            if len(records) > 10:
                                break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.25)
            assert len(records) > 10, (tmp_path / "demo.log").read_text()[-3000:]
            sims = simulators_in_banner((tmp_path / "demo.log").read_text())
            bitopro_sim = f"{sims['bitopro']}/_sim/accounts/sim-bitopro-key"

            async with browser_page(chromium, tmp_path) as page:
                await page.goto(base + "/")
                await expect(page, "document.querySelector('#conn').dataset.conn", "connected")
                await expect(page, account_attr("bitopro-main", "data-state"), "live", 20)
                await expect(page, cell("bitopro-main", "", "ADA", "symbol"), "ADA")
                # a change at the venue reaches the page without a reload
                await page.evaluate("window.__samePage = true")
                async with http.post(bitopro_sim + "/push", json={"ADA": "123.45678901"}) as r:
                    assert r.status == 200
                await expect(page, cell("bitopro-main", "", "ADA", "total"), "123.45678901")
                # a pushed change reaches the headline, the picture and the tables together
                sfox_sim = f"{sims['sfox']}/_sim"
                async with http.get(sfox_sim) as r:
                    assert (await r.json())["venue"] == "sfox"
                async with http.post(
                    sfox_sim + "/accounts/sim-sfox-key/push", json={"usd": PUSHED_USD}
                ) as r:
                    assert r.status == 200
                pushed_at = time.monotonic()
                seen = await page.evaluate(OVERVIEW_PROBE)
                while not _pushed_everywhere(seen):
                    assert time.monotonic() - pushed_at < 1.0, seen
                    await asyncio.sleep(0.05)
                    seen = await page.evaluate(OVERVIEW_PROBE)
                # the simulator drops the connection: the account shows stale, then recovers
                await page.evaluate(
                    """(() => {
                      window.__states = [];
                      const seen = () => {
                        const el = document.querySelector('[data-account="bitopro-main"]');
                        if (el) window.__states.push(el.dataset.state);
                      };
                      new MutationObserver(seen).observe(document.body,
                        {subtree: true, childList: true, attributes: true,
                         attributeFilter: ['data-state']});
                    })()"""
                )
                async with http.post(bitopro_sim + "/drop", json={}) as r:
                    assert r.status == 200
                await expect(page, "window.__states.includes('stale')", True, 15)
                await expect(page, account_attr("bitopro-main", "data-state"), "live", 20)
                assert await page.evaluate("window.__samePage") is True
                shot = await page.screenshot(screenshot_path(tmp_path, "demo.png"))
                print(f"screenshot: {shot}")
    finally:
        proc.terminate()
        try:
            rc = await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log.close()
    assert rc == 0, (tmp_path / "demo.log").read_text()[-3000:]
