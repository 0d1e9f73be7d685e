"""Start all four venue simulators together: for ``simulate``, ``demo``, tests and benches.

:func:`start_simulators` starts one server per venue (on free ports, or on consecutive
ports from ``port``: BitoPro, sFOX, DeltaDeFi, SolanaTracker), each holding one default
account with obviously fake credentials. :meth:`Simulators.describe` maps each venue to
``{"ws_url", "rest_url", "credentials"}``: the URLs are exactly what an account's
``ws_url``/``rest_url`` setting would be and the credentials are the account fields the
simulator accepts. :func:`run_simulate` is the ``simulate`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from app.simulators.bitopro import BitoproSimulator
from app.simulators.deltadefi import DeltaDefiSimulator
from app.simulators.server import VenueSimulator
from app.simulators.sfox import SfoxSimulator
from app.simulators.solanatracker import BONK, TRUMP, USDC, USDT, WSOL, SolanaTrackerSimulator
from app.simulators.walk import RandomWalk

VENUES = ("bitopro", "sfox", "deltadefi", "solanatracker")

DEMO_WALLETS = (
    "C8ufaKLUnTD5JmCUui9JmmTwaabE1yqfQvSz48x5KN2s",
    "7t6mAsPN897kgxp8yHQizmQ9vDYasvtrSF53jMr4M2nV",
)
"""Valid base58 addresses (of the SHA-256 of ``sim-wallet-1``/``-2``), owned by nobody."""

DEFAULT_ACCOUNTS: dict[str, dict[str, Any]] = {
    "bitopro": {
        "api_key": "sim-bitopro-key",
        "api_secret": "sim-bitopro-secret",
        "email": "demo@bitopro.sim.invalid",
        "balances": {
            "BTC": {"amount": "1.5", "available": "1.0"},
            "ETH": "12.25",
            "USDT": {"amount": "25000", "available": "24000.5"},
            "TWD": "150000",
            "BITO": "12500",
            "ADA": "15250.5",
        },
    },
    "sfox": {
        "api_key": "sim-sfox-key",
        "balances": {
            "btc": "0.17572419",
            "usd": {"balance": "100", "held": "25"},
            "eth": "2.5",
        },
        "web3": [
            {
                "address": "0x0bCdB57ae247F434C91b1d4521fFd6601f7e8999",
                "network": "Ethereum",
                "currency": "USDC",
                "balance": "250.5",
            }
        ],
    },
    "deltadefi": {
        "api_key": "sim-deltadefi-key",
        "balances": {
            "usdm": "1153.006812",
            "ada": {"free": "1383.52097", "locked": "10"},
        },
    },
    "solanatracker": {
        "api_key": "sim-datastream-key",
        "data_api_key": "sim-data-api-key",
        "wallets": list(DEMO_WALLETS),
        "balances": {
            DEMO_WALLETS[0]: {USDC: "78816.844996", WSOL: "12.5", TRUMP: "90"},
            DEMO_WALLETS[1]: {USDT: "1000", BONK: "1500000.12345"},
        },
    },
}
"""The account each simulator starts with (what ``describe()`` reports)."""


@dataclass
class Simulators:
    """The four running simulators, their default accounts and the optional random walk."""

    bitopro: BitoproSimulator
    sfox: SfoxSimulator
    deltadefi: DeltaDefiSimulator
    solanatracker: SolanaTrackerSimulator
    default_keys: dict[str, str] = field(default_factory=dict)
    walk: RandomWalk | None = None

    def all(self) -> dict[str, VenueSimulator[Any]]:
        return {
            "bitopro": self.bitopro,
            "sfox": self.sfox,
            "deltadefi": self.deltadefi,
            "solanatracker": self.solanatracker,
        }

    def __getitem__(self, venue: str) -> VenueSimulator[Any]:
        return self.all()[venue]

    def describe(self) -> dict[str, dict[str, Any]]:
        """venue -> {"ws_url", "rest_url", "credentials"} for each default account."""
        out: dict[str, dict[str, Any]] = {}
        for venue, sim in self.all().items():
            key = self.default_keys.get(venue)
            out[venue] = {
                "ws_url": sim.ws_url,
                "rest_url": sim.rest_url,
                "credentials": sim.credentials(key) if key is not None else {},
            }
        return out

    async def stop(self) -> None:
        if self.walk is not None:
            await self.walk.stop()
        await asyncio.gather(*(sim.stop() for sim in self.all().values()))


async def start_simulators(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    default_accounts: bool = True,
    walk: bool = False,
    walk_rate: float = 4.0,
    walk_drops: bool = False,
    ping_interval: float | None = None,
    seed: int | None = None,
    **options: Any,
) -> Simulators:
    """Start the four simulators; ``port`` 0 picks free ports, else ``port`` .. ``port+3``.

    ``ping_interval`` overrides every venue's keepalive interval (BitoPro's default is
    20 s); other ``options`` go to every simulator (``pong_timeout``, ``oversize_bytes``).
    """
    common: dict[str, Any] = {"host": host, "ping_interval": ping_interval, **options}

    def at(offset: int) -> int:
        return port + offset if port else 0

    sims = Simulators(
        BitoproSimulator(port=at(0), **common),
        SfoxSimulator(port=at(1), **common),
        DeltaDefiSimulator(port=at(2), **common),
        SolanaTrackerSimulator(port=at(3), seed=seed, **common),
    )
    try:
        for sim in sims.all().values():
            await sim.start()
    except BaseException:
        await sims.stop()
        raise
    if default_accounts:
        for venue, sim in sims.all().items():
            sims.default_keys[venue] = sim.add_account_json(DEFAULT_ACCOUNTS[venue])
    if walk:
        sims.walk = RandomWalk(
            sims.bitopro,
            sims.sfox,
            sims.deltadefi,
            sims.solanatracker,
            rate=walk_rate,
            drops=walk_drops,
            seed=seed,
        )
        sims.walk.start()
    return sims


def cannot_listen(flag: str, port: int, exc: OSError) -> str:
    """One line for simulators that could not open their ports (taken or not allowed)."""
    ports = f"{port}..{port + 3}" if port else "free ports"
    return (
        f"{flag} {port}: the simulators need {ports}: {exc.strerror or exc}; "
        f"pass another {flag}, or 0 for free ports"
    )


async def _simulate(host: str, port: int, walk: bool, walk_drops: bool) -> int:
    try:
        sims = await start_simulators(host, port, walk=walk, walk_drops=walk_drops)
    except OSError as exc:
        sys.stderr.write(f"configuration error: {cannot_listen('--port', port, exc)}\n")
        return 2
    try:
        sys.stdout.write(json.dumps(sims.describe()) + "\n")
        sys.stdout.flush()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, done.set)
        sys.stderr.write("simulators running; stop with Ctrl-C or SIGTERM\n")
        await done.wait()
    finally:
        await sims.stop()
    return 0


def run_simulate(host: str, port: int, walk: bool, *, walk_drops: bool = False) -> int:
    """The ``simulate`` command: print ``describe()`` as the first stdout line, run until
    SIGINT/SIGTERM, stop cleanly and return 0."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional on some platforms
        return asyncio.run(_simulate(host, port, walk, walk_drops))
    return uvloop.run(_simulate(host, port, walk, walk_drops))
