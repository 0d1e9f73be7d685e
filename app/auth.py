"""Bearer-token checks and the request guard in front of every route (SPEC §15).

:class:`RequestGuard` is a plain ASGI middleware, so it runs before routing and covers
unknown paths and the WebSocket handshake alike:

- with ``BALAGG_API_TOKENS`` set, everything but ``/healthz``, ``/readyz`` and the
  dashboard's static page needs ``Authorization: Bearer <token>`` (the WebSocket may send
  ``?token=`` instead, because browsers cannot set headers on a WebSocket); ``/metrics``
  carries balances, so it needs one too unless ``BALAGG_METRICS_PUBLIC=true``;
- request bodies and query strings are capped.

A ``token`` query parameter is removed from the connection scope before anything else
sees it, so the server's own connection log line never carries it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode

import orjson
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
METRICS_PATH = "/metrics"
# The dashboard page and its assets hold no data (the page asks for a token and uses it
# on the API), so a browser can load them without one.
_PAGE_PATHS = frozenset({"/"})
_PAGE_PREFIX = "/static/"


def is_open_path(path: str, metrics_public: bool = False) -> bool:
    """Paths served without a token: probes, the dashboard's static files, and
    ``/metrics`` only when the operator made it public."""
    if metrics_public and path == METRICS_PATH:
        return True
    return path in OPEN_PATHS or path in _PAGE_PATHS or path.startswith(_PAGE_PREFIX)


MAX_BODY_BYTES = 64 * 1024
MAX_QUERY_BYTES = 8 * 1024
_NEED_TOKEN = "a valid bearer token is required (Authorization: Bearer <token>)"
_TOO_LARGE = f"request bodies are capped at {MAX_BODY_BYTES} bytes"


class TokenChecker:
    """Constant-time comparison of a presented token against every configured one."""

    def __init__(self, tokens: Iterable[SecretStr]) -> None:
        self._tokens = [t.get_secret_value().encode() for t in tokens if t.get_secret_value()]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, presented: str | None) -> bool:
        if presented is None:
            return False
        candidate = presented.encode()
        ok = False
        for token in self._tokens:
            # no early exit: the time taken does not say which token (if any) matched
            ok |= hmac.compare_digest(candidate, token)
        return ok


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if there is one."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _pop_query_token(scope: Scope) -> str | None:
    """Remove ``token`` from the query string (in place) and return its value."""
    raw: bytes = scope.get("query_string", b"")
    if b"token=" not in raw:
        return None
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    token = None
    kept = []
    for key, value in pairs:
        if key == "token":
            token = value
        else:
            kept.append((key, value))
    scope["query_string"] = urlencode(kept).encode("latin-1")
    return token


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


async def send_http_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
    prefix: str = "",
) -> None:
    """A JSON error response (``prefix="websocket."`` for a WebSocket denial response)."""
    body = error_body(code, message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": f"{prefix}http.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}http.response.body", "body": body})


async def refuse_websocket(
    scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str
) -> None:
    """Refuse a handshake with an HTTP status when the server can, else close 1008."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await send_http_error(send, status, code, message, headers, prefix="websocket.")
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": code})


class _BodyTooLarge(Exception):
    pass


class RequestGuard:
    """Authentication and size caps for every HTTP request and WebSocket handshake."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: Iterable[SecretStr] = (),
        metrics_public: bool = False,
        websocket_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.checker = TokenChecker(tokens)
        self.metrics_public = metrics_public
        self.websocket_paths = frozenset(websocket_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            presented = _pop_query_token(scope)
            if self.checker.enabled and not is_open_path(scope["path"], self.metrics_public):
                header = bearer_token(scope.get("headers", ()))
                if not self.checker.check(header or presented):
                    await refuse_websocket(
                        scope,
                        receive,
                        send,
                        401,
                        "unauthorized",
                        "a valid bearer token is required",
                    )
                    return
            if scope["path"] not in self.websocket_paths:
                # the framework would refuse with a bare 403; say what is wrong, as JSON
                await refuse_websocket(
                    scope, receive, send, 404, "not_found", "no WebSocket endpoint at this path"
                )
                return
            await self.app(scope, receive, send)
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
            await send_http_error(send, 414, "uri_too_long", "the query string is too long")
            return
        if (
            self.checker.enabled
            and not is_open_path(scope["path"], self.metrics_public)
            and not self.checker.check(bearer_token(scope.get("headers", ())))
        ):
            await send_http_error(
                send, 401, "unauthorized", _NEED_TOKEN, [(b"www-authenticate", b"Bearer")]
            )
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY_BYTES:
                    await send_http_error(
                        send,
                        413,
                        "payload_too_large",
                        f"bodies are capped at {MAX_BODY_BYTES} bytes",
                    )
                    return
        if scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)  # nothing reads a GET body
        else:
            await self._capped(scope, receive, send)

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count a (chunked) body as it is read; past the cap the request is refused."""
        seen = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY_BYTES:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await send_http_error(send, 413, "payload_too_large", _TOO_LARGE)
