"""The fold's one-currency path agrees with its event path on every sequence of frames.

Inside a batch, :meth:`AccountFold.apply_lone` keeps the values it reads and makes
balances only when the state is read or the batch ends. Whatever the frames, the batches
and the reads in between, it must leave the same state, report the same changes, keep
the same held assets and hand the writer the same balances (each asset's in the same
order) as applying each frame's
:class:`BalanceUpdate` with :meth:`AccountFold.apply_update` (what a
:data:`~app.domain.LoneBalance` means). The writers are real and never started: only
their in-memory side is used.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.domain import AssetBalance, BalanceSnapshot, BalanceUpdate, LoneBalance
from app.fold import AccountFold
from app.store import BalanceWriter, Keys

AMOUNTS = [Decimal("0"), Decimal("1"), Decimal("1.0"), Decimal("2.5")]
EXTRAS: list[dict[str, Any]] = [{}, {"stake": "0"}, {"tradable": True}]

lones = st.builds(
    lambda asset, total, free_index, extra, ts: (
        "",
        asset,
        total,
        min(total, AMOUNTS[free_index]),
        total - min(total, AMOUNTS[free_index]),
        extra,
        ts,
    ),
    st.sampled_from(["BTC", "ETH", "TWD"]),
    st.sampled_from(AMOUNTS),
    st.integers(0, len(AMOUNTS) - 1),
    st.sampled_from(EXTRAS),
    st.sampled_from([None, "t1", "t2"]),
)
# one step: a frame, a read of the state, a batch boundary, or a REST request sent
steps = st.lists(st.one_of(lones, st.just("read"), st.just("end"), st.just("seed")), max_size=40)


def lone(asset: str, total: str, extra: dict[str, Any] | None = None) -> LoneBalance:
    amount = Decimal(total)
    return ("", asset, amount, amount, Decimal(0), extra or {}, None)


def as_update(lone: LoneBalance) -> BalanceUpdate:
    wallet, asset, total, available, locked, extra, venue_ts = lone
    balance = AssetBalance(wallet, asset, total, available, locked, asset, extra)
    return BalanceUpdate((balance,), venue_ts)


def by_key(calls: list[tuple[Any, ...]]) -> dict[tuple[str, str], list[Any]]:
    """Each asset's values in the order they reached the writer. The two paths may hand
    different assets over in another interleaving (a value a later frame of the batch
    supersedes goes to the writer when it is superseded), never one asset's values."""
    out: dict[tuple[str, str], list[Any]] = {}
    for call in calls:
        for balance, venue_ts in call:
            out.setdefault((balance.wallet, balance.asset), []).append((balance, venue_ts))
    return out


def recorded(writer: BalanceWriter) -> list[tuple[Any, ...]]:
    """What the fold hands ``writer``, in order (the writer keeps it as well)."""
    calls: list[tuple[Any, ...]] = []
    submit = writer.submit_update

    def spy(account: str, venue: str, balances: Any, venue_ts: str | None = None) -> None:
        balances = list(balances)
        calls.append(tuple((x, venue_ts) for x in balances))
        submit(account, venue, balances, venue_ts)

    writer.submit_update = spy  # type: ignore[method-assign]
    return calls


@pytest.fixture
def writers(redis_client: aioredis.Redis, key_prefix: str) -> tuple[BalanceWriter, BalanceWriter]:
    return (
        BalanceWriter(redis_client, Keys(key_prefix + "lone")),
        BalanceWriter(redis_client, Keys(key_prefix + "event")),
    )


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(start=st.lists(lones, max_size=3), script=steps)
@example(start=[], script=[lone("BTC", "1"), lone("BTC", "1", {"stake": "0"})])  # extra only
@example(start=[lone("BTC", "1")], script=[lone("BTC", "2"), lone("BTC", "1")])  # and back
@example(start=[], script=[lone("BTC", "1"), lone("BTC", "0"), "read", lone("BTC", "0")])
def test_lone_frames_fold_as_their_updates_would(
    writers: tuple[BalanceWriter, BalanceWriter],
    start: list[LoneBalance],
    script: list[Any],
) -> None:
    lone_writer, event_writer = writers
    lone = AccountFold("acct", "bitopro", lone_writer)
    event = AccountFold("acct", "bitopro", event_writer)
    held = [as_update(x).balances[0] for x in start]
    lone.load(held)
    event.load(held)
    lone_calls, event_calls = recorded(lone_writer), recorded(event_writer)
    seen = (lone.held_assets(), lone.held_version)
    tickets: list[tuple[int, int]] = []
    lone.begin_batch()
    event.begin_batch()
    for step in script:
        if step == "end":
            lone.end_batch()
            event.end_batch()
            assert by_key(lone_calls) == by_key(event_calls)
            lone.begin_batch()
            event.begin_batch()
        elif step == "read":  # reading the state makes the balances read so far
            assert lone.state == event.state
            assert lone.held_assets() == event.held_assets()
            if lone.held_assets() != seen[0]:  # held assets changed: the version says so
                assert lone.held_version != seen[1]
            seen = (lone.held_assets(), lone.held_version)
        elif step == "seed":  # a REST request in flight: its watermark sees every frame
            tickets.append((lone.begin_seed(), event.begin_seed()))
        else:  # a frame: nothing reads the state in between
            changed = lone.apply_lone(step)
            assert changed == (event.apply_update(as_update(step)) == 1)
    lone.end_batch()
    event.end_batch()
    assert lone.state == event.state
    assert by_key(lone_calls) == by_key(event_calls)
    # a REST answer arriving now keeps every key a frame changed since its request
    answer = BalanceSnapshot("", (as_update(("", "BTC", Decimal(7), Decimal(7), Decimal(0),
                                              {}, None)).balances[0],))  # fmt: skip
    for lone_ticket, event_ticket in tickets:
        lone.finish_seed(lone_ticket, answer)
        event.finish_seed(event_ticket, answer)
        assert lone.state == event.state
    assert by_key(lone_calls) == by_key(event_calls)
