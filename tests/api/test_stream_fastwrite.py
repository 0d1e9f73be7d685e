"""The stream route's batched direct write engages on the real service under uvicorn,
and the route falls back to one ASGI send per message when it cannot."""

from __future__ import annotations

import pytest

import app.stream.fastwrite as fastwrite
from app.domain import AccountState
from tests.api.conftest import VENUE, Service, ServiceFactory, account, bal, status_doc
from tests.api.streamclient import StreamState, by_key, read_one, sync


async def _stream_once(svc: Service) -> None:
    """A client sees its snapshot, then live balances, in order and complete."""
    svc.owner.submit_status("acct-0", status_doc("acct-0", AccountState.LIVE))
    await svc.settle()
    state = StreamState()
    ws = await svc.ws()
    state.apply(await read_one(ws))
    for i in range(200):
        svc.owner.submit_update("acct-0", VENUE, [bal(f"A{i % 20}", f"{i}.25")])
    await svc.settle()
    await sync(ws, state)
    _status, rest = await svc.get("/v1/balances")
    assert state.seq == rest["seq"] == svc.hub.seq
    assert state.view() == by_key(rest["balances"])
    await ws.close()


async def test_the_stream_route_writes_to_uvicorns_connection_directly(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory([account("acct-0")]) as svc:
        ws = await svc.ws()
        await read_one(ws)
        (sub,) = svc.hub.subscribers
        assert sub.direct, "the batched write is off: uvicorn's send did not reach the route"
        await ws.close()
        await _stream_once(svc)


async def test_the_stream_route_falls_back_to_asgi_sends(
    service_factory: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as if the server were not uvicorn's sans-I/O protocol
    monkeypatch.setattr(fastwrite, "PROTOCOL_NAME", "SomeOtherProtocol")
    async with service_factory([account("acct-0")]) as svc:
        ws = await svc.ws()
        await read_one(ws)
        (sub,) = svc.hub.subscribers
        assert not sub.direct
        await ws.close()
        await _stream_once(svc)
