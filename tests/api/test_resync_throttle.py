"""``POST /v1/accounts/{id}/resync`` is coalesced per account: one, then 429 with Retry-After."""

from __future__ import annotations

import asyncio

from tests.api.conftest import Service, ServiceFactory, StubSupervisor, account


async def test_a_resync_burst_reaches_the_upstream_once(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a"), account("ex-b")], resync_min_interval=30) as svc:
        url = svc.base + "/v1/accounts/ex-a/resync"

        async def post() -> tuple[int, str | None, dict[str, object]]:
            async with svc.http.post(url) as r:
                return r.status, r.headers.get("Retry-After"), await r.json()

        answers = await asyncio.gather(*(post() for _ in range(50)))
        statuses = sorted(status for status, _, _ in answers)
        assert statuses.count(202) == 1, statuses
        assert statuses.count(429) == 49
        for status, retry_after, body in answers:
            if status == 429:
                assert retry_after is not None and 1 <= int(retry_after) <= 30
                assert body["error"]["code"] == "too_many_requests"  # type: ignore[index]
        supervisor = svc.services.supervisor
        assert isinstance(supervisor, StubSupervisor)
        assert supervisor.resyncs == ["ex-a"]
        async with svc.http.post(svc.base + "/v1/accounts/ex-b/resync") as r:
            assert r.status == 202  # per account: another account is not held back


async def test_replicas_on_one_redis_accept_one_resync_between_them(
    service_factory: ServiceFactory,
) -> None:
    """Two instances (replicas, or the workers of one port) share the gate in Redis."""
    accounts = [account("ex-a")]
    async with (
        service_factory(accounts, resync_min_interval=30, history=False) as one,
        service_factory(accounts, resync_min_interval=30, history=False) as two,
    ):

        async def post(svc: Service) -> tuple[int, str | None]:
            async with svc.http.post(svc.base + "/v1/accounts/ex-a/resync") as r:
                return r.status, r.headers.get("Retry-After")

        answers = await asyncio.gather(*(post(one if i % 2 else two) for i in range(40)))
        statuses = sorted(status for status, _ in answers)
        assert statuses.count(202) == 1, statuses
        assert statuses.count(429) == 39
        assert all(1 <= int(wait or 0) <= 30 for status, wait in answers if status == 429)
        reached = []
        for svc in (one, two):
            supervisor = svc.services.supervisor
            assert isinstance(supervisor, StubSupervisor)
            reached += supervisor.resyncs
        assert reached == ["ex-a"]
