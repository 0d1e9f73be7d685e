"""A resync asked of an instance that does not own the account reaches the one that does.

Two service instances on one Redis, one account on the real sFOX simulator: the owner
holds the upstream socket; ``resync`` on the other instance goes through ``P:resync`` and
the owner reconnects (the simulator sees a second connection) and re-seeds.
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


async def test_resync_on_another_instance_reconnects_the_owner(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    account = account_for(sims, "sfox")
    key = sims.default_keys["sfox"]
    owner_settings = fast_settings(redis_url, key_prefix, instance_id=f"own-{key_prefix}")
    other_settings = fast_settings(redis_url, key_prefix, instance_id=f"oth-{key_prefix}")
    async with running_service(owner_settings, [account]) as owner:
        await wait_state(owner, account.id, ["live"])
        async with running_service(other_settings, [account]) as other:
            assert other.supervisor.runner(account.id) is None  # the owner keeps it
            before = sims.sfox.connection_counts(key).total
            for _ in range(2):  # the first, and one asked after the other started reading
                await other.supervisor.resync(account.id)

                async def reconnected(seen: int = before) -> bool:
                    return sims.sfox.connection_counts(key).total > seen

                assert await wait_until(reconnected, 10), "the owner never got the resync"
                before = sims.sfox.connection_counts(key).total
                await wait_state(owner, account.id, ["live"])
            assert other.supervisor.runner(account.id) is None
            ours, truth = await converge(owner, sims, "sfox", account.id)
            assert ours == truth
