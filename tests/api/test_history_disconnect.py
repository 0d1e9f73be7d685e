"""A history read whose client hangs up stops at once (app/disconnects.py).

Without it a costly history query runs to its end for nobody, and during a shutdown the
server's graceful wait and the history engine's disposal wait for it: a dashboard closed
while its charts were loading held a service's shutdown past 30 s.

The real service on a real socket; the slow read is a stand-in route under the history
prefix that waits until it is cancelled, so the test does not depend on how long a real
query takes. Raw sockets play the client that goes away.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from starlette.background import BackgroundTask
from starlette.routing import BaseRoute
from starlette.types import Message, Receive, Scope, Send

from app.disconnects import CancelOnDisconnect
from app.history.api import HISTORY_PREFIX
from app.service import reads_history
from tests.api.conftest import ServiceFactory, account

GIVE_UP = 20.0  # a guard against a hang; the cancel itself comes at once


def _slow_route(app: FastAPI, path: str, started: asyncio.Event, ended: asyncio.Event) -> None:
    """``path`` answers only when cancelled (it records both), before any other route."""

    @app.get(path)
    async def slow() -> PlainTextResponse:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()
        return PlainTextResponse("never")

    routes: list[BaseRoute] = app.router.routes
    routes.insert(0, routes.pop())


async def _request_and_hang_up(base: str, path: str, started: asyncio.Event) -> None:
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.wait_for(started.wait(), GIVE_UP)
    writer.close()
    await writer.wait_closed()
    del reader


async def test_a_history_read_stops_when_its_client_hangs_up(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory([account("ex-a")]) as svc:
        started, ended = asyncio.Event(), asyncio.Event()
        _slow_route(svc.app, HISTORY_PREFIX + "/slow-stand-in", started, ended)
        await _request_and_hang_up(svc.base, HISTORY_PREFIX + "/slow-stand-in", started)
        await asyncio.wait_for(ended.wait(), GIVE_UP)


async def test_work_after_a_complete_answer_is_not_cancelled(
    service_factory: ServiceFactory,
) -> None:
    """uvicorn reports a disconnect once the response is complete: that is no hang-up."""
    async with service_factory([account("ex-a")]) as svc:
        finished = asyncio.Event()

        async def after_the_answer() -> None:
            await asyncio.sleep(0.2)  # the disconnect after a full response comes meanwhile
            finished.set()

        @svc.app.get(HISTORY_PREFIX + "/answered-stand-in")
        async def answered() -> PlainTextResponse:
            return PlainTextResponse("done", background=BackgroundTask(after_the_answer))

        routes: list[BaseRoute] = svc.app.router.routes
        routes.insert(0, routes.pop())
        async with svc.http.get(svc.base + HISTORY_PREFIX + "/answered-stand-in") as response:
            assert response.status == 200 and await response.text() == "done"
        await asyncio.wait_for(finished.wait(), GIVE_UP)


async def test_other_methods_pass_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(str(scope["method"]))

    wrapped = CancelOnDisconnect(app, watched=reads_history)

    async def receive() -> Message:
        raise AssertionError("a POST body is the app's to read")

    async def send(_message: Message) -> None:
        raise AssertionError("nothing is sent by the wrapper")

    scope = {"type": "http", "method": "POST", "path": HISTORY_PREFIX + "/x"}
    await wrapped(scope, receive, send)
    assert seen == ["POST"]


def test_the_reads_answered_from_history() -> None:
    def scope(path: str, query: bytes = b"") -> Scope:
        return {"type": "http", "method": "GET", "path": path, "query_string": query}

    assert reads_history(scope("/v1/history"))
    assert reads_history(scope("/v1/history/value", b"step=1h"))
    assert reads_history(scope("/v1/balances", b"account=a&at=2026-01-01T00:00:00Z"))
    assert not reads_history(scope("/v1/balances", b"account=a"))
    assert not reads_history(scope("/v1/balances", b"format=csv&flat=1"))
    assert not reads_history(scope("/v1/totals"))
