"""Error answers of the HTTP surface: the exceptions, the body, the handlers, the OpenAPI text.

Every error the service answers, including unknown routes, wrong methods and invalid
parameters, is ``{"error": {"code", "message"}}`` (SPEC §8) with the matching status. A
route or a dependency (:mod:`app.api.deps`) raises; the handlers installed by
:func:`install_error_handlers` render:

    Exception
    └── ApiError        any non-2xx answer: status, code, message (and headers, e.g.
        │               ``Retry-After``); raised by routes and dependencies
        └── BadParam    422 ``invalid_request``: a parameter the framework accepted but the
                        service cannot read (:mod:`app.api.params`); the WebSocket and the
                        fast read path catch it and answer in their own way

Framework errors (Starlette's ``HTTPException``, FastAPI's ``RequestValidationError``) get
the same body, and anything unhandled is a 500 ``internal_error`` whose text never leaves
the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.auth import error_body

log = logging.getLogger(__name__)

JSON = "application/json"

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

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing or wrong bearer token",
    404: "Not found",
    409: "History does not cover that time",
    422: "Invalid parameters",
    429: "Too many requests (see Retry-After)",
    503: "Unavailable",
}


class ApiError(Exception):
    """An answer other than success: rendered as ``{"error": {"code", "message"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def short(value: str) -> str:
    """A client's value as an error message quotes it: at most 64 characters."""
    return repr(value[:64] + ("…" if len(value) > 64 else ""))


def unknown_account(account: str) -> ApiError:
    return ApiError(404, "unknown_account", f"no account {short(account)}")


def unknown_quote(quote: str) -> ApiError:
    return ApiError(
        422, "unknown_quote", f"quote {short(quote)}: no price, peg or static price reaches it"
    )


class BadParam(ApiError):
    """A parameter value the service cannot read: 422 ``invalid_request``."""

    def __init__(self, message: str) -> None:
        super().__init__(422, "invalid_request", message)


# ---------------------------------------------------------------------------------------
# The body and its OpenAPI description


class ErrorDetail(BaseModel):
    code: str = Field(examples=["unknown_account"])
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_response(status: int, code: str, message: str) -> Response:
    return Response(content=error_body(code, message), status_code=status, media_type=JSON)


def openapi_errors(
    *statuses: int,
    model: type[BaseModel] = ErrorResponse,
    descriptions: Mapping[int, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """For a route's ``responses=``: the error statuses it may answer, with their body."""
    text = {**_DESCRIPTIONS, **(descriptions or {})}
    return {s: {"model": model, "description": text[s]} for s in statuses}


# ---------------------------------------------------------------------------------------
# Handlers


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, the service's and the framework's, as the one error body."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        response = error_response(exc.status, exc.code, exc.message)
        response.headers.update(exc.headers)
        return response

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = str(exc.detail) if exc.detail else code.replace("_", " ")
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = "no such route"
        response = error_response(exc.status_code, code, message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_request", _validation_message(exc))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error(
            "unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        return error_response(500, "internal_error", "internal error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
