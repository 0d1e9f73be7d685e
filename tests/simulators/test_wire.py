"""Exact amounts and frame bytes: what the simulators put on the wire."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.simulators.types import SimulatorError
from app.simulators.wire import (
    FrameTemplate,
    counting_amounts,
    decimal_of,
    dumps,
    iso_ms,
    to_decimal,
    ws_text_frame,
)


def test_decimals_become_exact_bare_numbers() -> None:
    body = {"free": Decimal("1153.006812"), "big": Decimal("999999999999.99999999"), "s": "1.5"}
    assert dumps(body) == b'{"free":1153.006812,"big":999999999999.99999999,"s":"1.5"}'
    assert dumps([Decimal("1E+3"), Decimal("-0"), Decimal("0.00")]) == b"[1000,0,0.00]"


def test_amounts_are_never_floats() -> None:
    assert to_decimal("0.1", "x") == Decimal("0.1")
    assert to_decimal(7, "x") == Decimal(7)
    for bad in (0.1, True, "NaN", "Infinity", "abc", None, "-1"):
        with pytest.raises(SimulatorError):
            to_decimal(bad, "x")
    assert to_decimal("-1", "x", negative_ok=True) == Decimal(-1)


def test_counting_amounts() -> None:
    assert counting_amounts(Decimal("1.5"), 3, 8, quote=True) == [
        b'"1.50000001"',
        b'"1.50000002"',
        b'"1.50000003"',
    ]
    assert counting_amounts(Decimal("0"), 2, 0) == [b"1", b"2"]
    assert decimal_of(counting_amounts(Decimal("9.999999"), 1, 6)[0]) == Decimal("10.000000")


def test_frame_template() -> None:
    template = FrameTemplate({"a": "<x>", "p": "100%", "b": ["<y>"]}, ("x", "y"))
    assert template.render(b'"s"', b"1.5") == b'{"a":"s","p":"100%","b":[1.5]}'
    with pytest.raises(ValueError):
        FrameTemplate({"a": "<x>", "b": "<y>"}, ("y", "x"))
    with pytest.raises(ValueError):
        FrameTemplate({"a": 1}, ("x",))


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_ws_text_frame_header(size: int) -> None:
    frame = ws_text_frame(b"x" * size)
    assert frame[0] == 0x81  # FIN + text, unmasked
    if size < 126:
        assert frame[1] == size and len(frame) == size + 2
    elif size < 65536:
        assert frame[1] == 126 and int.from_bytes(frame[2:4], "big") == size
    else:
        assert frame[1] == 127 and int.from_bytes(frame[2:10], "big") == size


def test_iso_ms() -> None:
    assert iso_ms(1639553303365) == "2021-12-15T07:28:23.365Z"
