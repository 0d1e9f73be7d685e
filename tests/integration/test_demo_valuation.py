"""The demo values everything it holds, live, from the simulators' own price streams.

``balance-aggregator demo`` runs as a real process (simulators, embedded Redis, service);
within 10 s of start ``GET /v1/totals?quote=USD`` must value BTC, ETH, ADA, BITO, TWD,
SOL and every held Solana mint, with coverage complete by value, and the values must
move as the simulated prices move. What it holds is believable: a portfolio of
realistic size spread over many assets, no absurd amount.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser.test_demo import _free_port_block

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {"BTC", "ETH", "ADA", "BITO", "TWD", "wSOL"}
PLAUSIBLE_WORTH = (Decimal(10_000), Decimal(100_000_000))  # USD


async def totals(http: aiohttp.ClientSession, base: str) -> dict[str, Any] | None:
    try:
        async with http.get(base + "/v1/totals", params={"quote": "USD"}) as response:
            if response.status != 200:
                return None
            doc: dict[str, Any] = await response.json()
            return doc
    except aiohttp.ClientError:
        return None


def complete(doc: dict[str, Any] | None) -> bool:
    if doc is None:
        return False
    rows = {t["symbol"]: t for t in doc["totals"]}
    held = {s for s, t in rows.items() if t["total"] != "0"}
    return (
        held >= EXPECTED
        and all(rows[s]["value"] is not None for s in held)
        and doc["coverage"]["by_value"] == "1"
    )


async def test_demo_values_every_holding_within_ten_seconds(tmp_path: Path) -> None:
    port = _free_port_block(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115, ASYNC230 - closed below
    started = time.monotonic()
    proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, not awaited here
        [sys.executable, "-m", "app", "demo", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            doc = None
            while time.monotonic() - started < 10 and not complete(doc):
                doc = await totals(http, base)
                await asyncio.sleep(0.1)
            assert doc is not None and complete(doc), doc
            rows = {t["symbol"]: t for t in doc["totals"]}
            mints = {s for s, t in rows.items() if t["path"] and "solanatracker:" in t["path"]}
            assert len(mints) >= 3  # wSOL and the demo tokens, each from its price room
            assert doc["unpriced"] == []
            assert rows["BTC"]["path"] == "bitopro:BTC_TWD / bitopro:USDT_TWD * peg:USDT=USD"
            assert "peg:USDT=USD" in doc["assumptions"]

            # a believable first impression: a portfolio a person or a desk could hold,
            # spread over many assets, and no absurd amount (no trillion ADA)
            values = {s: Decimal(t["value"]) for s, t in rows.items() if t["value"] is not None}
            worth = sum(values.values(), Decimal(0))
            assert PLAUSIBLE_WORTH[0] <= worth <= PLAUSIBLE_WORTH[1], worth
            assert len(values) >= 8, sorted(values)
            assert max(values.values()) < worth * Decimal("0.8"), values  # not one asset
            assert all(Decimal(t["total"]) < 10**9 for t in rows.values()), rows

            # the simulated prices walk: values follow without anything else changing
            first = {s: rows[s]["price"] for s in EXPECTED}
            moved = False
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not moved:
                later = await totals(http, base)
                if later is not None:
                    now = {t["symbol"]: t["price"] for t in later["totals"]}
                    moved = any(now.get(s) not in (None, first[s]) for s in EXPECTED)
                await asyncio.sleep(0.5)
            assert moved, "no price moved in 60 s"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
