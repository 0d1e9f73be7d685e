"""The reconnect policy every upstream socket shares: backoff, batching's reader probe."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from app.reconnect import AccountRetry, Backoff, SocketOptions, data_frame_ready, full_jitter


def test_full_jitter_stays_within_the_capped_exponential() -> None:
    for attempt in range(40):
        delay = full_jitter(attempt, 0.5, 30.0)
        assert 0 <= delay <= min(30.0, 0.5 * 2**attempt)


def test_backoff_grows_and_resets_only_after_a_healthy_connection() -> None:
    backoff = Backoff(SocketOptions(backoff_initial=1.0, backoff_max=100.0, healthy_after=10))
    for expected_attempt in range(1, 5):
        backoff.next_delay(healthy_for=1.0)
        assert backoff.attempt == expected_attempt
    assert backoff.next_delay(healthy_for=10.0) <= 1.0  # healthy: back to the first step
    assert backoff.attempt == 1


def test_socket_options_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        SocketOptions(heartbeat=0)
    with pytest.raises(ValueError):
        SocketOptions(healthy_after=-1)


async def test_data_frame_ready_sees_what_the_reader_already_holds() -> None:
    """Batching reads aiohttp's reader queue; if aiohttp moves it, this fails loudly
    (the connection loop would silently fold one frame per loop turn)."""
    sent = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for n in range(5):
            await ws.send_str(f"frame-{n}")
        await ws.ping()  # a pong is no data frame: never waited on as part of a batch
        sent.set()
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{port}/", autoping=False) as ws,
        ):
            await sent.wait()
            first = await ws.receive()
            for _ in range(100):  # the rest arrives with the same socket read, or soon after
                if len(ws._reader._buffer) == 5:
                    break
                await asyncio.sleep(0.01)
            assert first.data == "frame-0"
            rest = []
            while data_frame_ready(ws):
                rest.append((await ws.receive()).data)
            assert rest == [f"frame-{n}" for n in range(1, 5)]
            assert (await ws.receive()).type is aiohttp.WSMsgType.PING  # still there
            assert not data_frame_ready(ws)
    finally:
        await runner.cleanup()


def retry(*, silent: bool = False) -> AccountRetry:
    options = SocketOptions(backoff_initial=0.5, backoff_max=30.0, healthy_after=30.0)
    return AccountRetry(options, auth_retry_min=60.0, silent_close_may_be_auth=silent)


def test_an_explicit_refusal_of_a_new_key_retries_slowly_at_once() -> None:
    r = retry()
    first = r.judge("auth", "refused", backoff=True, frames=0, healthy_for=0.1, key_worked=False)
    assert first.auth_failed and 48.0 <= first.delay <= 60.0
    second = r.judge("auth", "refused", backoff=True, frames=0, healthy_for=0.1, key_worked=False)
    assert second.auth_failed and 96.0 <= second.delay <= 120.0  # doubling


def test_a_key_that_worked_gets_one_normal_retry_first() -> None:
    r = retry()
    once = r.judge("auth", "refused", backoff=True, frames=0, healthy_for=0.1, key_worked=True)
    assert not once.auth_failed and once.delay <= 0.5
    twice = r.judge("auth", "refused", backoff=True, frames=0, healthy_for=0.1, key_worked=True)
    assert twice.auth_failed


def test_quick_quiet_closes_count_as_a_refusal_only_where_the_venue_may_mean_it() -> None:
    quiet = retry(silent=False)
    for _ in range(5):
        v = quiet.judge("closed", "c", backoff=True, frames=0, healthy_for=0.1, key_worked=False)
        assert v.reason == "closed" and not v.auth_failed
    bito = retry(silent=True)
    verdicts = [
        bito.judge("closed", "c", backoff=True, frames=0, healthy_for=0.1, key_worked=False)
        for _ in range(3)
    ]
    assert [v.reason for v in verdicts] == ["closed", "closed", "auth"]
    assert verdicts[-1].auth_failed and "immediately" in verdicts[-1].detail
    # frames on a connection reset the count
    v = bito.judge("closed", "c", backoff=True, frames=3, healthy_for=0.1, key_worked=False)
    assert v.reason == "closed"


def test_a_resync_reconnects_without_waiting() -> None:
    r = retry()
    v = r.judge("resync", "r", backoff=False, frames=10, healthy_for=1.0, key_worked=True)
    assert v.delay == 0.0 and not v.auth_failed
