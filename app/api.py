"""The HTTP surface: REST (SPEC §8), the ``/v1/stream`` WebSocket (§9) and ``/metrics``.

Every read is served from the :class:`~app.hub.StreamHub` mirror, never from a Redis
round trip, so a response's ``seq`` always matches the state it shows. Amounts are
strings everywhere; bodies are built with orjson (pydantic models below describe them for
the OpenAPI document at ``/docs`` and are not on the hot path). Every error, including
unknown routes, wrong methods and invalid parameters, is ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Path, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from app.auth import RequestGuard, error_body, is_open_path
from app.domain import AccountState, AccountStatus
from app.history import export
from app.history.api import Format, balances_at
from app.history.api import router as history_router
from app.hub import StreamHub, Subscriber, normalize_assets, record_json
from app.logs import SCRUBBER
from app.prices.model import PriceSource
from app.prices.report import (
    assumptions_doc,
    balance_value,
    price_doc,
    resolve_quote,
    totals_doc,
)
from app.ratelimit import ResyncThrottle
from app.runtime import Runtime
from app.settings import ACCOUNT_ID_RE, Settings
from app.store import decimal_str

log = logging.getLogger(__name__)

STREAM_PATH = "/v1/stream"
MAX_CLIENT_FRAME = 16 * 1024
MAX_FILTER_ITEMS = 1_000
_ASSET_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
_READY_NAMES_SHOWN = 20
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets.server")

JSON = "application/json"


# ---------------------------------------------------------------------------------------
# Response models (OpenAPI)


class ErrorDetail(BaseModel):
    code: str = Field(examples=["unknown_account"])
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


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
        description="total valued in the quote currency (the same as value); null if unpriced"
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


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Bad request",
        401: "Missing or wrong bearer token",
        404: "Not found",
        409: "History does not cover that time",
        422: "Invalid parameters",
        429: "Too many requests (see Retry-After)",
        503: "Unavailable",
    }
    return {s: {"model": ErrorResponse, "description": text[s]} for s in statuses}


# ---------------------------------------------------------------------------------------
# Helpers


def _json(body: bytes, status: int = 200) -> Response:
    return Response(content=body, status_code=status, media_type=JSON)


def _error(status: int, code: str, message: str) -> Response:
    return _json(error_body(code, message), status)


def _short(value: str) -> str:
    return repr(value[:64] + ("…" if len(value) > 64 else ""))


class _BadParam(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
        raise _BadParam(f"{name}: at most {MAX_FILTER_ITEMS} values")
    for item in items:
        if not pattern.match(item):
            raise _BadParam(f"{name}: {_short(item)} is not a valid value")
    return items


def _runtime(request: Request | WebSocket) -> Runtime | None:
    return getattr(request.app.state, "runtime", None)


def _not_started() -> Response:
    return _error(503, "not_started", "the service is starting")


def _not_loaded() -> Response:
    return _error(503, "not_loaded", "balance state not loaded from redis yet")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


# ---------------------------------------------------------------------------------------
# Routes


# Parameter declarations shared by the routes (module level: FastAPI resolves them by name).
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


def install_routes(app: FastAPI, settings: Settings) -> None:
    """Every route, the error handlers and the request guard (auth, size caps)."""
    app.add_middleware(FastBalanceReads)  # inside the guard: auth applies first
    app.add_middleware(
        RequestGuard,
        tokens=settings.api_tokens,
        metrics_public=settings.metrics_public,
        websocket_paths=(STREAM_PATH,),
    )
    # The server and its WebSocket library log request headers at DEBUG: scrub secrets at
    # the loggers themselves, so every handler (not only ours) gets the scrubbed text.
    for name in _SERVER_LOGGERS:
        logging.getLogger(name).addFilter(SCRUBBER)
    _install_error_handlers(app)
    resyncs = ResyncThrottle(settings.resync_min_interval, time.monotonic)
    if settings.api_tokens:
        _declare_bearer_auth(app, settings.metrics_public)
    app.include_router(history_router)

    @app.get(
        "/v1/balances",
        response_model=BalancesResponse | ValuedBalancesResponse,
        responses=_errors(401, 409, 422, 503) | export.OPENAPI_CSV,
        tags=["balances"],
        summary="Current balances of every account (valued with quote=, or past ones with at=)",
    )
    async def get_balances(
        request: Request,
        account: AccountFilter = None,
        asset: AssetFilter = None,
        nonzero: NonzeroFlag = False,
        at: HistoryAt = None,
        quote: OptionalQuote = None,
        format: Format = None,
    ) -> Response:
        return export.from_json(  # CSV: format=csv or Accept: text/csv
            request, format, await _get_balances(request, account, asset, nonzero, at, quote),
            "balances",
        )  # fmt: skip

    async def _get_balances(
        request: Request,
        account: list[str] | None,
        asset: list[str] | None,
        nonzero: bool,
        at: str | None,
        quote: str | None,
    ) -> Response:
        if at is not None:  # a past state comes from history, not from the live mirror
            if quote is not None:
                return _error(
                    422,
                    "invalid_request",
                    "at= and quote= cannot be combined: a past value comes from /v1/history/value",
                )
            return await balances_at(request, at, account, asset, nonzero)
        rt = _runtime(request)
        if rt is None:
            return _not_started()
        if not rt.hub.loaded:
            return _not_loaded()
        try:
            accounts = split_list(account, "account", ACCOUNT_ID_RE)
            assets = split_list(asset, "asset", _ASSET_RE)
        except _BadParam as exc:
            return _error(422, "invalid_request", exc.message)
        if quote is not None:
            return _valued_balances(rt, accounts, assets, nonzero, quote)
        return _json(rt.hub.balances_body(accounts, assets, nonzero))

    @app.get(
        "/v1/balances/{account}",
        response_model=BalancesResponse | ValuedBalancesResponse,
        responses=_errors(401, 404, 422, 503) | export.OPENAPI_CSV,
        tags=["balances"],
        summary="Current balances of one account (valued with ?quote=)",
    )
    async def get_account_balances(
        request: Request,
        account: AccountPath,
        asset: AssetFilter = None,
        nonzero: NonzeroFlag = False,
        quote: OptionalQuote = None,
        format: Format = None,
    ) -> Response:
        return export.from_json(
            request, format, _get_account_balances(request, account, asset, nonzero, quote),
            "balances",
        )  # fmt: skip

    def _get_account_balances(
        request: Request,
        account: str,
        asset: list[str] | None,
        nonzero: bool,
        quote: str | None,
    ) -> Response:
        rt = _runtime(request)
        if rt is None:
            return _not_started()
        if not rt.hub.loaded:
            return _not_loaded()
        if not rt.hub.has_account(account):
            return _error(404, "unknown_account", f"no account {_short(account)}")
        try:
            assets = split_list(asset, "asset", _ASSET_RE)
        except _BadParam as exc:
            return _error(422, "invalid_request", exc.message)
        if quote is not None:
            return _valued_balances(rt, [account], assets, nonzero, quote)
        return _json(rt.hub.balances_body([account], assets, nonzero))

    @app.get(
        "/v1/totals",
        response_model=TotalsResponse,
        responses=_errors(401, 422, 503) | export.OPENAPI_CSV,
        tags=["balances"],
        summary="Exact totals per symbol across accounts, valued in the quote currency",
    )
    async def get_totals(
        request: Request,
        quote: Quote = "USD",
        account: AccountFilter = None,
        format: Format = None,
    ) -> Response:
        return export.from_json(request, format, _get_totals(request, quote, account), "totals")

    def _get_totals(request: Request, quote: str, account: list[str] | None) -> Response:
        rt = _runtime(request)
        if rt is None:
            return _not_started()
        if not rt.hub.loaded:
            return _not_loaded()
        try:
            accounts = split_list(account, "account", ACCOUNT_ID_RE)
        except _BadParam as exc:
            return _error(422, "invalid_request", exc.message)
        view = rt.prices.graph.view()
        node = resolve_quote(view, quote)
        if node is None:
            return _unknown_quote(quote)
        # no await between reading seq and the records: they describe the same state
        doc = totals_doc(view, rt.hub.records(accounts), node, rt.hub.seq)
        return _json(orjson.dumps(doc))

    @app.get(
        "/v1/prices",
        response_model=PricesResponse,
        responses=_errors(401, 503),
        tags=["prices"],
        summary="Every known market price with its source, path, age and stale flag",
    )
    async def get_prices(request: Request) -> Response:
        rt = _runtime(request)
        if rt is None:
            return _not_started()
        graph = rt.prices.graph
        doc = {
            "prices": [price_doc(q) for q in graph.prices()],
            "assumptions": assumptions_doc(graph.pegs, graph.identities),
            "static": {a: decimal_str(v) for a, v in sorted(graph.static.items())},
        }
        return _json(orjson.dumps(doc))

    @app.get(
        "/v1/accounts",
        response_model=AccountsResponse,
        responses=_errors(401, 503),
        tags=["accounts"],
        summary="Lifecycle state of every configured account",
    )
    async def get_accounts(request: Request) -> Response:
        rt = _runtime(request)
        if rt is None:
            return _not_started()
        return _json(orjson.dumps({"accounts": rt.hub.account_views()}))

    @app.post(
        "/v1/accounts/{account}/resync",
        status_code=202,
        response_model=ResyncAccepted,
        responses=_errors(401, 404, 422, 429, 503),
        tags=["accounts"],
        summary="Reconnect the account's upstream socket and re-seed it",
    )
    async def post_resync(request: Request, account: AccountPath) -> Response:
        rt = _runtime(request)
        if rt is None:
            return _not_started()
        if not rt.hub.has_account(account):
            return _error(404, "unknown_account", f"no account {_short(account)}")
        # one resync per account per interval: each one reconnects and re-seeds upstream
        wait = resyncs.acquire(account)
        if wait:
            response = _error(
                429,
                "too_many_requests",
                f"a resync of this account was requested recently; retry in {wait} s",
            )
            response.headers["Retry-After"] = str(wait)
            return response
        accepted_at = resyncs.last(account)
        try:
            await rt.supervisor.resync(account)
        except KeyError:
            return _error(404, "unknown_account", f"no account {_short(account)}")
        except (RedisError, OSError) as exc:
            if accepted_at is not None:
                resyncs.release(account, accepted_at)
            return _error(
                503, "unavailable", f"resync could not be requested ({type(exc).__name__})"
            )
        return _json(orjson.dumps({"account": account, "status": "accepted"}), 202)

    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
    async def healthz() -> Response:
        return _json(b'{"status":"ok"}')

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready, with reasons"}},
        tags=["health"],
        summary="Readiness: Redis answers and every enabled account has left connecting",
    )
    async def readyz(request: Request) -> Response:
        reasons = await readiness_problems(_runtime(request))
        if not reasons:
            return _json(b'{"ready":true,"reasons":[]}')
        doc = {
            "ready": False,
            "reasons": reasons,
            "error": {"code": "not_ready", "message": "; ".join(reasons)[:1000]},
        }
        return _json(orjson.dumps(doc), 503)

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics (text format)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    )
    async def metrics(request: Request) -> Response:
        rt = _runtime(request)
        if rt is None:
            return _not_started()
        rt.metrics.pending_writes.set(rt.writer.pending_keys())
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket(STREAM_PATH)
    async def stream(websocket: WebSocket) -> None:
        await serve_stream(websocket)


def _unknown_quote(quote: str) -> Response:
    return _error(
        422, "unknown_quote", f"quote {_short(quote)}: no price, peg or static price reaches it"
    )


def _valued_balances(
    rt: Runtime,
    accounts: list[str] | None,
    assets: list[str] | None,
    nonzero: bool,
    quote: str,
) -> Response:
    """``/v1/balances?quote=``: every record with its value, price, source and age."""
    view = rt.prices.graph.view()
    node = resolve_quote(view, quote)
    if node is None:
        return _unknown_quote(quote)
    wanted = normalize_assets(assets)
    out: list[dict[str, Any]] = []
    for record in rt.hub.records(accounts):
        if wanted is not None and record.asset not in wanted:
            continue
        if nonzero and not (record.total or record.available or record.locked):
            continue
        doc = orjson.loads(record_json(record))
        doc["stale"] = record.stale
        doc.update(balance_value(view, record, node))
        out.append(doc)
    return _json(orjson.dumps({"seq": rt.hub.seq, "quote": node, "balances": out}))


async def readiness_problems(rt: Runtime | None) -> list[str]:
    """Why the instance should not take traffic yet (empty when ready)."""
    if rt is None:
        return ["the service is starting"]
    reasons: list[str] = []
    try:
        await asyncio.wait_for(rt.redis.ping(), 2)
    except (RedisError, OSError, TimeoutError) as exc:
        reasons.append(f"redis does not answer PING ({type(exc).__name__})")
    if not rt.writer.healthy:
        reasons.append(f"redis writes are failing ({rt.writer.last_error or 'error'})")
    hub = rt.hub
    if not hub.loaded:
        reasons.append("balance state not loaded from redis yet")
    elif not hub.reader_ok:
        reasons.append(f"change stream reader is reconnecting ({hub.last_reader_error})")
    waiting = [
        a.id
        for a in rt.accounts
        if a.enabled and hub.account_view(a.id)["state"] == AccountState.CONNECTING
    ]
    if waiting:
        shown = ", ".join(waiting[:_READY_NAMES_SHOWN])
        more = f" and {len(waiting) - _READY_NAMES_SHOWN} more" if len(waiting) > 20 else ""
        reasons.append(f"still connecting: {shown}{more}")
    # a status written by an instance that is gone says nothing about now
    orphaned = [a.id for a in rt.accounts if a.enabled and hub.orphaned(a.id)]
    if orphaned:
        shown = ", ".join(orphaned[:_READY_NAMES_SHOWN])
        more = f" and {len(orphaned) - _READY_NAMES_SHOWN} more" if len(orphaned) > 20 else ""
        reasons.append(f"owner gone, not taken over yet: {shown}{more}")
    return reasons


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = str(exc.detail) if exc.detail else code.replace("_", " ")
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = "no such route"
        response = _error(exc.status_code, code, message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _error(422, "invalid_request", _validation_message(exc))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error(
            "unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        return _error(500, "internal_error", "internal error")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


def _declare_bearer_auth(app: FastAPI, metrics_public: bool) -> None:
    """Tell the OpenAPI document which routes need the bearer token."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        schema["security"] = [{"bearer": []}]
        for path, ops in schema.get("paths", {}).items():
            if is_open_path(path, metrics_public):
                for op in ops.values():
                    op["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class FastBalanceReads:
    """``GET /v1/balances[/{account}]`` without the framework's per-request machinery.

    These are the hot reads (SPEC §16 compares them with a bare ASGI app), and their answer
    is already a cached byte string in the hub. Anything this parser does not fully accept
    (an unknown or invalid parameter, an unknown account) goes on to the FastAPI route,
    which uses the same parsing and gives the same answer or the proper error.
    """

    _PREFIX = "/v1/balances"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(self._PREFIX):
                body = self._answer(scope, path)
                if body is not None:
                    headers = [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope, path: str) -> bytes | None:
        rt: Runtime | None = getattr(scope["app"].state, "runtime", None)
        if rt is None or not rt.hub.loaded:
            return None
        for name, value in scope["headers"]:
            if name == b"accept" and b"text/csv" in value:
                return None  # CSV is rendered by the route (format=csv falls through below)
        hub = rt.hub
        accounts: list[str] | None = None
        single = path != self._PREFIX
        if single:
            if path[len(self._PREFIX)] != "/":
                return None
            name = path[len(self._PREFIX) + 1 :]
            if not hub.has_account(name):
                return None
            accounts = [name]
        account_values: list[str] = []
        asset_values: list[str] = []
        nonzero = False
        raw: bytes = scope.get("query_string", b"")
        if raw:
            for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
                if key == "asset":
                    asset_values.append(value)
                elif key == "account" and not single:
                    account_values.append(value)
                elif key == "nonzero" and value in _TRUE_FALSE:
                    nonzero = _TRUE_FALSE[value]
                else:
                    return None
        try:
            if not single:
                accounts = split_list(account_values or None, "account", ACCOUNT_ID_RE)
            assets = split_list(asset_values or None, "asset", _ASSET_RE)
        except _BadParam:
            return None
        return hub.balances_body(accounts, assets, nonzero)


_TRUE_FALSE = {"true": True, "false": False, "1": True, "0": False}


# ---------------------------------------------------------------------------------------
# /v1/stream


def _ws_error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message}}


