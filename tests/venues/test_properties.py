"""Property tests: whatever arrives on the wire, a parser either reads it or raises ProtocolError.

Arbitrary JSON values and arbitrary bytes go to every venue's frame and REST parsers; any
other exception (KeyError, TypeError, RecursionError, ...) would be a crash of the
connection loop, and any float reaching an amount would be a precision bug.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain import BalanceSnapshot, BalanceUpdate, Event, PriceUpdate, VenueEvent, adds_up
from app.mints import USDC
from app.venues import make_session
from app.venues.base import HttpRequest, ProtocolError, VenueSession
from tests.venues.conftest import CANARY_DATA_KEY, OTHER_WALLET, TRUMP, WALLET, account

VENUES = ("bitopro", "sfox", "deltadefi", "solanatracker")
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "ACCOUNT_BALANCE",
            "Account",
            "balance",
            "order_info",
            "dlta_points",
            "success",
            "error",
            "authenticate",
            "subscribe",
            "private.user.balances",
            "web3",
            "message",
            "joined",
            f"wallet:{WALLET}:balance",
            f"transaction:{TRUMP}",
            WALLET,
            USDC,
            "1.5",
            "0",
            "-1",
            "NaN",
            "btc",
        ]
    )
)
keys = st.sampled_from(
    [
        "event",
        "data",
        "type",
        "sub_type",
        "balance",
        "order",
        "dlta_points",
        "sequence",
        "recipient",
        "payload",
        "action",
        "room",
        "currency",
        "amount",
        "available",
        "stake",
        "tradable",
        "held",
        "free",
        "locked",
        "asset",
        "wallet",
        "token",
        "tx",
        "priceUsd",
        "address",
        "network",
        "tokens",
        "timestamp",
        "datetime",
        "from",
        "to",
    ]
) | st.text(max_size=6)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30,
)


def sessions() -> list[VenueSession]:
    return [
        make_session(
            account(v, **({"data_api_key": CANARY_DATA_KEY} if v == "solanatracker" else {}))
        )
        for v in VENUES
    ]


def no_floats(value: Any) -> None:
    assert not isinstance(value, float)
    if isinstance(value, dict):
        for item in value.values():
            no_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            no_floats(item)


def check_events(events: list[Event]) -> None:
    for event in events:
        if isinstance(event, BalanceUpdate | BalanceSnapshot):
            for b in event.balances:
                assert all(type(x) is Decimal for x in (b.total, b.available, b.locked))
                assert adds_up(b.total, b.available, b.locked)
                assert min(b.total, b.available, b.locked) >= 0
                assert "|" not in b.wallet and "|" not in b.asset
        elif isinstance(event, PriceUpdate):
            assert event.price_usd is None or type(event.price_usd) is Decimal
        elif isinstance(event, VenueEvent):
            no_floats(event.data)
            json.dumps(event.data)


def feed(session: VenueSession, raw: str | bytes) -> None:
    try:
        events, replies = session.on_frame(raw)
    except ProtocolError:
        return
    check_events(events)
    assert all(isinstance(r, str) for r in replies)


def feed_rest(session: VenueSession, raw: bytes) -> None:
    try:
        requests = session.seed_requests()
        request = requests[0] if requests else HttpRequest("GET", "http://h/", "http://h/")
        events = session.read_seed(request, raw)
    except ProtocolError:
        return
    check_events(events)


@SETTINGS
@given(json_values)
def test_any_json_frame_is_read_or_rejected(value: Any) -> None:
    raw = json.dumps(value)
    for session in sessions():
        feed(session, raw)
        feed(session, raw.encode())
        feed_rest(session, raw.encode())


@SETTINGS
@given(st.dictionaries(keys, json_values, max_size=8))
def test_any_json_object_frame_is_read_or_rejected(value: dict[str, Any]) -> None:
    raw = json.dumps(value)
    for session in sessions():
        feed(session, raw)
        feed_rest(session, raw.encode())


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_are_read_or_rejected(raw: bytes) -> None:
    for session in sessions():
        feed(session, raw)
        feed_rest(session, raw)


@SETTINGS
@given(
    st.sampled_from(["ADA", "btc", "x|y", "", "é", " B"]),
    st.one_of(st.text(max_size=10), st.integers(), st.floats(), st.decimals().map(str)),
    st.one_of(st.text(max_size=10), st.integers(), st.floats(), st.decimals().map(str)),
)
def test_bitopro_currency_fields(code: str, amount: Any, available: Any) -> None:
    doc = {
        "event": "ACCOUNT_BALANCE",
        "data": {code: {"currency": code, "amount": amount, "available": available}},
    }
    feed(make_session(account("bitopro")), json.dumps(doc))


@SETTINGS
@given(
    st.sampled_from([WALLET, OTHER_WALLET, "short", WALLET + "|"]),
    st.sampled_from([USDC, TRUMP, "x"]),
    st.one_of(st.floats(allow_nan=False), st.integers(), st.text(max_size=8)),
)
def test_solanatracker_balance_fields(wallet: str, mint: str, amount: Any) -> None:
    doc = {
        "type": "message",
        "room": f"wallet:{wallet}:balance",
        "data": {"wallet": wallet, "token": mint, "amount": amount},
    }
    feed(make_session(account("solanatracker")), json.dumps(doc))


@SETTINGS
@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=12))
def test_sfox_sequences_never_go_backwards(sequence_numbers: list[int]) -> None:
    session = make_session(account("sfox"))
    highest = -1
    for n in sequence_numbers:
        session.on_frame(
            json.dumps({"sequence": n, "recipient": "private.user.balances", "payload": []})
        )
        highest = max(highest, n)
        assert session.last_sequence == highest  # type: ignore[attr-defined]
