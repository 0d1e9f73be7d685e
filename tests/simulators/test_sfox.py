"""sFOX simulator over real sockets: auth message, subscription, sequences and faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from app.simulators.sfox import SfoxSimulator
from tests.simulators.wsclient import (
    SFOX_KEY,
    expect_closed,
    expect_silence,
    loads,
    recv_json,
    vector,
)

FEED = "private.user.balances"
WEB3_WALLET = {
    "address": "0x0bCdB57ae247F434C91b1d4521fFd6601f7e8999",
    "balance": "250.5",
    "currency": "USDC",
    "network": "Ethereum",
    "type": "web3",
}


@asynccontextmanager
async def subscribed(
    session: aiohttp.ClientSession, sim: SfoxSimulator
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with session.ws_connect(sim.ws_url) as ws:
        await ws.send_json({"type": "authenticate", "apiKey": SFOX_KEY})
        assert (await recv_json(ws))["type"] == "success"
        await ws.send_json({"type": "subscribe", "feeds": [FEED]})
        reply = await recv_json(ws)
        assert reply["type"] == "success" and reply["sequence"] == 2
        # the account's web3 wallet is announced right after the subscription
        check_envelope(await recv_json(ws), 3)
        yield ws


def check_envelope(message: dict[str, Any], sequence: int) -> None:
    assert set(message) == {"sequence", "recipient", "timestamp", "payload"}
    assert message["sequence"] == sequence
    assert message["recipient"] == FEED
    assert isinstance(message["timestamp"], int) and len(str(message["timestamp"])) == 19


async def test_authenticate_and_subscribe_replies(
    session: aiohttp.ClientSession, sfox: SfoxSimulator
) -> None:
    sample = vector("sfox/authenticate_success.json")
    async with session.ws_connect(sfox.ws_url) as ws:
        request = vector("sfox/authenticate_request.json")
        await ws.send_json({**request, "apiKey": SFOX_KEY})
        reply = await recv_json(ws)
        assert set(reply) == set(sample)
        assert reply["type"] == "success" and reply["sequence"] == 1
        assert reply["payload"] == {"action": "authenticate"} and reply["action"] == "authenticate"
        assert len(str(reply["timestamp"])) == 19
        await ws.send_json(vector("sfox/subscribe_request.json"))
        reply = await recv_json(ws)
        assert reply["type"] == "success" and reply["sequence"] == 2
        assert reply["payload"] == {"action": "subscribe", "feeds": [FEED]}
        await sfox.wait_for_connections(SFOX_KEY)
        assert sfox.connection_counts(SFOX_KEY).open == 1


async def test_bad_key_gets_error_of_the_same_shape(
    session: aiohttp.ClientSession, sfox: SfoxSimulator
) -> None:
    sample = vector("sfox/authenticate_success.json")
    async with session.ws_connect(sfox.ws_url) as ws:
        await ws.send_json({"type": "subscribe", "feeds": [FEED]})
        early = await recv_json(ws)
        assert early["type"] == "error" and early["payload"]["action"] == "subscribe"
        await ws.send_json({"type": "authenticate", "apiKey": "wrong"})
        reply = await recv_json(ws)
        assert set(reply) == set(sample)
        assert reply["type"] == "error" and reply["payload"] == {"action": "authenticate"}
        assert reply["sequence"] == 2
    sfox.refuse_auth(SFOX_KEY)
    async with session.ws_connect(sfox.ws_url) as ws:
        await ws.send_json({"type": "authenticate", "apiKey": SFOX_KEY})
        assert (await recv_json(ws))["type"] == "error"
    assert sfox.connection_counts(SFOX_KEY).refused == 1
    assert sfox.connection_counts(SFOX_KEY).total == 0


async def test_balance_messages_count_up(
    session: aiohttp.ClientSession, sfox: SfoxSimulator
) -> None:
    async with subscribed(session, sfox) as ws:
        assert await sfox.push(SFOX_KEY, {"BTC": {"balance": "1.25", "held": "0.25"}}) == 1
        message = await recv_json(ws)
        check_envelope(message, 4)
        assert message["payload"] == [
            {
                "currency": "btc",
                "balance": "1.25",
                "available": "1.00",
                "held": "0.25",
                "trading_wallet": "1.25",
                "collateral_wallet": "0",
                "borrow_wallet": "0",
                "lending_wallet": "0",
            }
        ]
        await sfox.push_web3(
            SFOX_KEY, "0xabc0000000000000000000000000000000000001", "Ethereum", "ETH", "3.5"
        )
        web3 = await recv_json(ws)
        check_envelope(web3, 5)
        assert web3["payload"] == {
            "address": "0xabc0000000000000000000000000000000000001",
            "balance": "3.5",
            "currency": "ETH",
            "network": "Ethereum",
            "type": "web3",
        }
    rows = {(r.wallet, r.asset): r for r in sfox.truth(SFOX_KEY)}
    assert rows[("", "BTC")].available == Decimal("1.00")
    assert rows[
        ("web3:Ethereum:0xabc0000000000000000000000000000000000001", "ETH")
    ].total == Decimal("3.5")
    assert rows[("web3:Ethereum:0x0bCdB57ae247F434C91b1d4521fFd6601f7e8999", "USDC")].locked == 0


async def test_web3_wallets_are_the_first_balance_messages(
    session: aiohttp.ClientSession, sfox: SfoxSimulator
) -> None:
    """A web3 wallet is not in the REST snapshot, so the stream announces each one after
    the subscription; without a push the client still learns the whole truth."""
    second = {"address": "0xabc0000000000000000000000000000000000001", "network": "Base"}
    await sfox.push_web3(SFOX_KEY, second["address"], second["network"], "ETH", "3.5")
    async with session.ws_connect(sfox.ws_url) as ws:
        await ws.send_json({"type": "authenticate", "apiKey": SFOX_KEY})
        assert (await recv_json(ws))["sequence"] == 1
        await ws.send_json({"type": "subscribe", "feeds": [FEED]})
        assert (await recv_json(ws))["sequence"] == 2
        first, then = await recv_json(ws), await recv_json(ws)
        check_envelope(first, 3)
        check_envelope(then, 4)
        assert [first["payload"], then["payload"]] == [
            {**second, "balance": "3.5", "currency": "ETH", "type": "web3"},
            WEB3_WALLET,
        ]
        await expect_silence(ws)


async def test_snapshot_on_subscribe_sends_the_account_then_the_web3_wallets(
    session: aiohttp.ClientSession,
) -> None:
    sim = SfoxSimulator(snapshot_on_subscribe=True, ping_interval=5.0, pong_timeout=1.0)
    sim.add_account(SFOX_KEY, {"btc": "1.5"}, [WEB3_WALLET])
    await sim.start()
    try:
        async with subscribed(session, sim) as ws:
            web3 = await recv_json(ws)
        assert web3["sequence"] == 4 and web3["payload"] == WEB3_WALLET
    finally:
        await sim.stop()


async def test_unsubscribed_connection_is_closed(
    session: aiohttp.ClientSession, sfox: SfoxSimulator
) -> None:
    async with session.ws_connect(sfox.ws_url) as ws:
        await ws.send_json({"type": "authenticate", "apiKey": SFOX_KEY})
        await recv_json(ws)
        await expect_closed(ws, timeout=2.0)
        assert ws.close_code == 1008


@pytest.mark.parametrize("kind", ["gap", "reorder", "duplicate"])
async def test_sequence_faults(
    session: aiohttp.ClientSession, sfox: SfoxSimulator, kind: str
) -> None:
    before = sfox.truth(SFOX_KEY)
    async with subscribed(session, sfox) as ws:
        sent = await sfox.sequence_fault(SFOX_KEY, kind, skip=4)
        seqs = [(await recv_json(ws))["sequence"] for _ in range(sent)]
        await sfox.push(SFOX_KEY, {"usd": "101"})
        after = (await recv_json(ws))["sequence"]
    expected = {"gap": [8], "reorder": [5, 4], "duplicate": [4, 4]}[kind]
    assert seqs == expected
    assert after == max(expected) + 1
    assert sfox.truth(SFOX_KEY) != before  # only the push changed it
    usd = next(r for r in sfox.truth(SFOX_KEY) if r.asset == "USD")
    assert (usd.total, usd.locked) == (Decimal(101), Decimal(25))


async def test_burst_sequences_are_contiguous(
    session: aiohttp.ClientSession, sfox: SfoxSimulator
) -> None:
    async with subscribed(session, sfox) as ws:
        result = await sfox.burst(SFOX_KEY, 500)
        assert result.frames == 500
        messages = [await recv_json(ws) for _ in range(500)]
        assert [m["sequence"] for m in messages] == list(range(4, 504))
        await sfox.push(SFOX_KEY, {"usd": "1"})
        assert (await recv_json(ws))["sequence"] == 504
    last = messages[-1]["payload"][0]
    btc = next(r for r in sfox.truth(SFOX_KEY) if r.asset == "BTC")
    assert Decimal(last["balance"]) == btc.total == Decimal("0.17572919")


@pytest.mark.parametrize("kind", SfoxSimulator.malformed_kinds)
async def test_malformed_frames_leave_truth_alone(
    session: aiohttp.ClientSession, sfox: SfoxSimulator, kind: str
) -> None:
    before = sfox.truth(SFOX_KEY)
    async with subscribed(session, sfox) as ws:
        assert await sfox.send_malformed(SFOX_KEY, kind) == 1
        raw = await ws.receive_str(timeout=2)
        if kind == "bad_json":
            with pytest.raises(ValueError):
                loads(raw)
    assert sfox.truth(SFOX_KEY) == before


async def test_rest_snapshot_is_numbers_equal_to_truth(
    session: aiohttp.ClientSession, sfox: SfoxSimulator
) -> None:
    url = sfox.rest_url + "/v1/user/balance"
    async with session.get(url, headers={"Authorization": f"Bearer {SFOX_KEY}"}) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert '"balance":0.17572419' in text
    body = loads(text)
    rows = {r.asset: r for r in sfox.truth(SFOX_KEY) if r.wallet == ""}
    assert {e["currency"].upper() for e in body} == set(rows)
    for entry in body:
        row = rows[entry["currency"].upper()]
        assert (entry["balance"], entry["available"], entry["held"]) == (
            row.total,
            row.available,
            row.locked,
        )
    async with session.get(url, headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401


async def test_unsubscribe_stops_balances(
    session: aiohttp.ClientSession, sfox: SfoxSimulator
) -> None:
    async with subscribed(session, sfox) as ws:
        await ws.send_json({"type": "unsubscribe", "feeds": [FEED]})
        reply = await recv_json(ws)
        assert reply["payload"] == {"action": "unsubscribe", "feeds": [FEED]}
        assert await sfox.push(SFOX_KEY, {"usd": "5"}) == 0
        await expect_silence(ws)
