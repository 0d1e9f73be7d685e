"""``GET /v1/prices`` (SPEC §6, §8): every known market price, with the configured
pegs, identities and static prices, from the price service's in-memory graph."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from app.api.deps import StartedServices
from app.api.errors import openapi_errors
from app.api.models import PricesResponse, json_response
from app.prices.report import assumptions_doc, price_doc
from app.store import decimal_str

router = APIRouter()


@router.get(
    "/v1/prices",
    response_model=PricesResponse,
    responses=openapi_errors(401, 503),
    tags=["prices"],
    summary="Every known market price with its source, path, age and stale flag",
)
async def get_prices(rt: StartedServices) -> Response:
    graph = rt.prices.graph
    doc = {
        "prices": [price_doc(q) for q in graph.prices()],
        "assumptions": assumptions_doc(graph.pegs, graph.identities),
        "static": {a: decimal_str(v) for a, v in sorted(graph.static.items())},
    }
    return json_response(orjson.dumps(doc))
