"""Reading venue JSON exactly and strictly: the decoder and field readers every venue shares.

Amounts must never pass through a binary float, yet the hot path (BitoPro one-currency
frames, whose amounts are strings) must stay cheap. So a frame is decoded with orjson
first; the reader that turns the document into events raises :class:`_NeedsExactDecode`
the moment it meets a float, and :func:`decode` then decodes the same text again with
``json.loads(parse_float=Decimal)`` and runs the reader once more. Readers are pure (they
build events and touch no session state), so running one twice is harmless.

Every reader raises :class:`~app.venues.base.ProtocolError` with one of the fixed reasons
below and a short message naming the field, never its value (a value could be anything
a venue echoed back, including a credential).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, TypeVar

import orjson

from app.accounts import SOLANA_ADDRESS_RE
from app.domain import EXACT
from app.venues.base import MAX_FRAME_BYTES, ProtocolError

T = TypeVar("T")

# The fixed set of rejection reasons (the ``upstream_errors_total{reason}`` label values).
PARSE: Final = "parse"
SCHEMA: Final = "schema"
AMOUNT: Final = "amount"
OVERSIZE: Final = "oversize"
UNKNOWN_EVENT: Final = "unknown_event"
UNKNOWN_WALLET: Final = "unknown_wallet"
AUTH: Final = "auth"
SUBSCRIBE: Final = "subscribe"
SNAPSHOT_REJECTED: Final = "snapshot_rejected"
REDIRECT: Final = "redirect"

# Amounts are bounded so that every sum or difference of two of them is exact in
# ``EXACT`` (at most 40 integer and 40 fraction digits -> at most 82 digits of result).
_MAX_ADJUSTED = 40
_MIN_EXPONENT = -40

PLAIN_DECIMAL: Final = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?")
"""A non-negative decimal string :func:`amount` takes as it is (bounded, no exponent)."""
_SCI_DECIMAL = re.compile(r"-?[0-9]{1,40}(?:\.[0-9]{1,40})?(?:[eE][+-]?[0-9]{1,3})?")
_INT_LIMIT = 10**_MAX_ADJUSTED
_ZERO = Decimal(0)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_DEPTH = 16
_MAX_LABEL = 128

# Identifiers become parts of store keys; ``|`` is the store's key separator and
# whitespace or control characters have no business in a currency code or address.
IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ISO_MS_Z: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
"""A time :func:`iso_ms` returns unchanged (already UTC milliseconds)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_last_iso: object = None


class _NeedsExactDecode(Exception):
    """A reader met a float: the frame has to be decoded again with Decimal numbers."""


def reject(reason: str, message: str) -> ProtocolError:
    return ProtocolError(reason, message)


# -- decoding ---------------------------------------------------------------------------


def check_size(raw: str | bytes) -> None:
    if len(raw) * 4 > MAX_FRAME_BYTES and _size(raw) > MAX_FRAME_BYTES:
        raise reject(OVERSIZE, f"frame over {MAX_FRAME_BYTES} bytes")


def _size(raw: str | bytes) -> int:
    """Size in bytes as sent (text frames travel as UTF-8)."""
    return len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _exact_loads(raw: str | bytes) -> Any:
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise reject(PARSE, "not valid JSON") from None


def decode(raw: str | bytes, read: Callable[[Any], T]) -> T:
    """Decode one frame or body and run ``read`` on it, exactly (see the module docstring)."""
    if len(raw) * 4 > MAX_FRAME_BYTES:  # only large frames pay for the exact check
        check_size(raw)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson refuses numbers a double cannot hold (1e400); Decimal can, and the
        # amount readers then judge them. Anything else orjson refuses is not JSON.
        if "number" not in str(exc):
            raise reject(PARSE, "not valid JSON") from None
        doc = _exact_loads(raw)
    else:
        try:
            return read(doc)
        except _NeedsExactDecode:
            doc = _exact_loads(raw)
    try:
        return read(doc)
    except _NeedsExactDecode:  # cannot happen: the exact decode yields no floats
        raise reject(PARSE, "not valid JSON") from None


