"""SolanaTracker simulator over real sockets: key in the path, rooms, swaps, wallet REST."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from app.simulators.solanatracker import TRUMP, USDC, WSOL, SolanaTrackerSimulator
from tests.simulators.wsclient import (
    DATA_KEY,
    SOLANA_KEY,
    WALLET_A,
    WALLET_B,
    expect_silence,
    loads,
    recv_json,
    recv_text,
    vector,
)


def stream(sim: SolanaTrackerSimulator, key: str = SOLANA_KEY) -> str:
    return f"{sim.ws_url}/{key}"


async def join(ws: aiohttp.ClientWebSocketResponse, room: str) -> None:
    await ws.send_json({"type": "join", "room": room})
    assert await recv_json(ws) == {"type": "joined", "room": room}


def shape(value: Any) -> Any:
    """The structure of a JSON value: key sets and value kinds, recursively."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | Decimal):
        return "number"
    return type(value).__name__


async def test_unknown_key_is_refused(
    session: aiohttp.ClientSession, solanatracker: SolanaTrackerSimulator
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(stream(solanatracker, "nope"))
    assert info.value.status == 401
    assert solanatracker.ws_url.count("/") == 2  # no path: the key is appended


async def test_messages_only_for_joined_rooms(
    session: aiohttp.ClientSession, solanatracker: SolanaTrackerSimulator
) -> None:
    async with session.ws_connect(stream(solanatracker)) as ws:
        await expect_silence(ws)
        joined = vector("solanatracker/joined_balance.json")
        await ws.send_json(
            {**vector("solanatracker/join_balance.json"), "room": f"wallet:{WALLET_A}:balance"}
        )
        assert await recv_json(ws) == {**joined, "room": f"wallet:{WALLET_A}:balance"}
        await expect_silence(ws)  # nothing but "joined" on join
        sent = await solanatracker.push(
            SOLANA_KEY, {WALLET_B: {USDC: "6"}, WALLET_A: {USDC: "78816.844996"}}
        )
        assert sent == 1
        raw = await recv_text(ws)
        assert '"amount":78816.844996' in raw
        message = loads(raw)
        sample = vector("solanatracker/balance_message.json")
        assert shape(message) == shape(sample)
        assert message["data"] == {
            "wallet": WALLET_A,
            "token": USDC,
            "amount": Decimal("78816.844996"),
        }
        await expect_silence(ws)
        await ws.send_json({"type": "leave", "room": f"wallet:{WALLET_A}:balance"})
        assert await recv_json(ws) == {"type": "left", "room": f"wallet:{WALLET_A}:balance"}
        assert await solanatracker.push(SOLANA_KEY, {WALLET_A: {USDC: "1"}}) == 0
        await expect_silence(ws)


async def test_per_token_room(
    session: aiohttp.ClientSession, solanatracker: SolanaTrackerSimulator
) -> None:
    async with session.ws_connect(stream(solanatracker)) as ws:
        room = f"wallet:{WALLET_A}:{WSOL}:balance"
        await join(ws, room)
        await solanatracker.push(SOLANA_KEY, {WALLET_A: {USDC: "2", WSOL: "3.25"}})
        message = await recv_json(ws)
        assert message["room"] == room and message["data"]["amount"] == Decimal("3.25")
        await expect_silence(ws)


async def test_swaps_go_to_transaction_rooms(
    session: aiohttp.ClientSession, solanatracker: SolanaTrackerSimulator
) -> None:
    sample = vector("solanatracker/transactions_message.json")
    async with session.ws_connect(stream(solanatracker)) as ws:
        await join(ws, f"transaction:{TRUMP}")
        assert await solanatracker.push_swap(USDC, "1") == 0
        assert await solanatracker.push_swap(TRUMP, "6.5", side="sell", amount="90") == 1
        raw = await recv_text(ws)
        assert '"priceUsd":6.5' in raw
        message = loads(raw)
        assert shape(message) == shape(sample)
        swap = message["data"][0]
        assert swap["type"] == "sell" and swap["amount"] == 90
        assert swap["token"]["from"]["address"] == TRUMP
        assert swap["token"]["from"]["symbol"] == "TRUMP"
        assert swap["token"]["to"]["address"] == USDC
        assert swap["volume"] == Decimal("585.000000")
        await expect_silence(ws)
    assert solanatracker.prices[TRUMP] == Decimal("6.5")


async def test_rest_wallet_snapshot(
    session: aiohttp.ClientSession, solanatracker: SolanaTrackerSimulator
) -> None:
    url = f"{solanatracker.rest_url}/wallet/{WALLET_A}/basic"
    async with session.get(url, headers={"x-api-key": DATA_KEY}) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert '"balance":78816.844996' in text
    body = loads(text)
    got = {t["address"]: t["balance"] for t in body["tokens"]}
    want = {r.asset: r.total for r in solanatracker.truth(SOLANA_KEY) if r.wallet == WALLET_A}
    assert got == want
    usdc = next(t for t in body["tokens"] if t["address"] == USDC)
    assert usdc["price"]["usd"] == 1 and usdc["value"] == Decimal("78816.844996")
    assert body["total"] == sum(t["value"] for t in body["tokens"])
    async with session.get(url, headers={"x-api-key": SOLANA_KEY}) as resp:
        assert resp.status == 401


@pytest.mark.parametrize("kind", SolanaTrackerSimulator.malformed_kinds)
async def test_malformed_frames_leave_truth_alone(
    session: aiohttp.ClientSession, solanatracker: SolanaTrackerSimulator, kind: str
) -> None:
    before = solanatracker.truth(SOLANA_KEY)
    async with session.ws_connect(stream(solanatracker)) as ws:
        await join(ws, f"wallet:{WALLET_A}:balance")
        assert await solanatracker.send_malformed(SOLANA_KEY, kind) == 1
        await recv_text(ws)
    assert solanatracker.truth(SOLANA_KEY) == before


async def test_burst(session: aiohttp.ClientSession, solanatracker: SolanaTrackerSimulator) -> None:
    async with session.ws_connect(stream(solanatracker)) as ws:
        await join(ws, f"wallet:{WALLET_A}:balance")
        await solanatracker.wait_for_connections(SOLANA_KEY)
        result = await solanatracker.burst(SOLANA_KEY, 100, WSOL)
        assert result.frames == 100
        frames = [await recv_json(ws) for _ in range(100)]
    assert frames[-1]["data"]["amount"] == Decimal("1.500000100")
    assert solanatracker.holdings[WALLET_A][WSOL] == Decimal("1.500000100")
