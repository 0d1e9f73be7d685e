"""``watch``: follow ``/v1/stream`` and keep a live table, or print a resumable JSON tail.

Flow: :class:`StreamFollower` connects (token in the header), yields every frame, and when
the connection ends (the service restarted, the network dropped) reconnects with
``since=<last seq>`` so the service replays exactly what was missed; its status callback
says what is happening. :class:`WatchState` applies frames the way docs/api.md tells a
client to (snapshot replaces, balance sets, removed deletes, status sets the account's
state and so its rows' staleness) and remembers when each amount changed, so the table can
highlight it briefly. Frames are applied once: anything at or below the last ``seq`` seen
is dropped, so the output's ``seq`` strictly increases even across reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from app.client.connection import ClientError, ServiceClient, ServiceUnreachable, parse_document
from app.client.render import AMOUNTS, Key, balances_table, record_key
from app.domain import AccountState

HIGHLIGHT_SECONDS = 1.5
BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 2.0
REFRESH_SECONDS = 0.1
CHANGE_TYPES = frozenset({"balance", "removed", "status", "event", "price"})

Report = Callable[[str], None]


@dataclass
class Position:
    """The last ``seq`` delivered; read after Ctrl-C to tell the user where to resume."""

    seq: int | None = None


class StreamFollower:
    """Every frame of ``/v1/stream``, across reconnects, each change once and in order."""

    def __init__(
        self,
        client: ServiceClient,
        params: Mapping[str, str],
        position: Position,
        report: Report,
    ) -> None:
        self._client = client
        self._params = dict(params)
        self.position = position
        self._report = report

    async def frames(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        backoff = BACKOFF_INITIAL
        connected_once = False
        while True:
            params = dict(self._params)
            resuming = self.position.seq is not None
            if resuming:
                params["since"] = str(self.position.seq)
            try:
                ws = await self._client.open_stream(params)
            except ServiceUnreachable as exc:
                if not connected_once:
                    raise
                self._report(
                    f"service unreachable; retrying in {backoff:.1f}s, "
                    f"will resume after seq {self.position.seq} ({exc.message.split(';')[0]})"
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            first = True
            if connected_once:
                self._report(f"reconnected; resuming after seq {self.position.seq}")
            else:
                self._report(
                    f"connected to {self._client.stream_url()}"
                    + (f"; resuming after seq {self.position.seq}" if resuming else "")
                )
            connected_once = True
            backoff = BACKOFF_INITIAL
            try:
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    text = str(message.data)
                    doc = parse_document(text)
                    if not isinstance(doc, dict):
                        continue
                    kind = doc.get("type")
                    seq = doc.get("seq")
                    if kind == "snapshot" and isinstance(seq, int):
                        if first and resuming:
                            self._report(
                                f"could not resume after seq {self.position.seq}: "
                                f"fresh snapshot at seq {seq}"
                            )
                        self.position.seq = seq
                    elif kind in CHANGE_TYPES and isinstance(seq, int):
                        last = self.position.seq
                        if last is not None and seq <= last:
                            continue  # already delivered before a reconnect
                        if first and resuming:
                            self._report(f"resumed after seq {last}: no gap")
                        self.position.seq = seq
                    else:
                        continue  # pong / error frames are not part of the state
                    first = False
                    yield text, doc
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            finally:
                await ws.close()
            code = ws.close_code
            why = "service going away (restart?)" if code == 1001 else f"closed ({code})"
            self._report(f"stream {why}; reconnecting to resume after seq {self.position.seq}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)


@dataclass
class WatchState:
    """What a stream client holds: records, account states, and when each amount changed."""

    records: dict[Key, dict[str, Any]] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    changed: dict[tuple[Key, str], float] = field(default_factory=dict)
    seq: int | None = None

    def apply(self, doc: Mapping[str, Any], now: float) -> None:
        kind = doc.get("type")
        if kind == "snapshot":
            self.records = {record_key(r): dict(r) for r in doc.get("balances") or []}
            self.states = {
                str(a.get("account")): str(a.get("state")) for a in doc.get("accounts") or []
            }
            self.changed.clear()
        elif kind == "balance":
            record = dict(doc.get("balance") or {})
            key = record_key(record)
            before = self.records.get(key)
            for name in AMOUNTS:
                if before is None or before.get(name) != record.get(name):
                    self.changed[(key, name)] = now
            self.records[key] = record
        elif kind == "removed":
            key = (str(doc.get("account")), str(doc.get("wallet") or ""), str(doc.get("asset")))
            self.records.pop(key, None)
        elif kind == "status":
            account = doc.get("account") or {}
            self.states[str(account.get("account"))] = str(account.get("state"))
        if isinstance(doc.get("seq"), int):
            self.seq = int(doc["seq"])

    def rows(self, nonzero: bool) -> list[dict[str, Any]]:
        out = []
        for record in self.records.values():
            if nonzero and all(_is_zero(record.get(f)) for f in AMOUNTS):
                continue
            # a balance frame says stale=false; the account's state decides (docs/api.md)
            account_state = self.states.get(str(record.get("account")))
            stale = (
                account_state != AccountState.LIVE if account_state else bool(record.get("stale"))
            )
            out.append({**record, "stale": stale})
        return out

    def highlighted(self, now: float) -> Callable[[Key, str], bool]:
        def check(key: Key, name: str) -> bool:
            at = self.changed.get((key, name))
            return at is not None and now - at < HIGHLIGHT_SECONDS

        return check

    def forget_old_changes(self, now: float) -> None:
        self.changed = {k: t for k, t in self.changed.items() if now - t < HIGHLIGHT_SECONDS}


def _is_zero(value: Any) -> bool:
    try:
        return Decimal(str(value)) == 0
    except InvalidOperation:
        return False


async def watch_json(follower: StreamFollower, out: TextIO) -> int:
    """One message per line, exactly as the service sent it (a resumable tail)."""
    async for text, _doc in follower.frames():
        out.write(text.replace("\n", " ") + "\n")
        out.flush()
    return 0


async def watch_table(
    follower: StreamFollower, console: Console, *, nonzero: bool, status: list[str]
) -> int:
    """The live table: redrawn after changes, a changed amount highlighted briefly."""
    state = WatchState()
    dirty = asyncio.Event()

    def view(now: float) -> Group:
        rows = state.rows(nonzero)  # the service's order; new keys join at the end
        table = balances_table(rows, highlight=state.highlighted(now))
        stale = sorted(a for a, s in state.states.items() if s != AccountState.LIVE)
        footer = f"seq {state.seq} · {len(rows)} balances · {len(state.states)} accounts"
        if stale:
            footer += f" · not live: {', '.join(f'{a} ({state.states[a]})' for a in stale)}"
        line = Text(status[-1] if status else "", style="bold")
        return Group(line, table, Text(footer + " · Ctrl-C to stop", style="dim"))

    async def consume() -> None:
        async for _text, doc in follower.frames():
            state.apply(doc, time.monotonic())
            dirty.set()

    with Live(view(time.monotonic()), console=console, auto_refresh=False) as live:
        reader = asyncio.create_task(consume())
        shown_status = len(status)
        try:
            while not reader.done():
                with_highlight = bool(state.changed)
                try:
                    await asyncio.wait_for(dirty.wait(), REFRESH_SECONDS)
                except TimeoutError:
                    if not with_highlight and shown_status == len(status):
                        continue
                dirty.clear()
                now = time.monotonic()
                state.forget_old_changes(now)
                shown_status = len(status)
                live.update(view(now), refresh=True)
            reader.result()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientError):
                await reader
    return 0


def stderr_report(out: TextIO = sys.stderr) -> Report:
    def report(line: str) -> None:
        out.write(f"watch: {line}\n")
        out.flush()

    return report
