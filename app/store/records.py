"""The record and status wire shape: what the store keeps in Redis and how it reads back.

A balance is kept as its *content* (everything but the times and the stale flag, so two
writes of the same value compare equal) plus a ``[updated_at, venue_ts]`` pair; the write
script (``lua/apply.lua``) turns both into the downstream ``balance`` message. The
functions here are that script's Python twin: :func:`encode_content` writes the content,
:func:`balance_message` builds the message the script would, :func:`decode_record` and
:func:`parse_status` read a record and a status back.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from app.canonical import decimal_str
from app.domain import AssetBalance, BalanceRecord

STATUS_DOC = "doc"
"""Status hash field: the lifecycle JSON."""
STATUS_LAST_MESSAGE = "last_message_at"
"""Status hash field: when the account's newest upstream frame arrived."""

STATUS_PREFIX = b'"type":"status","account":'
"""What the note script puts before a status doc in its message."""


def event_prefix(account: str, kind: str) -> bytes:
    """What the note script puts before a venue event's data in its message."""
    return (
        b'"type":"event","account":' + orjson.dumps(account) + b',"kind":' + orjson.dumps(kind)
        + b',"data":'
    )  # fmt: skip


def _content(
    account: str, venue: str, wallet: str, asset: str, symbol: str | None,
    total: Decimal, available: Decimal, locked: Decimal, extra: Mapping[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The record's fields before its times, in the order every encoding keeps."""
    return {
        "account": account,
        "venue": venue,
        "wallet": wallet,
        "asset": asset,
        "symbol": symbol,
        "total": decimal_str(total),
        "available": decimal_str(available),
        "locked": decimal_str(locked),
        "extra": dict(extra),
    }


def encode_content(account: str, venue: str, balance: AssetBalance) -> bytes:
    """The comparable part of a record: everything but the times and the stale flag."""
    b = balance
    return orjson.dumps(
        _content(account, venue, b.wallet, b.asset, b.symbol, b.total, b.available,
                 b.locked, b.extra)
    )  # fmt: skip


def record_json(record: BalanceRecord) -> bytes:
    """A whole record in the field order the write script produces (``stale`` false,
    last: readers flip it for a stale account)."""
    r = record
    doc = _content(r.account, r.venue, r.wallet, r.asset, r.symbol, r.total, r.available,
                   r.locked, r.extra)  # fmt: skip
    doc["updated_at"] = r.updated_at
    doc["venue_ts"] = r.venue_ts
    doc["stale"] = False
    return orjson.dumps(doc)


def encode_venue_ts(venue_ts: str | None) -> bytes:
    """The venue's timestamp as the ``ts`` pair and the message carry it (JSON)."""
    return b"null" if venue_ts is None else orjson.dumps(venue_ts)


def balance_message(seq: int, content: bytes, updated_at: str, venue_ts: bytes) -> bytes:
    """The ``balance`` change message the write script builds from a record's content."""
    return (
        b'{"type":"balance","seq":%d,"balance":%b,"updated_at":"%b","venue_ts":%b,'
        b'"stale":false}}' % (seq, content[:-1], updated_at.encode(), venue_ts)
    )


def decode_record(content: bytes | str, ts: bytes | str | None, stale: bool) -> BalanceRecord:
    """A stored record: its content and its ``[updated_at, venue_ts]`` pair."""
    doc = orjson.loads(content)
    updated_at, venue_ts = orjson.loads(ts) if ts else ("", None)
    return BalanceRecord(
        account=doc["account"],
        venue=doc["venue"],
        wallet=doc["wallet"],
        asset=doc["asset"],
        symbol=doc["symbol"],
        total=Decimal(doc["total"]),
        available=Decimal(doc["available"]),
        locked=Decimal(doc["locked"]),
        updated_at=updated_at,
        venue_ts=venue_ts,
        stale=stale,
        extra=doc["extra"],
    )


def parse_status(status_hash: Mapping[Any, Any]) -> dict[str, Any]:
    """Status hash -> status JSON (lifecycle doc plus last_message_at)."""
    doc = status_hash.get(STATUS_DOC.encode(), status_hash.get(STATUS_DOC))
    status: dict[str, Any] = orjson.loads(doc) if doc else {}
    last = status_hash.get(STATUS_LAST_MESSAGE.encode(), status_hash.get(STATUS_LAST_MESSAGE))
    if last is not None:
        status[STATUS_LAST_MESSAGE] = last.decode() if isinstance(last, bytes) else last
    return status
