"""``/healthz`` (liveness), ``/readyz`` (readiness, with reasons) and ``/metrics`` (SPEC §8, §10).

Readiness asks Redis for a ``PING`` (the only Redis round trip here) and reads the writer's,
the hub's and each enabled account's health from memory. ``/metrics`` renders the
Prometheus registry of the running service.
"""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from app.api.deps import OptionalServices, StartedServices
from app.api.models import Health, Readiness, json_response
from app.domain import AccountState
from app.services import Services

_READY_NAMES_SHOWN = 20

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
async def healthz() -> Response:
    return json_response(b'{"status":"ok"}')


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready, with reasons"}},
    tags=["health"],
    summary="Readiness: Redis answers and every enabled account has left connecting",
)
async def readyz(rt: OptionalServices) -> Response:
    reasons = await readiness_problems(rt)
    if not reasons:
        return json_response(b'{"ready":true,"reasons":[]}')
    doc = {
        "ready": False,
        "reasons": reasons,
        "error": {"code": "not_ready", "message": "; ".join(reasons)[:1000]},
    }
    return json_response(orjson.dumps(doc), 503)


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
async def metrics(rt: StartedServices) -> Response:
    rt.metrics.pending_writes.set(rt.writer.pending_keys())
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _named(names: list[str]) -> str:
    shown = ", ".join(names[:_READY_NAMES_SHOWN])
    more = f" and {len(names) - _READY_NAMES_SHOWN} more" if len(names) > 20 else ""
    return shown + more


async def readiness_problems(rt: Services | None) -> list[str]:
    """Why the instance should not take traffic yet (empty when ready)."""
    if rt is None:
        return ["the service is starting"]
    reasons: list[str] = []
    try:
        await asyncio.wait_for(rt.redis.ping(), 2)
    except (RedisError, OSError, TimeoutError) as exc:
        reasons.append(f"redis does not answer PING ({type(exc).__name__})")
    if not rt.writer.healthy:
        reasons.append(f"redis writes are failing ({rt.writer.last_error or 'error'})")
    hub = rt.hub
    if not hub.loaded:
        reasons.append("balance state not loaded from redis yet")
    elif not hub.reader_ok:
        reasons.append(f"change stream reader is reconnecting ({hub.last_reader_error})")
    waiting = [
        a.id
        for a in rt.accounts
        if a.enabled and hub.account_view(a.id)["state"] == AccountState.CONNECTING
    ]
    if waiting:
        reasons.append(f"still connecting: {_named(waiting)}")
    # a status written by an instance that is gone says nothing about now
    orphaned = [a.id for a in rt.accounts if a.enabled and hub.orphaned(a.id)]
    if orphaned:
        reasons.append(f"owner gone, not taken over yet: {_named(orphaned)}")
    return reasons
