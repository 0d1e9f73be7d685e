"""Simulator behaviour the real venues' SDKs rely on: JSON heartbeats, error bodies, signing."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import aiohttp

from app.simulators.bitopro import BitoproSimulator, encode_payload, sign_payload
from app.simulators.deltadefi import DeltaDefiSimulator
from app.simulators.solanatracker import SolanaTrackerSimulator
from tests.simulators.wsclient import (
    BITOPRO_EMAIL,
    BITOPRO_KEY,
    BITOPRO_SECRET,
    DATA_KEY,
    SOLANA_KEY,
    WALLET_A,
    bitopro_headers,
    expect_closed,
    fresh_nonce,
    recv_json,
)


async def _solana(interval: float, timeout: float) -> SolanaTrackerSimulator:
    sim = SolanaTrackerSimulator(
        ping_interval=0, app_ping_interval=interval, app_pong_timeout=timeout
    )
    sim.add_account(SOLANA_KEY, DATA_KEY, [WALLET_A])
    await sim.start()
    return sim


async def test_solanatracker_sends_json_pings_and_keeps_a_client_that_pongs(
    session: aiohttp.ClientSession,
) -> None:
    sim = await _solana(0.1, 0.5)
    try:
        async with session.ws_connect(f"{sim.base_url}/{SOLANA_KEY}") as ws:
            for _ in range(5):
                assert await recv_json(ws) == {"type": "ping"}
                await ws.send_str('{"type":"pong"}')
            assert not ws.closed
            assert sim.connection_counts(SOLANA_KEY).open == 1
    finally:
        await sim.stop()


async def test_solanatracker_drops_a_client_that_never_pongs(
    session: aiohttp.ClientSession,
) -> None:
    sim = await _solana(0.1, 0.3)
    try:
        async with session.ws_connect(f"{sim.base_url}/{SOLANA_KEY}") as ws:
            assert await recv_json(ws) == {"type": "ping"}
            await expect_closed(ws)
    finally:
        await sim.stop()


async def test_deltadefi_4xx_bodies_carry_code_and_msg(session: aiohttp.ClientSession) -> None:
    sim = DeltaDefiSimulator(ping_interval=0)
    sim.add_account("ddf-key", {"ada": "1"})
    await sim.start()
    try:
        async with session.get(
            f"{sim.base_url}/accounts/balance", headers={"X-API-KEY": "wrong"}
        ) as response:
            assert response.status == 401
            body = await response.json()
        async with session.get(f"{sim.base_url}/accounts/stream?api_key=wrong") as response:
            assert response.status == 401
            upgrade = await response.json()
        for doc in (body, upgrade):
            assert doc["code"] == 401 and isinstance(doc["msg"], str) and doc["msg"]
    finally:
        await sim.stop()


async def _bitopro_rest(
    session: aiohttp.ClientSession, sim: BitoproSimulator, body: Mapping[str, object]
) -> int:
    payload = base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
    headers = {
        "X-BITOPRO-APIKEY": BITOPRO_KEY,
        "X-BITOPRO-PAYLOAD": payload,
        "X-BITOPRO-SIGNATURE": sign_payload(BITOPRO_SECRET, payload),
    }
    async with session.get(f"{sim.base_url}/v3/accounts/balance", headers=headers) as response:
        return response.status


async def test_bitopro_rest_accepts_identity_and_nonce_or_nonce_only(
    session: aiohttp.ClientSession,
) -> None:
    sim = BitoproSimulator(ping_interval=0)
    sim.add_account(BITOPRO_KEY, BITOPRO_SECRET, BITOPRO_EMAIL, {"BTC": "1"})
    await sim.start()
    try:
        assert encode_payload(BITOPRO_EMAIL, 1)  # the documented shape
        documented = {"identity": BITOPRO_EMAIL, "nonce": fresh_nonce()}
        assert await _bitopro_rest(session, sim, documented) == 200
        ccxt = {"nonce": fresh_nonce()}  # ccxt 4.5.90 signs GETs with the nonce only
        assert await _bitopro_rest(session, sim, ccxt) == 200
        wrong = {"identity": "someone@else.invalid", "nonce": fresh_nonce()}
        assert await _bitopro_rest(session, sim, wrong) == 401
    finally:
        await sim.stop()


async def test_bitopro_bad_snapshot_via_control_api(session: aiohttp.ClientSession) -> None:
    sim = BitoproSimulator(ping_interval=0)
    sim.add_account(BITOPRO_KEY, BITOPRO_SECRET, BITOPRO_EMAIL, {"BTC": "1", "ADA": "2"})
    await sim.start()
    try:
        url = f"{sim.base_url}/_sim/accounts/{BITOPRO_KEY}/bad_snapshot"
        async with session.post(url, json={"kind": "unknown_code", "count": 1}) as response:
            assert response.status == 200
        async with session.post(url, json={"kind": "nonsense"}) as response:
            assert response.status == 400
        headers = bitopro_headers()
        ws_url = f"{sim.base_url}/ws/v1/pub/auth/account-balance"
        async with session.ws_connect(ws_url, headers=headers) as ws:
            first = await recv_json(ws)
            assert set(first["data"]) == {"ADA", "BTC", "USDT(ERC20)"}
        async with session.ws_connect(ws_url, headers=bitopro_headers()) as ws:
            assert set((await recv_json(ws))["data"]) == {"ADA", "BTC"}  # count used up
    finally:
        await sim.stop()
