"""An sFOX web3 wallet reaches the service without being pushed, and after a reconnect.

sFOX's REST snapshot holds only the trading account; the simulator announces each web3
wallet on the stream right after the subscription, so the real service, over real
sockets and Redis, converges to the simulator's whole truth (trading account and web3
wallet) with no push from the test.
"""

from __future__ import annotations

from app.simulators.runner import Simulators
from tests.integration.conftest import (
    account_for,
    converge,
    fast_settings,
    running_service,
    wait_state,
    wait_until,
)

WEB3 = "web3:Ethereum:0x0bCdB57ae247F434C91b1d4521fFd6601f7e8999"


async def test_web3_wallet_arrives_without_a_push(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    account = account_for(sims, "sfox")
    key = sims.default_keys["sfox"]
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        await wait_state(rt, account.id, ["live"])
        ours, truth = await converge(rt, sims, "sfox", account.id)
        assert (WEB3, "USDC") in truth
        assert ours == truth
        # a new connection announces it again; the service still holds the whole truth
        connections = sims.sfox.connection_counts(key).total
        assert sims.sfox.drop(key) >= 1

        async def reconnected() -> bool:
            return sims.sfox.connection_counts(key).total > connections

        assert await wait_until(reconnected)
        await wait_state(rt, account.id, ["live"])
        ours, truth = await converge(rt, sims, "sfox", account.id)
        assert (WEB3, "USDC") in ours and ours == truth
