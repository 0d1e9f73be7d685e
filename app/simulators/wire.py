"""Bytes on the wire for the simulators: exact JSON numbers, amounts, time stamps, frames.

Venues disagree on how an amount travels: BitoPro and sFOX streams send decimal strings,
DeltaDeFi and SolanaTracker send bare JSON numbers (``1153.006812``). :func:`dumps` writes a
``Decimal`` as a bare number using its own decimal text, never through a binary float, so
``999999999999.99999999`` arrives exactly. A ``str`` stays a JSON string.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from app.simulators.types import SimulatorError


def number_text(value: Decimal) -> str:
    """Plain decimal text (no exponent) that is also a valid JSON number."""
    text = format(value, "f")
    return "0" if text in ("-0", "+0") else text


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(number_text(value).encode())
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Compact JSON; ``Decimal`` values become bare JSON numbers, exactly."""
    return orjson.dumps(value, default=_default)


def loads_exact(body: bytes | str) -> Any:
    """Parse JSON with every fractional number as ``Decimal`` (control API bodies)."""
    return json.loads(body, parse_float=Decimal)


def to_decimal(value: object, what: str, *, negative_ok: bool = False) -> Decimal:
    """An exact, finite amount from a ``Decimal``, decimal string or integer (never a float)."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int) and not isinstance(value, bool):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise SimulatorError(f"{what}: {value[:40]!r} is not a decimal number") from None
    else:
        raise SimulatorError(f"{what}: expected a decimal string or number")
    if not result.is_finite():
        raise SimulatorError(f"{what}: must be finite")
    if result < 0 and not negative_ok:
        raise SimulatorError(f"{what}: must not be negative")
    return result


def counting_amounts(
    start: Decimal, count: int, places: int, *, quote: bool = False
) -> list[bytes]:
    """JSON texts of ``start + k * 10**-places`` for k = 1..count (burst values), exactly.

    ``quote`` gives JSON strings (``b'"1.50000001"'``), else bare numbers.
    """
    scale = 10**places
    base = int((start * scale).to_integral_value())
    if places == 0:
        fmt = b'"%d"' if quote else b"%d"
        return [fmt % (base + k) for k in range(1, count + 1)]
    fmt = b"%d.%0" + str(places).encode() + b"d"
    if quote:
        fmt = b'"' + fmt + b'"'
    return [fmt % divmod(base + k, scale) for k in range(1, count + 1)]


def decimal_of(text: bytes) -> Decimal:
    """The ``Decimal`` of a JSON number or numeric string made by :func:`counting_amounts`."""
    return Decimal(text.strip(b'"').decode())


class FrameTemplate:
    """A serialised frame with holes, so a burst of similar frames costs one format each.

    ``sample`` is the frame with the string ``"<slot>"`` (angle brackets included) where
    a value goes; ``slots`` names them in the order they appear in the serialised JSON.
    :meth:`render` takes the values in that order as raw JSON text (strings quoted).
    """

    def __init__(self, sample: Any, slots: tuple[str, ...]) -> None:
        raw = dumps(sample).replace(b"%", b"%%")
        position = -1
        for slot in slots:
            marker = b'"<' + slot.encode() + b'>"'
            found = raw.find(marker)
            if found < position or raw.count(marker) != 1:
                raise ValueError(f"slot {slot!r} missing, repeated or out of order")
            position = found
            raw = raw.replace(marker, b"%s")
        self.template = raw

    def render(self, *values: bytes) -> bytes:
        return self.template % values


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    """``2021-12-15T07:28:23.365Z`` for a Unix time in milliseconds."""
    stamp = dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ms % 1000:03d}Z"


def ws_text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (server to client), header included."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + size.to_bytes(8, "big")
    return header + payload


def chunk_frames(payloads: list[bytes], chunk_bytes: int = 256 * 1024) -> list[bytes]:
    """Frame every payload and join them into write-sized chunks for a burst."""
    chunks: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for payload in payloads:
        frame = ws_text_frame(payload)
        pending.append(frame)
        size += len(frame)
        if size >= chunk_bytes:
            chunks.append(b"".join(pending))
            pending.clear()
            size = 0
    if pending:
        chunks.append(b"".join(pending))
    return chunks
