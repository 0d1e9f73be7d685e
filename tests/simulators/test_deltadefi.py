"""DeltaDeFi simulator over real sockets: query-string key, balance events, REST."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import pytest

from app.simulators.deltadefi import DeltaDefiSimulator
from tests.simulators.wsclient import (
    DELTADEFI_KEY,
    expect_silence,
    loads,
    recv_json,
    recv_text,
    vector,
)


def stream(sim: DeltaDefiSimulator, key: str = DELTADEFI_KEY) -> str:
    return f"{sim.ws_url}?api_key={key}"


async def test_unknown_key_is_refused_before_upgrade(
    session: aiohttp.ClientSession, deltadefi: DeltaDefiSimulator
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(stream(deltadefi, "nope"))
    assert info.value.status == 401
    deltadefi.refuse_auth(DELTADEFI_KEY)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await session.ws_connect(stream(deltadefi))
    assert deltadefi.connection_counts(DELTADEFI_KEY).refused == 1
    deltadefi.refuse_auth(DELTADEFI_KEY, False)
    async with session.ws_connect(stream(deltadefi)):
        pass


async def test_nothing_on_connect_then_exact_number_frames(
    session: aiohttp.ClientSession, deltadefi: DeltaDefiSimulator
) -> None:
    sample = vector("deltadefi/balance.json")
    async with session.ws_connect(stream(deltadefi)) as ws:
        await expect_silence(ws)
        assert await deltadefi.push(DELTADEFI_KEY, {"USDM": {"free": "1153.006812"}}) == 1
        raw = await recv_text(ws)
        assert '"free":1153.006812' in raw and '"locked":0' in raw
        frame = loads(raw)
        assert frame == {
            "type": "Account",
            "sub_type": "balance",
            "balance": [sample["balance"][0]],
        }
        await deltadefi.push(
            DELTADEFI_KEY, {"ada": {"free": "0.000001", "locked": "12345678901.123456"}}
        )
        frame = await recv_json(ws)
        assert frame["balance"] == [
            {
                "asset": "ada",
                "asset_unit": "",
                "free": Decimal("0.000001"),
                "locked": Decimal("12345678901.123456"),
            }
        ]
    ada = next(r for r in deltadefi.truth(DELTADEFI_KEY) if r.asset == "ADA")
    assert ada.total == Decimal("12345678901.123457")


async def test_order_and_points_events(
    session: aiohttp.ClientSession, deltadefi: DeltaDefiSimulator
) -> None:
    order_sample = vector("deltadefi/order_info.json")
    points_sample = vector("deltadefi/dlta_points.json")
    before = deltadefi.truth(DELTADEFI_KEY)
    async with session.ws_connect(stream(deltadefi)) as ws:
        await deltadefi.push_order(DELTADEFI_KEY, {"status": "closed"})
        order = await recv_json(ws)
        assert order["sub_type"] == "order_info"
        assert set(order["order"]) == set(order_sample["order"])
        assert order["order"]["status"] == "closed"
        await deltadefi.push_points(DELTADEFI_KEY, 150)
        points = await recv_json(ws)
        assert set(points["dlta_points"]) == set(points_sample["dlta_points"])
        assert points["dlta_points"]["new_total"] == "15150"
    assert deltadefi.truth(DELTADEFI_KEY) == before


async def test_rest_snapshot_equals_truth(
    session: aiohttp.ClientSession, deltadefi: DeltaDefiSimulator
) -> None:
    url = deltadefi.rest_url + "/accounts/balance"
    async with session.get(url, headers={"X-API-KEY": DELTADEFI_KEY}) as resp:
        assert resp.status == 200
        body = loads(await resp.read())
    got = {e["asset"].upper(): (e["free"] + e["locked"], e["free"], e["locked"]) for e in body}
    want = {r.asset: (r.total, r.available, r.locked) for r in deltadefi.truth(DELTADEFI_KEY)}
    assert got == want
    assert body[1]["asset_unit"] == vector("deltadefi/balance.json")["balance"][0]["asset_unit"]
    async with session.get(url, headers={"X-API-KEY": "nope"}) as resp:
        assert resp.status == 401


async def test_amounts_as_strings_option(session: aiohttp.ClientSession) -> None:
    sim = DeltaDefiSimulator(amounts_as_strings=True)
    sim.add_account("k", {"ada": "1.5"})
    async with sim, session.ws_connect(f"{sim.ws_url}?api_key=k") as ws:
        await sim.push("k", {"ada": "2.5"})
        assert '"free":"2.5"' in await recv_text(ws)


@pytest.mark.parametrize("kind", DeltaDefiSimulator.malformed_kinds)
async def test_malformed_frames_leave_truth_alone(
    session: aiohttp.ClientSession, deltadefi: DeltaDefiSimulator, kind: str
) -> None:
    before = deltadefi.truth(DELTADEFI_KEY)
    async with session.ws_connect(stream(deltadefi)) as ws:
        assert await deltadefi.send_malformed(DELTADEFI_KEY, kind) == 1
        raw = await recv_text(ws)
        if kind == "negative":
            assert '"free":-5' in raw
    assert deltadefi.truth(DELTADEFI_KEY) == before


async def test_burst(session: aiohttp.ClientSession, deltadefi: DeltaDefiSimulator) -> None:
    async with session.ws_connect(stream(deltadefi)) as ws:
        await deltadefi.burst(DELTADEFI_KEY, 300, "usdm")
        frames = [await recv_json(ws) for _ in range(300)]
    assert frames[-1]["balance"][0]["free"] == Decimal("1153.007112")
    usdm = next(r for r in deltadefi.truth(DELTADEFI_KEY) if r.asset == "USDM")
    assert usdm.available == Decimal("1153.007112")
