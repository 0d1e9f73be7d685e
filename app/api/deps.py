"""What a route needs from the running service, as ``Annotated`` dependencies.

Where it sits: the app's lifespan (:mod:`app.service`) builds every part, then puts
them on ``app.state.services`` as one immutable :class:`~app.services.Services` (the
hub, the price service, the upstream side, Redis, metrics); routes declare what they
need and FastAPI resolves it here before the route body runs. The two 503 answers are
raised here and nowhere else:

- ``not_started`` (``StartedServices`` and everything built on it): the lifespan has not
  put the parts in place yet;
- ``not_loaded`` (``LoadedServices``): the hub's mirror has not read the balance state from
  Redis yet, so any balance read would be wrong.

``/v1/balances?at=`` reads history, not the live mirror, so it takes
``LoadedUnlessAt`` (``None`` when ``at`` is given) and works before the mirror is loaded.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from app.api.errors import ApiError
from app.ratelimit import ResyncThrottle
from app.services import Services


def optional_services(conn: HTTPConnection) -> Services | None:
    """The running parts, or ``None`` while the service is starting (no 503 raised)."""
    return getattr(conn.app.state, "services", None)


def started_services(request: Request) -> Services:
    rt = optional_services(request)
    if rt is None:
        raise ApiError(503, "not_started", "the service is starting")
    return rt


def loaded_services(rt: Annotated[Services, Depends(started_services)]) -> Services:
    if not rt.hub.loaded:
        raise ApiError(503, "not_loaded", "balance state not loaded from redis yet")
    return rt


def loaded_unless_at(request: Request) -> Services | None:
    """``None`` for a past state (``at=`` given: history answers), else the loaded parts.

    ``at`` present in the query is exactly when the route's ``at`` parameter is not None.
    """
    if "at" in request.query_params:
        return None
    return loaded_services(started_services(request))


OptionalServices = Annotated[Services | None, Depends(optional_services)]
StartedServices = Annotated[Services, Depends(started_services)]
LoadedServices = Annotated[Services, Depends(loaded_services)]
LoadedUnlessAt = Annotated[Services | None, Depends(loaded_unless_at)]


# ---------------------------------------------------------------------------------------
# Parts that live as long as the app: put on app.state by install_routes, not the lifespan


def resync_throttle(request: Request) -> ResyncThrottle:
    """One per app: resyncs are coalesced per account across requests."""
    throttle: ResyncThrottle = request.app.state.resync_throttle
    return throttle


Resyncs = Annotated[ResyncThrottle, Depends(resync_throttle)]
