"""History over HTTP (SPEC §8, §17): ``/v1/history``, ``/v1/history/series``,
``/v1/history/value``, ``/v1/history/gaps`` and the ``at=`` branch of ``GET /v1/balances``.

An :class:`~fastapi.APIRouter` mounted by :func:`app.api.main.install_routes`. Every
route answers JSON or, with ``format=csv`` or ``Accept: text/csv``, a streamed CSV
(:mod:`app.history.export`). Parameters are read as the live routes read them
(:mod:`app.api.params`). Errors are raised as :class:`~app.api.errors.ApiError` and
rendered by the app's handler as ``{"error": {"code", "message"}}``: 422 for bad
parameters, 409 when history cannot know the answer (an instant before it starts or inside
a gap), 503 when history is off or its database is unavailable.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.errors import ApiError, BadParam, openapi_errors
from app.api.models import json_response
from app.api.params import Format, account_list, asset_list
from app.history import export, queries, value
from app.history.runtime import History
from app.history.times import BadTime, iso_us, parse_iso_us, parse_step_us

log = logging.getLogger(__name__)

_CSV_PAGE = 5_000

router = APIRouter(tags=["history"])

HISTORY_PREFIX = "/v1/history"
"""Every route of this router lies under it (costly reads: see app/disconnects.py)."""


# ---------------------------------------------------------------------------------------
# Response models (OpenAPI)


class _ErrorDetail(BaseModel):
    code: str
    message: str


class _Error(BaseModel):
    error: _ErrorDetail


class HistoryBalance(BaseModel):
    account: str
    venue: str | None
    wallet: str
    asset: str
    symbol: str | None
    total: str
    available: str
    locked: str
    updated_at: str | None
    venue_ts: str | None
    stale: bool = Field(description="true unless the account was live at that instant")
    extra: dict[str, Any]


class BalancesAtResponse(BaseModel):
    seq: int = Field(description="newest change included in this state")
    as_of: str = Field(description="the instant asked for (ISO 8601 UTC)")
    balances: list[HistoryBalance]


class Gap(BaseModel):
    from_seq: int
    to_seq: int
    from_: str = Field(alias="from", description="state unknown from this time …")
    to: str = Field(description="… to this time (a snapshot restarted history)")


class HistoryChange(BaseModel):
    seq: int
    time: str
    type: Literal["balance", "removed"]
    account: str
    venue: str | None
    wallet: str
    asset: str
    symbol: str | None
    total: str | None
    available: str | None
    locked: str | None
    updated_at: str | None
    venue_ts: str | None
    extra: dict[str, Any] | None


class HistoryResponse(BaseModel):
    changes: list[HistoryChange]
    next_cursor: int | None = Field(description="pass as cursor for the next page")
    gaps: list[Gap]


class SeriesPoint(BaseModel):
    time: str
    total: str | None
    available: str | None
    locked: str | None
    seq: int | None = None
    reason: str | None = Field(default=None, description="why amounts are null")


class SeriesResponse(BaseModel):
    asset: list[str]
    account: list[str] | None
    step: str
    points: list[SeriesPoint]
    gaps: list[Gap]


class ValueCoverage(BaseModel):
    by_count: str | None = Field(description="valued symbols / held symbols, rounded down")
    by_value: str | None = Field(description="valued value / all value; null if unknowable")
    priced: int
    holdings: int = Field(description="symbols with a non-zero total")


class ValueUnpriced(BaseModel):
    symbol: str
    reason: Literal["no_price", "no_path", "stale_price"]


class ValuePoint(BaseModel):
    t: str = Field(description="the instant (ISO 8601 UTC)")
    value: str | None = Field(description="sum of the valued symbols; null with reason")
    coverage: ValueCoverage | None
    unpriced: list[ValueUnpriced]
    reason: Literal["gap", "not_covered"] | None = Field(
        default=None, description="why the state at t is unknown (value and coverage null)"
    )


class SpanOnly(BaseModel):
    from_: str = Field(alias="from")
    to: str


class ValueResponse(BaseModel):
    quote: str
    step: str
    points: list[ValuePoint]
    gaps: list[SpanOnly]


class GapsResponse(BaseModel):
    gaps: list[Gap]


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return export.OPENAPI_CSV | openapi_errors(
        *statuses, model=_Error, descriptions={503: "History is off or unavailable"}
    )


# ---------------------------------------------------------------------------------------
# Parameters and errors


HistoryAccounts = Annotated[
    list[str] | None, Query(description="account ids (comma-separated or repeated)")
]
HistoryAssets = Annotated[list[str] | None, Query(description="asset codes or mints")]
From = Annotated[str | None, Query(alias="from", description="ISO 8601 time (inclusive)")]
To = Annotated[str | None, Query(description="ISO 8601 time (exclusive; default now)")]


def _assets(values: Sequence[str] | None) -> list[str] | None:
    items = asset_list(values)
    if items is None:
        return None
    return sorted({*items, *(i.upper() for i in items)})  # btc finds BTC, as in REST


def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_iso_us(value)
    except BadTime as exc:
        raise BadParam(f"{name}: {exc}") from None


def _span(from_: str | None, to: str | None, step: str, default_days: int) -> tuple[int, int, int]:
    """``from``, ``to`` (at most now; the future is not history) and ``step`` in µs."""
    try:
        step_us = parse_step_us(step)
    except BadTime as exc:
        raise BadParam(str(exc)) from None
    now_us = time.time_ns() // 1000
    to_us = min(_time(to, "to") or now_us, now_us)
    from_us = _time(from_, "from")
    if from_us is None:
        from_us = to_us - default_days * 86_400 * 1_000_000
    if from_us > to_us:
        raise BadParam("from: must not be after to")
    if (to_us - from_us) // step_us + 2 > queries.MAX_POINTS:
        raise BadParam(f"at most {queries.MAX_POINTS} points: use a larger step")
    return from_us, to_us, step_us


def _history(request: Request) -> History:
    history: History | None = getattr(request.app.state, "history", None)
    if history is None:
        raise ApiError(503, "history_off", "history is disabled (BALAGG_HISTORY=off)")
    if not history.ready:
        raise ApiError(503, "history_unavailable", "the history database is not reachable yet")
    return history


@contextlib.contextmanager
def _database() -> Iterator[None]:
    """A query that fails on the database's side answers 503 (logged without its text)."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        log.warning("history query failed (%s)", type(exc).__name__)
        raise ApiError(
            503, "history_unavailable", "the history database is not reachable"
        ) from None


