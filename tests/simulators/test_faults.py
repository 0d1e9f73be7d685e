"""Keepalive, drop, stall and connection counts, shared by every simulator."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from app.simulators.bitopro import BitoproSimulator
from app.simulators.deltadefi import DeltaDefiSimulator
from tests.polling import eventually
from tests.simulators.wsclient import (
    BITOPRO_EMAIL,
    BITOPRO_KEY,
    BITOPRO_SECRET,
    DELTADEFI_KEY,
    bitopro_headers,
    expect_closed,
    recv_json,
)


async def test_bitopro_keepalive_drops_a_client_that_does_not_pong(
    session: aiohttp.ClientSession,
) -> None:
    sim = BitoproSimulator(ping_interval=0.1, pong_timeout=0.1)
    assert BitoproSimulator(port=0).ping_interval == 20.0
    assert BitoproSimulator(port=0).pong_timeout == 5.0
    sim.add_account(BITOPRO_KEY, BITOPRO_SECRET, BITOPRO_EMAIL, {"BTC": "1"})
    async with sim:
        async with session.ws_connect(sim.ws_url, headers=bitopro_headers()) as polite:
            await recv_json(polite)
            # Several ping rounds, answered by aiohttp's autoping while the client reads.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(polite.receive(), 0.5)
            assert not polite.closed
            assert sim.connection_counts(BITOPRO_KEY).open == 1
        async with session.ws_connect(
            sim.ws_url, headers=bitopro_headers(), autoping=False
        ) as silent:
            await recv_json(silent)
            msg = await silent.receive(timeout=1)
            assert msg.type is aiohttp.WSMsgType.PING
            await expect_closed(silent, timeout=1)


async def test_drop_is_abrupt_and_counted(
    session: aiohttp.ClientSession, deltadefi: DeltaDefiSimulator
) -> None:
    url = f"{deltadefi.ws_url}?api_key={DELTADEFI_KEY}"
    async with session.ws_connect(url) as one, session.ws_connect(url) as two:
        await deltadefi.wait_for_connections(DELTADEFI_KEY, 2)
        counts = deltadefi.connection_counts(DELTADEFI_KEY)
        assert (counts.open, counts.total) == (2, 2)
        assert deltadefi.drop(DELTADEFI_KEY) == 2
        for ws in (one, two):
            await expect_closed(ws)
            assert ws.close_code != 1000
    # the simulator notices the closes on its own schedule: poll, never a fixed sleep
    await eventually(lambda: deltadefi.connection_counts(DELTADEFI_KEY).open == 0, "closes seen")
    counts = deltadefi.connection_counts(DELTADEFI_KEY)
    assert (counts.open, counts.total) == (0, 2)
    async with session.ws_connect(url):
        await deltadefi.wait_for_connections(DELTADEFI_KEY)
        assert deltadefi.connection_counts(DELTADEFI_KEY).total == 3
        assert deltadefi.all_connection_counts()[DELTADEFI_KEY].open == 1


async def test_stall_silences_without_closing(
    session: aiohttp.ClientSession, deltadefi: DeltaDefiSimulator
) -> None:
    url = f"{deltadefi.ws_url}?api_key={DELTADEFI_KEY}"
    async with session.ws_connect(url, autoping=False) as ws:
        await deltadefi.wait_for_connections(DELTADEFI_KEY)
        assert deltadefi.stall(DELTADEFI_KEY) == 1
        assert await deltadefi.push(DELTADEFI_KEY, {"ada": "5"}) == 0
        await ws.ping(b"are-you-there")
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.3)  # neither the frame nor a pong
        assert not ws.closed
        # A new connection of the same credential is not stalled.
        async with session.ws_connect(url) as fresh:
            await deltadefi.wait_for_connections(DELTADEFI_KEY, 2)
            assert await deltadefi.push(DELTADEFI_KEY, {"ada": "6"}) == 1
            assert (await recv_json(fresh))["balance"][0]["free"] == 6
        deltadefi.stall(DELTADEFI_KEY, False)
        await ws.ping(b"again")
        pong = await ws.receive(timeout=1)
        assert pong.type is aiohttp.WSMsgType.PONG and pong.data == b"again"
        await deltadefi.push(DELTADEFI_KEY, {"ada": "7"})
        assert (await recv_json(ws))["balance"][0]["free"] == 7


async def test_keys_in_urls_are_never_logged(
    session: aiohttp.ClientSession,
    deltadefi: DeltaDefiSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with session.ws_connect(f"{deltadefi.ws_url}?api_key={DELTADEFI_KEY}"):
        await deltadefi.wait_for_connections(DELTADEFI_KEY)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await session.ws_connect(f"{deltadefi.ws_url}?api_key=wrong-{DELTADEFI_KEY}")
    assert DELTADEFI_KEY not in caplog.text
