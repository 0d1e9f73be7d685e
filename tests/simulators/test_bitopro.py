"""BitoPro simulator over real sockets: header auth, snapshot then changes, REST, bursts."""

from __future__ import annotations

import base64
import re
import uuid
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from app.simulators.bitopro import BitoproSimulator, encode_payload, sign_payload
from tests.simulators.wsclient import (
    BITOPRO_KEY,
    bitopro_headers,
    fresh_nonce,
    loads,
    recv_json,
    recv_text,
    vector,
)


def ws_url(sim: BitoproSimulator) -> str:
    return sim.ws_url


async def refused(
    session: aiohttp.ClientSession, sim: BitoproSimulator, headers: dict[str, str]
) -> str:
    """Assert the upgrade is refused with 401 JSON and no 101; return the error text."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(sim.ws_url, headers=headers)
    assert info.value.status == 401
    # The same request without upgrade headers shows the JSON body of the refusal.
    async with session.get(sim.ws_url.replace("ws://", "http://"), headers=headers) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/json"
        body = await resp.json()
    error = body["error"]
    assert isinstance(error, str)
    return error


def test_official_signature_vector() -> None:
    vec = vector("bitopro/auth_signature_vector.json")
    payload = encode_payload(vec["body"]["identity"], vec["body"]["nonce"])
    assert payload == vec["payload"]
    assert sign_payload(vec["api_secret"], payload) == vec["signature"]


async def test_official_vector_upgrade_is_accepted_with_its_clock(
    session: aiohttp.ClientSession,
) -> None:
    vec = vector("bitopro/auth_signature_vector.json")
    nonce = vec["body"]["nonce"]
    sim = BitoproSimulator(clock_ms=lambda: nonce + 1_000)
    sim.add_account("vector-key", vec["api_secret"], vec["body"]["identity"], {"BTC": "1"})
    async with sim:
        headers = {
            "X-BITOPRO-APIKEY": "vector-key",
            "X-BITOPRO-PAYLOAD": vec["payload"],
            "X-BITOPRO-SIGNATURE": vec["signature"],
        }
        async with session.ws_connect(sim.ws_url, headers=headers) as ws:
            first = await recv_json(ws)
            assert first["data"]["BTC"]["amount"] == "1"
        # The vector's nonce is from 2019: with the real clock it is stale.
        sim.clock_ms = lambda: nonce + 10 * 365 * 86_400_000
        assert "time window" in await refused(session, sim, headers)


async def test_refusals(session: aiohttp.ClientSession, bitopro: BitoproSimulator) -> None:
    assert "API key" in await refused(session, bitopro, bitopro_headers(key="nope"))
    bad_sig = bitopro_headers()
    bad_sig["X-BITOPRO-SIGNATURE"] = sign_payload("wrong-secret", bad_sig["X-BITOPRO-PAYLOAD"])
    assert "signature" in await refused(session, bitopro, bad_sig)
    upper = bitopro_headers()
    upper["X-BITOPRO-SIGNATURE"] = upper["X-BITOPRO-SIGNATURE"].upper()
    assert "signature" in await refused(session, bitopro, upper)
    assert "identity" in await refused(session, bitopro, bitopro_headers(email="x@y.invalid"))
    stale = bitopro_headers(nonce=fresh_nonce() - 31_000)
    assert "time window" in await refused(session, bitopro, stale)
    assert "missing" in await refused(session, bitopro, {})
    assert bitopro.connection_counts(BITOPRO_KEY).total == 0
    assert bitopro.connection_counts(BITOPRO_KEY).refused >= 4


async def test_replayed_nonce_is_refused(
    session: aiohttp.ClientSession, bitopro: BitoproSimulator
) -> None:
    headers = bitopro_headers()
    async with session.ws_connect(bitopro.ws_url, headers=headers) as ws:
        await recv_json(ws)
    assert "increase" in await refused(session, bitopro, headers)
    older = bitopro_headers(nonce=loads_nonce(headers) - 1)
    assert "increase" in await refused(session, bitopro, older)
    # WebSocket upgrades and REST calls share the key's nonce count.
    rest = bitopro.rest_url + "/v3/accounts/balance"
    async with session.get(rest, headers=headers) as resp:
        assert resp.status == 401


def loads_nonce(headers: dict[str, str]) -> int:
    nonce = loads(base64.b64decode(headers["X-BITOPRO-PAYLOAD"]))["nonce"]
    assert isinstance(nonce, int)
    return nonce


def check_frame_shape(frame: dict[str, Any]) -> None:
    assert set(frame) == {"event", "eventID", "timestamp", "datetime", "data"}
    assert frame["event"] == "ACCOUNT_BALANCE"
    uuid.UUID(frame["eventID"])
    assert isinstance(frame["timestamp"], int) and len(str(frame["timestamp"])) == 13
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", frame["datetime"])
    for cur, entry in frame["data"].items():
        assert set(entry) == {"currency", "amount", "available", "stake", "tradable"}
        assert entry["currency"] == cur
        assert isinstance(entry["amount"], str) and isinstance(entry["tradable"], bool)


async def test_snapshot_then_changes(
    session: aiohttp.ClientSession, bitopro: BitoproSimulator
) -> None:
    async with session.ws_connect(bitopro.ws_url, headers=bitopro_headers()) as ws:
        raw = await recv_text(ws)
        assert '"amount":"999999999999.99999999"' in raw
        first = loads(raw)
        check_frame_shape(first)
        assert sorted(first["data"]) == ["ADA", "BTC", "TWD"]
        assert first["data"]["BTC"]["available"] == "1.0"
        assert first["data"]["TWD"] == {
            "currency": "TWD",
            "amount": "100",
            "available": "100",
            "stake": "5",
            "tradable": False,
        }
        assert await bitopro.push(BITOPRO_KEY, {"btc": {"amount": "2.5"}}) == 1
        change = await recv_json(ws)
        check_frame_shape(change)
        # Only the changed currency; the locked 0.5 is kept.
        assert change["data"] == {
            "BTC": {
                "currency": "BTC",
                "amount": "2.5",
                "available": "2.0",
                "stake": "0",
                "tradable": True,
            }
        }
        await bitopro.push(BITOPRO_KEY, {"ETH": "3"})
        assert list((await recv_json(ws))["data"]) == ["ETH"]
    truth = {r.asset: r for r in bitopro.truth(BITOPRO_KEY)}
    assert truth["BTC"].locked == Decimal("0.5")
    assert truth["ETH"].total == Decimal(3)


async def test_removed_currency_is_absent_from_next_snapshot(
    session: aiohttp.ClientSession, bitopro: BitoproSimulator
) -> None:
    assert await bitopro.remove_asset(BITOPRO_KEY, "twd")
    async with session.ws_connect(bitopro.ws_url, headers=bitopro_headers()) as ws:
        assert sorted((await recv_json(ws))["data"]) == ["ADA", "BTC"]


async def test_rest_snapshot_equals_truth(
    session: aiohttp.ClientSession, bitopro: BitoproSimulator
) -> None:
    url = bitopro.rest_url + "/v3/accounts/balance"
    async with session.get(url, headers=bitopro_headers()) as resp:
        assert resp.status == 200
        body = loads(await resp.read())
    rows = {e["currency"]: e for e in body["data"]}
    assert set(rows) == {"ada", "btc", "twd"}
    for row in bitopro.truth(BITOPRO_KEY):
        entry = rows[row.asset.lower()]
        assert Decimal(entry["amount"]) == row.total
        assert Decimal(entry["available"]) == row.available
    async with session.get(url, headers=bitopro_headers(secret="bad")) as resp:
        assert resp.status == 401


async def test_burst_arrives_in_order_and_ends_at_truth(
    session: aiohttp.ClientSession, bitopro: BitoproSimulator
) -> None:
    async with session.ws_connect(bitopro.ws_url, headers=bitopro_headers()) as ws:
        await recv_json(ws)
        result = await bitopro.burst(BITOPRO_KEY, 2_000, "BTC")
        assert result.frames == 2_000 and result.connections == 1
        assert result.rate > 0
        amounts = []
        for _ in range(2_000):
            frame = await recv_json(ws)
            assert list(frame["data"]) == ["BTC"]
            amounts.append(Decimal(frame["data"]["BTC"]["amount"]))
        assert amounts == sorted(amounts) and len(set(amounts)) == 2_000
        assert amounts[0] == Decimal("1.50000001")
        await bitopro.push(BITOPRO_KEY, {"ADA": "1"})
        assert list((await recv_json(ws))["data"]) == ["ADA"]
    btc = next(r for r in bitopro.truth(BITOPRO_KEY) if r.asset == "BTC")
    assert btc.total == amounts[-1] == Decimal("1.50002000")
    assert btc.locked == Decimal("0.5")


@pytest.mark.parametrize("kind", BitoproSimulator.malformed_kinds)
async def test_malformed_frames_leave_truth_alone(
    session: aiohttp.ClientSession, bitopro: BitoproSimulator, kind: str
) -> None:
    before = bitopro.truth(BITOPRO_KEY)
    async with session.ws_connect(
        bitopro.ws_url, headers=bitopro_headers(), max_msg_size=1 << 22
    ) as ws:
        await recv_json(ws)
        assert await bitopro.send_malformed(BITOPRO_KEY, kind) == 1
        raw = await recv_text(ws)
        if kind == "bad_json":
            with pytest.raises(ValueError):
                loads(raw)
        elif kind == "oversize":
            assert len(raw) > 100_000
        elif kind == "unknown_event":
            assert loads(raw)["event"] != "ACCOUNT_BALANCE"
    assert bitopro.truth(BITOPRO_KEY) == before
