"""A write for an account this instance no longer holds is never written unfenced.

When a lease is given back (rebalancing) or lost, the instance forgets its token; a write
still pending for that account must then be refused, not sent with no fence at all: the
new owner may already have written newer state (real Redis, the real service wiring).
"""

from __future__ import annotations

from decimal import Decimal

from app.domain import AssetBalance
from app.leases import LeaseManager
from app.simulators.runner import Simulators
from app.store import BalanceWriter
from tests.integration.conftest import (
    account_for,
    converge,
    fast_settings,
    running_service,
    service_state,
    supervisor_of,
    wait_state,
)


def _ada(total: str) -> AssetBalance:
    return AssetBalance("", "ADA", Decimal(total), Decimal(total), Decimal(0), "ADA", {})


async def test_a_write_pending_after_the_lease_is_released_is_not_written(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    account = account_for(sims, "deltadefi")
    settings = fast_settings(redis_url, key_prefix, lease_ms=10_000)
    async with running_service(settings, [account]) as rt:
        await wait_state(rt, account.id, ["live"])
        ours, truth = await converge(rt, sims, "deltadefi", account.id)
        assert ours == truth

        # what rebalancing does: stop the runner, keep its pending writes, give the lease up
        await supervisor_of(rt)._stop_runner(account.id, stale=False, discard=False)
        await supervisor_of(rt).leases.release(account.id)

        # another instance takes the account and writes its state
        other = LeaseManager(rt.redis, rt.keys, "other-instance", 10_000)
        assert await other.try_acquire(account.id)
        writer = BalanceWriter(rt.redis, rt.keys, fence=other.token)
        writer.submit_update(account.id, "deltadefi", [_ada("777")])
        assert [r.fenced for r in await writer.flush_once()] == [False]

        # a write of the former owner that had not drained before the release
        rt.writer.submit_update(account.id, "deltadefi", [_ada("1")])
        assert await rt.writer.drain(5)

        state = await service_state(rt, account.id)
        assert state[("", "ADA")][0] == Decimal("777")
