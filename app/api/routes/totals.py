"""``GET /v1/totals`` (SPEC §8): exact totals per symbol across accounts, valued in a quote.

Answers from the hub's mirror and the price service's in-memory graph through
:class:`~app.valuation.LiveValuation` (no Redis read on this path); JSON or CSV
(:func:`app.history.export.from_json`).
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import LoadedServices
from app.api.errors import openapi_errors, unknown_quote
from app.api.models import TotalsResponse, json_response
from app.api.params import AccountFilter, Format, Quote, account_list
from app.history import export
from app.valuation import LiveValuation, UnknownQuote

router = APIRouter()


@router.get(
    "/v1/totals",
    response_model=TotalsResponse,
    responses=openapi_errors(401, 422, 503) | export.OPENAPI_CSV,
    tags=["balances"],
    summary="Exact totals per symbol across accounts, valued in the quote currency",
)
async def get_totals(
    request: Request,
    rt: LoadedServices,
    quote: Quote = "USD",
    account: AccountFilter = None,
    format: Format = None,
) -> Response:
    accounts = account_list(account)
    try:
        doc = LiveValuation(rt.hub, rt.prices.graph).totals(accounts, quote)
    except UnknownQuote:
        raise unknown_quote(quote) from None
    return export.from_json(request, format, json_response(orjson.dumps(doc)), "totals")
