"""BitoPro: the official signature vector, signed headers, snapshot-then-updates, rejections."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from app.domain import AssetBalance, BalanceSnapshot, BalanceUpdate
from app.venues.base import ProtocolError
from app.venues.bitopro import BitoproSession, sign_payload
from tests.venues.conftest import CANARIES, CANARY_EMAIL, CANARY_KEY, account

BIG = Decimal("999999999999.99999999")
ZERO = Decimal(0)


def zero_balance(asset: str, tradable: bool) -> AssetBalance:
    return AssetBalance("", asset, ZERO, ZERO, ZERO, asset, {"stake": "0", "tradable": tradable})


def full_balance(asset: str, amount: Decimal) -> AssetBalance:
    return AssetBalance("", asset, amount, amount, ZERO, asset, {"stake": "0", "tradable": True})


FIRST_FRAME_BALANCES = (
    full_balance("ADA", BIG),
    zero_balance("ALLN", False),
    zero_balance("BCD", True),
    zero_balance("BCH", True),
    zero_balance("BCHSV", True),
    full_balance("BITO", Decimal("9999799")),
    full_balance("BNB", Decimal("8500")),
    full_balance("BTC", BIG),
    full_balance("DOGE", BIG),
    zero_balance("EOS", True),
    zero_balance("MITH", False),
)
ADA_PARTLY_LOCKED = AssetBalance("", "ADA", BIG, ZERO, BIG, "ADA", {"stake": "0", "tradable": True})
VENUE_TS = "2021-12-15T07:28:23.365Z"


def frame(data: dict[str, object], **envelope: object) -> bytes:
    doc: dict[str, object] = {
        "event": "ACCOUNT_BALANCE",
        "eventID": "88038887-1de1-4521-b411-93440156cb41",
        "timestamp": 1639553303365,
        "datetime": VENUE_TS,
        "data": data,
    }
    doc.update(envelope)
    return orjson.dumps(doc)


def currency(code: str, amount: object = "1", available: object = "1", **more: object) -> object:
    return {
        "currency": code,
        "amount": amount,
        "available": available,
        "stake": "0",
        "tradable": True,
        **more,
    }


def session() -> BitoproSession:
    return BitoproSession(account("bitopro"), clock_ms=lambda: 1_700_000_000_000)


def test_signature_reproduces_the_official_vector(vectors: Path) -> None:
    vec = json.loads((vectors / "bitopro" / "auth_signature_vector.json").read_text())
    body = vec["body"]
    payload, signature = sign_payload(body["identity"], body["nonce"], vec["api_secret"])
    assert payload == vec["payload"]
    assert signature == vec["signature"]


def test_connect_request_carries_three_signed_headers_and_a_fresh_nonce() -> None:
    ticks = iter([1_700_000_000_000, 1_700_000_000_000, 1_700_000_000_500])
    s = BitoproSession(account("bitopro"), clock_ms=lambda: next(ticks))
    first, second, third = s.connect_request(), s.connect_request(), s.connect_request()
    assert first.url == "wss://stream.bitopro.com:443/ws/v1/pub/auth/account-balance"
    assert first.log_url == first.url
    assert set(first.headers) == {"X-BITOPRO-APIKEY", "X-BITOPRO-PAYLOAD", "X-BITOPRO-SIGNATURE"}
    assert first.headers["X-BITOPRO-APIKEY"] == CANARY_KEY
    nonces = []
    for request in (first, second, third):
        payload = request.headers["X-BITOPRO-PAYLOAD"]
        body = json.loads(base64.b64decode(payload))
        assert list(body) == ["identity", "nonce"]
        assert body["identity"] == CANARY_EMAIL
        nonces.append(body["nonce"])
        _, expected = sign_payload(CANARY_EMAIL, body["nonce"], "CANARY-SECRET-123")
        assert request.headers["X-BITOPRO-SIGNATURE"] == expected
    assert nonces[0] < nonces[1] < nonces[2]  # never reused, even within one millisecond
    assert nonces[2] >= 1_700_000_000_500


def test_url_override_and_rest_request() -> None:
    s = BitoproSession(
        account("bitopro", ws_url="ws://127.0.0.1:9001/ws", rest_url="http://127.0.0.1:9002/")
    )
    assert s.connect_request().url == "ws://127.0.0.1:9001/ws"
    rest = s.balance_request()
    assert rest.url == "http://127.0.0.1:9002/v3/accounts/balance"
    assert rest.method == "GET"
    assert set(rest.headers) == {"X-BITOPRO-APIKEY", "X-BITOPRO-PAYLOAD", "X-BITOPRO-SIGNATURE"}
    assert s.seed_requests() == []  # the stream's first frame is the snapshot
    assert s.stream_has_snapshot
    assert s.subscribed
    assert s.opening_messages() == ()


def test_vectors_first_frame_is_a_snapshot_then_updates(vector: Callable[[str], bytes]) -> None:
    s = session()
    events, replies = s.on_frame(vector("bitopro/account_balance_first.json"))
    assert replies == []
    assert events == [BalanceSnapshot("", FIRST_FRAME_BALANCES, VENUE_TS)]
    events, _ = s.on_frame(vector("bitopro/account_balance_update.json"))
    assert events == [BalanceUpdate((ADA_PARTLY_LOCKED,), VENUE_TS)]
    # the amount survives exactly, digit for digit
    snapshot = BalanceSnapshot("", FIRST_FRAME_BALANCES, VENUE_TS)
    assert str(snapshot.balances[0].total) == "999999999999.99999999"


def test_every_new_session_starts_with_a_snapshot(vector: Callable[[str], bytes]) -> None:
    for _ in range(2):  # a reconnect makes a new session: its first frame replaces again
        s = session()
        first, _ = s.on_frame(vector("bitopro/account_balance_update.json"))
        again, _ = s.on_frame(vector("bitopro/account_balance_update.json"))
        assert first == [BalanceSnapshot("", (ADA_PARTLY_LOCKED,), VENUE_TS)]
        assert again == [BalanceUpdate((ADA_PARTLY_LOCKED,), VENUE_TS)]


def test_str_and_bytes_frames_read_the_same(vector: Callable[[str], bytes]) -> None:
    raw = vector("bitopro/account_balance_update.json")
    assert session().on_frame(raw) == session().on_frame(raw.decode())


def test_json_numbers_are_read_exactly() -> None:
    raw = (
        b'{"event":"ACCOUNT_BALANCE","data":{"BTC":{"currency":"btc","amount":0.30000000000000004,'
    )
    raw += b'"available":0.1,"stake":0,"tradable":false}},"datetime":"2021-12-15T07:28:23.365Z"}'
    events, _ = session().on_frame(raw)
    (balance,) = events[0].balances  # type: ignore[union-attr]
    assert balance == AssetBalance(
        "",
        "BTC",
        Decimal("0.30000000000000004"),
        Decimal("0.1"),
        Decimal("0.20000000000000004"),
        "BTC",
        {"stake": "0", "tradable": False},
    )


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ({"datetime": "2021-12-15T07:28:23Z"}, "2021-12-15T07:28:23.000Z"),
        ({"datetime": "2021-12-15T15:28:23.365123+08:00"}, "2021-12-15T07:28:23.365Z"),
        ({"datetime": "2021-12-15T07:28:23.365"}, "2021-12-15T07:28:23.365Z"),
        ({"datetime": None, "timestamp": 1639553303365}, "2021-12-15T07:28:23.365Z"),
        ({"datetime": None, "timestamp": None}, None),
    ],
)
def test_venue_time_is_normalised(stamp: dict[str, object], expected: str | None) -> None:
    events, _ = session().on_frame(frame({"BTC": currency("BTC")}, **stamp))
    assert events[0].venue_ts == expected  # type: ignore[union-attr]


def test_rest_snapshot() -> None:
    body = orjson.dumps(
        {
            "data": [
                {
                    "currency": "btc",
                    "amount": "1.5",
                    "available": "1.0",
                    "stake": "0.1",
                    "tradable": True,
                },
                {
                    "currency": "twd",
                    "amount": 100,
                    "available": 99.5,
                    "stake": "0",
                    "tradable": True,
                },
            ]
        }
    )
    assert (s := session()).read_seed(s.balance_request(), body) == [
        BalanceSnapshot(
            "",
            (
                AssetBalance(
                    "",
                    "BTC",
                    Decimal("1.5"),
                    Decimal("1.0"),
                    Decimal("0.5"),
                    "BTC",
                    {"stake": "0.1", "tradable": True},
                ),
                AssetBalance(
                    "",
                    "TWD",
                    Decimal(100),
                    Decimal("99.5"),
                    Decimal("0.5"),
                    "TWD",
                    {"stake": "0", "tradable": True},
                ),
            ),
        )
    ]


BAD_FRAMES: list[tuple[str, bytes | str, str]] = [
    ("not json", b"{nope", "parse"),
    ("not utf-8", b'{"event":"\xff"}', "parse"),
    ("an array", b"[]", "schema"),
    ("a string", b'"ACCOUNT_BALANCE"', "schema"),
    ("other event", frame({}, event="ORDER_UPDATE"), "unknown_event"),
    ("event missing", b'{"data":{}}', "schema"),
    ("data a list", frame([]), "schema"),  # type: ignore[arg-type]
    ("currency a list", frame({"BTC": []}), "schema"),
    ("amount missing", frame({"BTC": {"currency": "BTC", "available": "1"}}), "schema"),
    ("amount negative", frame({"BTC": currency("BTC", "-1", "0")}), "amount"),
    ("amount NaN", frame({"BTC": currency("BTC", "NaN", "0")}), "amount"),
    ("amount Infinity", frame({"BTC": currency("BTC", "Infinity", "0")}), "amount"),
    ("amount text", frame({"BTC": currency("BTC", "lots", "0")}), "amount"),
    ("amount spaced", frame({"BTC": currency("BTC", " 1", "0")}), "amount"),
    ("amount underscored", frame({"BTC": currency("BTC", "1_000", "0")}), "amount"),
    ("amount bool", frame({"BTC": currency("BTC", True, "0")}), "schema"),
    ("amount null", frame({"BTC": currency("BTC", None, "0")}), "schema"),
    ("amount huge", frame({"BTC": currency("BTC", "1e400", "0")}), "amount"),
    (
        "amount number huge",
        b'{"event":"ACCOUNT_BALANCE","data":{"B":{"currency":"B","amount":1e400,"available":0}}}',
        "amount",
    ),
    (
        "json NaN",
        b'{"event":"ACCOUNT_BALANCE","data":{"B":{"currency":"B","amount":NaN,"available":0}}}',
        "parse",
    ),
    ("available > amount", frame({"BTC": currency("BTC", "1", "2")}), "amount"),
    ("pipe in asset", frame({"B|X": currency("B|X")}), "schema"),
    ("empty asset", frame({"": currency("")}), "schema"),
    ("asset twice", frame({"btc": currency("btc"), "BTC": currency("BTC")}), "schema"),
    ("tradable text", frame({"BTC": currency("BTC", tradable="yes")}), "schema"),
    ("stake negative", frame({"BTC": currency("BTC", stake="-1")}), "amount"),
    ("bad datetime", frame({"BTC": currency("BTC")}, datetime="yesterday"), "schema"),
    ("oversize", b'{"event":"ACCOUNT_BALANCE","pad":"' + b"x" * (1 << 20) + b'"}', "oversize"),
]


@pytest.mark.parametrize(("case", "raw", "reason"), BAD_FRAMES, ids=[c[0] for c in BAD_FRAMES])
def test_malformed_frames_are_rejected_whole(case: str, raw: bytes | str, reason: str) -> None:
    s = session()
    with pytest.raises(ProtocolError) as info:
        s.on_frame(raw)
    assert info.value.reason == reason, case
    assert len(str(info.value)) < 200
    if reason == "unknown_event":
        # another kind of event is not the snapshot: the next good frame still is
        events, _ = s.on_frame(frame({"BTC": currency("BTC")}))
        assert isinstance(events[0], BalanceSnapshot)
    else:
        # it may have been the snapshot: no later, partial frame may replace the account
        assert s.snapshot_rejected
        with pytest.raises(ProtocolError) as later:
            s.on_frame(frame({"BTC": currency("BTC")}))
        assert later.value.reason == "snapshot_rejected"
        s = session()  # a reconnect: its first frame is the snapshot
        events, _ = s.on_frame(frame({"BTC": currency("BTC")}))
        assert isinstance(events[0], BalanceSnapshot)
    # and once the snapshot is in, a rejected frame does not reset anything either
    with pytest.raises(ProtocolError):
        s.on_frame(raw)
    events, _ = s.on_frame(frame({"BTC": currency("BTC")}))
    assert isinstance(events[0], BalanceUpdate)


def test_one_bad_currency_rejects_the_whole_frame() -> None:
    s = session()
    raw = frame({"BTC": currency("BTC", "1", "1"), "ETH": currency("ETH", "1", "-1")})
    with pytest.raises(ProtocolError) as info:
        s.on_frame(raw)
    assert info.value.reason == "amount"


def test_secrets_stay_out_of_repr_log_url_and_errors() -> None:
    s = session()
    request = s.connect_request()
    rest = s.balance_request()
    visible = [repr(s), repr(request), request.log_url, repr(rest), rest.log_url]
    with pytest.raises(ProtocolError) as info:
        s.on_frame(frame({"BTC": currency("BTC", "CANARY-SECRET-123", "0")}))
    visible.append(str(info.value))
    for text in visible:
        for canary in (*CANARIES, CANARY_EMAIL):
            assert canary not in text
