"""Fixtures for the simulator tests: started simulators with one account, a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from app.simulators.bitopro import BitoproSimulator
from app.simulators.deltadefi import DeltaDefiSimulator
from app.simulators.sfox import SfoxSimulator
from app.simulators.solanatracker import USDC, WSOL, SolanaTrackerSimulator
from tests.simulators.wsclient import (
    BITOPRO_EMAIL,
    BITOPRO_KEY,
    BITOPRO_SECRET,
    DATA_KEY,
    DELTADEFI_KEY,
    SFOX_KEY,
    SOLANA_KEY,
    WALLET_A,
    WALLET_B,
)

FAST: dict[str, Any] = {"ping_interval": 5.0, "pong_timeout": 1.0, "oversize_bytes": 100_000}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def bitopro() -> AsyncIterator[BitoproSimulator]:
    sim = BitoproSimulator(**FAST)
    sim.add_account(
        BITOPRO_KEY,
        BITOPRO_SECRET,
        BITOPRO_EMAIL,
        {
            "BTC": {"amount": "1.5", "available": "1.0"},
            "ADA": "999999999999.99999999",
            "TWD": {"amount": "100", "available": "100", "stake": "5", "tradable": False},
        },
    )
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def sfox() -> AsyncIterator[SfoxSimulator]:
    sim = SfoxSimulator(subscribe_timeout=0.5, **FAST)
    sim.add_account(
        SFOX_KEY,
        {"btc": "0.17572419", "usd": {"balance": "100", "held": "25"}},
        [
            {
                "address": "0x0bCdB57ae247F434C91b1d4521fFd6601f7e8999",
                "network": "Ethereum",
                "currency": "USDC",
                "balance": "250.5",
            }
        ],
    )
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def deltadefi() -> AsyncIterator[DeltaDefiSimulator]:
    sim = DeltaDefiSimulator(**FAST)
    sim.add_account(DELTADEFI_KEY, {"usdm": "1153.006812", "ada": {"free": "1383.52097"}})
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def solanatracker() -> AsyncIterator[SolanaTrackerSimulator]:
    sim = SolanaTrackerSimulator(seed=7, **FAST)
    sim.add_account(
        SOLANA_KEY,
        DATA_KEY,
        [WALLET_A, WALLET_B],
        {WALLET_A: {USDC: "78816.844996", WSOL: "1.5"}, WALLET_B: {USDC: "5"}},
    )
    await sim.start()
    yield sim
    await sim.stop()
