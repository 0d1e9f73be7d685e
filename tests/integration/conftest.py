"""End-to-end wiring: the real simulators and the real service over real sockets and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI

from app.accounts import AccountConfig
from app.service import create_app
from app.services import Services
from app.settings import Settings
from app.simulators.runner import Simulators, start_simulators
from app.supervisor import Supervisor

Row = tuple[Decimal, Decimal, Decimal]
State = dict[tuple[str, str], Row]


@pytest.fixture
async def sims() -> AsyncIterator[Simulators]:
    simulators = await start_simulators(ping_interval=1.0)
    try:
        yield simulators
    finally:
        await simulators.stop()


def account_for(
    sims: Simulators,
    venue: str,
    account_id: str | None = None,
    key: str | None = None,
    **overrides: Any,
) -> AccountConfig:
    """An account wired to a simulator: its default account, or the one with ``key``."""
    described = sims.describe()[venue]
    sim = sims[venue]
    credentials = sim.credentials(key) if key is not None else described["credentials"]
    fields: dict[str, Any] = {
        "id": account_id or f"{venue}-main",
        "venue": venue,
        "ws_url": described["ws_url"],
        "rest_url": described["rest_url"],
        **credentials,
        **overrides,
    }
    return AccountConfig.model_validate(fields)


def all_default_accounts(sims: Simulators) -> list[AccountConfig]:
    return [account_for(sims, venue) for venue in ("bitopro", "sfox", "deltadefi", "solanatracker")]


UNLIMITED: dict[str, Any] = {"connect": [], "rest": [], "sockets": 0}


def fast_settings(redis_url: str, key_prefix: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "heartbeat": 1.0,
        "read_timeout": 3.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
        "healthy_after": 1.0,
        "auth_retry_min": 1.0,
        "lease_ms": 2000,
        "instance_id": f"test-{key_prefix}",
        "history": False,  # history tests choose their own database (tests/history)
        # fault tests reconnect dozens of times a minute, far past the venues' real limits
        # (which test_venue_limits.py checks with small limits of its own)
        "venue_limits": {v: UNLIMITED for v in ("bitopro", "sfox", "deltadefi", "solanatracker")},
        **extra,
    }
    return Settings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings, accounts: list[AccountConfig]
) -> AsyncIterator[Services]:
    """The service's lifespan without an HTTP listener: supervisor, writer, hub."""
    app: FastAPI = create_app(settings, accounts)
    async with app.router.lifespan_context(app):
        yield app.state.services


def truth_state(sims: Simulators, venue: str, key: str | None = None) -> State:
    sim = sims[venue]
    credential = key if key is not None else sims.default_keys[venue]
    return {(r.wallet, r.asset): (r.total, r.available, r.locked) for r in sim.truth(credential)}


async def service_state(runtime: Services, account: str) -> State:
    snap = await runtime.reader.snapshot([account])
    return {(r.wallet, r.asset): (r.total, r.available, r.locked) for r in snap.records}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _without_zeros(state: State) -> State:
    zero = (Decimal(0), Decimal(0), Decimal(0))
    return {k: v for k, v in state.items() if v != zero}


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 15.0, interval: float = 0.05
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return await check()


async def converge(
    runtime: Services,
    sims: Simulators,
    venue: str,
    account: str,
    key: str | None = None,
    timeout: float = 20.0,
) -> tuple[State, State]:
    """Wait until Redis holds exactly the simulator's truth; return both for the assert."""
    ignore_zero = venue == "solanatracker"  # a sold-out mint is a zero balance, not absent

    async def same() -> bool:
        await runtime.writer.drain(1)
        ours, truth = await service_state(runtime, account), truth_state(sims, venue, key)
        if ignore_zero:
            ours, truth = _without_zeros(ours), _without_zeros(truth)
        return ours == truth

    await wait_until(same, timeout)
    ours, truth = await service_state(runtime, account), truth_state(sims, venue, key)
    if ignore_zero:
        return _without_zeros(ours), _without_zeros(truth)
    return ours, truth


async def wait_state(
    runtime: Services, account: str, states: Iterable[str], timeout: float = 15.0
) -> str:
    wanted = set(states)

    async def reached() -> bool:
        runner = runtime.supervisor.runner(account)
        return runner is not None and str(runner.state) in wanted

    assert await wait_until(reached, timeout), f"{account} never reached {wanted}"
    runner = runtime.supervisor.runner(account)
    assert runner is not None
    return str(runner.state)


def supervisor_of(runtime: Services) -> Supervisor:
    """The real upstream side these tests run (``Services`` types it as the protocol)."""
    assert isinstance(runtime.supervisor, Supervisor)
    return runtime.supervisor


def metric(runtime: Services, name: str, labels: dict[str, str]) -> float:
    value = runtime.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def go_live(runtime: Services, sims: Simulators, account: AccountConfig) -> None:
    """Wait for ``live``; for sFOX also re-announce web3 wallets.

    sFOX's REST snapshot holds only the trading account: a web3 wallet is learned from
    its first stream message, so the simulator sends each one once here.
    """
    await wait_state(runtime, account.id, ["live"])
    if account.venue == "sfox":
        sim = sims.sfox
        key = account.api_key.get_secret_value() if account.api_key else ""
        for (network, address, currency), wallet in list(sim.account(key).web3.items()):
            await sim.push_web3(key, address, network, currency, wallet.balance)
