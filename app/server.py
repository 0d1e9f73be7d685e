"""Serving an app over HTTP: the listening socket, uvicorn, and the shutdown semantics.

Where it sits: below the ``serve`` command (:func:`app.cli.run_service`) and the worker
pool (:mod:`app.workers`), which hand it the app ``create_app`` built
(:mod:`app.service`) and the sockets they bound. It knows nothing of what the app does
beyond closing the stream clients first on shutdown.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from app.httpproto import BoundedHttpToolsProtocol
from app.services import Services
from app.settings import Settings

# The HTTP parser uvicorn runs: httptools with the request-head cap (app/httpproto.py).
HTTP_PROTOCOL = BoundedHttpToolsProtocol


def bind_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The HTTP listening socket, bound now (uvicorn serves on it later)."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How every command serves the app (``serve``, its workers, ``demo``): the capped
    HTTP parser with JSON refusals, 64 KiB client frames on ``/v1/stream``, WebSocket
    pings every ``heartbeat`` seconds, a bounded graceful shutdown, no access log."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "http": HTTP_PROTOCOL,
        "ws": "auto",
        "ws_ping_interval": settings.heartbeat,
        # a half-open connection never holds the shutdown (SIGTERM, Ctrl-C)
        "timeout_graceful_shutdown": 10,
        "ws_max_size": 1 << 16,
        "h11_max_incomplete_event_size": 1 << 16,
        **overrides,
    }
    return uvicorn.Config(app, **options)


GC_THRESHOLDS = (20_000, 20, 20)
"""The cyclic collector's generation thresholds while serving (CPython's are 700, 10,
10). The upstream reader queues a whole socket read of frames (a thousand message
objects per 256 KiB) before the fold consumes them; at 700 every such read set off
young collections that walked the queued frames and promoted them until a full
collection walked the whole heap: a quarter of the service's CPU during a burst."""


def tune_gc() -> None:
    """Collect young objects less often (:data:`GC_THRESHOLDS`); cycles are still
    collected. The heap start-up built is frozen out of every collection once the app
    has started (its lifespan, :func:`app.service.create_app`), after this."""
    gc.set_threshold(*GC_THRESHOLDS)


def serve_on(app: FastAPI, settings: Settings, sockets: list[socket.socket]) -> int:
    """Serve ``app`` on already bound sockets until SIGINT/SIGTERM (a ``--workers``
    worker passes the shared socket it inherited, and its own one when configured)."""
    tune_gc()
    config = uvicorn_config(app, settings, loop="uvloop" if _has_uvloop() else "asyncio")
    server = ServiceServer(config)
    server.run(sockets=sockets)
    return 0 if server.started else 1


class ServiceServer(uvicorn.Server):
    """uvicorn with the service's shutdown semantics (SPEC §14).

    uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown, which makes the process die
    "by signal"; a service that shut down cleanly on request exits 0, so the captured
    signals are handled here and not raised again. uvicorn also closes open WebSockets with
    1012 before the app's shutdown runs; stream clients are told 1001 (going away) first.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = getattr(self.config.loaded_app, "state", None) or getattr(
            self.config.app, "state", None
        )
        services: Services | None = getattr(state, "services", None)
        if services is not None:
            with contextlib.suppress(Exception):
                await services.hub.close_clients(1001)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