# -- structure --------------------------------------------------------------------------


def obj(value: object, field: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise reject(SCHEMA, f"{field}: expected an object")
    return value


def arr(value: object, field: str) -> list[Any]:
    if type(value) is not list:
        raise reject(SCHEMA, f"{field}: expected a list")
    return value


def text(value: object, field: str, *, max_len: int = _MAX_LABEL) -> str:
    """A free-text string (a label, a status): bounded and encodable as UTF-8."""
    if type(value) is not str:
        raise reject(SCHEMA, f"{field}: expected a string")
    if len(value) > max_len:
        raise reject(SCHEMA, f"{field}: longer than {max_len} characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise reject(SCHEMA, f"{field}: not valid Unicode") from None
    return value


def opt_text(value: object, field: str, *, max_len: int = _MAX_LABEL) -> str | None:
    return None if value is None else text(value, field, max_len=max_len)


def ident(value: object, field: str) -> str:
    """A currency code, network name or address: ASCII letters, digits, ``.``, ``_``, ``-``."""
    if type(value) is not str:
        raise reject(SCHEMA, f"{field}: expected a string")
    if IDENT.fullmatch(value) is None:
        raise reject(SCHEMA, f"{field}: not a valid identifier")
    return value


def address(value: object, field: str) -> str:
    """A chain address (0x-hex, base58, bech32...): like :func:`ident`, up to 128 chars."""
    if type(value) is not str:
        raise reject(SCHEMA, f"{field}: expected a string")
    if _ADDRESS.fullmatch(value) is None:
        raise reject(SCHEMA, f"{field}: not a valid address")
    return value


def solana_address(value: object, field: str) -> str:
    if type(value) is not str:
        raise reject(SCHEMA, f"{field}: expected a string")
    if SOLANA_ADDRESS_RE.fullmatch(value) is None:
        raise reject(SCHEMA, f"{field}: not a Solana address")
    return value


def boolean(value: object, field: str) -> bool:
    if type(value) is not bool:
        raise reject(SCHEMA, f"{field}: expected true or false")
    return value


def integer(value: object, field: str, *, lo: int = 0, hi: int = _INT64_MAX) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise reject(SCHEMA, f"{field}: expected an integer in [{lo}, {hi}]")
    return value


def unique_assets(assets: Iterable[str], count: int, field: str) -> None:
    """Reject a list naming one asset twice: which of the two would be the balance?"""
    if count > 1 and len(set(assets)) != count:
        raise reject(SCHEMA, f"{field}: lists an asset twice")


# -- amounts ----------------------------------------------------------------------------


def _bounded(value: Decimal, field: str, *, signed: bool) -> Decimal:
    if not value.is_finite():
        raise reject(AMOUNT, f"{field}: not a finite number")
    if value.is_signed() and not signed:
        raise reject(AMOUNT, f"{field}: negative")
    if not value:
        return _ZERO  # 0E-999 is zero, but its exponent would break exact arithmetic
    if not _in_range(value):
        raise reject(AMOUNT, f"{field}: out of range")
    return value


def _in_range(value: Decimal) -> bool:
    exponent = value.as_tuple().exponent
    return (
        value.adjusted() < _MAX_ADJUSTED
        and isinstance(exponent, int)
        and (exponent >= _MIN_EXPONENT)
    )


def amount(value: object, field: str) -> Decimal:
    """A non-negative exact amount from a decimal string or a JSON number."""
    if type(value) is str:
        if PLAIN_DECIMAL.fullmatch(value) is not None:
            return Decimal(value)
        if _SCI_DECIMAL.fullmatch(value) is not None:
            return _bounded(Decimal(value), field, signed=False)
        raise reject(AMOUNT, f"{field}: not a non-negative decimal")
    if type(value) is int:
        if not 0 <= value < _INT_LIMIT:
            raise reject(AMOUNT, f"{field}: negative or out of range")
        return Decimal(value)
    if type(value) is Decimal:
        return _bounded(value, field, signed=False)
    if type(value) is float:
        raise _NeedsExactDecode
    raise reject(SCHEMA, f"{field}: expected a decimal string or number")


def signed_decimal(value: object, field: str) -> Decimal:
    """An exact decimal that may be negative (informational figures, never balances)."""
    if type(value) is str:
        if _SCI_DECIMAL.fullmatch(value) is None:
            raise reject(AMOUNT, f"{field}: not a decimal")
        return _bounded(Decimal(value), field, signed=True)
    if type(value) is int:
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise reject(AMOUNT, f"{field}: out of range")
        return Decimal(value)
    if type(value) is Decimal:
        return _bounded(value, field, signed=True)
    if type(value) is float:
        raise _NeedsExactDecode
    raise reject(SCHEMA, f"{field}: expected a decimal string or number")


def plain(value: Decimal) -> str:
    """A decimal as a plain string, no exponent (``1E+2`` -> ``100``)."""
    return format(value, "f")


def subtract(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.subtract(a, b)


def add(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.add(a, b)


# -- arbitrary JSON re-broadcast as event data -------------------------------------------


def json_safe(value: object, field: str, depth: int = 0) -> Any:
    """A copy of decoded JSON that serialises anywhere: decimals as strings, no floats.

    Integers outside 64 bits become strings too, since many JSON encoders refuse them.
    """
    if type(value) is str:
        return text(value, field, max_len=4096)
    if value is None or type(value) is bool:
        return value
    if type(value) is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if type(value) is Decimal:
        if not value.is_finite():
            raise reject(AMOUNT, f"{field}: not a finite number")
        if not value:
            return "0"
        return plain(value) if _in_range(value) else str(value)
    if type(value) is float:
        raise _NeedsExactDecode
    if depth >= _MAX_DEPTH:
        raise reject(SCHEMA, f"{field}: nested too deeply")
    if type(value) is dict:
        return {str(k): json_safe(v, field, depth + 1) for k, v in value.items()}
    if type(value) is list:
        return [json_safe(v, field, depth + 1) for v in value]
    raise reject(SCHEMA, f"{field}: not JSON")


# -- timestamps -------------------------------------------------------------------------


def iso_from_epoch(value: object, field: str) -> str:
    """An epoch timestamp in s, ms, µs or ns (judged by magnitude) as ISO 8601 UTC millis."""
    if type(value) is not int or value < 0:
        raise reject(SCHEMA, f"{field}: expected a non-negative integer timestamp")
    if value >= 10**18:
        millis = value // 1_000_000
    elif value >= 10**15:
        millis = value // 1_000
    elif value >= 10**12:
        millis = value
    else:
        millis = value * 1_000
    try:
        moment = _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        raise reject(SCHEMA, f"{field}: timestamp out of range") from None
    return _format_ms(moment)


def iso_ms(value: object, field: str) -> str:
    """An ISO 8601 time normalised to UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (naive means UTC)."""
    global _last_iso
    if type(value) is str and value == _last_iso:  # a burst shares one time: check it once
        return value
    if type(value) is not str:
        raise reject(SCHEMA, f"{field}: expected an ISO 8601 string")
    if ISO_MS_Z.fullmatch(value) is not None:
        _last_iso = value
        return value
    try:
        moment = datetime.fromisoformat(value) if len(value) <= 40 else None
    except ValueError:
        moment = None
    if moment is None:
        raise reject(SCHEMA, f"{field}: not an ISO 8601 time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return _format_ms(moment.astimezone(UTC))
    except (OverflowError, ValueError):
        raise reject(SCHEMA, f"{field}: time out of range") from None


def _format_ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def first_present(doc: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = doc.get(key)
        if value is not None:
            return value
    return None
