"""``/v1/stream`` over real sockets: snapshot + changes = REST, resume, slow clients."""

from __future__ import annotations

import asyncio
import gc
import random
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from app.domain import AccountState
from app.redis_server import EmbeddedRedis
from tests.api.conftest import VENUE, ServiceFactory, account, bal, status_doc
from tests.api.streamclient import StreamState, by_key, read_one, sync

ACCOUNTS = [f"acct-{i}" for i in range(5)]
ASSETS = ["BTC", "ETH", "USDT", "ADA", "SOL", "XRP", "DOT", "LTC"]


async def churn(svc: Any, n: int, seed: int = 1) -> None:
    """``n`` writes as fast as they go: updates, snapshot replaces, status flips, events."""
    rng = random.Random(seed)
    owner = svc.owner
    for i in range(n):
        name = rng.choice(ACCOUNTS)
        roll = rng.random()
        if roll < 0.02:
            kept = rng.sample(ASSETS, rng.randint(1, len(ASSETS)))
            owner.submit_snapshot(
                name, VENUE, "", [bal(a, f"{rng.randint(0, 10**6)}.{i}") for a in kept]
            )
        elif roll < 0.04:
            owner.submit_status(
                name,
                status_doc(
                    name, rng.choice([AccountState.LIVE, AccountState.STALE, AccountState.SYNCING])
                ),
            )
        elif roll < 0.05:
            owner.submit_event(name, "order", {"id": str(i), "status": "filled"})
        else:
            asset = rng.choice(ASSETS)
            total = f"{rng.randint(0, 10**9)}.{rng.randint(0, 10**8):08d}"
            owner.submit_update(name, VENUE, [bal(asset, total, "0.00000001")])
        if i % 25 == 24:
            await owner.drain(10)  # otherwise the owner itself conflates most of them away


