"""A hub applies its own process's writes as the flush returns them (real Redis).

Every client must still see strictly increasing ``seq`` with no gap and no duplicate,
whether a change came from its own process's flush or from the stream read, with one
writer or two interleaving on one Redis, and across a resume on the other instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal

import orjson
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.accounts import AccountConfig
from app.domain import AssetBalance, Venue
from app.metrics import Metrics
from app.store import BalanceReader, BalanceWriter, Keys
from app.stream.hub import HubOptions, StreamHub
from app.stream.subscriber import Subscriber
from tests.polling import eventually

ACCOUNTS = ["a1", "a2"]


def _bal(asset: str, total: str) -> AssetBalance:
    value = Decimal(total)
    return AssetBalance.from_total_available("", asset, value, value, symbol=asset)


class _Socket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, data: str) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        return None


def _seqs(socket: _Socket) -> list[int]:
    """The seq of every frame: a snapshot's, then each change's."""
    return [int(orjson.loads(text)["seq"]) for text in socket.sent]


def _assert_in_order(seqs: list[int], upto: int) -> None:
    first = seqs[0]
    assert seqs == list(range(first, upto + 1)), seqs


@asynccontextmanager
async def _instance(
    client: aioredis.Redis, keys: Keys, name: str
) -> AsyncIterator[tuple[StreamHub, BalanceWriter]]:
    """A hub and a writer whose flushes feed it, as ``app.service`` wires them."""
    hub = StreamHub(
        redis=client,
        reader=BalanceReader(client, keys),
        keys=keys,
        accounts=[AccountConfig(id=a, venue=Venue.SFOX, api_key=SecretStr("k")) for a in ACCOUNTS],
        options=HubOptions(
            instance_id=name,
            client_max_lag=10_000,
            client_buffer=10_000,
            lease_ms=10_000,
            private_redis=False,
            metrics_balances=False,
        ),
        metrics=Metrics(),
        block_ms=200,
    )
    writer = BalanceWriter(
        client,
        keys,
        on_flush=lambda results: hub.take_local(c for r in results for c in r.written),
    )
    await hub.start()
    try:
        yield hub, writer
    finally:
        await hub.stop()


async def _client(hub: StreamHub, since: int | None = None) -> tuple[Subscriber, _Socket]:
    sub = await hub.subscribe(None, None, since)
    socket = _Socket()
    sub.attach(socket)
    return sub, socket


def _sent_upto(socket: _Socket, seq: int) -> Callable[[], bool]:
    return lambda: bool(socket.sent) and _seqs(socket)[-1] == seq


async def test_own_writes_reach_the_mirror_and_clients_before_the_stream_read(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    async with _instance(redis_client, keys, "inst-a") as (hub, writer):
        sub, socket = await _client(hub)
        last = 0
        for i in range(50):
            writer.submit_update(ACCOUNTS[i % 2], "sfox", [_bal(f"C{i % 7}", f"{i}.5")])
            results = await writer.flush_once()
            last = results[-1].last_seq
            # applied inside the flush, before the hub's reader got a turn
            assert hub.seq == last
        await eventually(_sent_upto(socket, last), f"every seq up to {last} sent")
        await asyncio.sleep(0.3)  # the stream read brings every seq back: all skipped
        _assert_in_order(_seqs(socket), last)
        assert hub.reloads == 0
        await sub.detach()


async def test_two_writers_interleaving_keep_seq_order_for_both_hubs(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    async with (
        _instance(redis_client, keys, "inst-a") as (hub_a, writer_a),
        _instance(redis_client, keys, "inst-b") as (hub_b, writer_b),
    ):
        sub_a, socket_a = await _client(hub_a)
        sub_b, socket_b = await _client(hub_b)
        last = 0
        for i in range(60):
            writer = writer_a if i % 3 else writer_b  # gaps in both hubs' own seqs
            writer.submit_update(ACCOUNTS[i % 2], "sfox", [_bal(f"C{i % 5}", f"{i}")])
            results = await writer.flush_once()
            last = results[-1].last_seq
            if i % 10 == 0:
                await asyncio.sleep(0)  # sometimes the stream reads get a turn in between
        await eventually(_sent_upto(socket_a, last), "hub A's client caught up")
        await eventually(_sent_upto(socket_b, last), "hub B's client caught up")
        await asyncio.sleep(0.3)
        for socket in (socket_a, socket_b):
            _assert_in_order(_seqs(socket), last)
        assert hub_a.seq == hub_b.seq == last
        assert hub_a.reloads == hub_b.reloads == 0
        assert list(hub_a.records()) == list(hub_b.records())

        # a client of one instance resumes on the other: exactly what it missed
        seen = _seqs(socket_a)[-1]
        await sub_a.detach()
        hub_a.unsubscribe(sub_a)
        for i in range(10):
            writer = writer_b if i % 2 else writer_a
            writer.submit_update("a1", "sfox", [_bal("R", f"{i}")])
            last = (await writer.flush_once())[-1].last_seq
        resumed, socket_r = await _client(hub_b, since=seen)
        await eventually(_sent_upto(socket_r, last), "the resumed client caught up")
        assert _seqs(socket_r) == list(range(seen + 1, last + 1))
        await resumed.detach()
        await sub_b.detach()
