"""The stream's message shapes: the frames every ``/v1/stream`` client is sent.

Where it sits: the hub turns each change read from ``P:changes`` into one
:class:`Message` (serialized once, by the Redis write script, and shared by every
client, and framed once for every client whose connection shares frames); the mirror
builds snapshot frames; the subscriber queues and sends them. The
shapes are SPEC §9's ``balance``, ``removed``, ``status``, ``price``, ``snapshot``,
``pong`` and ``error`` messages, plus the close codes a client may be closed with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from app.prices.model import Price
from app.store import Change, decimal_str, iso_time
from app.stream.fastwrite import text_frame

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013

Key = tuple[str, str, str]
"""Conflation key: (account, wallet, asset) for balances, (account, "", "") for status,
(:data:`PRICE_KEY`, source, pair) for prices."""
PRICE_KEY = "\x00price"  # never an account id


@dataclass(slots=True)
class Message:
    """One frame for downstream clients, shared by all of them (serialized once)."""

    seq: int  # 0 for per-client control frames (snapshot, pong, error)
    account: str
    asset: str
    key: Key | None  # None: never conflated (events, control frames)
    text: str  # "" for a change about an account this instance does not serve
    received: float = 0.0  # perf_counter when the hub read it; 0 for control frames
    data: bytes | None = None  # ``text`` encoded, once, for every client's direct write
    control: bool = False  # a reply to one client (pong, error): counted against its bound
    frame: bytes | None = None  # the text frame of ``data``, once, for every shared write

    def encoded(self) -> bytes:
        data = self.data
        if data is None:
            data = self.data = self.text.encode()
        return data

    def framed(self) -> bytes:
        frame = self.frame
        if frame is None:
            frame = self.frame = text_frame(self.encoded())
        return frame


def parse_change(change: Change, received: float) -> tuple[Message, dict[str, Any]]:
    """The shared frame of a change, plus its decoded form for the mirror."""
    doc: dict[str, Any] = orjson.loads(change.message)
    kind = doc.get("type")
    key: Key | None = None
    if kind == "balance":
        record = doc["balance"]
        key = (change.account, str(record["wallet"]), str(record["asset"]))
    elif kind == "removed":
        key = (change.account, str(doc["wallet"]), str(doc["asset"]))
    elif kind == "status":
        key = (change.account, "", "")
    text = change.message.decode()
    return Message(change.seq, change.account, change.asset, key, text, received), doc


def unreadable_change(change: Change) -> Message:
    """The ring's placeholder for a change that could not be read: never sent."""
    return Message(change.seq, change.account, change.asset, None, "")


def price_message(price: Price, stale: bool = False) -> Message:
    """``{"type": "price", ...}``: one market price, conflated per (source, pair)."""
    doc = {
        "type": "price",
        "source": price.source.value,
        "pair": price.pair,
        "base": price.base,
        "quote": price.quote,
        "price": decimal_str(price.price),
        "path": price.label,
        "received_at": iso_time(price.received),
        "venue_ts": price.venue_ts,
        "stale": stale,
    }
    return Message(
        0, "", "", (PRICE_KEY, price.source.value, price.pair), orjson.dumps(doc).decode()
    )


def snapshot_message(seq: int, balances: bytes, accounts: list[dict[str, Any]]) -> Message:
    """``{"type": "snapshot", "seq", "balances", "accounts"}``: ``balances`` is the
    ready JSON array of records, ``accounts`` the account views."""
    body = b'{"type":"snapshot","seq":%d,"balances":%b,"accounts":%b}' % (
        seq,
        balances,
        orjson.dumps(accounts),
    )
    return Message(0, "", "", None, body.decode())


def control_message(doc: Mapping[str, Any]) -> Message:
    """A reply to one client (``pong``, ``error``): never conflated, bounded per client."""
    return Message(0, "", "", None, orjson.dumps(doc).decode(), control=True)


def normalize_assets(assets: Iterable[str] | None) -> frozenset[str] | None:
    """Asset filters match the code as given and upper-cased (``btc`` finds ``BTC``)."""
    if assets is None:
        return None
    out: set[str] = set()
    for asset in assets:
        out.add(asset)
        out.add(asset.upper())
    return frozenset(out)
