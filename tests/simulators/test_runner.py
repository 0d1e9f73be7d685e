"""``start_simulators``/``describe`` and the ``simulate`` command in a subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from app.accounts import AccountConfig
from app.simulators.runner import Simulators, start_simulators
from tests.simulators.wsclient import bitopro_headers, recv_json

ROOT = Path(__file__).resolve().parents[2]


async def test_describe_gives_working_account_settings(session: aiohttp.ClientSession) -> None:
    sims = await start_simulators()
    try:
        described = sims.describe()
        assert set(described) == {"bitopro", "sfox", "deltadefi", "solanatracker"}
        for venue, entry in described.items():
            assert set(entry) == {"ws_url", "rest_url", "credentials"}
            account = AccountConfig.model_validate(
                {
                    "id": f"sim-{venue}",
                    "venue": venue,
                    **entry["credentials"],
                    "ws_url": entry["ws_url"],
                    "rest_url": entry["rest_url"],
                }
            )
            assert account.enabled
            assert "?" not in entry["ws_url"] and entry["credentials"]["api_key"].startswith("sim-")
        await check_reachable(session, sims, described)
    finally:
        await sims.stop()


async def check_reachable(
    session: aiohttp.ClientSession, sims: Simulators, described: dict[str, dict[str, object]]
) -> None:
    bito = described["bitopro"]["credentials"]
    assert isinstance(bito, dict)
    headers = bitopro_headers(bito["api_key"], bito["api_secret"], bito["email"])
    async with session.ws_connect(str(described["bitopro"]["ws_url"]), headers=headers) as ws:
        assert "ADA" in (await recv_json(ws))["data"]
    dd = described["deltadefi"]["credentials"]
    assert isinstance(dd, dict)
    async with session.ws_connect(f"{described['deltadefi']['ws_url']}?api_key={dd['api_key']}"):
        await sims.deltadefi.wait_for_connections(dd["api_key"])
    st = described["solanatracker"]["credentials"]
    assert isinstance(st, dict)
    assert len(st["wallets"]) == 2
    async with session.ws_connect(f"{described['solanatracker']['ws_url']}/{st['api_key']}"):
        await sims.solanatracker.wait_for_connections(st["api_key"], ready=False)
    url = f"{described['solanatracker']['rest_url']}/wallet/{st['wallets'][0]}/basic"
    async with session.get(url, headers={"x-api-key": st["data_api_key"]}) as resp:
        assert resp.status == 200


def free_port_block(size: int = 4) -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + size >= 65535:
            continue
        try:
            for offset in range(size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


async def test_consecutive_ports() -> None:
    base = free_port_block()
    sims = await start_simulators(port=base, default_accounts=False)
    try:
        assert [s.port for s in sims.all().values()] == [base, base + 1, base + 2, base + 3]
        assert sims.describe()["sfox"]["credentials"] == {}
    finally:
        await sims.stop()


@pytest.mark.parametrize(("sig", "walk"), [(signal.SIGTERM, True), (signal.SIGINT, False)])
def test_run_simulate_prints_json_then_stops(sig: signal.Signals, walk: bool) -> None:
    code = (
        "import sys; from app.simulators.runner import run_simulate;"
        f" sys.exit(run_simulate('127.0.0.1', 0, {walk}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        described = json.loads(proc.stdout.readline())
        assert described["sfox"]["ws_url"].endswith("/ws")
        assert described["deltadefi"]["ws_url"].endswith("/accounts/stream")
        rest = described["bitopro"]["rest_url"]

        async def probe() -> int:
            async with aiohttp.ClientSession() as session, session.get(rest + "/_sim") as resp:
                return resp.status

        assert asyncio.run(probe()) == 200
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
