"""Batched writes straight into uvicorn's WebSocket connection: the stream's fast path.

Where it sits: a :class:`~app.stream.subscriber.Subscriber` sender asks
:func:`direct_writer` for its client's connection once; when it gets one, everything
queued goes out as one write — each message framed into the connection's buffer, the
frames leaving in one syscall — instead of one awaited ASGI ``send`` (and syscall) per
message. Anything else (another server, a test double) gets the portable path: one
``send_text`` per message.

Starlette wraps the ASGI ``send`` on its way to a route (its exception middleware), so
the route never sees uvicorn's own ``send``. :class:`KeepRawSend`, the outermost
middleware (``create_app`` adds it), puts the server's ``send`` in the WebSocket scope's
``extensions`` under :data:`RAW_SEND` before anything wraps it.

uvicorn caveat: this reads private attributes of uvicorn's
``WebSocketsSansIOProtocol`` (``uvicorn.protocols.websockets.websockets_sansio_impl``,
the ``ws="auto"`` choice when ``websockets`` is installed): ``conn`` (a
``websockets.ServerProtocol``), ``transport``, ``writable`` (its flow-control event),
``disconnected``, ``close_sent``, and for a close that must not wait for a client that
reads nothing, ``queue``, ``read_paused``, ``loop``, ``close_timeout`` and
``close_timer`` (:meth:`DirectWriter.close` does what its ``websocket.close`` does,
without first waiting for the transport to drain). Written against uvicorn 0.54 with websockets 17.
They are no public API; a uvicorn release may rename or drop them, and the fast path
would then silently fall back to the portable one. ``tests/unit/test_fastwrite.py``
fails loudly when the class or these attributes change, and ``tests/api`` checks that
the real service's stream route uses this path.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable
from typing import Any, Protocol, cast

from starlette.types import ASGIApp, Receive, Scope, Send

PROTOCOL_NAME = "WebSocketsSansIOProtocol"
"""The class name of the uvicorn protocol whose connection is written to directly."""

PROTOCOL_ATTRIBUTES = (
    "conn", "transport", "writable", "disconnected", "close_sent",
    "queue", "read_paused", "loop", "close_timeout", "close_timer",
)  # fmt: skip
"""The attributes of that protocol this module relies on."""

RAW_SEND = "balagg.raw_send"
"""Key in a WebSocket scope's ``extensions``: the server's own ASGI ``send``."""

_OPEN = 1  # websockets.protocol.State.OPEN, an IntEnum (websockets is uvicorn's extra)


def text_frame(payload: bytes) -> bytes:
    """A server's unfragmented text frame of ``payload`` (RFC 6455 §5.2: FIN, opcode 1,
    no mask), as ``websockets`` writes it without extensions."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class _Protocol(Protocol):
    """The parts of uvicorn's sans-I/O WebSocket protocol a batched send needs."""

    conn: Any
    transport: Any
    writable: asyncio.Event
    disconnected: bool
    close_sent: bool
    queue: asyncio.Queue[Any]
    read_paused: bool
    loop: asyncio.AbstractEventLoop
    close_timeout: float
    close_timer: asyncio.TimerHandle | None


class KeepRawSend:
    """Pure ASGI middleware: keeps the server's ``send`` reachable for WebSocket routes.

    The scope is copied (``extensions`` too), never changed in place.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            extensions = dict(scope.get("extensions") or {})
            extensions[RAW_SEND] = send
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


class DirectWriter:
    """uvicorn's connection for one client, written to in batches."""

    __slots__ = ("_proto",)

    def __init__(self, proto: _Protocol) -> None:
        self._proto = proto

    @property
    def shares_frames(self) -> bool:
        """No extension was negotiated: :func:`text_frame` bytes are this connection's."""
        return not self._proto.conn.extensions

    def writable(self) -> bool:
        """The transport takes more now and the connection is open: a write needs no wait."""
        proto = self._proto
        return (
            proto.writable.is_set()
            and not proto.disconnected
            and not proto.close_sent
            and proto.conn.state == _OPEN
        )

    async def ready(self) -> None:
        """Wait until the transport takes more (its flow control); raise
        ``ConnectionError`` once the client is gone or the connection is closing."""
        proto = self._proto
        await proto.writable.wait()
        if proto.disconnected or proto.close_sent:
            raise ConnectionError("stream client went away")

    def write(self, frames: Iterable[bytes]) -> int:
        """Frame each text message and hand them all to the transport in one write."""
        conn = self._proto.conn
        count = 0
        for frame in frames:
            conn.send_text(frame)
            count += 1
        if count:
            self._proto.transport.write(b"".join(conn.data_to_send()))
        return count

    def write_frames(self, frames: bytes) -> None:
        """Hand ready frames (see :attr:`shares_frames`) to the transport, behind anything
        the connection still holds."""
        proto = self._proto
        held = proto.conn.data_to_send()
        proto.transport.write(b"".join((*held, frames)) if held else frames)

    def close(self, code: int) -> bool:
        """Queue the close frame behind what is already buffered, without waiting for the
        transport to drain (uvicorn's ``send`` waits, forever for a client that reads
        nothing): such a client, reading again, gets every frame and then ``code``.
        False when the connection is already closing."""
        proto = self._proto
        if proto.disconnected or proto.close_sent or proto.transport.is_closing():
            return False
        proto.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": ""})
        proto.conn.send_close(code, "")
        proto.transport.write(b"".join(proto.conn.data_to_send()))
        proto.close_sent = True
        if proto.read_paused:
            proto.read_paused = False
            proto.transport.resume_reading()
        proto.close_timer = proto.loop.call_later(proto.close_timeout, proto.transport.close)
        return True


def _server_send(socket: object) -> object:
    """The server's own ``send`` behind a Starlette ``WebSocket``: the one
    :class:`KeepRawSend` kept, else the one the WebSocket was given."""
    scope = getattr(socket, "scope", None)
    if isinstance(scope, dict):
        kept = (scope.get("extensions") or {}).get(RAW_SEND)
        if kept is not None:
            return kept
    return getattr(socket, "_send", None)


def direct_writer(socket: object) -> DirectWriter | None:
    """A :class:`DirectWriter` for ``socket`` if its server is uvicorn's sans-I/O
    protocol (see the module docstring), else None: the portable path."""
    proto = getattr(_server_send(socket), "__self__", None)
    if type(proto).__name__ != PROTOCOL_NAME:
        return None
    if not all(hasattr(proto, name) for name in PROTOCOL_ATTRIBUTES):
        return None
    return DirectWriter(cast(_Protocol, proto))
