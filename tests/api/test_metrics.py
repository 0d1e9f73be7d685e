"""``/metrics``: every SPEC §10 family, per-balance gauges, and ``promtool check metrics``."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from app.domain import AccountState
from tests.api.conftest import VENUE, Service, ServiceFactory, account, bal, status_doc
from tests.api.streamclient import read_one

FAMILIES = [
    "balagg_upstream_connected",
    "balagg_upstream_state",
    "balagg_upstream_messages_total",
    "balagg_upstream_reconnects_total",
    "balagg_upstream_last_message_timestamp_seconds",
    "balagg_upstream_errors_total",
    "balagg_fold_seconds",
    "balagg_balance_updates_total",
    "balagg_redis_errors_total",
    "balagg_downstream_clients",
    "balagg_downstream_messages_total",
    "balagg_downstream_conflated_total",
    "balagg_downstream_disconnects_total",
    "balagg_event_lag_seconds",
    "balagg_balance",
]
WALLET_1 = "FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1"
WALLET_2 = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"
MINT = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"


async def scrape(svc: Service) -> str:
    async with svc.http.get(svc.base + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text: str = await r.text()
        return text


async def test_metrics_families_and_balance_gauges(service_factory: ServiceFactory) -> None:
    sol = account("sol", venue="solanatracker")
    async with service_factory([account("ex-a"), sol]) as svc:
        svc.owner.submit_snapshot("ex-a", VENUE, "", [bal("BTC", "1.5", "1"), bal("ETH", "0")])
        svc.owner.submit_status("ex-a", status_doc("ex-a", AccountState.LIVE))
        svc.owner.submit_update(
            "sol",
            "solanatracker",
            [bal(MINT, "10", wallet=WALLET_1), bal(MINT, "2.5", wallet=WALLET_2)],
        )
        await svc.settle()
        ws = await svc.ws()
        await read_one(ws)
        svc.owner.submit_update("ex-a", VENUE, [bal("BTC", "2", "1")])
        await svc.settle()
        assert (await read_one(ws))["type"] == "balance"
        text = await scrape(svc)
        await ws.close()

    types = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    missing = [f for f in FAMILIES if f not in types and f.removesuffix("_total") not in types]
    assert not missing, missing
    lines = set(text.splitlines())
    assert 'balagg_balance{account="ex-a",asset="BTC",field="total"} 2.0' in lines
    assert 'balagg_balance{account="ex-a",asset="BTC",field="locked"} 1.0' in lines
    assert not any('asset="ETH"' in line for line in lines if line.startswith("balagg_balance{"))
    # two wallets holding one mint: one series per (account, asset), summed
    assert f'balagg_balance{{account="sol",asset="{MINT}",field="total"}} 12.5' in lines
    assert "balagg_downstream_clients 1.0" in lines
    assert any(
        line.startswith("balagg_downstream_messages_total ") and float(line.split()[1]) >= 2
        for line in lines
    )
    assert any(line.startswith("balagg_event_lag_seconds_count ") for line in lines)


async def test_promtool_accepts_a_live_scrape(service_factory: ServiceFactory) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is required in CI (Debian/Ubuntu package: prometheus)")
        pytest.skip("promtool not on PATH (Debian/Ubuntu package: prometheus)")
    async with service_factory([account("ex-a"), account("ex-b")]) as svc:
        svc.owner.submit_snapshot("ex-a", VENUE, "", [bal("BTC", "1.5", "1")])
        await svc.settle()
        ws = await svc.ws()
        await read_one(ws)
        text = await scrape(svc)
        await ws.close()
    for family in FAMILIES:
        assert family.removesuffix("_total") in text
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(text.encode())
    assert proc.returncode == 0, out.decode()
