"""Time conversions for history: ISO 8601 text <-> integer epoch microseconds (UTC)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_STEP_RE = re.compile(r"^([1-9][0-9]{0,6})([smhdw])$")
_STEP_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class BadTime(ValueError):
    """A time or step parameter that cannot be read; the message says why."""


def parse_iso_us(text: str) -> int:
    """``2026-11-21T10:00:00.123Z`` (or any offset) -> epoch µs. A naive time is UTC."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise BadTime(f"{text[:40]!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso_us(time_us: int) -> str:
    """Epoch µs -> ``2026-11-21T10:00:00.123456Z`` (UTC, microseconds kept)."""
    seconds, micros = divmod(time_us, 1_000_000)
    dt = datetime.fromtimestamp(seconds, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{micros:06d}Z"


def parse_step_us(text: str) -> int:
    """``90s``, ``5m``, ``1h``, ``1d``, ``1w`` -> µs."""
    match = _STEP_RE.match(text.strip())
    if match is None:
        raise BadTime(f"step {text[:20]!r}: use a number and one of s, m, h, d, w (e.g. 1h)")
    return int(match.group(1)) * _STEP_UNIT_S[match.group(2)] * 1_000_000
