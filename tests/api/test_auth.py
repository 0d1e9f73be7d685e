"""Bearer tokens: every route but the probes and the dashboard page needs one; none is logged."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from app.auth import TokenChecker, bearer_token
from tests.api.conftest import ServiceFactory, account
from tests.api.streamclient import read_one

GOOD = "alpha-token-0123456789"
CANARY = "canary-token-ZX81-never-logged"
PROTECTED = [
    ("GET", "/v1/balances"),
    ("GET", "/v1/balances/ex-a"),
    ("GET", "/v1/totals?quote=USD"),
    ("GET", "/v1/accounts"),
    ("POST", "/v1/accounts/ex-a/resync"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/no/such/route"),
    ("GET", "/metrics"),  # it carries balances (SPEC §3)
]
OPEN = ["/healthz", "/readyz", "/"]


def test_token_checker() -> None:
    from pydantic import SecretStr

    checker = TokenChecker([SecretStr("one-token"), SecretStr("two-token")])
    assert checker.enabled
    assert checker.check("one-token") and checker.check("two-token")
    assert not checker.check("one-toke") and not checker.check("") and not checker.check(None)
    assert not TokenChecker([]).enabled
    assert bearer_token([(b"authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([(b"Authorization", b"bearer  abc ")]) == "abc"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None
    assert bearer_token([]) is None


async def test_routes_need_a_right_token(service_factory: ServiceFactory) -> None:
    tokens = f"{GOOD},{CANARY}"
    # resync_min_interval=0: each token's POST must reach the route, not the throttle
    async with service_factory([account("ex-a")], api_tokens=tokens, resync_min_interval=0) as svc:
        for method, path in PROTECTED:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": GOOD}):
                async with svc.http.request(method, svc.base + path, headers=headers) as r:
                    assert r.status == 401, (method, path, headers)
                    assert r.headers["WWW-Authenticate"] == "Bearer"
                    body = await r.json()
                    assert body["error"]["code"] == "unauthorized"
            for token in (GOOD, CANARY):
                headers = {"Authorization": f"Bearer {token}"}
                async with svc.http.request(method, svc.base + path, headers=headers) as r:
                    expected = (
                        404 if path.startswith("/no/") else (202 if method == "POST" else 200)
                    )
                    assert r.status == expected, (method, path)
        for path in OPEN:
            async with svc.http.get(svc.base + path) as r:
                assert r.status in (200, 503), path  # readyz may say 503, never 401
        async with svc.http.get(svc.base + "/static/no-such-file.js") as r:
            assert r.status == 404  # open, and still no data


async def test_stream_needs_a_right_token(
    service_factory: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with service_factory([account("ex-a")], api_tokens=f"{GOOD},{CANARY}") as svc:
        url = svc.ws_base + "/v1/stream"
        for params, headers in (
            ({}, {}),
            ({"token": "wrong"}, {}),
            ({}, {"Authorization": "Bearer wrong"}),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await svc.http.ws_connect(url, params=params, headers=headers)
            assert info.value.status == 401
        for params, headers in (
            ({"token": CANARY, "accounts": "ex-a"}, {}),
            ({}, {"Authorization": f"Bearer {CANARY}"}),
        ):
            ws = await svc.http.ws_connect(url, params=params, headers=headers)
            assert (await read_one(ws))["type"] == "snapshot"
            await ws.close()
        # a wrong token that happens to be long enough to be scrubbed is not logged either
        async with svc.http.get(
            svc.base + "/v1/balances", headers={"Authorization": f"Bearer {CANARY}x"}
        ) as r:
            assert r.status == 401
    assert caplog.records, "the service should have logged something"
    assert CANARY not in caplog.text
    for record in caplog.records:
        assert CANARY not in record.getMessage()
