"""A reference ``/v1/stream`` client: applies frames the way the protocol documents."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

RecordKey = tuple[str, str, str]


def key_of(record: dict[str, Any]) -> RecordKey:
    return (record["account"], record["wallet"], record["asset"])


class StreamState:
    """Client-side state rebuilt from snapshot + balance/removed/status messages.

    ``stale`` is derived exactly as documented: true while the account's state is not
    ``live`` (balance messages themselves always say ``false``).
    """

    def __init__(self) -> None:
        self.records: dict[RecordKey, dict[str, Any]] = {}
        self.states: dict[str, str] = {}
        self.seq = 0
        self.snapshots = 0
        self.seqs: list[int] = []
        self.events: list[dict[str, Any]] = []
        self.other: list[dict[str, Any]] = []

    def apply(self, doc: dict[str, Any]) -> None:
        kind = doc["type"]
        if kind == "snapshot":
            self.snapshots += 1
            self.records = {key_of(r): r for r in doc["balances"]}
            self.states = {s["account"]: s["state"] for s in doc["accounts"]}
            self.seq = doc["seq"]
            return
        if kind in ("pong", "error"):
            self.other.append(doc)
            return
        seq = doc["seq"]
        assert seq > self.seq, f"seq went from {self.seq} to {seq}"
        self.seq = seq
        self.seqs.append(seq)
        if kind == "balance":
            record = doc["balance"]
            self.records[key_of(record)] = record
        elif kind == "removed":
            self.records.pop((doc["account"], doc["wallet"], doc["asset"]), None)
        elif kind == "status":
            self.states[doc["account"]["account"]] = doc["account"]["state"]
        elif kind == "event":
            self.events.append(doc)
        else:
            raise AssertionError(f"unknown message type {kind!r}")

    def view(self) -> dict[RecordKey, dict[str, Any]]:
        out = {}
        for key, record in self.records.items():
            stale = self.states.get(key[0], "connecting") != "live"
            out[key] = {**record, "stale": stale}
        return out


async def read_one(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    if msg.type != aiohttp.WSMsgType.TEXT:
        raise ConnectionError(f"stream ended: {msg.type!r} {msg.data!r} {msg.extra!r}")
    doc: dict[str, Any] = orjson.loads(msg.data)
    return doc


async def sync(
    ws: aiohttp.ClientWebSocketResponse, state: StreamState, timeout: float = 30.0
) -> None:
    """Apply everything up to a pong: the server sends it after all it had queued."""
    await ws.send_str('{"op":"ping"}')
    async with asyncio.timeout(timeout):
        while True:
            doc = await read_one(ws, timeout)
            if doc["type"] == "pong":
                return
            state.apply(doc)


def by_key(records: list[dict[str, Any]]) -> dict[RecordKey, dict[str, Any]]:
    return {key_of(r): r for r in records}
