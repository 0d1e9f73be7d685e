"""The dashboard routes without a browser: what is served, with which headers, and what not."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from app.dashboard import STATIC_DIR, install_dashboard


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    install_dashboard(app)
    return app


async def get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


async def test_page_is_served_uncached_with_a_strict_policy() -> None:
    resp = await get(make_app(), "/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["cache-control"] == "no-cache"
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert 'id="seq"' in resp.text and 'id="conn"' in resp.text


async def test_assets_the_page_names_are_served() -> None:
    app = make_app()
    page = (STATIC_DIR / "index.html").read_text()
    assets = re.findall(r'(?:src|href)="(static/[^"]+)"', page)
    assert sorted(assets) == ["static/app.css", "static/app.js"]
    for asset in assets:
        resp = await get(app, "/" + asset)
        assert resp.status_code == 200, asset
        assert resp.headers["cache-control"] == "no-cache"
    assert "javascript" in (await get(app, "/static/app.js")).headers["content-type"]
    assert (await get(app, "/static/../dashboard.py")).status_code == 404
    assert (await get(app, "/static/missing.js")).status_code == 404


async def test_page_stays_out_of_the_api_schema() -> None:
    paths = make_app().openapi()["paths"]
    assert "/" not in paths
    assert not any(p.startswith("/static") for p in paths)
    assert "/v1/ping" in paths


def test_page_loads_nothing_from_elsewhere() -> None:
    for name in ("index.html", "app.js", "app.css"):
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"https?://", text), name
        assert "@import" not in text and "url(" not in text.replace("new URL(", ""), name
