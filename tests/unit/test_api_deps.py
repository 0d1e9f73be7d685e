"""The 503 guards of app/api/deps.py, raised once for every route that needs the parts.

Built without the lifespan, so the app has no running parts: every route that reads them
answers ``not_started``; with parts whose mirror is not loaded, balance reads answer
``not_loaded``; ``/v1/balances?at=`` goes to history, which needs neither.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.main import install_routes
from app.settings import Settings


def _app(tmp_path: Path) -> FastAPI:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        data_dir=tmp_path / "data",
        accounts_file=tmp_path / "none.yaml",
        host="127.0.0.1",
        port=0,
    )
    app = FastAPI()
    install_routes(app, settings)
    return app


async def _get(app: FastAPI, path: str) -> tuple[int, dict[str, Any]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(path)
    return response.status_code, response.json()


@pytest.mark.parametrize(
    "path",
    ["/v1/balances", "/v1/balances/acct-0", "/v1/totals", "/v1/prices", "/v1/accounts",
     "/metrics"],
)  # fmt: skip
async def test_no_parts_yet_is_not_started(tmp_path: Path, path: str) -> None:
    status, body = await _get(_app(tmp_path), path)
    assert status == 503
    assert body == {"error": {"code": "not_started", "message": "the service is starting"}}


@pytest.mark.parametrize("path", ["/v1/balances", "/v1/balances/acct-0", "/v1/totals"])
async def test_a_mirror_not_loaded_is_not_loaded(tmp_path: Path, path: str) -> None:
    app = _app(tmp_path)
    app.state.services = SimpleNamespace(hub=SimpleNamespace(loaded=False))
    status, body = await _get(app, path)
    assert status == 503 and body["error"] == {
        "code": "not_loaded",
        "message": "balance state not loaded from redis yet",
    }


async def test_a_past_state_needs_no_live_parts(tmp_path: Path) -> None:
    status, body = await _get(_app(tmp_path), "/v1/balances?at=2026-01-01T00:00:00Z")
    assert status == 503 and body["error"]["code"] == "history_off"  # history, not the mirror
    status, body = await _get(_app(tmp_path), "/v1/balances?at=2026-01-01&quote=USD")
    assert status == 422 and body["error"]["code"] == "invalid_request"


async def test_readiness_says_starting(tmp_path: Path) -> None:
    status, body = await _get(_app(tmp_path), "/readyz")
    assert status == 503 and body["reasons"] == ["the service is starting"]
