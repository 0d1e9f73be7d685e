"""CSV export of history answers: streamed, a header row, exact decimal strings, UTC times.

Amounts are written exactly as stored (canonical decimal text, never a float), so a
spreadsheet or ``Decimal(cell)`` reads back the same value. Text cells that a spreadsheet
would run as a formula (starting with ``=``, ``+``, ``-``, ``@``) are prefixed with ``'``;
amount cells are never altered.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"

BALANCE_COLUMNS = (
    "as_of", "account", "venue", "wallet", "asset", "symbol", "total", "available", "locked",
    "updated_at", "venue_ts", "stale",
)  # fmt: skip
CHANGE_COLUMNS = (
    "seq", "time", "type", "account", "venue", "wallet", "asset", "symbol", "total",
    "available", "locked", "updated_at", "venue_ts",
)  # fmt: skip
SERIES_COLUMNS = ("time", "total", "available", "locked", "reason")
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
