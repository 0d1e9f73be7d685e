"""``/docs`` in headless Chromium: Swagger UI renders the operations from the package alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.test_dashboard import (  # the same service and browser harness
    browser_page,
    chromium,
    running_service,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]
__all__ = ["chromium"]  # a fixture: imported for pytest to find


async def test_docs_render_the_operations_without_any_other_host(
    chromium: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with (
        running_service(redis_url, key_prefix, tmp_path / "data") as svc,
        browser_page(chromium, tmp_path) as page,
    ):
        await page.goto(svc.base + "/docs")
        count = await page.wait_for(
            "document.querySelectorAll('.opblock').length || false", timeout=30
        )
        assert count >= 5
        paths = await page.evaluate(
            "[...document.querySelectorAll('.opblock-summary-path')]"
            ".map(e => e.getAttribute('data-path'))"
        )
        assert "/v1/balances" in paths and "/v1/accounts/{account}/resync" in paths
        title = await page.evaluate("document.querySelector('.info .title').textContent")
        assert "balance-aggregator" in title
        assert await page.evaluate("document.querySelectorAll('.errors-wrapper').length") == 0
        # everything the page loaded came from the service itself
        loaded = await page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(url.startswith(svc.base + "/") for url in loaded), loaded
        names = {url.removeprefix(svc.base) for url in loaded}
        assert {"/static/swagger/swagger-ui-bundle.js", "/openapi.json"} <= names
