"""Credentialed requests never follow redirects, and REST bodies are read only up to a cap.

A purpose-built fake venue answers with redirects to a second local server that records
every request it gets: credentials must never reach it, and its answer must never be
taken as a balance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from app.accounts import AccountConfig
from tests.integration.conftest import fast_settings, metric, running_service, wait_until

KEY = "CANARY-REDIRECT-KEY-4242"


class Recorder:
    """The host a redirect points to: records headers and URLs, answers a fat balance."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((str(request.rel_url), dict(request.headers)))
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str(
                orjson.dumps(
                    {"event": "ACCOUNT_BALANCE", "timestamp": 1,
                     "data": {"BTC": {"currency": "BTC", "amount": "1000", "available": "1000"}}}
                ).decode()
            )  # fmt: skip
            await asyncio.sleep(30)
            return ws
        body: Any = [{"asset": "ada", "asset_unit": "", "free": "1000000", "locked": "0"}]
        return web.json_response(body)


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(s for s in runner.addresses if isinstance(s, tuple))[1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Recorder, str, str]]:
    """(recorder, redirecting venue URL, recorder URL)."""
    recorder = Recorder()
    other = web.Application()
    other.router.add_route("*", "/{tail:.*}", recorder.handle)
    other_runner, other_url = await _serve(other)

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(other_url + "/stolen" + request.path)

    async def quiet_ws(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'[{"asset":"ada","asset_unit":"","free":"1","locked":"0","pad":"')
        with contextlib.suppress(ConnectionError):
            while True:  # never ends: only a reader with a cap gets past it
                await response.write(b"x" * 65536)
        return response

    venue = web.Application()
    venue.router.add_get("/ws/v1/pub/auth/account-balance", redirect)
    venue.router.add_get("/accounts/stream", quiet_ws)
    venue.router.add_get("/redirect/accounts/balance", redirect)
    venue.router.add_get("/endless/accounts/balance", endless)
    venue_runner, venue_url = await _serve(venue)
    try:
        yield recorder, venue_url, other_url
    finally:
        await venue_runner.cleanup()
        await other_runner.cleanup()


def _deltadefi(venue_url: str, rest: str) -> AccountConfig:
    return AccountConfig.model_validate(
        {"id": "ddf-redirect", "venue": "deltadefi", "api_key": KEY,
         "ws_url": "ws" + venue_url.removeprefix("http") + "/accounts/stream",
         "rest_url": f"{venue_url}/{rest}"}
    )  # fmt: skip


async def test_rest_seed_never_follows_a_redirect(
    servers: tuple[Recorder, str, str], redis_url: str, key_prefix: str
) -> None:
    recorder, venue_url, _ = servers
    account = _deltadefi(venue_url, "redirect")
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        labels = {"account": account.id, "venue": "deltadefi", "reason": "redirect"}

        async def refused() -> bool:
            return metric(rt, "balagg_upstream_errors_total", labels) >= 2

        saw = await wait_until(refused, 10)
        await rt.writer.drain(1)
        snap = await rt.reader.snapshot([account.id])
        assert not snap.records  # the redirect target's answer was never taken
        assert recorder.requests == []  # and it never saw the key
        runner = rt.supervisor.runner(account.id)
        assert runner is not None and str(runner.state) != "live"
        assert saw


async def test_websocket_upgrade_never_follows_a_redirect(
    servers: tuple[Recorder, str, str], redis_url: str, key_prefix: str
) -> None:
    recorder, venue_url, _ = servers
    account = AccountConfig.model_validate(
        {"id": "bito-redirect", "venue": "bitopro", "api_key": KEY,
         "api_secret": "CANARY-REDIRECT-SECRET", "email": "canary@example.com",
         "ws_url": "ws" + venue_url.removeprefix("http") + "/ws/v1/pub/auth/account-balance"}
    )  # fmt: skip
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        labels = {"account": account.id, "venue": "bitopro", "reason": "redirect"}

        async def refused() -> bool:
            return metric(rt, "balagg_upstream_errors_total", labels) >= 2

        saw = await wait_until(refused, 10)
        snap = await rt.reader.snapshot([account.id])
        assert not snap.records
        assert recorder.requests == []
        assert saw


async def test_rest_body_is_read_only_up_to_the_cap(
    servers: tuple[Recorder, str, str], redis_url: str, key_prefix: str
) -> None:
    _, venue_url, _ = servers
    account = _deltadefi(venue_url, "endless")
    settings = fast_settings(redis_url, key_prefix, read_timeout=60.0)
    async with running_service(settings, [account]) as rt:
        labels = {"account": account.id, "venue": "deltadefi", "reason": "oversize"}

        async def rejected() -> bool:
            return metric(rt, "balagg_upstream_errors_total", labels) >= 1

        assert await wait_until(rejected, 15)
        runner = rt.supervisor.runner(account.id)
        assert runner is not None and str(runner.state) != "live"
