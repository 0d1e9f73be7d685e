"""sFOX: authenticate-then-subscribe handshake, balances, web3 wallets, sequence tracking."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import orjson
import pytest

from app.domain import (
    AssetBalance,
    BalanceSnapshot,
    BalanceUpdate,
    ControlReply,
    Event,
    SequenceGap,
)
from app.venues.base import AuthRejected, ProtocolError
from app.venues.sfox import SUBSCRIBE_MESSAGE, SfoxSession
from tests.venues.conftest import CANARIES, CANARY_KEY, account

TS = 1649899310281716289
VENUE_TS = "2022-04-14T01:21:50.281Z"
WEB3_WALLET = "web3:Ethereum:0x0bCdB57ae247F434C91b1d4521fFd6601f7e8999"
ZERO = Decimal(0)


def sfox_extra(amount: str) -> dict[str, str]:
    return {
        "trading_wallet": amount,
        "collateral_wallet": "0",
        "borrow_wallet": "0",
        "lending_wallet": "0",
    }


BTC = AssetBalance(
    "", "BTC", Decimal("0.17572419"), Decimal("0.17572419"), ZERO, "BTC", sfox_extra("0.17572419")
)
USD = AssetBalance("", "USD", Decimal(100), Decimal(100), ZERO, "USD", sfox_extra("100"))
WEB3_USDC = AssetBalance(WEB3_WALLET, "USDC", Decimal("250.5"), Decimal("250.5"), ZERO, "USDC", {})


def message(sequence: int | None, payload: object = None, **more: object) -> bytes:
    doc: dict[str, object] = {"recipient": "private.user.balances", "timestamp": TS}
    if sequence is not None:
        doc["sequence"] = sequence
    doc["payload"] = [] if payload is None else payload
    doc.update(more)
    return orjson.dumps(doc)


def item(currency: str, balance: object, available: object, held: object) -> dict[str, object]:
    return {"currency": currency, "balance": balance, "available": available, "held": held}


def control(kind: str, action: str, sequence: int, **payload: object) -> bytes:
    return orjson.dumps(
        {
            "type": kind,
            "sequence": sequence,
            "timestamp": TS,
            "payload": {"action": action, **payload},
            "action": action,
        }
    )


def ready_session(vector: Callable[[str], bytes]) -> SfoxSession:
    """A session that has authenticated (sequence 1) and subscribed (sequence 2)."""
    s = SfoxSession(account("sfox"))
    s.on_frame(vector("sfox/authenticate_success.json"))
    s.on_frame(control("success", "subscribe", 2, feeds=["private.user.balances"]))
    assert s.subscribed
    return s


def test_handshake_matches_the_vectors(vector: Callable[[str], bytes]) -> None:
    s = SfoxSession(account("sfox"))
    request = s.connect_request()
    assert request.url == "wss://ws.sfox.com/ws" and request.headers == {}
    (auth,) = s.opening_messages()
    expected_auth = json.loads(vector("sfox/authenticate_request.json"))
    expected_auth["apiKey"] = CANARY_KEY
    assert json.loads(auth) == expected_auth
    assert not s.subscribed
    events, replies = s.on_frame(vector("sfox/authenticate_success.json"))
    assert events == [ControlReply("authenticate", True, "")]
    assert [json.loads(r) for r in replies] == [json.loads(vector("sfox/subscribe_request.json"))]
    assert replies == [SUBSCRIBE_MESSAGE]
    assert not s.subscribed  # only the subscribe reply makes it so
    events, replies = s.on_frame(control("success", "subscribe", 2, feeds=["x"]))
    assert events == [ControlReply("subscribe", True, "")] and replies == []
    assert s.subscribed


def test_vectors_account_and_web3_balances(vector: Callable[[str], bytes]) -> None:
    s = ready_session(vector)
    # the vectors start at sequence 10: a gap after the handshake's 2, reported after the
    # balances so a resyncing caller still applies them
    events, _ = s.on_frame(vector("sfox/balances_account.json"))
    assert events == [BalanceUpdate((BTC, USD), VENUE_TS), SequenceGap(3, 10)]
    events, _ = s.on_frame(vector("sfox/balances_web3.json"))
    assert events == [BalanceUpdate((WEB3_USDC,), VENUE_TS)]


def test_web3_wallet_never_touches_the_exchange_wallet(vector: Callable[[str], bytes]) -> None:
    events, _ = SfoxSession(account("sfox")).on_frame(vector("sfox/balances_web3.json"))
    (update,) = events
    assert isinstance(update, BalanceUpdate)
    assert all(b.wallet == WEB3_WALLET for b in update.balances)


def test_sequence_gap_still_applies_and_moves_on() -> None:
    s = SfoxSession(account("sfox"))
    assert s.on_frame(message(5, [item("btc", "1", "1", "0")]))[0] == [
        BalanceUpdate((AssetBalance("", "BTC", Decimal(1), Decimal(1), ZERO, "BTC", {}),), VENUE_TS)
    ]  # the first sequence seen is the baseline
    events, _ = s.on_frame(message(8, [item("btc", "2", "2", "0")]))
    assert events[-1] == SequenceGap(6, 8)
    assert isinstance(events[0], BalanceUpdate) and events[0].balances[0].total == 2
    assert s.last_sequence == 8
    events, _ = s.on_frame(message(9, [item("btc", "3", "3", "0")]))
    assert len(events) == 1 and isinstance(events[0], BalanceUpdate)


@pytest.mark.parametrize("stale", [7, 8], ids=["reordered", "duplicate"])
def test_reordered_or_duplicate_frame_is_not_applied(stale: int) -> None:
    s = SfoxSession(account("sfox"))
    s.on_frame(message(8, [item("btc", "2", "2", "0")]))
    events, replies = s.on_frame(message(stale, [item("btc", "1", "1", "0")]))
    assert events == [SequenceGap(9, stale)] and replies == []
    assert s.last_sequence == 8
    events, _ = s.on_frame(message(9))
    assert events == []  # 9 follows 8: no gap, and an empty payload changes nothing


def test_messages_without_sequence_are_not_tracked() -> None:
    s = SfoxSession(account("sfox"))
    s.on_frame(message(3))
    events, _ = s.on_frame(message(None, [item("eth", "1", "1", "0")]))
    assert [type(e) for e in events] == [BalanceUpdate]
    assert s.last_sequence == 3


def test_held_is_locked_and_inconsistent_figures_derive_locked() -> None:
    s = SfoxSession(account("sfox"))
    events, _ = s.on_frame(message(1, [item("btc", "1.5", "1", "0.5"), item("eth", 3, 1, 0.5)]))
    update = events[0]
    assert isinstance(update, BalanceUpdate)
    btc, eth = update.balances
    assert (btc.total, btc.available, btc.locked) == (Decimal("1.5"), Decimal(1), Decimal("0.5"))
    assert "held" not in btc.extra
    # balance 3 != available 1 + held 0.5: total and available are kept, locked derived
    assert (eth.total, eth.available, eth.locked) == (Decimal(3), Decimal(1), Decimal(2))
    assert eth.extra == {"held": "0.5"}
    assert eth.total == eth.available + eth.locked


def test_authenticate_error_raises_auth_rejected() -> None:
    s = SfoxSession(account("sfox"))
    with pytest.raises(AuthRejected) as info:
        s.on_frame(control("error", "authenticate", 1, error=f"invalid api key {CANARY_KEY}"))
    assert info.value.reason == "auth"
    assert CANARY_KEY not in str(info.value)
    assert "invalid api key" in str(info.value)
    assert not s.subscribed
    assert s.on_frame(control("success", "authenticate", 2))[1] == [SUBSCRIBE_MESSAGE]


def test_error_without_action_refuses_what_is_pending(vector: Callable[[str], bytes]) -> None:
    with pytest.raises(AuthRejected):
        SfoxSession(account("sfox")).on_frame(b'{"type":"error","payload":{"error":"nope"}}')
    s = SfoxSession(account("sfox"))
    s.on_frame(vector("sfox/authenticate_success.json"))
    with pytest.raises(ProtocolError) as info:
        s.on_frame(b'{"type":"error","sequence":2,"payload":{"error":"unknown feed"}}')
    assert info.value.reason == "subscribe"
    assert not s.subscribed


def test_subscribe_error_is_a_subscribe_protocol_error(vector: Callable[[str], bytes]) -> None:
    s = SfoxSession(account("sfox"))
    s.on_frame(vector("sfox/authenticate_success.json"))
    with pytest.raises(ProtocolError) as info:
        s.on_frame(control("error", "subscribe", 2, error="no such feed"))
    assert info.value.reason == "subscribe"
    assert not isinstance(info.value, AuthRejected)
    assert not s.subscribed


def test_other_control_replies_pass_through() -> None:
    events, replies = SfoxSession(account("sfox")).on_frame(control("error", "unsubscribe", 4))
    assert events == [ControlReply("unsubscribe", False, "")] and replies == []


def test_rest_snapshot_accepts_numbers_and_strings_exactly() -> None:
    s = SfoxSession(account("sfox", rest_url="http://127.0.0.1:9100"))
    (request,) = s.seed_requests()
    assert request.url == "http://127.0.0.1:9100/v1/user/balance"
    assert request.headers == {"Authorization": f"Bearer {CANARY_KEY}"}
    body = (
        b'[{"currency":"btc","balance":0.17572419,"available":0.17572419,"held":0,'
        b'"trading_wallet":0.17572419},'
        b'{"currency":"usd","balance":"100","available":"90.1","held":"9.9"}]'
    )
    expected: list[Event] = [
        BalanceSnapshot(
            "",
            (
                AssetBalance(
                    "",
                    "BTC",
                    Decimal("0.17572419"),
                    Decimal("0.17572419"),
                    ZERO,
                    "BTC",
                    {"trading_wallet": "0.17572419"},
                ),
                AssetBalance("", "USD", Decimal(100), Decimal("90.1"), Decimal("9.9"), "USD", {}),
            ),
        )
    ]
    assert s.read_seed(request, body) == expected


BAD: list[tuple[str, bytes, str]] = [
    ("not json", b"nope", "parse"),
    ("not an object", b"[1]", "schema"),
    ("unknown type", b'{"type":"heartbeat"}', "unknown_event"),
    ("unknown feed", b'{"recipient":"private.user.orders","payload":[]}', "unknown_event"),
    (
        "sequence text",
        b'{"sequence":"3","recipient":"private.user.balances","payload":[]}',
        "schema",
    ),
    ("sequence negative", message(-1), "schema"),
    ("timestamp text", message(3, timestamp="soon"), "schema"),
    ("payload number", message(3, 5), "schema"),
    ("object payload not web3", message(3, {"type": "fiat"}), "schema"),
    (
        "item missing held",
        message(3, [{"currency": "btc", "balance": "1", "available": "1"}]),
        "schema",
    ),
    ("negative balance", message(3, [item("btc", "-1", "0", "0")]), "amount"),
    ("available > balance", message(3, [item("btc", "1", "2", "0")]), "amount"),
    ("pipe in currency", message(3, [item("b|tc", "1", "1", "0")]), "schema"),
    (
        "currency twice",
        message(3, [item("btc", "1", "1", "0"), item("BTC", "1", "1", "0")]),
        "schema",
    ),
    (
        "web3 pipe in address",
        message(
            3,
            {
                "type": "web3",
                "address": "0x|1",
                "balance": "1",
                "currency": "usdc",
                "network": "eth",
            },
        ),
        "schema",
    ),
    (
        "web3 colon in network",
        message(
            3,
            {
                "type": "web3",
                "address": "0x1",
                "balance": "1",
                "currency": "usdc",
                "network": "a:b",
            },
        ),
        "schema",
    ),
]


@pytest.mark.parametrize(("case", "raw", "reason"), BAD, ids=[c[0] for c in BAD])
def test_malformed_frames_are_rejected_whole(case: str, raw: bytes, reason: str) -> None:
    s = SfoxSession(account("sfox"))
    s.on_frame(message(2))
    with pytest.raises(ProtocolError) as info:
        s.on_frame(raw)
    assert info.value.reason == reason, case
    for canary in CANARIES:
        assert canary not in str(info.value)
    # an in-order frame used its number up even though refused; the connection carries on
    consumed = orjson.loads(raw).get("sequence") == 3 if raw.startswith(b"{") else False
    assert s.last_sequence == (3 if consumed else 2)
    events, _ = s.on_frame(message(s.last_sequence + 1, [item("eth", "1", "1", "0")]))
    assert [type(e) for e in events] == [BalanceUpdate]


def test_one_bad_item_rejects_the_whole_frame() -> None:
    s = SfoxSession(account("sfox"))
    s.on_frame(message(2))
    with pytest.raises(ProtocolError):
        s.on_frame(message(3, [item("btc", "1", "1", "0"), item("eth", "x", "1", "0")]))
    assert s.last_sequence == 3  # received in order: its number is used, nothing applied


def test_refused_frame_out_of_order_keeps_the_gap_visible() -> None:
    s = SfoxSession(account("sfox"))
    s.on_frame(message(2))
    with pytest.raises(ProtocolError):
        s.on_frame(message(7, [item("eth", "x", "1", "0")]))  # a gap, and unreadable
    assert s.last_sequence == 2
    events, _ = s.on_frame(message(8, [item("eth", "1", "1", "0")]))
    assert events[-1] == SequenceGap(3, 8)
    # a stale frame is older than what is applied: reported, its content never read
    assert s.on_frame(message(5, [item("eth", "x", "1", "0")])) == ([SequenceGap(9, 5)], [])
    assert s.last_sequence == 8


def test_frame_unreadable_before_its_sequence_changes_nothing() -> None:
    s = SfoxSession(account("sfox"))
    s.on_frame(message(2))
    with pytest.raises(ProtocolError):
        s.on_frame(b'{"sequence":3,"recipient":"private.user.balances","payload":[{"curr')
    assert s.last_sequence == 2


def test_secrets_stay_out_of_repr_and_log_url() -> None:
    s = SfoxSession(account("sfox", ws_url="wss://user:CANARY-SECRET-123@ws.example/ws"))
    request = s.connect_request()
    (rest,) = s.seed_requests()
    for text in (repr(s), repr(request), request.log_url, repr(rest), rest.log_url):
        for canary in CANARIES:
            assert canary not in text
    assert request.log_url == "wss://***@ws.example/ws"