def _since(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 19:
        raise _BadParam("since: expected a non-negative integer seq")
    return int(value)


def _flag(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    if value not in _TRUE_FALSE:
        raise _BadParam(f"{name}: expected true or false")
    return _TRUE_FALSE[value]


async def _deny(websocket: WebSocket, status: int, code: str, message: str) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(_json(error_body(code, message), status))
    else:
        await websocket.close(1008, code)


def _op_filter(doc: dict[str, Any], name: str, pattern: re.Pattern[str]) -> list[str] | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _BadParam(f"{name}: expected a list of strings or null")
    return split_list(value, name, pattern)


def handle_client_frame(hub: StreamHub, sub: Subscriber, message: Mapping[str, Any]) -> None:
    """One client frame: ``subscribe`` and ``ping``; anything else gets an error frame."""
    text = message.get("text")
    if text is None:
        hub.send_control(sub, _ws_error("unsupported", "send JSON text frames"))
        return
    if len(text) > MAX_CLIENT_FRAME:
        hub.send_control(sub, _ws_error("too_large", f"frames are capped at {MAX_CLIENT_FRAME}"))
        return
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        hub.send_control(sub, _ws_error("bad_json", "frame is not valid JSON"))
        return
    op = doc.get("op") if isinstance(doc, dict) else None
    if op == "ping":
        hub.send_control(sub, {"type": "pong"})
    elif op == "subscribe":
        assert isinstance(doc, dict)
        try:
            accounts = _op_filter(doc, "accounts", ACCOUNT_ID_RE)
            assets = _op_filter(doc, "assets", _ASSET_RE)
            prices = doc.get("prices")
            if prices is not None and not isinstance(prices, bool):
                raise _BadParam("prices: expected true, false or null")
        except _BadParam as exc:
            hub.send_control(sub, _ws_error("bad_request", exc.message))
            return
        hub.resubscribe(sub, accounts, assets, prices)
    else:
        hub.send_control(
            sub, _ws_error("unknown_op", 'expected {"op": "subscribe", ...} or {"op": "ping"}')
        )


async def serve_stream(websocket: WebSocket) -> None:
    """One downstream client from handshake to close (auth already checked by the guard)."""
    rt = _runtime(websocket)
    params = websocket.query_params
    try:
        accounts = split_list(params.getlist("accounts"), "accounts", ACCOUNT_ID_RE)
        assets = split_list(params.getlist("assets"), "assets", _ASSET_RE)
        since = _since(params.get("since"))
        prices = _flag(params.get("prices"), "prices")
    except _BadParam as exc:
        await _deny(websocket, 400, "invalid_request", exc.message)
        return
    if rt is None:
        await _deny(websocket, 503, "not_started", "the service is starting")
        return
    hub = rt.hub
    await websocket.accept()
    sub = await hub.subscribe(accounts, assets, since, prices=prices)
    sub.attach(websocket)
    frames = asyncio.create_task(_client_frames(websocket, hub, sub))
    closed = asyncio.create_task(sub.wait_closed())
    try:
        # ends when the client leaves, or when the hub closed it (slow client, shutdown)
        await asyncio.wait((frames, closed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        frames.cancel()
        closed.cancel()
        hub.unsubscribe(sub)
        await sub.detach()


class TokenBucket:
    """``rate`` ops a second with bursts up to ``burst``: one per stream client."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst: float = burst
        self._clock = clock
        self._tokens: float = burst  # not money: a count of client ops
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


async def _client_frames(websocket: WebSocket, hub: StreamHub, sub: Subscriber) -> None:
    settings = hub.rt.settings
    bucket = TokenBucket(settings.client_ops_rate, settings.client_ops_burst, time.monotonic)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if not bucket.take():
                # every frame costs work and, unread, a reply: a flood ends the connection
                hub.close_abusive(sub)
                await sub.wait_closed()
                return
            handle_client_frame(hub, sub, message)
    except (WebSocketDisconnect, RuntimeError):
        return
