"""Schemathesis against the live ``/openapi.json``: no generated request gets a 5xx.

Positive cases must also match the documented responses (status, content type, body
schema); negative cases must be refused with a 4xx, never crash the server. The example
count is fixed and derandomized so the run is bounded and repeatable.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import pkgutil
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from app.domain import AccountState
from tests.api.conftest import VENUE, ServiceFactory, account, bal, status_doc

# schemathesis loads many of its modules lazily (the OpenAPI loader, the JSON Schema
# strategies, ...), and pytest rewrites each one on that import because schemathesis is a
# pytest plugin. On CPython 3.11 compiling a large module deep inside a running test can
# fail with "AST constructor recursion depth mismatch", depending on the stack depth at
# that moment. So every schemathesis module is imported here, at collection time, where
# the stack is shallow; an optional one whose own dependency is missing is skipped.
for _module in pkgutil.walk_packages(schemathesis.__path__, "schemathesis."):
    with contextlib.suppress(ImportError):
        importlib.import_module(_module.name)

EXAMPLES_PER_OPERATION = 12
POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz_operation(
    operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]
) -> None:
    """Raise (with a curl line to reproduce) on the first response that breaks a check."""
    checks = POSITIVE_CHECKS if mode is GenerationMode.POSITIVE else [not_a_server_error]
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy)
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        case.validate_response(response, checks=checks)

    try:
        run()
    except Unsatisfiable:
        # an operation without parameters has no invalid inputs to generate
        assert mode is GenerationMode.NEGATIVE, operation.label


def fuzz(base_url: str, document: dict[str, Any], headers: dict[str, str]) -> int:
    """Run every operation in both modes; return how many operations were exercised."""
    schema = schemathesis.openapi.from_dict(document)
    count = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(result.ok(), mode, base_url, headers)
        count += 1
    return count


async def test_no_server_error_on_any_generated_request(service_factory: ServiceFactory) -> None:
    accounts = [account("ex-a"), account("ex-b"), account("off", enabled=False)]
    async with service_factory(accounts, token="fuzz-token-123456") as svc:
        svc.owner.submit_snapshot("ex-a", VENUE, "", [bal("BTC", "1.5", "1"), bal("USDT", "3")])
        for name in ("ex-a", "ex-b"):
            # live, so /readyz says 200
            svc.owner.submit_status(name, status_doc(name, AccountState.LIVE))
        await svc.settle()
        # and history's schema is in place, so its routes answer rather than 503 "not yet"
        deadline = asyncio.get_running_loop().time() + 30
        while not svc.app.state.history.ready:
            assert asyncio.get_running_loop().time() < deadline, "history never became ready"
            await asyncio.sleep(0.05)
        async with svc.http.get(svc.base + "/openapi.json", headers=svc.headers()) as r:
            assert r.status == 200
            document = await r.json()
        assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        operations = await asyncio.wait_for(
            asyncio.to_thread(fuzz, svc.base, document, svc.headers()), 120
        )
        assert operations == 13  # 8 + /v1/prices + /v1/history, …/series, …/value, …/gaps
