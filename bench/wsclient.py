"""A minimal WebSocket client on a raw asyncio protocol, for many cheap downstream clients.

A bench that measures delivery lag to 1,000 sockets cannot afford a full client library
per message: this one reads frames straight out of ``data_received`` buffers, stamps each
batch with ``time.monotonic()`` once, answers pings, and hands text payloads to a callback
(or only counts them). Server frames are never masked; client frames always are.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from typing import cast

OnText = Callable[[bytes, float], None]


class WsClient(asyncio.Protocol):
    """One downstream connection; ``on_text(payload, t_recv)`` for every text frame."""

    def __init__(self, on_text: OnText | None) -> None:
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.upgraded = False
        self.messages = 0
        self.close_code: int | None = None
        self._frag: bytearray | None = None
        self.first = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.handshake.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                return
            self.upgraded = True
            self.handshake.set_result(None)
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            hl = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int(struct.unpack_from("!H", buf, pos + 2)[0])
                hl = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int(struct.unpack_from("!Q", buf, pos + 2)[0])
                hl = 10
            if size - pos < hl + n:
                break
            payload = bytes(buf[pos + hl : pos + hl + n])
            pos += hl + n
            self._frame(b0 & 0x0F, bool(b0 & 0x80), payload, now)
        if pos:
            del buf[:pos]

    def _frame(self, opcode: int, fin: bool, payload: bytes, now: float) -> None:
        if opcode == 0x9:  # ping
            self.send(0xA, payload)
        elif opcode == 0x8:  # close
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.send(0x8, payload[:2])
            if self.transport is not None:
                self.transport.close()
        elif opcode == 0x1 or opcode == 0x0:
            if not fin:
                self._frag = (self._frag or bytearray()) + payload
                return
            if self._frag is not None:
                payload = bytes(self._frag + payload)
                self._frag = None
            self.messages += 1
            self.first.set()
            if self.on_text is not None:
                self.on_text(payload, now)

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.transport.write(head + mask + masked)

    def send_text(self, text: bytes) -> None:
        self.send(0x1, text)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send(0x8, struct.pack("!H", 1000))
            self.transport.close()


async def connect(host: str, port: int, path: str, on_text: OnText | None) -> WsClient:
    """Open ``ws://host:port/path`` and wait for the upgrade."""
    loop = asyncio.get_running_loop()
    _transport, proto = await loop.create_connection(lambda: WsClient(on_text), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert proto.transport is not None
    proto.transport.write(request.encode())
    await proto.handshake
    return proto
