"""The per-venue limiter: sliding windows and socket slots per (venue, host), settings."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from app.metrics import Metrics
from app.ratelimit import (
    DEFAULT_VENUE_LIMITS,
    VenueLimiter,
    VenueLimits,
    parse_rule,
    upstream_host,
)
from app.settings import Settings


class ManualClock:
    """Time that moves only when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(
    limits: dict[str, VenueLimits], metrics: Metrics | None = None
) -> tuple[VenueLimiter, ManualClock]:
    clock = ManualClock()
    return VenueLimiter(limits, metrics, clock=clock, sleep=clock.sleep), clock


async def test_rest_requests_beyond_the_window_wait_for_it() -> None:
    metrics = Metrics()
    lim, clock = limiter({"sfox": VenueLimits(rest=((2, 10.0),))}, metrics)
    url = "https://api.sfox.com/v1/user/balance"
    start = clock.now
    await lim.request("sfox", url)
    await lim.request("sfox", url)
    assert clock.now == start  # within the budget: no wait
    await lim.request("sfox", url)
    assert clock.now == start + 10.0  # the third waits for the first to leave the window
    sample = metrics.registry.get_sample_value
    labels = {"venue": "sfox", "kind": "rest"}
    assert sample("balagg_upstream_throttled_total", labels) == 1
    assert sample("balagg_upstream_throttled_seconds_total", labels) == 10.0


async def test_every_window_of_a_venue_holds() -> None:
    lim, clock = limiter({"sfox": VenueLimits(rest=((5, 10.0), (6, 60.0)))})
    start = clock.now
    for _ in range(7):
        await lim.request("sfox", "https://api.sfox.com/x")
    # 5 at once, the 6th after 10 s, the 7th only when the 60 s window lets one go
    assert clock.now == start + 60.0


async def test_hosts_and_venues_never_share_or_block_a_budget() -> None:
    lim, clock = limiter(
        {
            "sfox": VenueLimits(connect=((1, 60.0),), rest=((1, 60.0),)),
            "bitopro": VenueLimits(connect=((1, 60.0),)),
        }
    )
    start = clock.now
    await lim.connect("sfox", "wss://ws.sfox.com/ws")
    await lim.connect("sfox", "wss://ws.sfox-sandbox.example/ws")  # another host
    await lim.connect("bitopro", "wss://stream.bitopro.com/ws")  # another venue
    await lim.request("sfox", "https://ws.sfox.com/v1/user/balance")  # REST: its own budget
    await lim.connect("deltadefi", "wss://stream.deltadefi.io/x")  # no limits configured
    assert clock.now == start
    await lim.connect("sfox", "wss://WS.SFOX.COM:443/ws?other=1")  # the same host
    assert clock.now == start + 60.0


async def test_a_wait_for_one_host_does_not_hold_up_another() -> None:
    lim = VenueLimiter({"sfox": VenueLimits(connect=((1, 3600.0),))})
    await lim.connect("sfox", "wss://ws.sfox.com/ws")
    blocked = asyncio.create_task(lim.connect("sfox", "wss://ws.sfox.com/ws"))
    await asyncio.sleep(0.01)
    # real time: an hour-long wait on one host, the other host and venue go at once
    await asyncio.wait_for(lim.connect("sfox", "ws://127.0.0.1:1/ws"), 1)
    await asyncio.wait_for(lim.request("sfox", "wss://ws.sfox.com/ws"), 1)
    await asyncio.wait_for(lim.connect("bitopro", "wss://ws.sfox.com/ws"), 1)
    assert not blocked.done()
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked


async def test_waiters_are_served_in_arrival_order() -> None:
    lim, _clock = limiter({"sfox": VenueLimits(rest=((1, 1.0),))})
    order: list[int] = []

    async def ask(n: int) -> None:
        await lim.request("sfox", "https://api.sfox.com/")
        order.append(n)

    await asyncio.gather(*(ask(n) for n in range(6)))
    assert order == list(range(6))


async def test_socket_slots_cap_open_sockets_until_released() -> None:
    metrics = Metrics()
    lim = VenueLimiter({"sfox": VenueLimits(sockets=2)}, metrics)
    url = "wss://ws.sfox.com/ws"
    first = await lim.connect("sfox", url)
    second = await lim.connect("sfox", url)
    third = asyncio.create_task(lim.connect("sfox", url))
    await asyncio.sleep(0.01)
    assert not third.done()  # no third socket while two are open
    first.release()
    first.release()  # releasing twice frees one slot, not two
    slot = await asyncio.wait_for(third, 1)
    fourth = asyncio.create_task(lim.connect("sfox", url))
    await asyncio.sleep(0.01)
    assert not fourth.done()
    fourth.cancel()  # a waiter that gives up takes no slot with it
    with pytest.raises(asyncio.CancelledError):
        await fourth
    second.release()
    again = await asyncio.wait_for(lim.connect("sfox", url), 1)
    labels = {"venue": "sfox", "kind": "sockets"}
    assert metrics.registry.get_sample_value("balagg_upstream_throttled_total", labels) == 2
    for held in (slot, again):
        held.release()


