"""``GET /v1/balances`` and ``GET /v1/balances/{account}`` (SPEC §8).

Both answer from the :class:`~app.stream.hub.StreamHub` mirror through one implementation
(:func:`_live_balances`): the hub's cached body, or with ``?quote=`` every record valued by
:class:`~app.valuation.LiveValuation`; JSON or, with ``format=csv`` / ``Accept: text/csv``,
CSV (:func:`app.history.export.from_json`). ``?at=`` on the list route asks history for a
past state (:func:`app.history.api.balances_at`) instead. The plain reads usually never
get here: :class:`~app.api.fast.FastBalanceReads` answers them first with the same body.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import LoadedServices, LoadedUnlessAt
from app.api.errors import ApiError, openapi_errors, unknown_account, unknown_quote
from app.api.models import BalancesResponse, ValuedBalancesResponse, json_response
from app.api.params import (
    AccountFilter,
    AccountPath,
    AssetFilter,
    Format,
    HistoryAt,
    NonzeroFlag,
    OptionalQuote,
    account_list,
    asset_list,
)
from app.history import export
from app.history.api import balances_at
from app.services import Services
from app.valuation import LiveValuation, UnknownQuote

router = APIRouter()


@router.get(
    "/v1/balances",
    response_model=BalancesResponse | ValuedBalancesResponse,
    responses=openapi_errors(401, 409, 422, 503) | export.OPENAPI_CSV,
    tags=["balances"],
    summary="Current balances of every account (valued with quote=, or past ones with at=)",
)
async def get_balances(
    request: Request,
    rt: LoadedUnlessAt,
    account: AccountFilter = None,
    asset: AssetFilter = None,
    nonzero: NonzeroFlag = False,
    at: HistoryAt = None,
    quote: OptionalQuote = None,
    format: Format = None,
) -> Response:
    if at is not None:  # a past state comes from history, not from the live mirror
        if quote is not None:
            raise ApiError(
                422,
                "invalid_request",
                "at= and quote= cannot be combined: a past value comes from /v1/history/value",
            )
        past = await balances_at(request, at, account, asset, nonzero, format)
        return export.from_json(request, format, past, "balances")
    assert rt is not None  # the dependency gives None only with at=
    return _live_balances(request, rt, account_list(account), asset, nonzero, quote, format)


@router.get(
    "/v1/balances/{account}",
    response_model=BalancesResponse | ValuedBalancesResponse,
    responses=openapi_errors(401, 404, 422, 503) | export.OPENAPI_CSV,
    tags=["balances"],
    summary="Current balances of one account (valued with ?quote=)",
)
async def get_account_balances(
    request: Request,
    rt: LoadedServices,
    account: AccountPath,
    asset: AssetFilter = None,
    nonzero: NonzeroFlag = False,
    quote: OptionalQuote = None,
    format: Format = None,
) -> Response:
    if not rt.hub.has_account(account):
        raise unknown_account(account)
    return _live_balances(request, rt, [account], asset, nonzero, quote, format)


def _live_balances(
    request: Request,
    rt: Services,
    accounts: list[str] | None,
    asset: list[str] | None,
    nonzero: bool,
    quote: str | None,
    format: str | None,
) -> Response:
    """The mirror's records of ``accounts`` (all when None), valued when ``quote`` is set."""
    assets = asset_list(asset)
    if quote is None:
        body = rt.hub.balances_body(accounts, assets, nonzero)
    else:
        valuation = LiveValuation(rt.hub, rt.prices.graph)
        try:
            body = orjson.dumps(valuation.balances(accounts, assets, nonzero, quote))
        except UnknownQuote:
            raise unknown_quote(quote) from None
    return export.from_json(request, format, json_response(body), "balances")
