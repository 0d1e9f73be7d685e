"""A bare ASGI app that answers every GET with the bytes of one file, served by uvicorn
with the service's own settings: ``python -m bench.bare --port N --body FILE``."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def make_app(body: bytes) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    args = parser.parse_args()
    # the same settings as app.server.serve_on
    uvicorn.run(
        make_app(args.body.read_bytes()),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        ws="auto",
        timeout_graceful_shutdown=10,
        ws_max_size=1 << 16,
        h11_max_incomplete_event_size=1 << 16,
    )


if __name__ == "__main__":
    main()