async def reader(
    ws: aiohttp.ClientWebSocketResponse, state: StreamState, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            doc = await read_one(ws, timeout=0.2)
        except TimeoutError:
            continue
        state.apply(doc)


async def test_snapshot_plus_changes_equals_rest_under_load(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory([account(a) for a in ACCOUNTS]) as svc:
        for name in ACCOUNTS:
            svc.owner.submit_snapshot(name, VENUE, "", [bal(a, "1") for a in ASSETS[:4]])
            svc.owner.submit_status(name, status_doc(name, AccountState.LIVE))
        await svc.settle()
        everything, filtered = StreamState(), StreamState()
        ws_all = await svc.ws()
        ws_some = await svc.ws(accounts="acct-1,acct-2", assets="btc,ETH")
        stop = asyncio.Event()
        readers = [
            asyncio.create_task(reader(ws_all, everything, stop)),
            asyncio.create_task(reader(ws_some, filtered, stop)),
        ]
        await churn(svc, 5_000)
        final = await svc.settle()
        stop.set()
        await asyncio.gather(*readers)
        await sync(ws_all, everything)
        await sync(ws_some, filtered)

        status, rest = await svc.get("/v1/balances")
        assert status == 200 and rest["seq"] == final
        assert everything.seq == final
        assert everything.snapshots == 1
        assert len(everything.seqs) > 2_000, "the load should reach the clients as changes"
        assert everything.view() == by_key(rest["balances"])
        assert any(r["stale"] for r in rest["balances"])
        assert any(not r["stale"] for r in rest["balances"])

        status, rest_some = await svc.get("/v1/balances", account="acct-1,acct-2", asset="BTC,eth")
        assert status == 200
        assert {r["asset"] for r in rest_some["balances"]} <= {"BTC", "ETH"}
        assert filtered.view() == by_key(rest_some["balances"])
        assert all(e["account"] in ("acct-1", "acct-2") for e in filtered.events)
        await ws_all.close()
        await ws_some.close()


@pytest.mark.parametrize("source", ["ring", "redis"])
async def test_resume_replays_each_missed_change_once_in_order(
    service_factory: ServiceFactory, source: str
) -> None:
    # a replay longer than the client buffer is still delivered exactly, not conflated
    accounts = [account(a) for a in ACCOUNTS[:2]]
    async with service_factory(accounts, client_buffer=100) as svc:
        for name in ACCOUNTS[:2]:
            svc.owner.submit_status(name, status_doc(name, AccountState.LIVE))
        await svc.settle()
        state = StreamState()
        ws = await svc.ws()
        state.apply(await read_one(ws))
        svc.owner.submit_update("acct-0", VENUE, [bal("BTC", "1")])
        await svc.settle()
        await sync(ws, state)
        await ws.close()
        left_at = state.seq

        if source == "redis":
            svc.hub.ring_size = 50  # the missed changes fall out of memory: read from Redis
        for i in range(500):
            name = ACCOUNTS[i % 2]
            svc.owner.submit_update(name, VENUE, [bal(ASSETS[i % 5], f"{i}.5")])
            await svc.owner.drain(5)  # one change per write: exactly 500 seqs
        final = await svc.settle()
        assert final == left_at + 500

        ws = await svc.ws(since=left_at)
        state.seqs.clear()
        await sync(ws, state)
        assert state.snapshots == 1, "a resumable client must not get a snapshot"
        assert state.seqs == list(range(left_at + 1, final + 1))
        # and it continues live without a gap or a duplicate
        svc.owner.submit_update("acct-1", VENUE, [bal("NEW", "7")])
        await svc.settle()
        await sync(ws, state)
        assert state.seqs[-1] == final + 1 and len(state.seqs) == 501
        _status, rest = await svc.get("/v1/balances")
        assert state.view() == by_key(rest["balances"])
        await ws.close()


async def test_resume_out_of_reach_gets_a_snapshot(service_factory: ServiceFactory) -> None:
    async with service_factory([account("acct-0")], client_max_lag=100) as svc:
        for i in range(150):
            svc.owner.submit_update("acct-0", VENUE, [bal("BTC", str(i + 1))])
            await svc.owner.drain(5)
        final = await svc.settle()
        for since in (0, final - 101, final + 5):  # too old, beyond max lag, in the future
            ws = await svc.ws(since=since)
            doc = await read_one(ws)
            assert doc["type"] == "snapshot" and doc["seq"] == final
            assert doc["balances"][0]["total"] == "150"
            await ws.close()
        ws = await svc.ws(since=final - 100)  # just within reach
        state = StreamState()
        state.seq = final - 100
        await sync(ws, state)
        assert state.snapshots == 0 and state.seqs == list(range(final - 99, final + 1))
        await ws.close()


async def test_client_ops_subscribe_ping_and_errors(service_factory: ServiceFactory) -> None:
    async with service_factory([account("acct-0"), account("acct-1")]) as svc:
        svc.owner.submit_snapshot("acct-0", VENUE, "", [bal("BTC", "1"), bal("ETH", "2")])
        svc.owner.submit_snapshot("acct-1", VENUE, "", [bal("BTC", "3")])
        await svc.settle()
        ws = await svc.ws(accounts="acct-0")
        first = await read_one(ws)
        assert first["type"] == "snapshot"
        assert {r["account"] for r in first["balances"]} == {"acct-0"}
        assert [a["account"] for a in first["accounts"]] == ["acct-0"]

        for bad in ("nope", "[1,2]", '{"op":"dance"}', '{"op":"subscribe","accounts":"x"}'):
            await ws.send_str(bad)
            doc = await read_one(ws)
            assert doc["type"] == "error" and set(doc["error"]) == {"code", "message"}
        await ws.send_bytes(b'{"op":"ping"}')
        assert (await read_one(ws))["type"] == "error"
        await ws.send_str("x" * 20_000)
        assert (await read_one(ws))["error"]["code"] == "too_large"
        await ws.send_str('{"op":"ping"}')
        assert await read_one(ws) == {"type": "pong"}

        await ws.send_str('{"op":"subscribe","accounts":["acct-1"],"assets":null}')
        snap = await read_one(ws)
        assert snap["type"] == "snapshot"
        assert [(r["account"], r["asset"]) for r in snap["balances"]] == [("acct-1", "BTC")]
        svc.owner.submit_update("acct-0", VENUE, [bal("BTC", "9")])
        svc.owner.submit_update("acct-1", VENUE, [bal("BTC", "8")])
        await svc.settle()
        doc = await read_one(ws)
        assert doc["type"] == "balance" and doc["balance"]["account"] == "acct-1"
        await ws.send_str('{"op":"subscribe"}')
        snap = await read_one(ws)
        assert {r["account"] for r in snap["balances"]} == {"acct-0", "acct-1"}
        assert not ws.closed
        await ws.close()

        # an oversize frame is refused by the server itself
        ws = await svc.ws()
        await read_one(ws)
        await ws.send_str("y" * (1 << 17))
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009


async def test_bad_stream_parameters_are_refused(service_factory: ServiceFactory) -> None:
    async with service_factory([account("acct-0")]) as svc:
        for params in ({"since": "-1"}, {"since": "abc"}, {"accounts": "BAD ID"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await svc.ws(**params)
            assert info.value.status == 400


SLOW_ACCOUNTS = [f"slow-{i}" for i in range(10)]


async def test_slow_client_is_conflated_and_bounded(service_factory: ServiceFactory) -> None:
    """A client reading nothing while 100,000 updates flow: bounded memory, right state."""
    async with service_factory(
        [account(a) for a in SLOW_ACCOUNTS],
        client_buffer=1_000,
        client_max_lag=10**9,
        ws_ping_interval=None,  # see _slow_client_run
    ) as svc:
        await _slow_client_run(svc, 100_000, expect_close=False, pad=100)


async def test_stuck_client_is_closed_1013_and_resumes(service_factory: ServiceFactory) -> None:
    async with service_factory(
        [account(a) for a in SLOW_ACCOUNTS],
        client_buffer=1_000,
        client_max_lag=5_000,
        ws_ping_interval=None,  # see _slow_client_run
    ) as svc:
        await _slow_client_run(svc, 20_000, expect_close=True, pad=500)


async def _slow_client_run(svc: Any, updates: int, *, expect_close: bool, pad: int = 0) -> None:
    """The client reads nothing until every update is written, so it answers no server
    ping meanwhile: on a loaded machine that phase outlasts uvicorn's keepalive (ping
    every 20 s, 20 s to answer) and the server drops it (1006) for reasons this test is
    not about. Its callers serve without keepalive pings; the stream's own 1013 is what
    closes a client here."""
    keys = [(a, f"T{i}") for a in SLOW_ACCOUNTS for i in range(50)]  # 500 keys
    buffer = svc.services.settings.client_buffer
    for name in SLOW_ACCOUNTS:
        svc.owner.submit_status(name, status_doc(name, AccountState.LIVE))
    first = await svc.settle()
    state = StreamState()
    ws = await svc.ws()
    state.apply(await read_one(ws))
    (sub,) = svc.hub.subscribers
    extra = {"memo": "x" * pad} if pad else None
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    peak = 0
    for i in range(updates):
        name, asset = keys[i % len(keys)]
        svc.owner.submit_update(name, VENUE, [bal(asset, f"{i}.{i % 7}", extra=extra)])
        if i % len(keys) == len(keys) - 1:
            # one write per key per flush, so the owner's own conflation hides none
            await svc.owner.drain(10)
            peak = max(peak, max((s.pending for s in svc.hub.subscribers), default=0))
    final = await svc.settle(timeout=60)
    assert final - first == updates
    rss_growth = psutil.Process().memory_info().rss - rss_before
    assert sub.peak_pending <= buffer + 1, sub.peak_pending
    assert peak <= buffer + 1
    assert rss_growth < 100 * 2**20, f"RSS grew {rss_growth / 2**20:.0f} MiB"
    metrics = svc.services.metrics
    assert metrics.downstream_conflated._value.get() > 0

    closed = False
    try:
        await sync(ws, state, timeout=60)
    except ConnectionError:
        closed = True
    if expect_close:
        assert closed and ws.close_code == 1013
        slow = metrics.downstream_disconnects.labels("slow")._value.get()
        assert slow >= 1
        ws = await svc.ws(since=state.seq)
        await sync(ws, state)
    else:
        assert not closed, ws.close_code
    _status, rest = await svc.get("/v1/balances")
    assert state.seq == rest["seq"] == final
    assert state.view() == by_key(rest["balances"])
    await ws.close()


async def test_shutdown_closes_clients_with_1001(service_factory: ServiceFactory) -> None:
    async with service_factory([account("acct-0")]) as svc:
        ws = await svc.ws()
        await read_one(ws)
        await svc.hub.close_clients()
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1001


async def test_survives_a_redis_restart_that_lost_everything(
    service_factory: ServiceFactory,
) -> None:
    """REST keeps serving the last state; afterwards clients get a fresh snapshot."""
    private = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="balagg-t-")), appendonly=False)
    private.start()
    try:
        async with service_factory([account("acct-0")], redis_url=private.url) as svc:
            svc.owner.submit_snapshot("acct-0", VENUE, "", [bal("BTC", "1"), bal("ETH", "2")])
            before = await svc.settle()
            state = StreamState()
            ws = await svc.ws()
            state.apply(await read_one(ws))
            assert state.seq == before

            await asyncio.to_thread(private.stop)
            status, body = await svc.get("/v1/balances")
            assert status == 200 and len(body["balances"]) == 2  # served from memory
            status, ready = await svc.get("/readyz")
            assert status == 503 and any("redis" in r for r in ready["reasons"])

            await asyncio.to_thread(private.start)  # same socket path, empty data
            doc = await read_one(ws, timeout=15)
            assert doc["type"] == "snapshot" and doc["balances"] == [] and doc["seq"] == 0
            state.apply(doc)
            svc.owner.submit_update("acct-0", VENUE, [bal("SOL", "3")])
            await svc.settle(timeout=15)
            await sync(ws, state)
            _status, body = await svc.get("/v1/balances")
            assert state.view() == by_key(body["balances"]) and len(body["balances"]) == 1
            await ws.close()
    finally:
        await asyncio.to_thread(private.stop)


async def test_a_gap_in_seq_reloads_and_resnapshots(service_factory: ServiceFactory) -> None:
    """If the stream was trimmed past the reader, clients get a fresh, correct snapshot."""
    async with service_factory([account("acct-0")], stream_maxlen=100) as svc:
        svc.owner.submit_update("acct-0", VENUE, [bal("BTC", "1")])
        await svc.settle()
        state = StreamState()
        ws = await svc.ws()
        state.apply(await read_one(ws))
        follower = next(t for t in svc.hub._tasks if t.get_name() == "hub-follow")
        follower.cancel()  # the reader stalls while the stream moves on and gets trimmed
        await asyncio.gather(follower, return_exceptions=True)
        for i in range(400):
            svc.owner.submit_update("acct-0", VENUE, [bal("ETH", str(i + 1))])
            await svc.owner.drain(5)
        svc.hub._tasks.append(asyncio.create_task(svc.hub._follow(), name="hub-follow"))
        final = await svc.settle()
        doc = await read_one(ws)
        assert doc["type"] == "snapshot" and doc["seq"] == final
        state.apply(doc)
        assert svc.hub.reloads == 1
        _status, body = await svc.get("/v1/balances")
        assert state.view() == by_key(body["balances"])
        assert {r["asset"]: r["total"] for r in body["balances"]} == {"BTC": "1", "ETH": "400"}
        await ws.close()
