"""The shared wire readers: exact decoding, amount rules, times, JSON-safe copies."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from app.venues import _wire as w
from app.venues.base import MAX_FRAME_BYTES, ProtocolError


def read_amount(raw: bytes) -> Decimal:
    return w.decode(raw, lambda doc: w.amount(doc["a"], "a"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": 78816.844996}', "78816.844996"),
        (b'{"a": 1153.006812}', "1153.006812"),
        (b'{"a": 0.1}', "0.1"),
        (b'{"a": 1e-8}', "1E-8"),
        (b'{"a": 18446744073709551616}', "18446744073709551616"),  # beyond 64 bits
        (b'{"a": 123456789012345678901234567890}', "123456789012345678901234567890"),
        (b'{"a": "999999999999.99999999"}', "999999999999.99999999"),
        (b'{"a": "1.5E+3"}', "1.5E+3"),
        (b'{"a": 0}', "0"),
    ],
)
def test_amounts_are_exact_whatever_the_encoding(raw: bytes, expected: str) -> None:
    value = read_amount(raw)
    assert type(value) is Decimal
    assert value == Decimal(expected)
    assert str(value) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": -1}', "amount"),
        (b'{"a": -0.0}', "amount"),
        (b'{"a": "-1"}', "amount"),
        (b'{"a": "NaN"}', "amount"),
        (b'{"a": "Infinity"}', "amount"),
        (b'{"a": NaN}', "parse"),
        (b'{"a": Infinity}', "parse"),
        (b'{"a": 1e400}', "amount"),
        (b'{"a": 1e-400}', "amount"),
        (b'{"a": "1e99"}', "amount"),
        (b'{"a": "0x10"}', "amount"),
        (b'{"a": ""}', "amount"),
        (b'{"a": null}', "schema"),
        (b'{"a": true}', "schema"),
        (b'{"a": [1]}', "schema"),
    ],
)
def test_bad_amounts(raw: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        read_amount(raw)
    assert info.value.reason == reason


def test_amounts_bounded_so_arithmetic_stays_exact() -> None:
    big = w.amount("9" * 40 + "." + "9" * 40, "a")
    tiny = w.amount("0." + "0" * 39 + "1", "a")
    assert w.add(w.subtract(big, tiny), tiny) == big  # the default context would round
    assert w.subtract(w.add(big, big), big) == big


@pytest.mark.parametrize("zero", ["0e-999", "0E+999", "0.000", b"0e-999"])
def test_any_zero_is_plain_zero(zero: str | bytes) -> None:
    raw = b'{"a": ' + (zero if isinstance(zero, bytes) else b'"' + zero.encode() + b'"') + b"}"
    value = read_amount(raw)
    assert value == 0
    assert w.subtract(Decimal("1E+39"), value) == Decimal("1E+39")
    assert w.json_safe(Decimal("0E-999"), "x") == "0"


def test_decode_rejects_what_orjson_rejects_for_reasons_other_than_numbers() -> None:
    for raw in (b'"\\ud800"', b"[" * 2000 + b"]" * 2000, b"\xff", b""):
        with pytest.raises(ProtocolError) as info:
            w.decode(raw, lambda doc: doc)
        assert info.value.reason == "parse"


def test_deep_nesting_with_a_float_is_a_parse_error_not_a_crash() -> None:
    raw = b"[" * 1000 + b"1.5" + b"]" * 1000
    with pytest.raises(ProtocolError) as info:
        w.decode(raw, lambda doc: w.json_safe(doc, "x"))
    assert info.value.reason in {"parse", "schema"}


def test_oversize_is_measured_in_utf8_bytes() -> None:
    text = '"' + "é" * (MAX_FRAME_BYTES // 2) + '"'  # fewer chars than the cap, more bytes
    with pytest.raises(ProtocolError) as info:
        w.decode(text, lambda doc: doc)
    assert info.value.reason == "oversize"
    assert w.decode('"' + "é" * 1000 + '"', lambda doc: doc) == "é" * 1000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1727391983733911769, "2024-09-26T23:06:23.733Z"),  # ns
        (1727391983733911, "2024-09-26T23:06:23.733Z"),  # µs
        (1727391983733, "2024-09-26T23:06:23.733Z"),  # ms
        (1727391983, "2024-09-26T23:06:23.000Z"),  # s
        (0, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_epoch_timestamps(value: int, expected: str) -> None:
    assert w.iso_from_epoch(value, "t") == expected


@pytest.mark.parametrize("value", [-1, True, "1", 10**30, 253402300800000])
def test_bad_epoch_timestamps(value: Any) -> None:
    with pytest.raises(ProtocolError):
        w.iso_from_epoch(value, "t")


def test_json_safe_limits_depth() -> None:
    doc: Any = "leaf"
    for _ in range(40):
        doc = [doc]
    with pytest.raises(ProtocolError) as info:
        w.json_safe(doc, "x")
    assert info.value.reason == "schema"
