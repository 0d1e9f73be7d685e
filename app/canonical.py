"""Canonical text of exact amounts and UTC instants, as stored and served.

Every layer that writes an amount or a time into Redis, a downstream message, the
history database or an API document spells it with these, so the same value always has
the same text (the store compares records by their text).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

from app.domain import EXACT


def decimal_str(value: Decimal) -> str:
    """Canonical text of an exact amount: no exponent, no trailing zeros (``1.50`` -> ``1.5``)."""
    if value == 0:
        return "0"
    # in EXACT: the default context's 28 digits would round a long amount here
    return format(value.normalize(EXACT), "f")


def utc_now_iso() -> str:
    """The current time as :func:`iso_time` spells it."""
    return iso_time(time.time())


def iso_time(epoch: float) -> str:
    """``2026-11-21T10:00:00.123Z`` for an epoch time in seconds."""
    dt = datetime.fromtimestamp(epoch, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def iso_time_us(epoch_us: int) -> str:
    """``2026-11-21T10:00:00.123Z`` for an epoch time in µs (truncated to the ms, exactly)."""
    seconds, micros = divmod(epoch_us, 1_000_000)
    dt = datetime.fromtimestamp(seconds, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{micros // 1000:03d}Z"
