"""Stop the work of a request whose client has gone: an ASGI wrapper for costly reads.

Where it sits: outermost around the app, for the reads a predicate picks (the history
routes and ``/v1/balances?at=``, whose answers can take many database queries).
Starlette runs a handler to its end even after the client hung up; for a history query
that means seconds of database work nobody reads, and during a shutdown it holds the
server's graceful wait (uvicorn waits for every running request) and then the history
engine's disposal.

A GET or HEAD request has no body, so its first ``receive()`` is the (empty) request and
the next one returns only when the client disconnects. This wrapper takes the first
message itself, hands it to the app on the app's first ``receive()``, and waits for the
second one beside the app: if the client disconnects first, the app's task is cancelled
(a database transaction in progress rolls back). The app's own later ``receive()`` calls
(Starlette's streaming responses listen for the disconnect too) see the same
``http.disconnect``. Other methods and reads pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CancelOnDisconnect:
    """Cancel a GET/HEAD that ``watched(scope)`` picks when its client disconnects."""

    def __init__(self, app: ASGIApp, watched: Callable[[Scope], bool]) -> None:
        self.app = app
        self.watched = watched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not self.watched(scope)
        ):
            await self.app(scope, receive, send)
            return
        first = await receive()
        if first["type"] == "http.disconnect":
            return  # gone before the app started: nothing to answer
        gone: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        handed = False
        answered = False  # the whole response is sent: uvicorn then reports a disconnect

        async def app_send(message: Message) -> None:
            nonlocal answered
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True

        async def app_receive() -> Message:
            nonlocal handed
            if not handed:
                handed = True
                return first
            return await asyncio.shield(gone)

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set_result(message)
                    return

        handler = asyncio.ensure_future(self.app(scope, app_receive, app_send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait([handler, watcher], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server gave up on the request
            handler.cancel()
            raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if not handler.done() and not answered:
            handler.cancel()  # the client is gone: nobody reads what the handler would send
            with contextlib.suppress(asyncio.CancelledError):
                await handler
            return
        await handler
