"""A stream client's queue without sockets: bounds, conflation, replies, 1013 closes."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.metrics import Metrics
from app.store import Keys
from app.stream.hub import HubOptions, StreamHub
from app.stream.messages import CLOSE_TRY_AGAIN_LATER, Message, control_message
from app.stream.subscriber import Subscriber


def _balance(seq: int, account: str, asset: str) -> Message:
    return Message(seq, account, asset, (account, "", asset), f'{{"seq":{seq}}}')


def _event(seq: int, account: str) -> Message:
    return Message(seq, account, "", None, f'{{"event":{seq}}}')


def _drain(sub: Subscriber) -> list[Message]:
    out = []
    while (msg := sub.pop()) is not None:
        out.append(msg)
    return out


def test_below_the_limit_every_message_is_kept_in_order() -> None:
    sub = Subscriber(None, None, limit=10)
    for seq in range(1, 11):
        sub.push(_balance(seq, "a", "BTC"))
    assert [m.seq for m in _drain(sub)] == list(range(1, 11))
    assert sub.conflated == 0


def test_past_the_limit_the_newest_per_key_wins_and_order_holds() -> None:
    conflated: list[int] = []
    sub = Subscriber(None, None, limit=4, on_conflated=conflated.append)
    sub.push(_balance(1, "a", "BTC"))
    sub.push(_balance(2, "a", "ETH"))
    sub.push(_event(3, "a"))
    sub.push(_balance(4, "a", "BTC"))
    sub.push(_balance(5, "a", "ETH"))  # 5 > 4: conflate from here on
    assert [m.seq for m in list(sub._queue.values())] == [3, 4, 5]
    sub.push(_balance(6, "a", "BTC"))  # replaces 4, goes to the end
    sub.push(_event(7, "a"))  # events are never dropped
    assert [m.seq for m in _drain(sub)] == [3, 5, 6, 7]
    assert sub.conflated == 3 and sum(conflated) == 3
    assert sub.peak_pending == 5  # bounded by the keys, not the update rate
    # drained: back to keeping everything
    sub.push(_balance(8, "a", "BTC"))
    sub.push(_balance(9, "a", "BTC"))
    assert [m.seq for m in _drain(sub)] == [8, 9]


def test_a_slow_client_stays_bounded_by_its_keys() -> None:
    sub = Subscriber(None, None, limit=100)
    for seq in range(1, 100_001):
        sub.push(_balance(seq, "a", f"T{seq % 50}"))
    assert sub.pending <= 101
    assert sub.peak_pending <= 101
    seqs = [m.seq for m in _drain(sub)]
    assert seqs == sorted(seqs) and seqs[-1] == 100_000
    assert len(seqs) == 50


def test_replies_are_never_conflated_and_are_counted() -> None:
    sub = Subscriber(None, None, limit=2)
    for seq in range(1, 4):
        sub.push(_balance(seq, "a", "BTC"))
    pong = control_message({"type": "pong"})
    sub.push(pong)
    sub.push(pong)
    assert sub.controls == 2
    out = _drain(sub)
    assert [m.text for m in out].count('{"type":"pong"}') == 2
    assert sub.controls == 0


def test_a_replay_is_delivered_exactly_before_live_messages() -> None:
    sub = Subscriber(None, None, limit=2)
    sub.push(_balance(10, "a", "BTC"))  # arrived live while the replay was read
    sub.prepend([_balance(seq, "a", "BTC") for seq in range(1, 10)])
    assert [m.seq for m in _drain(sub)] == list(range(1, 11))
    assert sub.stalled == 0


def test_filters_by_account_and_asset() -> None:
    sub = Subscriber(frozenset({"a"}), frozenset({"BTC"}), limit=10)
    assert sub.matches(_balance(1, "a", "BTC"))
    assert not sub.matches(_balance(2, "a", "ETH"))
    assert not sub.matches(_balance(3, "b", "BTC"))
    assert sub.matches(_event(4, "a"))  # events are not asset-filtered


class _Socket:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: int | None = None

    async def send_text(self, data: str) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


async def test_the_portable_sender_sends_everything_then_closes_with_the_code() -> None:
    sent: list[int] = []
    sub = Subscriber(None, None, limit=10, on_sent=sent.append)
    socket = _Socket()
    for seq in range(1, 6):
        sub.push(_balance(seq, "a", "BTC"))
    sub.attach(socket)
    for _ in range(100):
        if len(socket.sent) == 5:
            break
        await asyncio.sleep(0.01)
    assert not sub.direct  # not uvicorn: one send_text per message
    assert socket.sent == [f'{{"seq":{seq}}}' for seq in range(1, 6)] and sum(sent) == 5
    sub.request_close(CLOSE_TRY_AGAIN_LATER)
    await asyncio.wait_for(sub.wait_closed(), 5)
    assert socket.closed_with == CLOSE_TRY_AGAIN_LATER
    await sub.detach()


def _hub(client_max_lag: int = 20, client_buffer: int = 5) -> StreamHub:
    return StreamHub(
        redis=aioredis.Redis(),  # never used: nothing here reads Redis
        reader=None,  # type: ignore[arg-type]
        keys=Keys("t"),
        accounts=[],
        options=HubOptions(
            instance_id="i",
            client_max_lag=client_max_lag,
            client_buffer=client_buffer,
            lease_ms=1000,
            private_redis=True,
        ),
        metrics=Metrics(),
    )


async def test_a_client_that_accepts_nothing_past_the_lag_is_closed_1013() -> None:
    hub = _hub(client_max_lag=20)
    sub = await hub.subscribe(None, None, None)
    for seq in range(1, 21):
        sub.push(_balance(seq, "a", "BTC"))
    hub._check_stalled()
    assert sub.close_code is None  # 20 queued since the last send: not past the lag
    sub.push(_balance(21, "a", "BTC"))
    hub._check_stalled()
    assert sub.close_code == CLOSE_TRY_AGAIN_LATER
    assert sub.pending == 0  # released at once
    assert hub.metrics.downstream_disconnects.labels("slow")._value.get() == 1


async def test_too_many_waiting_replies_close_the_client_1013() -> None:
    hub = _hub(client_buffer=5)
    sub = await hub.subscribe(None, None, None)
    for _ in range(5):
        hub.send_control(sub, {"type": "pong"})
    assert sub.close_code is None and sub.controls == 5
    hub.send_control(sub, {"type": "pong"})
    assert sub.close_code == CLOSE_TRY_AGAIN_LATER
