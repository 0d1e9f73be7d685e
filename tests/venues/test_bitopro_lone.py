"""BitoPro's lone-balance path agrees with the strict reader on every frame.

``read_lone_balance`` is the hot path: it must read exactly what ``on_frame`` reads, into
the same balance (same digits, not merely equal numbers), and give ``None`` for anything
``on_frame`` rejects; a faster path that accepted more would be a bug. Frames are drawn
around the common one-currency shape, valid and broken: negative, exponent, float and
non-numeric amounts, unknown and malformed codes, extra fields, ``"tradable": "true"``,
several currencies, other events, bad times, and arbitrary JSON.
"""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from app.domain import AssetBalance, BalanceUpdate, adds_up
from app.venues.base import ProtocolError
from app.venues.bitopro import BitoproSession
from tests.venues.conftest import account

SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SNAPSHOT = orjson.dumps(
    {
        "event": "ACCOUNT_BALANCE",
        "data": {
            code: {"currency": code, "amount": "1", "available": "1", "stake": "0"}
            for code in ("BTC", "ETH", "usdt", "TWD")
        },
    }
)

good_amounts = st.from_regex(r"[0-9]{1,12}(\.[0-9]{1,10})?", fullmatch=True)
amounts = st.one_of(
    good_amounts,
    good_amounts,
    st.sampled_from(
        [
            "0",
            "1",
            "1.5",
            "1.50",
            "0.00000001",
            "00012.30",
            "-1",
            "1e5",
            "1E-3",
            "1.",
            ".5",
            " 1",
            "1 ",
            "NaN",
            "Infinity",
            "",
            "0x10",
            "１",
            "1_000",
            "9" * 41,
            "1." + "0" * 41,
            "999999999999.99999999",
        ]
    ),
    st.from_regex(r"[0-9]{1,45}(\.[0-9]{1,45})?", fullmatch=True),
    st.integers(min_value=-5, max_value=10**42),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
codes = st.sampled_from(
    ["BTC", "BTC", "ETH", "usdt", "TWD", "NEW", "USDT(ERC20)", "", "B|X", "btc", 1]
)
times = st.sampled_from(
    ["2021-12-15T07:28:23.365Z", "2021-12-15T07:28:23.365Z", "2021-12-15T07:28:23.365Z",
     None, None, "2021-12-15T07:28:23Z", "2021-12-15T07:28:23.365+08:00",
     "yesterday", "", 5, None]
)  # fmt: skip
optional = st.sampled_from(["absent", None])


@st.composite
def currency_entry(draw: st.DrawFn, key: Any) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from([None, [], "BTC", 1]))
    entry: dict[str, Any] = {}
    if draw(st.booleans()):
        entry["currency"] = draw(st.one_of(st.just(key), codes))
    amount = draw(amounts)
    entry["amount"] = amount
    entry["available"] = amount if draw(st.booleans()) else draw(amounts)
    stake = draw(st.sampled_from(["absent", "0", "absent", "0", "0.5", 0, None, "-0", "x"]))
    if stake != "absent":
        entry["stake"] = stake
    tradable = draw(st.sampled_from(["absent", True, False, True, "true", 1, None]))
    if tradable != "absent":
        entry["tradable"] = tradable
    if draw(st.integers(0, 4)) == 0:
        entry[draw(st.sampled_from(["extra", "locked", "AMOUNT"]))] = draw(amounts)
    return entry


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 15)) == 0:  # not a frame at all
        return draw(st.binary(max_size=60))
    keys = draw(st.lists(codes.filter(lambda c: isinstance(c, str)), min_size=0, max_size=3))
    if not keys or draw(st.integers(0, 3)):
        keys = keys[:1] or ["BTC"]
    data: Any = {k: draw(currency_entry(k)) for k in keys}
    if draw(st.integers(0, 25)) == 0:
        data = draw(st.sampled_from([[], None, "BTC"]))
    doc: dict[str, Any] = {
        "event": draw(st.sampled_from(["ACCOUNT_BALANCE"] * 8 + ["ORDER", "", None, 7])),
        "data": data,
    }
    stamp = draw(times)
    if stamp is not None:
        doc["datetime"] = stamp
    if draw(st.integers(0, 3)) == 0:
        doc["timestamp"] = draw(st.sampled_from([1639553303365, -1, "1639553303365", 1.5]))
    if draw(st.booleans()):
        doc["eventID"] = "88038887-1de1-4521-b411-93440156cb41"
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))  # orjson refuses big integers
    if draw(st.integers(0, 30)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # truncated
    return text.encode() if draw(st.booleans()) else text  # type: ignore[return-value]


MUTATIONS: dict[str, Any] = {
    "amount": amounts,
    "available": amounts,
    "currency": codes,
    "stake": st.sampled_from(["0.5", 0, None, "-0", "x", "0.0", 0.0]),
    "tradable": st.sampled_from([False, "true", 1, None, "false"]),
    "datetime": times,
    "timestamp": st.sampled_from([1639553303365, -1, "1639553303365", 1.5, None]),
    "event": st.sampled_from(["ORDER", "", None, 7, "account_balance"]),
    "extra": amounts,
    "drop": st.sampled_from(["amount", "available", "currency", "stake", "tradable"]),
}


@st.composite
def near_common_frames(draw: st.DrawFn) -> bytes:
    """The common frame with zero, one or two fields changed: most take the lone path."""
    amount = draw(good_amounts)
    entry: dict[str, Any] = {
        "currency": "BTC",
        "amount": amount,
        "available": amount if draw(st.booleans()) else draw(good_amounts),
        "stake": "0",
        "tradable": True,
    }
    doc: dict[str, Any] = {"event": "ACCOUNT_BALANCE", "datetime": "2021-12-15T07:28:23.365Z"}
    for name in draw(st.lists(st.sampled_from(sorted(MUTATIONS)), max_size=2)):
        value = draw(MUTATIONS[name])
        if name in ("event", "datetime", "timestamp"):
            doc[name] = value
        elif name == "drop":
            entry.pop(value, None)
        else:
            entry[name] = value
    doc["data"] = {draw(st.sampled_from(["BTC", "BTC", "ETH", "x"])): entry}
    return json.dumps(doc).encode()


def sessions() -> tuple[BitoproSession, BitoproSession]:
    lone, strict = BitoproSession(account("bitopro")), BitoproSession(account("bitopro"))
    for s in (lone, strict):
        s.on_frame(SNAPSHOT)
    return lone, strict


def digits(balance: AssetBalance) -> tuple[str, ...]:
    return (str(balance.total), str(balance.available), str(balance.locked))


def check(raw: str | bytes) -> None:
    fast, strict = sessions()
    lone = fast.read_lone_balance(raw)
    with contextlib.suppress(InvalidArgument):  # outside a property test
        event("lone path" if lone is not None else "strict path")
    try:
        events, replies = strict.on_frame(raw)
    except ProtocolError:
        assert lone is None, f"the lone path accepted a frame the strict reader rejects: {raw!r}"
        return
    if lone is None:
        return  # the strict reader takes it
    wallet, asset, total, available, locked, extra, venue_ts = lone
    expected = AssetBalance(wallet, asset, total, available, locked, asset, extra)
    assert replies == []
    assert events == [BalanceUpdate((expected,), venue_ts)]
    (update,) = events
    assert isinstance(update, BalanceUpdate)
    assert digits(update.balances[0]) == digits(expected)  # the same digits, not just equal
    assert dict(update.balances[0].extra) == dict(extra)
    assert adds_up(total, available, locked)  # exactly: past 28 digits too


@SETTINGS
@given(frames())
def test_the_lone_path_reads_exactly_what_the_strict_reader_reads(raw: bytes) -> None:
    check(raw)


@SETTINGS
@given(near_common_frames())
def test_near_common_frames_agree_on_both_paths(raw: bytes) -> None:
    check(raw)


@SETTINGS
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                        max_size=3),
                    max_leaves=12))  # fmt: skip
