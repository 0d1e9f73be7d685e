"""``GET /v1/accounts`` and ``POST /v1/accounts/{account}/resync`` (SPEC §7, §8).

The lifecycle view comes from the hub's mirror of the status hashes. A resync is handed to
the :class:`~app.supervisor.Supervisor` (which reaches the owning instance through Redis)
after the per-account :class:`~app.ratelimit.ResyncThrottle` agrees: each resync
reconnects the upstream socket and re-seeds it over the venue's REST API.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from redis.exceptions import RedisError

from app.api.deps import Resyncs, StartedServices
from app.api.errors import ApiError, openapi_errors, unknown_account
from app.api.models import AccountsResponse, ResyncAccepted, json_response
from app.api.params import AccountPath

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
    # one resync per account per interval: each one reconnects and re-seeds upstream
    wait = resyncs.acquire(account)
    if wait:
        raise ApiError(
            429,
            "too_many_requests",
            f"a resync of this account was requested recently; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    accepted_at = resyncs.last(account)
    try:
        await rt.supervisor.resync(account)
    except KeyError:
        raise unknown_account(account) from None
    except (RedisError, OSError) as exc:
        if accepted_at is not None:
            resyncs.release(account, accepted_at)
        raise ApiError(
            503, "unavailable", f"resync could not be requested ({type(exc).__name__})"
        ) from None
    return json_response(orjson.dumps({"account": account, "status": "accepted"}), 202)
