"""A minimal hand-written client side of each protocol, for testing the simulators.

Deliberately independent of both the simulators' helpers and the service's venue code:
the BitoPro signature is computed here from the documented recipe.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

import aiohttp

from tests.samples import VECTORS

BITOPRO_KEY = "test-bitopro-key"
BITOPRO_SECRET = "test-bitopro-secret"
BITOPRO_EMAIL = "tester@example.invalid"
SFOX_KEY = "test-sfox-key"
DELTADEFI_KEY = "test-deltadefi-key"
SOLANA_KEY = "test-datastream-key"
DATA_KEY = "test-data-key"
WALLET_A = "C8ufaKLUnTD5JmCUui9JmmTwaabE1yqfQvSz48x5KN2s"
WALLET_B = "7t6mAsPN897kgxp8yHQizmQ9vDYasvtrSF53jMr4M2nV"


def vector(path: str) -> Any:
    return json.loads((VECTORS / path).read_text(), parse_float=Decimal)


def loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal)


_last_nonce = 0


def fresh_nonce() -> int:
    """Current Unix ms, strictly increasing within the test run."""
    global _last_nonce
    _last_nonce = max(_last_nonce + 1, time.time_ns() // 1_000_000)
    return _last_nonce


def bitopro_headers(
    key: str = BITOPRO_KEY,
    secret: str = BITOPRO_SECRET,
    email: str = BITOPRO_EMAIL,
    nonce: int | None = None,
) -> dict[str, str]:
    value = {"identity": email, "nonce": fresh_nonce() if nonce is None else nonce}
    body = json.dumps(value, separators=(",", ":"))
    payload = base64.b64encode(body.encode()).decode()
    signature = hmac.new(secret.encode(), payload.encode(), hashlib.sha384).hexdigest()
    return {
        "X-BITOPRO-APIKEY": key,
        "X-BITOPRO-PAYLOAD": payload,
        "X-BITOPRO-SIGNATURE": signature,
    }


async def recv_text(ws: aiohttp.ClientWebSocketResponse, timeout: float = 2.0) -> str:
    """The next text frame within ``timeout`` seconds, skipping pings and pongs."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"expected a text frame, got {msg.type.name}")
            return str(msg.data)


async def recv_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 2.0) -> Any:
    return loads(await recv_text(ws, timeout))


async def expect_silence(ws: aiohttp.ClientWebSocketResponse, seconds: float = 0.2) -> None:
    """Fail if a text frame arrives within ``seconds``."""
    try:
        text = await recv_text(ws, seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame: {text[:200]}")


async def expect_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> None:
    """Wait until the server ends the connection (skipping anything still in flight)."""
    ended = (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.ERROR,
    )
    try:
        async with asyncio.timeout(timeout):
            while (await ws.receive()).type not in ended:
                pass
    except TimeoutError:
        raise AssertionError("connection still open") from None
