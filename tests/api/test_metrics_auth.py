"""``/metrics`` carries balances: it needs a token when tokens are set (SPEC §3, §10)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import app.service as service_module
from app.settings import Settings
from tests.api.conftest import ServiceFactory, StubSupervisor, account, bal

TOKEN = "metrics-token-0123456789"


async def _metrics(svc: object, headers: dict[str, str]) -> tuple[int, str]:
    http = svc.http  # type: ignore[attr-defined]
    async with http.get(svc.base + "/metrics", headers=headers) as r:  # type: ignore[attr-defined]
        return r.status, await r.text()


async def test_metrics_need_a_token_when_tokens_are_set(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")], token=TOKEN) as svc:
        svc.owner.submit_snapshot("ex-a", VENUE_OF, "", [bal("BTC", "1.5")])
        await svc.settle()
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            status, body = await _metrics(svc, headers)
            assert status == 401
            assert "balagg_balance{" not in body and "1.5" not in body
        status, body = await _metrics(svc, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        assert 'balagg_balance{account="ex-a",asset="BTC",field="total"} 1.5' in body
        async with svc.http.get(svc.base + "/healthz") as r:
            assert r.status == 200  # probes stay open


async def test_metrics_public_on_request(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")], token=TOKEN, metrics_public=True) as svc:
        status, body = await _metrics(svc, {})
        assert status == 200 and "balagg_downstream_clients" in body
        async with svc.http.get(svc.base + "/v1/balances") as r:
            assert r.status == 401  # the balances themselves stay protected


async def test_per_balance_gauges_can_be_dropped(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")], metrics_balances=False) as svc:
        svc.owner.submit_snapshot("ex-a", VENUE_OF, "", [bal("BTC", "1.5")])
        await svc.settle()
        status, body = await _metrics(svc, {})
        assert status == 200
        assert "balagg_balance{" not in body and "# TYPE balagg_balance gauge" not in body
        assert "balagg_downstream_clients" in body  # the rest is still there


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::"])
async def test_binding_every_interface_without_tokens_warns(
    host: str,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        data_dir=tmp_path / "data",
        accounts_file=tmp_path / "none.yaml",
        host=host,
    )
    app = service_module.create_app(settings, accounts=[], upstream=StubSupervisor)
    caplog.set_level(logging.WARNING, logger="app.service")
    async with app.router.lifespan_context(app):
        pass
    assert any("without BALAGG_API_TOKENS" in r.getMessage() for r in caplog.records), host


VENUE_OF = "deltadefi"
