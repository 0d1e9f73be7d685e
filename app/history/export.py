"""CSV exports: streamed, a header row, exact decimal strings, ISO 8601 UTC times.

The one home of CSV rendering: the history routes (:mod:`app.history.api`) and the live
``/v1/balances``, ``/v1/balances/{account}`` and ``/v1/totals`` (:func:`from_json`, which
turns the route's own JSON answer into CSV, so both formats always say the same; routes in
:mod:`app.api.routes`). A CSV is streamed from batches of rows (:func:`csv_response`) or
from rows already in memory (:func:`csv_of`).

Amounts are written exactly as stored (canonical decimal text, never a float), so a
spreadsheet or ``Decimal(cell)`` reads back the same value. Text cells that a spreadsheet
would run as a formula (starting with ``=``, ``+``, ``-``, ``@``) are prefixed with ``'``;
amount cells are never altered.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.history.times import iso_us

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
OPENAPI_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}
"""For a route's ``responses=``: its 200 answer may also be CSV."""

BALANCE_COLUMNS = (
    "as_of", "account", "venue", "wallet", "asset", "symbol", "total", "available", "locked",
    "updated_at", "venue_ts", "stale",
)  # fmt: skip
CHANGE_COLUMNS = (
    "seq", "time", "type", "account", "venue", "wallet", "asset", "symbol", "total",
    "available", "locked", "updated_at", "venue_ts",
)  # fmt: skip
VALUATION_COLUMNS = ("value", "price", "price_source", "path", "price_age_s", "value_reason")
TOTALS_COLUMNS = (
    "as_of", "seq", "quote", "symbol", "total", "available", "locked", "accounts", "value",
    "price", "price_source", "path", "price_age_s", "reason",
)  # fmt: skip
SERIES_COLUMNS = ("time", "total", "available", "locked", "reason")
GAP_COLUMNS = ("from_seq", "to_seq", "from", "to")
VALUE_COLUMNS = (
    "t", "value", "by_count", "by_value", "priced", "holdings", "unpriced", "reason",
)  # fmt: skip
AMOUNT_COLUMNS = frozenset(
    {"total", "available", "locked", "seq", "value", "by_count", "by_value", "price", "usd"}
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def wants_csv(request: Request, fmt: str | None) -> bool:
    """``format=csv``, or no ``format`` and an ``Accept`` header asking for text/csv."""
    if fmt is not None:
        return fmt == "csv"
    return "text/csv" in request.headers.get("accept", "")


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if column not in AMOUNT_COLUMNS and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def _line(columns: Sequence[str], row: Mapping[str, Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([_cell(c, row.get(c)) for c in columns])
    return out.getvalue()


async def csv_lines(
    columns: Sequence[str], rows: AsyncIterable[Iterable[Mapping[str, Any]]]
) -> AsyncIterator[bytes]:
    """The header, then one chunk per batch of rows."""
    yield _line(columns, {c: c for c in columns}).encode()
    async for batch in rows:
        chunk = "".join(_line(columns, row) for row in batch)
        if chunk:
            yield chunk.encode()


def csv_response(
    columns: Sequence[str],
    rows: AsyncIterable[Iterable[Mapping[str, Any]]],
    filename: str,
) -> StreamingResponse:
    return StreamingResponse(
        csv_lines(columns, rows),
        media_type=CSV_MEDIA_TYPE,
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


_CHUNK = 1_000


async def _chunks(rows: Sequence[Mapping[str, Any]]) -> AsyncIterator[Sequence[Mapping[str, Any]]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


def csv_of(
    columns: Sequence[str], rows: Sequence[Mapping[str, Any]], filename: str
) -> StreamingResponse:
    """A CSV of rows already in memory (sent in chunks of a thousand rows)."""
    return csv_response(columns, _chunks(rows), filename)


def from_json(request: Request, fmt: str | None, response: Response, kind: str) -> Response:
    """``response`` (a route's JSON answer) as CSV when the request asks for CSV.

    ``kind`` is ``balances`` (records; with ``quote`` the value columns too) or
    ``totals``. Errors and JSON requests pass through unchanged. ``as_of`` is the time of
    the answer (UTC); amounts are the JSON's exact strings.
    """
    if response.status_code != 200 or not wants_csv(request, fmt):
        return response
    if isinstance(response, StreamingResponse):
        return response  # already CSV (the ?at= branch renders its own)
    doc = orjson.loads(bytes(response.body))
    as_of = iso_us(time.time_ns() // 1000)
    common = {"as_of": as_of, "seq": doc.get("seq"), "quote": doc.get("quote")}
    if kind == "totals":
        rows = [{**common, **row} for row in doc["totals"]]
        return csv_of(TOTALS_COLUMNS, rows, "totals.csv")
    columns = BALANCE_COLUMNS + (VALUATION_COLUMNS if "quote" in doc else ())
    rows = [{**common, **row} for row in doc["balances"]]
    return csv_of(columns, rows, "balances.csv")
