"""One accepted simulator WebSocket and the protocol state a venue keeps for it.

Where it sits: below the venue simulator base (:mod:`app.simulators.server`) and the
price feeds (:mod:`app.simulators.market`), which both hold connections.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

CLIENT_MAX_MSG = 64 * 1024
"""Largest frame a simulator accepts from a client (control messages are tiny)."""


class Connection:
    """One accepted WebSocket and the protocol state a venue keeps for it."""

    __slots__ = (
        "feeds",
        "key",
        "lock",
        "pong",
        "ready",
        "request",
        "rooms",
        "seq",
        "stalled",
        "tasks",
        "ws",
    )

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request = request
        self.ws = ws
        self.key: str | None = None
        self.stalled = False
        self.ready = False
        self.pong = asyncio.Event()
        # Held while a burst writes, so a push cannot land in the middle of it.
        self.lock = asyncio.Lock()
        self.tasks: list[asyncio.Task[None]] = []
        self.seq = 0  # sFOX: per-connection sequence counter
        self.feeds: set[str] = set()  # sFOX: subscribed feeds
        self.rooms: set[str] = set()  # SolanaTracker: joined rooms

    @property
    def closed(self) -> bool:
        transport = self.request.transport
        return self.ws.closed or transport is None or transport.is_closing()

    def abort(self) -> None:
        """Close the TCP connection at once: no close frame, pending writes discarded."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq
