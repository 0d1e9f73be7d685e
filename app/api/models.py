"""Response shapes of the REST surface (SPEC §8): pydantic models and the JSON response.

The models describe the bodies for the OpenAPI document at ``/docs``; they are not on the
hot path: routes build their bodies with orjson (or take cached bytes from the hub) and
hand them to :func:`json_response`. Amounts are exact decimal strings everywhere. Error
bodies live in :mod:`app.api.errors`; history's shapes in :mod:`app.history.api`.
"""

from __future__ import annotations

from typing import Literal

from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.api.errors import JSON, ErrorDetail
from app.domain import AccountStatus
from app.prices.model import PriceSource


def json_response(body: bytes, status: int = 200) -> Response:
    """A JSON body already encoded (orjson or the hub's cached bytes)."""
    return Response(content=body, status_code=status, media_type=JSON)


class Balance(BaseModel):
    """One (account, wallet, asset) record. Amounts are exact decimal strings."""

    account: str
    venue: str
    wallet: str = Field(description='"" for an exchange account, else the wallet')
    asset: str = Field(description="upper-cased currency code, or the Solana mint address")
    symbol: str | None
    total: str = Field(examples=["1.5"])
    available: str = Field(examples=["1"])
    locked: str = Field(examples=["0.5"])
    updated_at: str
    venue_ts: str | None
    stale: bool = Field(description="true while the account's state is not live")
    extra: dict[str, str | bool | int | None]


class BalancesResponse(BaseModel):
    seq: int = Field(description="change-stream position this state is current at")
    balances: list[Balance]


class ValuedBalance(Balance):
    """A record with ``?quote=``: its value in the quote and the price that gave it."""

    value: str | None = Field(description="total in the quote; null with value_reason")
    price: str | None = Field(description="one unit in the quote along the path")
    price_source: str | None = Field(examples=["bitopro+peg"])
    path: str | None = Field(examples=["bitopro:BTC_TWD / bitopro:USDT_TWD * peg:USDT=USD"])
    price_age_s: float | None = Field(description="age of the oldest market price used")
    value_reason: Literal["no_price", "no_path", "stale_price"] | None


class ValuedBalancesResponse(BaseModel):
    seq: int
    quote: str
    balances: list[ValuedBalance]


class Total(BaseModel):
    symbol: str
    total: str
    available: str
    locked: str
    accounts: int = Field(description="how many accounts hold it")
    usd: str | None = Field(
        description="total valued in USD, whatever the quote (= value for USD); null if unpriced"
    )
    value: str | None = Field(description="total in the quote; null with reason")
    price: str | None = Field(description="unit price of the largest holding's path")
    price_source: str | None
    path: str | None
    price_age_s: float | None
    reason: Literal["no_price", "no_path", "stale_price"] | None


class Coverage(BaseModel):
    by_count: str | None = Field(description="valued symbols / held symbols, rounded down")
    by_value: str | None = Field(description="valued value / all value; null if unknowable")
    priced: int
    holdings: int = Field(description="symbols with a non-zero total")


class Unpriced(BaseModel):
    symbol: str
    reason: Literal["no_price", "no_path", "stale_price"]


class TotalsResponse(BaseModel):
    seq: int
    quote: str = Field(examples=["USD"])
    value: str = Field(description="sum of the valued symbols only")
    coverage: Coverage
    totals: list[Total]
    unpriced: list[Unpriced] = Field(description="held symbols without a value, and why")
    assumptions: list[str] = Field(
        description="pegs, identities and static prices the values rest on"
    )


class PriceEntry(BaseModel):
    source: PriceSource
    pair: str = Field(examples=["BTC_TWD"])
    base: str
    quote: str
    price: str
    path: str = Field(examples=["bitopro:BTC_TWD"])
    age_s: float
    max_age_s: float
    stale: bool
    restored: bool = Field(description="read back from Redis, no feed has confirmed it since")
    venue_ts: str | None
    pool_count: int | None
    liquidity: str | None


class PricesResponse(BaseModel):
    prices: list[PriceEntry]
    assumptions: list[str] = Field(description="configured pegs and identities")
    static: dict[str, str] = Field(description="static last-resort prices, asset -> USD")


class AccountsResponse(BaseModel):
    accounts: list[AccountStatus]


class ResyncAccepted(BaseModel):
    account: str
    status: Literal["accepted"]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    reasons: list[str]
    error: ErrorDetail | None = None
