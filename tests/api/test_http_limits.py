"""Refusals below the framework: header caps and malformed requests, over raw sockets.

uvicorn parses HTTP with httptools, which has no header limit of its own; the service's
protocol caps the request head before anything (auth included) runs, and answers its
refusals in the API's JSON error shape.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from app.httpproto import MAX_HEAD_BYTES, MAX_HEADERS
from tests.api.conftest import Service, ServiceFactory, account

TOKEN = "limits-token-0123456789"


async def _open(svc: Service) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = svc.base.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port), limit=1 << 20)


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 10)
    return status, headers, body


def _assert_json_error(headers: dict[str, str], body: bytes, code: str) -> None:
    assert headers["content-type"].startswith("application/json"), headers
    doc = orjson.loads(body)
    assert doc["error"]["code"] == code, doc
    assert doc["error"]["message"]


async def test_a_large_header_is_refused_with_431(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        reader, writer = await _open(svc)
        big = b"a" * (1 << 20)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        status, headers, body = await _response(reader)
        assert status == 431
        _assert_json_error(headers, body, "headers_too_large")
        writer.close()


async def test_too_many_headers_are_refused(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        reader, writer = await _open(svc)
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        await writer.drain()
        status, headers, body = await _response(reader)
        assert status == 431
        _assert_json_error(headers, body, "headers_too_large")
        writer.close()


async def test_an_unfinished_huge_header_is_refused_early(service_factory: ServiceFactory) -> None:
    """Before auth, and after at most a bounded prefix: the server never buffers 16 MiB."""
    async with service_factory([account("ex-a")], token=TOKEN) as svc:
        reader, writer = await _open(svc)
        sent = 0
        total = 16 << 20
        chunk = b"b" * (64 << 10)

        async def send() -> None:
            nonlocal sent
            writer.write(b"GET /v1/balances HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent < total:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)

        sender = asyncio.create_task(send())
        try:
            status, headers, body = await _response(reader)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
        assert status == 431  # not 401: the head was refused before any auth ran
        _assert_json_error(headers, body, "headers_too_large")
        assert sent < total // 2, f"the server read {sent} bytes of an unfinished header"
        assert sent <= 64 * MAX_HEAD_BYTES
        writer.close()


async def test_normal_requests_still_pass(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        reader, writer = await _open(svc)
        headers_out = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(40))
        for _ in range(3):  # keep-alive: the cap applies per request head
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers_out + b"\r\n")
            await writer.drain()
            status, _headers, body = await _response(reader)
            assert status == 200 and orjson.loads(body) == {"status": "ok"}
        writer.close()


async def test_a_malformed_request_line_gets_the_json_error(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory([account("ex-a")]) as svc:
        for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n"):
            reader, writer = await _open(svc)
            writer.write(raw)
            await writer.drain()
            status, headers, body = await _response(reader)
            assert status == 400, raw
            _assert_json_error(headers, body, "bad_request")
            writer.close()


async def test_a_websocket_upgrade_on_a_plain_route_gets_the_json_error(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory([account("ex-a")]) as svc:
        for path in (b"/v1/balances", b"/no/such/route"):
            reader, writer = await _open(svc)
            writer.write(
                b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            await writer.drain()
            status, headers, body = await _response(reader)
            assert status == 404, path
            _assert_json_error(headers, body, "not_found")
            writer.close()
