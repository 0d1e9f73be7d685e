"""The ``/_sim`` HTTP control API, driven the way another process would drive it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp

from app.simulators.bitopro import BitoproSimulator
from app.simulators.deltadefi import DeltaDefiSimulator
from app.simulators.sfox import SfoxSimulator
from app.simulators.solanatracker import TRUMP, USDC, SolanaTrackerSimulator
from tests.simulators.wsclient import (
    BITOPRO_KEY,
    DELTADEFI_KEY,
    SFOX_KEY,
    SOLANA_KEY,
    WALLET_A,
    bitopro_headers,
    expect_closed,
    loads,
    recv_json,
    recv_text,
)


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    *,
    raw: str | None = None,
    status: int = 200,
) -> Any:
    data = raw if raw is not None else None
    kwargs: dict[str, Any] = {"json": body} if body is not None else {"data": data}
    async with session.request(method, url, **kwargs) as resp:
        text = await resp.text()
        assert resp.status == status, text
        assert resp.content_type == "application/json"
        return loads(text)


async def test_bitopro_control_round_trip(
    session: aiohttp.ClientSession, bitopro: BitoproSimulator
) -> None:
    base = bitopro.rest_url + "/_sim"
    index = await call(session, "GET", base)
    assert index["venue"] == "bitopro" and index["ws_url"] == bitopro.ws_url
    added = await call(
        session,
        "POST",
        base + "/accounts",
        raw='{"api_key": "k2", "api_secret": "s2", "email": "e2@x.invalid",'
        ' "balances": {"eth": {"amount": 0.1, "available": 0.1}}}',
        status=201,
    )
    assert added == {"key": "k2"}
    truth = await call(session, "GET", base + "/accounts/k2/truth")
    assert truth["balances"] == [
        {"wallet": "", "asset": "ETH", "total": "0.1", "available": "0.1", "locked": "0.0"}
    ]
    assert truth["native"]["ETH"]["amount"] == "0.1"
    accounts = await call(session, "GET", base + "/accounts")
    assert accounts["accounts"]["k2"] == {
        "api_key": "k2",
        "api_secret": "s2",
        "email": "e2@x.invalid",
    }

    acct = f"{base}/accounts/{BITOPRO_KEY}"
    async with session.ws_connect(bitopro.ws_url, headers=bitopro_headers()) as ws:
        await recv_json(ws)
        pushed = await call(
            session, "POST", acct + "/push", {"BTC": {"amount": "3", "available": "3"}}
        )
        assert pushed == {"frames": 1}
        assert (await recv_json(ws))["data"]["BTC"]["amount"] == "3"
        burst = await call(session, "POST", acct + "/burst", {"count": 50, "asset": "BTC"})
        assert burst["frames"] == 50 and burst["rate"] > 0
        for _ in range(50):
            await recv_text(ws)
        assert await call(session, "POST", acct + "/malformed", {"kind": "negative"}) == {
            "frames": 1
        }
        await recv_text(ws)
        assert await call(session, "POST", acct + "/stall", {}) == {"stalled": 1}
        assert await call(session, "POST", acct + "/stall", {"stall": False}) == {"stalled": 1}
        counts = await call(session, "GET", base + "/connections")
        assert counts["connections"][BITOPRO_KEY] == {"open": 1, "total": 1, "refused": 0}
        assert await call(session, "POST", acct + "/drop") == {"dropped": 1}
        await expect_closed(ws)
    await call(session, "PUT", acct + "/balances", {"balances": {"USDT": "10"}})
    assert [r.asset for r in bitopro.truth(BITOPRO_KEY)] == ["USDT"]
    assert await call(session, "DELETE", acct + "/balances/usdt") == {"removed": True}
    assert bitopro.truth(BITOPRO_KEY) == []
    await call(session, "POST", acct + "/refuse", {"refuse": True})
    with_refusal = bitopro_headers()
    async with session.get(bitopro.rest_url + "/v3/accounts/balance", headers=with_refusal) as r:
        assert r.status == 401
    await call(session, "POST", acct + "/refuse", {"refuse": False})
    await call(session, "DELETE", base + "/accounts/k2")
    assert "k2" not in bitopro.account_keys()


async def test_control_errors(session: aiohttp.ClientSession, bitopro: BitoproSimulator) -> None:
    base = bitopro.rest_url + "/_sim"
    err = await call(session, "GET", base + "/accounts/nope/truth", status=404)
    assert "no such account" in err["error"]
    acct = f"{base}/accounts/{BITOPRO_KEY}"
    await call(session, "POST", acct + "/push", {"BTC": "-1"}, status=400)
    await call(
        session, "POST", acct + "/push", {"BTC": {"amount": "1", "available": "2"}}, status=400
    )
    await call(session, "POST", acct + "/push", raw="{not json", status=400)
    await call(session, "POST", acct + "/malformed", {"kind": "nonsense"}, status=400)
    await call(session, "POST", acct + "/burst", {"count": 0}, status=400)
    await call(session, "POST", base + "/accounts", {"api_key": "x"}, status=400)
    await call(
        session,
        "POST",
        base + "/accounts",
        {"api_key": BITOPRO_KEY, "api_secret": "s", "email": "e"},
        status=400,
    )
    assert next(r for r in bitopro.truth(BITOPRO_KEY) if r.asset == "BTC").total == Decimal("1.5")


async def test_venue_specific_routes(
    session: aiohttp.ClientSession,
    sfox: SfoxSimulator,
    deltadefi: DeltaDefiSimulator,
    solanatracker: SolanaTrackerSimulator,
) -> None:
    async with session.ws_connect(sfox.ws_url) as ws:
        await ws.send_json({"type": "authenticate", "apiKey": SFOX_KEY})
        await ws.send_json({"type": "subscribe", "feeds": ["private.user.balances"]})
        await recv_json(ws)
        await recv_json(ws)
        assert (await recv_json(ws))["payload"]["type"] == "web3"  # announced on subscribe
        acct = f"{sfox.rest_url}/_sim/accounts/{SFOX_KEY}"
        assert await call(session, "POST", acct + "/sequence", {"kind": "gap", "skip": 2}) == {
            "frames": 1
        }
        assert (await recv_json(ws))["sequence"] == 6
        web3 = {"address": "0xfeed", "network": "Base", "currency": "usdc", "balance": "7.25"}
        assert await call(session, "POST", acct + "/web3", web3) == {"frames": 1}
        assert (await recv_json(ws))["payload"]["balance"] == "7.25"
        await call(session, "POST", acct + "/sequence", {"kind": "sideways"}, status=400)

    async with session.ws_connect(f"{deltadefi.ws_url}?api_key={DELTADEFI_KEY}") as ws:
        await deltadefi.wait_for_connections(DELTADEFI_KEY)
        acct = f"{deltadefi.rest_url}/_sim/accounts/{DELTADEFI_KEY}"
        assert await call(session, "POST", acct + "/order", {"status": "failed"}) == {"frames": 1}
        assert (await recv_json(ws))["order"]["status"] == "failed"
        assert await call(session, "POST", acct + "/points", {"delta": 5}) == {"frames": 1}
        assert (await recv_json(ws))["dlta_points"]["delta"] == "5"

    async with session.ws_connect(f"{solanatracker.ws_url}/{SOLANA_KEY}") as ws:
        await ws.send_json({"type": "join", "room": f"transaction:{TRUMP}"})
        await ws.send_json({"type": "join", "room": f"wallet:{WALLET_A}:balance"})
        await recv_json(ws)
        await recv_json(ws)
        base = f"{solanatracker.rest_url}/_sim"
        swap = {"mint": TRUMP, "price_usd": 7.125, "side": "buy", "amount": "3"}
        assert await call(session, "POST", base + "/swaps", swap) == {"frames": 1}
        assert (await recv_json(ws))["data"][0]["priceUsd"] == Decimal("7.125")
        change = {WALLET_A: {USDC: "12.5"}}
        assert await call(session, "POST", f"{base}/accounts/{SOLANA_KEY}/push", change) == {
            "frames": 1
        }
        assert (await recv_json(ws))["data"]["amount"] == Decimal("12.5")
