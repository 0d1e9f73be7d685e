"""A real service on a real socket, with the account owner simulated by a BalanceWriter.

Each test gets ``create_app`` served by uvicorn on a free loopback port in its own event
loop, against the session's embedded Redis under the test's own key prefix. The upstream
side is replaced by a :class:`StubSupervisor` (no venue sockets) unless a test asks for
the real one; state is written the way an owning instance writes it, through a
:class:`BalanceWriter` on the same prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

import app.service as service_module
from app.accounts import AccountConfig
from app.domain import AccountState, AccountStatus, AssetBalance, ExtraValue, Venue
from app.server import HTTP_PROTOCOL, ServiceServer
from app.services import Services
from app.settings import Settings
from app.store import BalanceWriter, Keys
from app.stream.hub import StreamHub

VENUE = Venue.DELTADEFI


class StubSupervisor:
    """Stands in for the upstream side: no sockets, records resync requests."""

    def __init__(self, *, accounts: Iterable[AccountConfig], **_parts: Any) -> None:
        self.account_ids = {a.id for a in accounts}
        self.resyncs: list[str] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def resync(self, account_id: str) -> None:
        if account_id not in self.account_ids:
            raise KeyError(account_id)
        self.resyncs.append(account_id)

    def fence_token(self, account_id: str) -> str:
        return ""

    def on_fenced(self, account_id: str) -> None:
        return None

    def runner(self, account_id: str) -> None:
        return None


def account(name: str, *, enabled: bool = True, venue: str = VENUE) -> AccountConfig:
    """An account whose upstream URLs point at a closed local port (nothing real)."""
    fields: dict[str, Any] = {
        "id": name,
        "venue": venue,
        "api_key": "test-key-not-real",
        "ws_url": "ws://127.0.0.1:9/",
        "rest_url": "http://127.0.0.1:9",
        "enabled": enabled,
    }
    if venue == "solanatracker":
        fields["wallets"] = ("FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1",)
    if venue == "bitopro":
        fields["api_secret"] = "test-secret-not-real"
        fields["email"] = "nobody@example.invalid"
    return AccountConfig.model_validate(fields)


def bal(
    asset: str,
    total: str,
    available: str | None = None,
    wallet: str = "",
    *,
    symbol: str | None = None,
    extra: Mapping[str, ExtraValue] | None = None,
) -> AssetBalance:
    avail = Decimal(available if available is not None else total)
    return AssetBalance.from_total_available(
        wallet, asset, Decimal(total), avail, symbol=symbol or asset, extra=extra
    )


def status_doc(name: str, state: AccountState, venue: Venue = VENUE) -> dict[str, Any]:
    initial = AccountStatus.initial(name, venue, state)
    return dataclasses.replace(initial, owner="test-owner").doc()


@dataclass
class Service:
    app: FastAPI
    server: uvicorn.Server
    base: str
    ws_base: str
    services: Services
    owner: BalanceWriter
    http: aiohttp.ClientSession
    redis: aioredis.Redis
    token: str | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def hub(self) -> StreamHub:
        return self.services.hub

    def headers(self, token: str | None = None) -> dict[str, str]:
        value = token if token is not None else self.token
        return {"Authorization": f"Bearer {value}"} if value else {}

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        async with self.http.get(self.base + path, params=params, headers=self.headers()) as r:
            return r.status, orjson.loads(await r.read())

    async def settle(self, timeout: float = 10.0) -> int:
        """Wait until everything written is in Redis and mirrored by the hub."""
        assert await self.owner.drain(timeout)
        keys = self.services.keys
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            raw = await self.redis.get(keys.seq)
            current = int(raw) if raw is not None else 0
            if self.hub.seq == current:
                return current
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"hub at seq {self.hub.seq}, redis at {current}")
            await asyncio.sleep(0.01)

    async def ws(self, **params: Any) -> aiohttp.ClientWebSocketResponse:
        query = {k: v for k, v in params.items() if v is not None}
        return await self.http.ws_connect(
            self.ws_base + "/v1/stream",
            params=query,
            headers=self.headers(),
            autoping=True,
            max_msg_size=0,
        )


ServiceFactory = Callable[..., AbstractAsyncContextManager[Service]]


async def _stand_in_owner(
    client: aioredis.Redis, keys: Keys, accounts: Iterable[AccountConfig]
) -> None:
    """Make ``test-owner`` (whose statuses the tests write) a live owner, as a real one is:
    it holds the accounts' leases and heartbeats in ``P:instances`` (here: for an hour)."""
    for acct in accounts:
        await client.set(keys.lease(acct.id), "test-owner:0", px=3_600_000)
    await client.zadd(keys.instances, {"test-owner": int(time.time() * 1000) + 3_600_000})


@pytest.fixture
def service_factory(
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
) -> ServiceFactory:
    session_redis = redis_url

    @contextlib.asynccontextmanager
    async def start(
        accounts: Iterable[AccountConfig] = (),
        *,
        real_supervisor: bool = False,
        token: str | None = None,
        redis_url: str | None = None,
        ws_ping_interval: float | None = 20.0,
        **overrides: Any,
    ) -> AsyncIterator[Service]:
        url = redis_url or session_redis
        accounts = list(accounts)
        if token is not None:
            overrides.setdefault("api_tokens", token)
        settings = Settings(
            redis_url=url,
            key_prefix=key_prefix,
            data_dir=tmp_path / "data",
            accounts_file=tmp_path / "none.yaml",
            host="127.0.0.1",
            port=0,
            **overrides,
        )
        app = service_module.create_app(
            settings,
            accounts=list(accounts),
            upstream=None if real_supervisor else StubSupervisor,
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            access_log=False,
            lifespan="on",
            http=HTTP_PROTOCOL,
            ws="websockets-sansio",
            ws_max_size=1 << 16,
            ws_per_message_deflate=False,
            ws_ping_interval=ws_ping_interval,
        )
        server = ServiceServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("server stopped before it started")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        redis_client = aioredis.Redis.from_url(url)
        if not real_supervisor:
            await _stand_in_owner(redis_client, Keys(key_prefix), accounts)
        owner = BalanceWriter(redis_client, Keys(key_prefix), stream_maxlen=settings.stream_maxlen)
        owner.start()
        http = aiohttp.ClientSession()
        svc = Service(
            app=app,
            server=server,
            base=f"http://127.0.0.1:{port}",
            ws_base=f"ws://127.0.0.1:{port}",
            services=app.state.services,
            owner=owner,
            http=http,
            redis=redis_client,
            token=token,
        )
        try:
            yield svc
        finally:
            await http.close()
            await owner.close()
            server.should_exit = True
            await asyncio.wait_for(task, 30)
            await redis_client.aclose()

    return start
