"""Request parameters: their declarations and the one reading of filter lists and flags.

Where it sits: the REST routes (:mod:`app.api.routes`) declare their query and path
parameters with the ``Annotated`` aliases below; the routes, the fast read path
(:mod:`app.api.fast`), the ``/v1/stream`` handshake and frames
(:mod:`app.api.routes.stream`) and the history routes (:mod:`app.history.api`) all read
filter lists through :func:`split_list`, so every entry point accepts and refuses the same
values with the same message. A value that cannot be read raises
:class:`~app.api.errors.BadParam` (422 ``invalid_request`` on a REST route).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Final, Literal

from fastapi import Path, Query

from app.accounts import ACCOUNT_ID_RE
from app.api.errors import BadParam, short

MAX_FILTER_ITEMS: Final = 1_000
ASSET_RE: Final = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
TRUE_FALSE: Final = {"true": True, "false": False, "1": True, "0": False}
"""The spellings of a boolean flag (FastAPI accepts more; the fast path and the stream only
these, and leave anything else to the route)."""


def split_list(
    values: Iterable[str] | None, name: str, pattern: re.Pattern[str]
) -> list[str] | None:
    """``a,b`` and repeated parameters alike; ``None`` when the filter is absent."""
    if values is None:
        return None
    items = [item.strip() for value in values for item in value.split(",")]
    items = [item for item in items if item]
    if not items:
        return None
    if len(items) > MAX_FILTER_ITEMS:
        raise BadParam(f"{name}: at most {MAX_FILTER_ITEMS} values")
    for item in items:
        if not pattern.match(item):
            raise BadParam(f"{name}: {short(item)} is not a valid value")
    return items


def account_list(values: Iterable[str] | None, name: str = "account") -> list[str] | None:
    """An account filter (ids as configured); ``None`` when absent."""
    return split_list(values, name, ACCOUNT_ID_RE)


def asset_list(values: Iterable[str] | None, name: str = "asset") -> list[str] | None:
    """An asset filter (currency codes or mints, as given); ``None`` when absent."""
    return split_list(values, name, ASSET_RE)


def parse_since(value: str | None) -> int | None:
    """A stream resume position: a non-negative integer seq, or ``None`` when absent."""
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 19:
        raise BadParam("since: expected a non-negative integer seq")
    return int(value)


def parse_flag(value: str | None, name: str) -> bool:
    """``true``/``false`` (or ``1``/``0``); absent or empty is false."""
    if value is None or value == "":
        return False
    if value not in TRUE_FALSE:
        raise BadParam(f"{name}: expected true or false")
    return TRUE_FALSE[value]


# ---------------------------------------------------------------------------------------
# Declarations (module level: FastAPI resolves them by name)

AccountFilter = Annotated[
    list[str] | None,
    Query(description="account ids, comma-separated or repeated", max_length=1000),
]
AssetFilter = Annotated[
    list[str] | None,
    Query(description="asset codes or mints, comma-separated or repeated", max_length=1000),
]
NonzeroFlag = Annotated[bool, Query(description="only records with a non-zero amount")]
HistoryAt = Annotated[
    str | None,
    Query(
        description="ISO 8601 time: the exact state at that instant, from history (adds as_of; "
        "format=csv streams CSV; 409 if history does not cover it)",
        max_length=64,
    ),
]
AccountPath = Annotated[str, Path(description="account id", max_length=256)]
Quote = Annotated[
    str,
    Query(
        description="quote currency (case-insensitive) or Solana mint",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9]+$",
    ),
]
OptionalQuote = Annotated[
    str | None,
    Query(
        description="value every record in this quote currency",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9]+$",
    ),
]
Format = Annotated[
    Literal["json", "csv"] | None, Query(description="csv streams a CSV (also Accept: text/csv)")
]
