"""``GET /v1/accounts`` and ``POST /v1/accounts/{account}/resync`` (SPEC §7, §8).

The lifecycle view comes from the hub's mirror of the status hashes. A resync is handed to
the :class:`~app.supervisor.Supervisor` (which reaches the owning instance through Redis)
after the per-account :class:`~app.ratelimit.ResyncThrottle` (this process) and
:class:`~app.ratelimit.ResyncGate` (every instance, through Redis) agree: each resync
reconnects the upstream socket and re-seeds it over the venue's REST API.
"""

from __future__ import annotations

import contextlib

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from redis.exceptions import RedisError

from app.api.deps import Resyncs, StartedServices
from app.api.errors import ApiError, openapi_errors, unknown_account
from app.api.models import AccountsResponse, ResyncAccepted, json_response
from app.api.params import AccountPath
from app.ratelimit import ResyncGate

router = APIRouter()


@router.get(
    "/v1/accounts",
    response_model=AccountsResponse,
    responses=openapi_errors(401, 503),
    tags=["accounts"],
    summary="Lifecycle state of every configured account",
)
async def get_accounts(rt: StartedServices) -> Response:
    return json_response(orjson.dumps({"accounts": rt.hub.account_views()}))


@router.post(
    "/v1/accounts/{account}/resync",
    status_code=202,
    response_model=ResyncAccepted,
    responses=openapi_errors(401, 404, 422, 429, 503),
    tags=["accounts"],
    summary="Reconnect the account's upstream socket and re-seed it",
)
async def post_resync(rt: StartedServices, resyncs: Resyncs, account: AccountPath) -> Response:
    if not rt.hub.has_account(account):
        raise unknown_account(account)
    # one resync per account per interval in the whole deployment: each one reconnects
    # and re-seeds upstream; this process's throttle answers a burst without Redis
    wait = resyncs.acquire(account)
    accepted_at = None if wait else resyncs.last(account)
    gate = ResyncGate(rt.redis, rt.keys, rt.settings.resync_min_interval)
    gated = False
    try:
        if not wait:
            wait = await gate.acquire(account)
            gated = not wait
            if wait and accepted_at is not None:  # another instance took it
                resyncs.release(account, accepted_at)
                accepted_at = None
        if wait:
            raise ApiError(
                429,
                "too_many_requests",
                f"a resync of this account was requested recently; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        await rt.supervisor.resync(account)
    except KeyError:
        raise unknown_account(account) from None
    except (RedisError, OSError) as exc:
        if accepted_at is not None:
            resyncs.release(account, accepted_at)
        if gated:
            with contextlib.suppress(RedisError, OSError):
                await gate.release(account)
        raise ApiError(
            503, "unavailable", f"resync could not be requested ({type(exc).__name__})"
        ) from None
    return json_response(orjson.dumps({"account": account, "status": "accepted"}), 202)
