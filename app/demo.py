"""``balance-aggregator demo``: the four venue simulators, moving, and the service wired to them.

Everything runs in one process with no keys and no Redis to install: the service starts
its embedded Redis in a temporary data directory, the simulators random-walk several
accounts per venue (and now and then drop a connection, so account states move), and the
dashboard at ``/`` shows it all live. Ctrl-C stops everything cleanly.

Listen address: ``--host``/``--port`` when given, else ``BALAGG_HOST``/``BALAGG_PORT``
from the environment, else 127.0.0.1:8000. Everything else is the demo's own (embedded
Redis in a temporary directory, its own accounts): a ``.env`` file or ``BALAGG_REDIS_URL``
meant for a real deployment never reaches it.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.accounts import AccountConfig, ConfigError
from app.domain import Venue
from app.logs import setup_logging
from app.server import ServiceServer, uvicorn_config
from app.service import create_app
from app.settings import Settings, describe_settings_error
from app.simulators.runner import Simulators, cannot_listen, start_simulators

# A second account per venue, so the demo shows more than one of each.
_EXTRA: dict[str, dict[str, Any]] = {
    Venue.BITOPRO: {
        "api_key": "sim-bitopro-key-2",
        "api_secret": "sim-bitopro-secret-2",
        "email": "second@bitopro.sim.invalid",
        "balances": {"BTC": "0.25", "USDT": "1200.5", "ETH": {"amount": "3", "available": "2"}},
    },
    Venue.SFOX: {"api_key": "sim-sfox-key-2", "balances": {"btc": "0.05", "usd": "5400.12"}},
    Venue.DELTADEFI: {"api_key": "sim-deltadefi-key-2", "balances": {"usdm": "250", "ada": "4200"}},
}


def demo_accounts(sims: Simulators) -> list[AccountConfig]:
    """The accounts the demo service runs: each simulator's default account plus one more."""
    described = sims.describe()
    accounts: list[AccountConfig] = []
    for venue, info in described.items():
        sim = sims[venue]
        keys = [sims.default_keys[venue]]
        if venue in _EXTRA:
            keys.append(sim.add_account_json(_EXTRA[venue]))
        for n, key in enumerate(keys, 1):
            accounts.append(
                AccountConfig.model_validate(
                    {
                        "id": f"{venue}-{'main' if n == 1 else n}",
                        "venue": venue,
                        "ws_url": info["ws_url"],
                        "rest_url": info["rest_url"],
                        **sim.credentials(key),
                    }
                )
            )
    return accounts


def demo_settings(host: str | None, port: int | None, data_dir: Path) -> Settings:
    """The demo service's settings: a given ``host``/``port`` wins over ``BALAGG_HOST`` /
    ``BALAGG_PORT``; a bad value is a :class:`ConfigError` like any other setting."""
    given: dict[str, Any] = {"host": host, "port": port}
    try:
        return Settings(
            _env_file=None,
            **{name: value for name, value in given.items() if value is not None},
            redis_url=None,
            data_dir=data_dir,
            lease_ms=5000,
            backoff_max=5.0,
            healthy_after=5.0,
            auth_retry_min=10.0,
            instance_id="demo",
        )
    except ValidationError as exc:
        raise ConfigError(describe_settings_error(exc)) from None


async def _demo(settings: Settings, sim_port: int) -> int:
    host, port = settings.host, settings.port
    try:
        sims = await start_simulators(
            "127.0.0.1", sim_port, walk=True, walk_rate=4.0, walk_drops=True, ping_interval=20.0
        )
    except OSError as exc:  # a port taken or not allowed: say so, like any bad setting
        raise ConfigError(cannot_listen("--sim-port", sim_port, exc)) from None
    try:
        accounts = demo_accounts(sims)
        app = create_app(settings, accounts)
        server = ServiceServer(uvicorn_config(app, settings))  # served exactly as serve does

        async def banner() -> None:
            while not server.started:  # noqa: ASYNC110 - uvicorn exposes only this flag
                await asyncio.sleep(0.05)
            base = f"http://{host}:{port}"
            sys.stdout.write(
                "\nbalance-aggregator demo is running\n"
                f"  dashboard   {base}/\n"
                f"  balances    {base}/v1/balances\n"
                f"  totals      {base}/v1/totals?quote=USD\n"
                f"  accounts    {base}/v1/accounts\n"
                f"  stream      ws://{host}:{port}/v1/stream\n"
                f"  API docs    {base}/docs\n"
                f"  metrics     {base}/metrics\n"
                f"  simulators  {', '.join(f'{v} {s.base_url}' for v, s in sims.all().items())}\n"
                "Press Ctrl-C to stop.\n\n"
            )
            sys.stdout.flush()

        banner_task = asyncio.create_task(banner())
        await server.serve()
        banner_task.cancel()
        return 0 if server.started else 1
    finally:
        await sims.stop()


def run_demo(host: str | None = None, port: int | None = None, sim_port: int = 0) -> int:
    """Run until Ctrl-C; ``None`` host/port fall back to ``BALAGG_HOST``/``BALAGG_PORT``."""
    data_dir = Path(tempfile.mkdtemp(prefix="balagg-demo-"))
    try:
        settings = demo_settings(host, port, data_dir)  # a bad setting stops here, cleanly
        setup_logging("INFO", "text")
        return asyncio.run(_demo(settings, sim_port))
    except KeyboardInterrupt:
        return 0
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
