"""``/docs`` is served from the package: no CDN, every asset it names answers, packaged."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path, PurePosixPath

from tests.api.conftest import ServiceFactory, account

TOKEN = "docs-token-0123456789"
ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
VENDORED = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE", "NOTICE")


def referenced_assets(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


async def test_docs_names_no_other_host_and_every_asset_answers(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory([account("ex-a")]) as svc:
        async with svc.http.get(svc.base + "/docs") as r:
            assert r.status == 200
            page = await r.text()
        assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]", page), page
        assert '"validatorUrl": null' in page  # no badge that asks validator.swagger.io
        assets = referenced_assets(page)
        assert sorted(Path(a).suffix for a in assets) == [".css", ".js", ".png"]
        for asset in assets:
            assert asset.startswith("/static/swagger/"), asset
            async with svc.http.get(svc.base + asset) as r:
                assert r.status == 200, asset
                assert ASSET_TYPES[Path(asset).suffix] in r.headers["Content-Type"], asset
                assert len(await r.read()) > 100, asset
        async with svc.http.get(svc.base + "/openapi.json") as r:
            assert r.status == 200 and (await r.json())["openapi"].startswith("3.1")
        # Swagger UI 5 renders OpenAPI 3.1 (4.x cannot); ReDoc is off (it needs a CDN)
        async with svc.http.get(svc.base + "/static/swagger/swagger-ui-bundle.js") as r:
            assert re.search(rb'PACKAGE_VERSION:"5\.\d+\.\d+"', await r.read())
        async with svc.http.get(svc.base + "/redoc") as r:
            assert r.status == 404


async def test_docs_needs_a_token_its_assets_do_not(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")], api_tokens=TOKEN) as svc:
        for path in ("/docs", "/docs/oauth2-redirect", "/openapi.json"):
            async with svc.http.get(svc.base + path) as r:
                assert r.status == 401, path
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with svc.http.get(svc.base + "/docs", headers=headers) as r:
            assert r.status == 200
            assets = referenced_assets(await r.text())
        for asset in assets:  # public, like the dashboard's: they hold no data
            async with svc.http.get(svc.base + asset) as r:
                assert r.status == 200, asset


def test_the_vendored_assets_ship_in_the_package() -> None:
    folder = resources.files("app") / "static" / "swagger"
    for name in VENDORED:
        assert (folder / name).is_file(), name
    assert "Apache License" in (folder / "LICENSE").read_text(encoding="utf-8")
    # and the wheel takes them: each file matches a package-data pattern
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["app"]
    for name in VENDORED:
        assert any(glob_matches(f"static/swagger/{name}", p) for p in patterns), name


def glob_matches(path: str, pattern: str) -> bool:
    """setuptools' glob: ``*`` never crosses a ``/`` (``static/*`` misses subfolders)."""
    parts, wanted = PurePosixPath(path).parts, PurePosixPath(pattern).parts
    return len(parts) == len(wanted) and all(map(fnmatch, parts, wanted))
