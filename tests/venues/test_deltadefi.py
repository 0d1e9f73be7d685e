"""DeltaDeFi: key in the query (never logged), balance/order/points events, exact numbers."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import orjson
import pytest

from app.domain import AssetBalance, BalanceSnapshot, BalanceUpdate, ControlReply, VenueEvent
from app.venues.base import ProtocolError
from app.venues.deltadefi import DeltadefiSession
from tests.venues.conftest import CANARIES, CANARY_KEY, account

USDM_UNIT = "5066154a102ee037390c5236f78db23239b49c5748d3d349f3ccf04b55534458"
ZERO = Decimal(0)


def session(**overrides: object) -> DeltadefiSession:
    return DeltadefiSession(account("deltadefi", **overrides))


def balance_frame(*items: object, kind: str = "Account") -> bytes:
    return orjson.dumps({"type": kind, "sub_type": "balance", "balance": list(items)})


def test_connect_url_appends_the_key_and_logs_it_redacted() -> None:
    request = session().connect_request()
    assert request.url == f"wss://stream.deltadefi.io/accounts/stream?api_key={CANARY_KEY}"
    assert request.log_url == "wss://stream.deltadefi.io/accounts/stream?api_key=***"
    assert request.headers == {}
    assert session().opening_messages() == ()


def test_override_with_a_query_uses_ampersand() -> None:
    request = session(ws_url="ws://127.0.0.1:9003/accounts/stream?v=2").connect_request()
    assert request.url == f"ws://127.0.0.1:9003/accounts/stream?v=2&api_key={CANARY_KEY}"
    assert request.log_url == "ws://127.0.0.1:9003/accounts/stream?v=2&api_key=***"


def test_key_with_url_characters_is_quoted() -> None:
    request = session(api_key="a b&c/d").connect_request()
    assert request.url.endswith("?api_key=a%20b%26c%2Fd")


def test_vector_balance_is_exact_and_upper_cased(vector: Callable[[str], bytes]) -> None:
    events, replies = session().on_frame(vector("deltadefi/balance.json"))
    assert replies == []
    assert events == [
        BalanceUpdate(
            (
                AssetBalance(
                    "",
                    "USDM",
                    Decimal("1153.006812"),
                    Decimal("1153.006812"),
                    ZERO,
                    "USDM",
                    {"asset_unit": USDM_UNIT},
                ),
                AssetBalance(
                    "",
                    "ADA",
                    Decimal("1383.52097"),
                    Decimal("1383.52097"),
                    ZERO,
                    "ADA",
                    {"asset_unit": ""},
                ),
            )
        )
    ]
    assert str(events[0].balances[0].total) == "1153.006812"  # type: ignore[union-attr]


def test_vector_order_info_is_a_json_safe_event(vector: Callable[[str], bytes]) -> None:
    events, _ = session().on_frame(vector("deltadefi/order_info.json"))
    (event,) = events
    assert isinstance(event, VenueEvent) and event.kind == "order"
    expected = orjson.loads(vector("deltadefi/order_info.json"))["order"]
    assert event.data == expected
    assert event.data["commission_rate_bp"] == 10


def test_vector_points_event(vector: Callable[[str], bytes]) -> None:
    events, _ = session().on_frame(vector("deltadefi/dlta_points.json"))
    assert events == [
        VenueEvent(
            "points",
            {
                "delta": "150",
                "new_total": "15150",
                "season_points": "5150",
                "source_type": "trade",
                "source_ref": "550e8400-e29b-41d4-a716-446655440000",
                "league": "gold",
            },
        )
    ]


def test_event_data_never_carries_floats() -> None:
    raw = b'{"type":"Account","sub_type":"order_info","order":{"price":0.93,"qty":[1.5e-7],'
    raw += b'"big":123456789012345678901234567890,"nested":{"x":1e2}}}'
    (event,), _ = session().on_frame(raw)
    assert isinstance(event, VenueEvent)
    assert event.data == {
        "price": "0.93",
        "qty": ["0.00000015"],
        "big": "123456789012345678901234567890",
        "nested": {"x": "100"},
    }
    orjson.dumps(event.data)  # serialisable as is


def test_type_is_compared_case_insensitively() -> None:
    events, _ = session().on_frame(
        balance_frame(
            {"asset": "ada", "asset_unit": "", "free": "1", "locked": "2.5"}, kind="account"
        )
    )
    assert events == [
        BalanceUpdate(
            (
                AssetBalance(
                    "", "ADA", Decimal("3.5"), Decimal(1), Decimal("2.5"), "ADA", {"asset_unit": ""}
                ),
            )
        )
    ]


def test_text_keepalives() -> None:
    # answered, and reported as a heartbeat (counted as kind "ping", never an error)
    assert session().on_frame("ping") == ([ControlReply("ping", True)], ["pong"])
    assert session().on_frame(b"pong") == ([ControlReply("pong", True)], [])


def test_rest_snapshot() -> None:
    s = session(rest_url="http://127.0.0.1:9004")
    (request,) = s.seed_requests()
    assert request.url == "http://127.0.0.1:9004/accounts/balance"
    assert request.headers == {"X-API-KEY": CANARY_KEY}
    body = b'[{"asset":"usdm","asset_unit":"u","free":1153.006812,"locked":"0.5"}]'
    assert s.read_seed(request, body) == [
        BalanceSnapshot(
            "",
            (
                AssetBalance(
                    "",
                    "USDM",
                    Decimal("1153.506812"),
                    Decimal("1153.006812"),
                    Decimal("0.5"),
                    "USDM",
                    {"asset_unit": "u"},
                ),
            ),
        )
    ]
    assert s.read_seed(request, b"[]") == [BalanceSnapshot("", ())]


BAD: list[tuple[str, bytes, str]] = [
    ("not json", b"{", "parse"),
    ("not an object", b"1", "schema"),
    ("other type", b'{"type":"Market","sub_type":"balance"}', "unknown_event"),
    ("type missing", b'{"sub_type":"balance"}', "schema"),
    ("other sub_type", b'{"type":"Account","sub_type":"margin"}', "unknown_event"),
    ("balance not a list", b'{"type":"Account","sub_type":"balance","balance":{}}', "schema"),
    ("free negative", balance_frame({"asset": "ada", "free": -1, "locked": 0}), "amount"),
    ("locked text", balance_frame({"asset": "ada", "free": 1, "locked": "a lot"}), "amount"),
    ("free missing", balance_frame({"asset": "ada", "locked": 0}), "schema"),
    (
        "asset twice",
        balance_frame(
            {"asset": "ada", "free": 1, "locked": 0}, {"asset": "ADA", "free": 2, "locked": 0}
        ),
        "schema",
    ),
    ("pipe in asset", balance_frame({"asset": "a|da", "free": 1, "locked": 0}), "schema"),
    ("order not an object", b'{"type":"Account","sub_type":"order_info","order":[]}', "schema"),
    ("points missing", b'{"type":"Account","sub_type":"dlta_points"}', "schema"),
]


@pytest.mark.parametrize(("case", "raw", "reason"), BAD, ids=[c[0] for c in BAD])
def test_malformed_frames_are_rejected(case: str, raw: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        session().on_frame(raw)
    assert info.value.reason == reason, case


def test_secrets_stay_out_of_repr_log_url_and_errors() -> None:
    s = session()
    request = s.connect_request()
    (rest,) = s.seed_requests()
    texts = [repr(s), repr(request), request.log_url, repr(rest), rest.log_url]
    with pytest.raises(ProtocolError) as info:
        s.on_frame(balance_frame({"asset": CANARY_KEY, "free": CANARY_KEY, "locked": 0}))
    texts.append(str(info.value))
    for text in texts:
        for canary in CANARIES:
            assert canary not in text
