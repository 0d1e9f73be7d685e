"""A resume never carries a dead owner's ``live`` over: the served state wins over a replay.

The hub shows an account ``stale`` at once when the instance named in its status is gone
(its lease lapsed or it stopped heartbeating), although the stored status still says
``live``. Connected clients get a fresh snapshot when that happens; a client that was
disconnected at that moment and resumes with ``since`` must not be left with the stored
``live`` from its old view.
"""

from __future__ import annotations

import asyncio

from app.domain import AccountState
from tests.api.conftest import VENUE, Service, ServiceFactory, account, bal, status_doc
from tests.api.streamclient import StreamState, by_key, read_one, sync


async def _accounts_state(svc: Service, name: str) -> str:
    _status, body = await svc.get("/v1/accounts")
    return next(str(a["state"]) for a in body["accounts"] if a["account"] == name)


async def test_a_resume_after_the_owner_died_shows_the_account_stale(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory([account("acct-0")]) as svc:
        svc.owner.submit_status("acct-0", status_doc("acct-0", AccountState.LIVE))
        svc.owner.submit_update("acct-0", VENUE, [bal("BTC", "1.5")])
        await svc.settle()
        ws = await svc.ws()
        state = StreamState()
        state.apply(await read_one(ws))
        await sync(ws, state)
        assert state.states["acct-0"] == "live"
        await ws.close()

        # the owner dies while this client is away: its lease and heartbeat are gone
        keys = svc.services.keys
        await svc.redis.delete(keys.lease("acct-0"))
        await svc.redis.zrem(keys.instances, "test-owner")
        deadline = asyncio.get_running_loop().time() + 10
        while await _accounts_state(svc, "acct-0") != "stale":
            assert asyncio.get_running_loop().time() < deadline, "never shown stale"
            await asyncio.sleep(0.05)

        ws = await svc.ws(since=state.seq)
        await sync(ws, state)
        await ws.close()
        _status, rest = await svc.get("/v1/balances")
        assert state.states["acct-0"] == "stale"
        assert state.view() == by_key(rest["balances"])
        assert all(r["stale"] for r in state.view().values())
