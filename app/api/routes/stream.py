"""``/v1/stream`` (SPEC §9): the downstream WebSocket, from handshake to close.

Where it sits: the :class:`~app.auth.RequestGuard` has checked the token before the
handshake gets here; this module reads the handshake's filters, hands the client to the
:class:`~app.stream.hub.StreamHub` (which sends the snapshot or the resumed messages and every
change after) and reads the client's frames (``subscribe``, ``ping``) until either side
leaves. A flood of client frames ends the connection (:class:`TokenBucket`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from app.api.deps import OptionalServices
from app.api.errors import BadParam, error_response
from app.api.params import account_list, asset_list, parse_flag, parse_since
from app.services import Services
from app.settings import Settings
from app.stream.hub import StreamHub
from app.stream.subscriber import Subscriber

STREAM_PATH = "/v1/stream"
MAX_CLIENT_FRAME = 16 * 1024

router = APIRouter()


@router.websocket(STREAM_PATH)
async def stream(websocket: WebSocket, rt: OptionalServices) -> None:
    await serve_stream(websocket, rt)


def _ws_error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message}}


async def _deny(websocket: WebSocket, status: int, code: str, message: str) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(status, code, message))
    else:
        await websocket.close(1008, code)


_ListParser = Callable[[list[str], str], list[str] | None]


def _op_filter(doc: Mapping[str, Any], name: str, parse: _ListParser) -> list[str] | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadParam(f"{name}: expected a list of strings or null")
    return parse(value, name)


def handle_client_frame(hub: StreamHub, sub: Subscriber, message: Mapping[str, Any]) -> None:
    """One client frame: ``subscribe`` and ``ping``; anything else gets an error frame."""
    text = message.get("text")
    if text is None:
        hub.send_control(sub, _ws_error("unsupported", "send JSON text frames"))
        return
    if len(text) > MAX_CLIENT_FRAME:
        hub.send_control(sub, _ws_error("too_large", f"frames are capped at {MAX_CLIENT_FRAME}"))
        return
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        hub.send_control(sub, _ws_error("bad_json", "frame is not valid JSON"))
        return
    op = doc.get("op") if isinstance(doc, dict) else None
    if op == "ping":
        hub.send_control(sub, {"type": "pong"})
    elif op == "subscribe":
        assert isinstance(doc, dict)
        try:
            accounts = _op_filter(doc, "accounts", account_list)
            assets = _op_filter(doc, "assets", asset_list)
            prices = doc.get("prices")
            if prices is not None and not isinstance(prices, bool):
                raise BadParam("prices: expected true, false or null")
        except BadParam as exc:
            hub.send_control(sub, _ws_error("bad_request", exc.message))
            return
        hub.resubscribe(sub, accounts, assets, prices)
    else:
        hub.send_control(
            sub, _ws_error("unknown_op", 'expected {"op": "subscribe", ...} or {"op": "ping"}')
        )


async def serve_stream(websocket: WebSocket, rt: Services | None) -> None:
    """One downstream client from handshake to close (auth already checked by the guard)."""
    params = websocket.query_params
    try:
        accounts = account_list(params.getlist("accounts"), "accounts")
        assets = asset_list(params.getlist("assets"), "assets")
        since = parse_since(params.get("since"))
        prices = parse_flag(params.get("prices"), "prices")
    except BadParam as exc:
        await _deny(websocket, 400, "invalid_request", exc.message)
        return
    if rt is None:
        await _deny(websocket, 503, "not_started", "the service is starting")
        return
    hub = rt.hub
    await websocket.accept()
    sub = await hub.subscribe(accounts, assets, since, prices=prices)
    sub.attach(websocket)
    frames = asyncio.create_task(_client_frames(websocket, hub, sub, rt.settings))
    closed = asyncio.create_task(sub.wait_closed())
    try:
        # ends when the client leaves, or when the hub closed it (slow client, shutdown)
        await asyncio.wait((frames, closed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        frames.cancel()
        closed.cancel()
        hub.unsubscribe(sub)
        await sub.detach()


class TokenBucket:
    """``rate`` ops a second with bursts up to ``burst``: one per stream client."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst: float = burst
        self._clock = clock
        self._tokens: float = burst  # not money: a count of client ops
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


async def _client_frames(
    websocket: WebSocket, hub: StreamHub, sub: Subscriber, settings: Settings
) -> None:
    bucket = TokenBucket(settings.client_ops_rate, settings.client_ops_burst, time.monotonic)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if not bucket.take():
                # every frame costs work and, unread, a reply: a flood ends the connection
                hub.close_abusive(sub)
                await sub.wait_closed()
                return
            handle_client_frame(hub, sub, message)
    except (WebSocketDisconnect, RuntimeError):
        return
