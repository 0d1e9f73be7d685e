"""``balance-aggregator demo``: the four venue simulators, moving, and the service wired to them.

Everything runs in one process with no keys and no Redis to install: the service starts
its embedded Redis in a temporary data directory, the simulators random-walk several
accounts per venue (and now and then drop a connection, so account states move), and the
dashboard at ``/`` shows it all live. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from app.logs import setup_logging
from app.service import _Server, create_app
from app.settings import AccountConfig, Settings
from app.simulators.runner import Simulators, start_simulators

# A second account per venue, so the demo shows more than one of each.
_EXTRA: dict[str, dict[str, Any]] = {
    "bitopro": {
        "api_key": "sim-bitopro-key-2",
        "api_secret": "sim-bitopro-secret-2",
        "email": "second@bitopro.sim.invalid",
        "balances": {"BTC": "0.25", "USDT": "1200.5", "ETH": {"amount": "3", "available": "2"}},
    },
    "sfox": {"api_key": "sim-sfox-key-2", "balances": {"btc": "0.05", "usd": "5400.12"}},
    "deltadefi": {"api_key": "sim-deltadefi-key-2", "balances": {"usdm": "250", "ada": "4200"}},
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


async def _demo(host: str, port: int, sim_port: int, data_dir: Path) -> int:
    sims = await start_simulators(
        "127.0.0.1", sim_port, walk=True, walk_rate=4.0, walk_drops=True, ping_interval=20.0
    )
    try:
        accounts = demo_accounts(sims)
        settings = Settings(
            _env_file=None,
            host=host,
            port=port,
            data_dir=data_dir,
            lease_ms=5000,
            backoff_max=5.0,
            healthy_after=5.0,
            auth_retry_min=10.0,
            instance_id="demo",
        )
        app = create_app(settings, accounts)
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, ws="auto"
        )
        server = _Server(config)

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


def run_demo(host: str = "127.0.0.1", port: int = 8000, sim_port: int = 0) -> int:
    setup_logging("INFO", "text")
    data_dir = Path(tempfile.mkdtemp(prefix="balagg-demo-"))
    try:
        return asyncio.run(_demo(host, port, sim_port, data_dir))
    except KeyboardInterrupt:
        return 0
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