async def _collect_with_gaps(
    points: AsyncIterator[list[dict[str, Any]]], engine: AsyncEngine, from_us: int, to_us: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every point of a JSON answer, and the gaps of its span."""
    with _database():
        collected = [p async for batch in points for p in batch]
        async with engine.connect() as conn:
            gaps = await queries.gaps_between(conn, from_us, to_us)
    return collected, gaps


# ---------------------------------------------------------------------------------------
# GET /v1/balances?at=


async def balances_at(
    request: Request,
    at: str,
    account: Sequence[str] | None,
    asset: Sequence[str] | None,
    nonzero: bool,
    fmt: str | None = None,
) -> Response:
    """The exact state at ``at`` from history; called by ``GET /v1/balances`` when ``at`` is set.

    Raises :class:`~app.api.errors.ApiError` (the app's handler renders it).
    """
    if fmt is None:
        fmt = request.query_params.get("format")
    if fmt not in (None, "json", "csv"):
        raise BadParam("format: use json or csv")
    history = _history(request)
    at_us = _time(at, "at")
    assert at_us is not None
    accounts = account_list(account)
    assets = _assets(asset)
    try:
        with _database():
            async with history.engine.connect() as conn:
                state = await queries.state_at(conn, at_us, accounts, assets, history.snapshots)
    except queries.NotCovered as exc:
        raise ApiError(409, exc.code, exc.message) from None
    as_of = iso_us(at_us)
    if export.wants_csv(request, fmt):
        records = queries.balance_records(state, nonzero)
        rows = [{"as_of": as_of, **r} for r in records]
        return export.csv_of(export.BALANCE_COLUMNS, rows, "balances.csv")
    return Response(queries.balances_json(state, as_of, nonzero), media_type="application/json")


# ---------------------------------------------------------------------------------------
# /v1/history


@router.get(
    "/v1/history",
    response_model=HistoryResponse,
    responses=_responses(401, 422, 503),
    summary="Balance changes over time, oldest first, paginated by seq",
)
async def get_history(
    request: Request,
    account: HistoryAccounts = None,
    asset: HistoryAssets = None,
    from_: From = None,
    to: To = None,
    cursor: Annotated[int, Query(ge=0, le=2**62, description="seq of the last change seen")] = 0,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE)] = 1_000,
    format: Format = None,
) -> Response:
    history = _history(request)
    accounts = account_list(account)
    assets = _assets(asset)
    from_us, to_us = _time(from_, "from"), _time(to, "to")
    engine = history.engine
    if export.wants_csv(request, format):
        # the whole range, streamed page by page (cursor and limit pick the first page)
        async def pages() -> AsyncIterator[list[dict[str, Any]]]:
            after = cursor
            while True:
                async with engine.connect() as conn:
                    page = await queries.changes_page(
                        conn, accounts=accounts, assets=assets, from_us=from_us, to_us=to_us,
                        after_seq=after, limit=_CSV_PAGE,
                    )  # fmt: skip
                if not page:
                    return
                yield page
                after = page[-1]["seq"]
                if len(page) < _CSV_PAGE:
                    return

        return export.csv_response(export.CHANGE_COLUMNS, pages(), "history.csv")
    with _database():
        async with engine.connect() as conn:
            page = await queries.changes_page(
                conn, accounts=accounts, assets=assets, from_us=from_us, to_us=to_us,
                after_seq=cursor, limit=limit,
            )  # fmt: skip
            gaps = await queries.gaps_between(conn, from_us, to_us)
    next_cursor = page[-1]["seq"] if len(page) == limit else None
    return _json({"changes": page, "next_cursor": next_cursor, "gaps": gaps})


@router.get(
    "/v1/history/series",
    response_model=SeriesResponse,
    responses=_responses(401, 422, 503),
    summary="Summed amounts of an asset at the end of each step",
)
async def get_series(
    request: Request,
    asset: Annotated[list[str], Query(description="asset code or mint (required)")],
    account: HistoryAccounts = None,
    from_: From = None,
    to: To = None,
    step: Annotated[str, Query(description="e.g. 90s, 5m, 1h, 1d, 1w")] = "1h",
    format: Format = None,
) -> Response:
    history = _history(request)
    accounts = account_list(account)
    assets = _assets(asset)
    if assets is None:
        raise BadParam("asset: required")
    from_us, to_us, step_us = _span(from_, to, step, 1)
    engine = history.engine

    async def points() -> AsyncIterator[list[dict[str, Any]]]:
        async with engine.connect() as conn:
            async for point in queries.series(
                conn, accounts=accounts, assets=assets, from_us=from_us, to_us=to_us,
                step_us=step_us,
            ):  # fmt: skip
                yield [point]

    if export.wants_csv(request, format):
        return export.csv_response(export.SERIES_COLUMNS, points(), "series.csv")
    collected, gaps = await _collect_with_gaps(points(), engine, from_us, to_us)
    return _json(
        {"asset": assets, "account": accounts, "step": step, "points": collected, "gaps": gaps}
    )


@router.get(
    "/v1/history/value",
    response_model=ValueResponse,
    responses=_responses(401, 422, 503),
    summary="Portfolio value in a quote at each step, from past balances and past prices",
)
async def get_value(
    request: Request,
    quote: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")] = "USD",
    account: HistoryAccounts = None,
    from_: From = None,
    to: To = None,
    step: Annotated[str, Query(description="e.g. 1h, 1d, 1w")] = "1d",
    format: Format = None,
) -> Response:
    history = _history(request)
    accounts = account_list(account)
    from_us, to_us, step_us = _span(from_, to, step, 30)
    engine, rules = history.engine, history.rules

    async def points() -> AsyncIterator[list[dict[str, Any]]]:
        async with engine.connect() as conn:
            async for point in value.value_points(
                conn, rules, quote=quote, accounts=accounts, from_us=from_us, to_us=to_us,
                step_us=step_us,
            ):  # fmt: skip
                yield [point]

    if export.wants_csv(request, format):

        async def rows() -> AsyncIterator[list[dict[str, Any]]]:
            async for batch in points():
                yield [value.csv_row(p) for p in batch]

        return export.csv_response(export.VALUE_COLUMNS, rows(), "value.csv")
    collected, gaps = await _collect_with_gaps(points(), engine, from_us, to_us)
    quote_name = quote if len(quote) > 12 else quote.upper()  # a mint keeps its case
    return _json(
        {"quote": quote_name, "step": step, "points": collected,
         "gaps": [{"from": g["from"], "to": g["to"]} for g in gaps]}
    )  # fmt: skip


@router.get(
    "/v1/history/gaps",
    response_model=GapsResponse,
    responses=_responses(401, 503),
    summary="Spans whose changes the stream no longer held when history came to write them",
)
async def get_gaps(request: Request, format: Format = None) -> Response:
    history = _history(request)
    with _database():
        async with history.engine.connect() as conn:
            gaps = await queries.gaps_between(conn)
    if export.wants_csv(request, format):
        return export.csv_of(export.GAP_COLUMNS, gaps, "gaps.csv")
    return _json({"gaps": gaps})


def _json(doc: Any) -> Response:
    return json_response(orjson.dumps(doc))
