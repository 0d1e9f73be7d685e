"""Assembly of the HTTP surface: :func:`install_routes` puts every part on the app.

Where it sits: :func:`app.service.create_app` calls it once per app. From the outside in,
a request meets the :class:`~app.auth.RequestGuard` (auth, size caps), the fast read path
(:class:`~app.api.fast.FastBalanceReads`), then the routers: history
(:mod:`app.history.api`), then one router per resource in :mod:`app.api.routes`. Errors
of every kind are rendered by the handlers of :mod:`app.api.errors`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.api.errors import install_error_handlers
from app.api.fast import FastBalanceReads
from app.api.routes import accounts, balances, health, prices, stream, totals
from app.auth import RequestGuard, is_open_path
from app.history.api import router as history_router
from app.logs import SCRUBBER
from app.ratelimit import ResyncThrottle
from app.settings import Settings

_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets.server")


def install_routes(app: FastAPI, settings: Settings) -> None:
    """Every route, the error handlers and the request guard (auth, size caps)."""
    app.add_middleware(FastBalanceReads)  # inside the guard: auth applies first
    app.add_middleware(
        RequestGuard,
        tokens=settings.api_tokens,
        metrics_public=settings.metrics_public,
        websocket_paths=(stream.STREAM_PATH,),
    )
    # The server and its WebSocket library log request headers at DEBUG: scrub secrets at
    # the loggers themselves, so every handler (not only ours) gets the scrubbed text.
    for name in _SERVER_LOGGERS:
        logging.getLogger(name).addFilter(SCRUBBER)
    install_error_handlers(app)
    app.state.resync_throttle = ResyncThrottle(settings.resync_min_interval, time.monotonic)
    if settings.api_tokens:
        _declare_bearer_auth(app, settings.metrics_public)
    # the order of the OpenAPI document's paths
    for router in (history_router, balances.router, totals.router, prices.router,
                   accounts.router, health.router, stream.router):  # fmt: skip
        app.include_router(router)


def _declare_bearer_auth(app: FastAPI, metrics_public: bool) -> None:
    """Tell the OpenAPI document which routes need the bearer token."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        schema["security"] = [{"bearer": []}]
        for path, ops in schema.get("paths", {}).items():
            if is_open_path(path, metrics_public):
                for op in ops.values():
                    op["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
