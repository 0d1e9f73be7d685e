"""Clients that push instead of read: bounded memory, and they are closed.

A real ``/v1/stream`` client over a raw socket floods ``{"op": "ping"}`` frames and never
reads a byte; the service must close it (1008, rate limited) while its queue stays small.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections.abc import Callable

from tests.api.conftest import Service, ServiceFactory, account


def _frame(payload: bytes) -> bytes:
    """A masked client text frame."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


async def _raw_stream_client(svc: Service) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = svc.base.removeprefix("http://").split(":")
    # A small receive window, so unread replies back up in the server, not in the kernel.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds passed."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


def _disconnects(svc: Service, reason: str) -> float:
    value = svc.services.metrics.registry.get_sample_value(
        "balagg_downstream_disconnects_total", {"reason": reason}
    )
    return value or 0.0


async def test_a_ping_flood_that_never_reads_is_closed(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")], client_ops_rate=5, client_ops_burst=20) as svc:
        _reader, writer = await _raw_stream_client(svc)
        deadline = asyncio.get_running_loop().time() + 20
        while not svc.hub.subscribers:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        (sub,) = svc.hub.subscribers
        ping = _frame(b'{"op":"ping"}')
        sent = 0
        with contextlib.suppress(ConnectionError):
            while svc.hub.subscribers and sent < 200_000:
                writer.write(ping * 100)
                await writer.drain()
                sent += 100
                if asyncio.get_running_loop().time() > deadline:
                    break
        await _until(lambda: not svc.hub.subscribers, 20)
        assert not svc.hub.subscribers, f"still connected after {sent} pings"
        assert sub.close_code == 1008
        assert _disconnects(svc, "rate_limited") == 1
        # what it could make the server hold stayed small: the burst, not the flood
        assert sub.peak_pending <= 20 + 2, sub.peak_pending
        writer.close()


async def test_pending_control_replies_are_bounded(service_factory: ServiceFactory) -> None:
    """Even within the op rate, a client that reads nothing cannot pile up replies."""
    async with service_factory(
        [account("ex-a")], client_ops_rate=1e9, client_ops_burst=1_000_000
    ) as svc:
        _reader, writer = await _raw_stream_client(svc)
        deadline = asyncio.get_running_loop().time() + 30
        while not svc.hub.subscribers:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        (sub,) = svc.hub.subscribers
        ping = _frame(b'{"op":"ping"}')
        with contextlib.suppress(ConnectionError):
            while svc.hub.subscribers and asyncio.get_running_loop().time() < deadline:
                writer.write(ping * 1000)
                await writer.drain()
        await _until(lambda: not svc.hub.subscribers, 20)
        assert not svc.hub.subscribers
        assert sub.close_code == 1013
        assert _disconnects(svc, "slow") == 1
        assert sub.peak_pending <= svc.services.settings.client_buffer + 1
        writer.close()
