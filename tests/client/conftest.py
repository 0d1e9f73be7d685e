"""A real service fed by the simulators, on a fixed port, and the CLI run as a subprocess.

The service is ``create_app`` under uvicorn in the test's event loop with the real
supervisor, against the session's private Redis; it can be stopped and started again on
the same port and key prefix (the change stream in Redis keeps the history that
``since=`` resumes from). Every CLI run checks that the canary token never appears in
what the command printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import uvicorn

from app.accounts import AccountConfig
from app.service import create_app
from app.settings import Settings
from app.simulators.runner import Simulators
from tests.integration.conftest import all_default_accounts, fast_settings, free_port, sims

__all__ = ["sims"]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "canary-tok-7f3a9c1e5b"  # a leak of this string anywhere in CLI output fails a test


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    env.update({"BALAGG_API_TOKEN": TOKEN, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


def assert_no_leak(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text, "the token was printed"


async def run_cli(*args: str, timeout: float = 60.0, **env: str) -> CliResult:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        *args,
        cwd=ROOT,
        env=cli_env(**env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    result = CliResult(proc.returncode or 0, out.decode(), err.decode())
    assert_no_leak(result.out, result.err)
    return result


@dataclass
class LiveService:
    """The service on ``port``; ``stop()`` and ``start()`` again keep port, Redis and prefix."""

    settings: Settings
    accounts: list[AccountConfig]
    port: int
    http: aiohttp.ClientSession
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[Any] | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = create_app(self.settings, self.accounts)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=10,  # as in production (run_service)
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 30
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise AssertionError("service stopped before it started")
            assert time.monotonic() < deadline, "service did not start"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 30)
        self._server = None
        self._task = None

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.http.get(self.base + path, params=params, headers=headers) as r:
            assert r.status == 200, await r.text()
            return orjson.loads(await r.read())

    async def wait_live(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            doc = await self.get("/v1/accounts")
            states = {a["account"]: a["state"] for a in doc["accounts"]}
            if states and all(s == "live" for s in states.values()):
                return
            assert time.monotonic() < deadline, f"accounts never all live: {states}"
            await asyncio.sleep(0.05)

    async def wait_balance(self, account: str, asset: str, total: str) -> None:
        deadline = time.monotonic() + 20
        while True:
            doc = await self.get(f"/v1/balances/{account}")
            if any(r["asset"] == asset and r["total"] == total for r in doc["balances"]):
                return
            assert time.monotonic() < deadline, f"{account} {asset} never became {total}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def live(
    sims: Simulators, redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[LiveService]:
    settings = fast_settings(
        redis_url,
        key_prefix,
        api_tokens=TOKEN,
        data_dir=tmp_path / "data",
        accounts_file=tmp_path / "none.yaml",
    )
    async with aiohttp.ClientSession() as http:
        service = LiveService(settings, all_default_accounts(sims), free_port(), http)
        await service.start()
        try:
            await service.wait_live()
            yield service
        finally:
            with contextlib.suppress(Exception):
                await service.stop()