def test_arbitrary_json_never_takes_the_lone_path_wrongly(value: Any) -> None:
    check(json.dumps(value))


@pytest.mark.parametrize(
    "entry",
    [
        {"currency": "BTC", "amount": "-1", "available": "-1"},
        {"currency": "BTC", "amount": "1e5", "available": "1e5"},
        {"currency": "BTC", "amount": "1", "available": "2"},
        {"currency": "BTC", "amount": "x", "available": "x"},
        {"currency": "BTC", "amount": "1", "available": "1", "tradable": "true"},
        {"currency": "BTC", "amount": "1", "available": "1", "stake": "-1"},
        {"currency": "USDT(ERC20)", "amount": "1", "available": "1"},
        {"currency": "BTC", "amount": 1.5, "available": 1.5},
    ],
)
def test_known_bad_entries_never_take_the_lone_path(entry: dict[str, Any]) -> None:
    raw = orjson.dumps({"event": "ACCOUNT_BALANCE", "data": {"BTC": entry}})
    assert sessions()[0].read_lone_balance(raw) is None
    check(raw)


def test_the_common_frame_takes_the_lone_path() -> None:
    raw = orjson.dumps(
        {
            "event": "ACCOUNT_BALANCE",
            "eventID": "88038887-1de1-4521-b411-93440156cb41",
            "timestamp": 1639553303365,
            "datetime": "2021-12-15T07:28:23.365Z",
            "data": {
                "BTC": {
                    "currency": "BTC",
                    "amount": "1.50",
                    "available": "1.25",
                    "stake": "0",
                    "tradable": True,
                }
            },
        }
    )
    lone = sessions()[0].read_lone_balance(raw)
    assert lone == (
        "",
        "BTC",
        Decimal("1.50"),
        Decimal("1.25"),
        Decimal("0.25"),
        {"stake": "0", "tradable": True},
        "2021-12-15T07:28:23.365Z",
    )
    check(raw)
    first = BitoproSession(account("bitopro"))
    assert first.read_lone_balance(raw) is None  # the first frame is the snapshot
