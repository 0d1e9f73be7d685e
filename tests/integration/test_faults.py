"""Faults around the service itself: Redis going away, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from app.redis_server import EmbeddedRedis
from app.service import create_app
from app.simulators.runner import Simulators
from tests.integration.conftest import (
    account_for,
    all_default_accounts,
    converge,
    fast_settings,
    free_port,
    go_live,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]


async def test_redis_killed_and_restarted_mid_stream(
    sims: Simulators, tmp_path: Path, key_prefix: str
) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        accounts = [account_for(sims, "bitopro"), account_for(sims, "sfox")]
        app = create_app(fast_settings(server.url, key_prefix), accounts)
        async with app.router.lifespan_context(app):
            rt = app.state.services
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
                for account in accounts:
                    await go_live(rt, sims, account)
                assert (await http.get("/readyz")).status_code == 200
                await asyncio.to_thread(server.stop)
                ready_codes: list[int] = []
                for n in range(30):
                    await sims.bitopro.push(sims.default_keys["bitopro"], {"BTC": f"{n}.5"})
                    await sims.sfox.push(sims.default_keys["sfox"], {"eth": f"{n}.25"})
                    ready_codes.append((await http.get("/readyz")).status_code)
                    await asyncio.sleep(0.02)
                await sims.bitopro.burst(sims.default_keys["bitopro"], 2_000)

                async def noticed() -> bool:
                    return not rt.writer.healthy

                assert await wait_until(noticed)
                readyz = await http.get("/readyz")
                assert readyz.status_code == 503
                assert readyz.json()  # a JSON body with the reasons
                assert rt.writer.pending_keys() < 50  # bounded by keys, not by frames
                await asyncio.to_thread(server.start)
                for account in accounts:
                    ours, truth = await converge(rt, sims, account.venue, account.id, timeout=30)
                    assert ours == truth, account.id

                async def ready() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                assert await wait_until(ready, 15)
                assert 503 in ready_codes or readyz.status_code == 503
    finally:
        server.stop()


@pytest.mark.slow
async def test_sigterm_exits_cleanly_with_no_orphans(sims: Simulators, tmp_path: Path) -> None:
    accounts = [a.masked() for a in all_default_accounts(sims)]
    for account, full in zip(accounts, all_default_accounts(sims), strict=True):
        for name in ("api_key", "api_secret", "email", "data_api_key"):
            value = getattr(full, name)
            if value is not None:
                account[name] = value.get_secret_value()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    env.update(
        BALAGG_ACCOUNTS=orjson.dumps(accounts).decode(),
        BALAGG_DATA_DIR=str(tmp_path / "data"),
        BALAGG_PORT=str(port),
        BALAGG_HEARTBEAT="1",
    )
    proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, not awaited here
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            assert await wait_until(ready, 30), "service never became ready"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("redis-server" in " ".join(c.cmdline()) for c in children)
        for venue in ("bitopro", "sfox", "deltadefi", "solanatracker"):
            assert sims[venue].connection_counts(sims.default_keys[venue]).open == 1
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 15)
        elapsed = time.monotonic() - started
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert rc == 0, output[-3000:]
        assert elapsed < 10
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        for venue in ("bitopro", "sfox", "deltadefi", "solanatracker"):
            key = sims.default_keys[venue]

            async def closed(venue: str = venue, key: str = key) -> bool:
                return sims[venue].connection_counts(key).open == 0

            assert await wait_until(closed, 5)
        assert "Traceback" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
