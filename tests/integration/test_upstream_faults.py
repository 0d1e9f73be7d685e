"""Upstream faults end to end: bad snapshots, quiet drops, refusals, redirects, heartbeats.

Each test drives the real service against a simulator (or a purpose-built fake venue
server) over real sockets, with a real Redis, and checks what clients would see.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.runtime import Runtime
from app.simulators.bitopro import BAD_SNAPSHOT_KINDS
from app.simulators.runner import Simulators
from tests.integration.conftest import (
    account_for,
    converge,
    fast_settings,
    metric,
    running_service,
    service_state,
    wait_state,
    wait_until,
)


def _status(rt: Runtime, account: str) -> dict[str, object]:
    runner = rt.supervisor.runner(account)
    assert runner is not None
    return runner.status_doc()


@pytest.mark.parametrize("kind", BAD_SNAPSHOT_KINDS)
async def test_bitopro_rejected_snapshot_never_promotes_a_partial_frame(
    sims: Simulators, redis_url: str, key_prefix: str, kind: str
) -> None:
    account = account_for(sims, "bitopro")
    key = sims.default_keys["bitopro"]
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        await wait_state(rt, account.id, ["live"])
        before, truth = await converge(rt, sims, "bitopro", account.id)
        assert before == truth and ("", "ADA") in before
        sims.bitopro.bad_snapshot(key, kind, count=1_000)
        sims.bitopro.drop(key)
        rejected = {"account": account.id, "venue": "bitopro", "reason": "snapshot_rejected"}

        async def rejected_twice() -> bool:
            # a partial frame right behind every rejected first frame
            await sims.bitopro.push(key, {"BTC": "2.5"})
            return metric(rt, "balagg_upstream_errors_total", rejected) >= 2

        saw_rejections = await wait_until(rejected_twice, 20)
        await rt.writer.drain(1)
        during = await service_state(rt, account.id)
        # nothing deleted: ADA and the rest are still there, the last state kept
        assert set(during) == set(before)
        assert during[("", "ADA")][0] == Decimal("999999999999.99999999")
        status = _status(rt, account.id)
        assert status["state"] in ("syncing", "stale")
        assert "snapshot" in str(status["last_error"])
        assert saw_rejections
        sims.bitopro.bad_snapshot(key, kind, count=0)
        await wait_state(rt, account.id, ["live"], timeout=20)
        ours, truth = await converge(rt, sims, "bitopro", account.id)
        assert ours == truth and ours[("", "BTC")][0] == Decimal("2.5")
