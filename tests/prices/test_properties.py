"""Property tests: whatever arrives, a price parser returns an exact positive Price or
raises ProtocolError (anything else would crash a feed; a float would lose digits)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.prices import bitopro, deltadefi, sfox, solanatracker
from app.prices.model import Price
from app.venues.base import ProtocolError
from tests.prices.conftest import RECEIVED
from tests.venues.conftest import TRUMP

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.decimals(allow_nan=False, allow_infinity=False).map(str)
    | st.sampled_from(
        [
            "TICKER", "BTC_TWD", "btc_twd", "ticker.sfox.btcusd", "btcusd", "usdxrp",
            "Market", "market_price", "message", f"price:aggregated:{TRUMP}", f"price:{TRUMP}",
            TRUMP, "1.5", "0", "-1", "2022-01-24T15:47:05.776Z",
        ]
    )
)  # fmt: skip
keys = st.sampled_from(
    [
        "event", "pair", "lastPrice", "timestamp", "sequence", "recipient", "payload", "last",
        "type", "sub_type", "price", "room", "data", "token", "aggregated", "median",
        "poolCount", "topPools", "liquidity", "time",
    ]
) | st.text(max_size=5)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=6),
    max_leaves=30,
)

PARSERS: list[Callable[[bytes], Price]] = [
    lambda raw: bitopro.parse_ticker(raw, RECEIVED),
    lambda raw: sfox.parse_ticker(raw, RECEIVED),
    lambda raw: deltadefi.parse_market_price(raw, "ADAUSDM", RECEIVED),
    lambda raw: solanatracker.parse_price_message(raw, RECEIVED),
]


def check(raw: bytes) -> None:
    for parse in PARSERS:
        try:
            price = parse(raw)
        except ProtocolError:
            continue
        assert type(price.price) is Decimal and price.price.is_finite() and price.price > 0
        assert price.liquidity is None or type(price.liquidity) is Decimal
        assert price.base and price.quote and "|" not in price.pair


@SETTINGS
@given(json_values)
def test_any_json_is_read_or_rejected(value: Any) -> None:
    check(json.dumps(value).encode())


@SETTINGS
@given(st.dictionaries(keys, json_values, max_size=8))
def test_any_json_object_is_read_or_rejected(value: dict[str, Any]) -> None:
    check(json.dumps(value).encode())


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_are_read_or_rejected(raw: bytes) -> None:
    check(raw)


@SETTINGS
@given(
    st.integers(min_value=0, max_value=30).flatmap(
        lambda places: st.decimals(
            min_value=Decimal("1E-30"), max_value=Decimal("1E+20"), places=places
        )
    )
)
def test_a_valid_price_survives_exactly(value: Decimal) -> None:
    """Up to 30 decimals and 20 integer digits (amounts are bounded at 40 and 40)."""
    text = format(value, "f")
    frames = [
        (bitopro.parse_ticker, {"event": "TICKER", "pair": "BTC_TWD", "lastPrice": text}),
        (sfox.parse_ticker, {"recipient": "ticker.sfox.btcusd", "payload": {"last": text}}),
    ]
    for parse, doc in frames:
        assert parse(json.dumps(doc).encode(), RECEIVED).price == Decimal(text)
    # as a bare JSON number, the way DeltaDeFi and SolanaTracker send prices
    raw = b'{"type":"Market","sub_type":"market_price","price":' + text.encode() + b"}"
    assert deltadefi.parse_market_price(raw, "ADAUSDM", RECEIVED).price == Decimal(text)