async def test_a_slot_is_given_back_when_the_connect_wait_is_cancelled() -> None:
    lim = VenueLimiter({"sfox": VenueLimits(connect=((1, 3600.0),), sockets=1)})
    url = "wss://ws.sfox.com/ws"
    (await lim.connect("sfox", url)).release()
    waiting = asyncio.create_task(lim.connect("sfox", url))  # holds the slot, waits on rate
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not lim._sockets[("sfox", upstream_host(url))].locked()  # the slot went back


def test_over_capacity_names_the_host_and_the_counts() -> None:
    lim = VenueLimiter({"sfox": VenueLimits(sockets=10)})
    planned = [("sfox", f"wss://ws.sfox.com/ws?n={n}") for n in range(12)]
    planned += [("sfox", "ws://127.0.0.1:9/ws"), ("bitopro", "wss://x.example/ws")]
    [warning] = lim.over_capacity(planned)
    assert "12 sfox sockets are configured for ws.sfox.com:443" in warning
    assert "10 at a time" in warning and "2 wait" in warning
    assert lim.over_capacity(planned[:10]) == []


def test_the_host_never_carries_a_path_query_or_credentials() -> None:
    url = "wss://user:pa55@Stream.DeltaDeFi.io/accounts/stream?api_key=CANARY-KEY"
    assert upstream_host(url) == "stream.deltadefi.io:443"
    assert upstream_host("wss://datastream.solanatracker.io/CANARY-KEY") == (
        "datastream.solanatracker.io:443"
    )
    assert upstream_host("http://127.0.0.1:8080/x") == "127.0.0.1:8080"


def test_rules_parse_or_fail_clearly() -> None:
    assert parse_rule("5/10") == (5, 10.0)
    assert parse_rule(" 40 / 60 ") == (40, 60.0)
    for bad in ("5", "0/10", "5/0", "-1/10", "a/b", "5/inf", "5/nan"):
        with pytest.raises(ValueError, match="COUNT/SECONDS"):
            parse_rule(bad)


def test_sfox_defaults_follow_the_documented_limits() -> None:
    sfox = DEFAULT_VENUE_LIMITS["sfox"]
    assert sfox.sockets == 10
    assert (5, 10.0) in sfox.rest
    # connection attempts and REST requests together stay within 40 a minute per IP
    per_minute = [c for c, s in sfox.connect if s == 60.0] + [c for c, s in sfox.rest if s == 60]
    assert sum(per_minute) <= 40 and len(per_minute) == 2
    for venue in ("bitopro", "deltadefi", "solanatracker"):
        assert DEFAULT_VENUE_LIMITS[venue].connect and DEFAULT_VENUE_LIMITS[venue].rest


def test_settings_merge_configured_fields_over_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "BALAGG_VENUE_LIMITS", json.dumps({"sfox": {"sockets": 3}, "bitopro": {"rest": []}})
    )
    limits = Settings(_env_file=None).resolved_venue_limits()
    assert limits["sfox"] == VenueLimits(
        connect=DEFAULT_VENUE_LIMITS["sfox"].connect, rest=DEFAULT_VENUE_LIMITS["sfox"].rest,
        sockets=3,
    )  # fmt: skip
    assert limits["bitopro"].rest == () and limits["bitopro"].connect
    assert limits["deltadefi"] == DEFAULT_VENUE_LIMITS["deltadefi"]


def test_workers_on_one_ip_share_each_limit_and_the_share_is_a_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sfox = DEFAULT_VENUE_LIMITS["sfox"]
    assert sfox.share(1) == sfox
    half = sfox.share(2)
    assert half == VenueLimits(connect=((10, 60.0),), rest=((2, 10.0), (10, 60.0)), sockets=5)
    # never below one each, and no cap stays no cap
    assert sfox.share(8).rest == ((1, 10.0), (2, 60.0)) and sfox.share(20).sockets == 1
    assert DEFAULT_VENUE_LIMITS["bitopro"].share(4).sockets == 0
    # what a worker is given in BALAGG_VENUE_LIMITS reads back as the same share
    monkeypatch.setenv("BALAGG_VENUE_LIMITS", json.dumps({"sfox": half.setting()}))
    assert Settings(_env_file=None).resolved_venue_limits()["sfox"] == half


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"kraken": {"sockets": 1}}, "kraken"),
        ({"sfox": {"connect": ["ten/60"]}}, "COUNT/SECONDS"),
        ({"sfox": {"sockets": -1}}, "sockets"),
        ({"sfox": {"burst": 3}}, "burst"),
    ],
)
def test_bad_venue_limits_are_refused_at_startup(
    monkeypatch: pytest.MonkeyPatch, value: object, expected: str
) -> None:
    monkeypatch.setenv("BALAGG_VENUE_LIMITS", json.dumps(value))
    with pytest.raises(ValidationError, match=expected):
        Settings(_env_file=None)


async def test_handshakes_in_flight_are_capped_per_process() -> None:
    limiter = VenueLimiter({}, handshakes=3)
    inside, peak = 0, 0
    release = asyncio.Event()

    async def open_one() -> None:
        nonlocal inside, peak
        async with limiter.handshake():
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(open_one()) for _ in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert inside == 3  # the rest wait their turn (as connecting, never as failed)
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 3 and inside == 0
