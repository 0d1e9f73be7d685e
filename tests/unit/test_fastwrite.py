"""The batched write's assumptions about uvicorn, checked against the installed uvicorn.

``app/stream/fastwrite.py`` writes into private attributes of uvicorn's sans-I/O
WebSocket protocol. If a uvicorn release renames the class or those attributes, the
fast path would quietly turn off; these tests fail instead.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol
from uvicorn.server import ServerState
from websockets.protocol import State

from app.stream import fastwrite


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    return None


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def _protocol() -> Any:
    assert AutoWebSocketsProtocol is not None, "uvicorn found no WebSocket implementation"
    config = uvicorn.Config(_noop_app, ws="auto", log_config=None)
    config.load()
    return AutoWebSocketsProtocol(config=config, server_state=ServerState(), app_state={})


def test_uvicorns_default_websocket_protocol_is_the_one_written_to() -> None:
    assert AutoWebSocketsProtocol is not None
    assert AutoWebSocketsProtocol.__name__ == fastwrite.PROTOCOL_NAME, (
        "uvicorn's ws='auto' protocol changed: review app/stream/fastwrite.py"
    )


async def test_the_protocol_has_every_attribute_the_fast_path_uses() -> None:
    proto = _protocol()
    missing = [name for name in fastwrite.PROTOCOL_ATTRIBUTES if not hasattr(proto, name)]
    assert not missing, f"uvicorn's protocol lost {missing}: review app/stream/fastwrite.py"
    assert isinstance(proto.writable, asyncio.Event)
    assert callable(proto.conn.send_text) and callable(proto.conn.data_to_send)
    assert proto.disconnected is False and proto.close_sent is False


async def test_a_batch_leaves_in_one_transport_write_as_text_frames() -> None:
    proto = _protocol()
    proto.transport = _Transport()
    proto.conn.state = State.OPEN  # as after the handshake

    socket = SimpleNamespace(
        scope={"type": "websocket", "extensions": {fastwrite.RAW_SEND: proto.send}}
    )
    writer = fastwrite.direct_writer(socket)
    assert writer is not None
    await writer.ready()
    assert writer.write([b'{"a":1}', b'{"b":22}']) == 2
    assert proto.transport.written == [b'\x81\x07{"a":1}\x81\x08{"b":22}']  # FIN + text


async def test_a_closed_connection_raises_instead_of_writing() -> None:
    proto = _protocol()

    socket = SimpleNamespace(_send=proto.send)  # a WebSocket given uvicorn's send itself
    writer = fastwrite.direct_writer(socket)
    assert writer is not None
    proto.close_sent = True
    with pytest.raises(ConnectionError):
        await writer.ready()


def test_anything_else_gets_the_portable_path() -> None:
    async def wrapped_send(message: Any) -> None:
        return None

    wrapped = SimpleNamespace(scope={"type": "websocket", "extensions": {}}, _send=wrapped_send)
    assert fastwrite.direct_writer(wrapped) is None
    assert fastwrite.direct_writer(object()) is None


async def test_keep_raw_send_puts_the_servers_send_in_websocket_scopes_only() -> None:
    seen: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def receive() -> Any:
        return {}

    async def send(message: Any) -> None:
        return None

    middleware = fastwrite.KeepRawSend(inner)
    ws_scope = {"type": "websocket", "extensions": {"websocket.http.response": {}}}
    await middleware(ws_scope, receive, send)
    await middleware({"type": "http"}, receive, send)
    assert seen[0]["extensions"][fastwrite.RAW_SEND] is send
    assert "websocket.http.response" in seen[0]["extensions"]
    assert fastwrite.RAW_SEND not in ws_scope["extensions"]  # the caller's scope is untouched
    assert "extensions" not in seen[1]
