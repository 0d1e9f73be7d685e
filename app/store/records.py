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


def encode_content(account: str, venue: str, balance: AssetBalance) -> bytes:
    """The comparable part of a record: everything but the times and the stale flag."""
    return orjson.dumps(
        {
            "account": account,
            "venue": venue,
            "wallet": balance.wallet,
            "asset": balance.asset,
            "symbol": balance.symbol,
            "total": decimal_str(balance.total),
            "available": decimal_str(balance.available),
            "locked": decimal_str(balance.locked),
            "extra": dict(balance.extra),
        }
    )


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
