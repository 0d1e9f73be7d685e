"""Access to a running service: its URL, the bearer token, REST reads and the stream.

The client's errors, each one line a user can act on, with its exit code::

    ClientError                 base: ``message`` is printed on one line, ``exit_code`` returned
    ├── ServiceUnreachable      nothing answers at the URL (refused, timeout, DNS)      → 1
    ├── UnexpectedAnswer        the service answered, but not with what was asked        → 1
    ├── BadRequest              the service refused the request's parameters (400/422)  → 2
    ├── TokenRefused            missing or wrong token (401)                            → 3
    └── NotFound                unknown account, or a route this service does not serve → 4

Documents are parsed with ``parse_float=Decimal`` so that no JSON number the service sends
ever becomes a float; amounts are strings anyway and stay the exact text received.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiohttp

DEFAULT_TIMEOUT = 10.0
# A snapshot of every balance is one frame; this bounds what the service can make us buffer.
MAX_FRAME_BYTES = 64 << 20


class ClientError(Exception):
    """A failure the user can act on; the command prints ``message`` and exits non-zero."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServiceUnreachable(ClientError):
    """Nothing answers at the service URL."""


class UnexpectedAnswer(ClientError):
    """The service answered with a status or body the client cannot use."""


class BadRequest(ClientError):
    """The service refused the request's parameters (400 or 422)."""

    exit_code = 2


class TokenRefused(ClientError):
    """The service requires a token and the one sent (if any) is not accepted (401)."""

    exit_code = 3


class NotFound(ClientError):
    """Unknown account, or a route the service does not serve (404)."""

    exit_code = 4


class Token:
    """The bearer token: sent in a header only, never in a URL, a repr or a message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._value}"}

    def scrub(self, text: str) -> str:
        """``text`` with the token replaced, for anything that might echo it back."""
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Token(***)"


def default_url(environ: Mapping[str, str] | None = None) -> str:
    """``http://BALAGG_HOST:BALAGG_PORT``; a wildcard listen address is reached on loopback."""
    env = os.environ if environ is None else environ
    host = env.get("BALAGG_HOST", "").strip() or "127.0.0.1"
    port = env.get("BALAGG_PORT", "").strip() or "8000"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def default_token(environ: Mapping[str, str] | None = None) -> Token | None:
    env = os.environ if environ is None else environ
    value = env.get("BALAGG_API_TOKEN", "").strip()
    return Token(value) if value else None


def check_url(url: str) -> str:
    """The base URL without a trailing slash; refuses anything but http(s)://host[:port]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"--url must look like http://HOST:PORT, not {url!r}")
    if parts.username or parts.password or parts.query:
        raise BadRequest("--url takes no credentials or query; use --token")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise BadRequest(f"--url has an invalid port: {url!r}") from None
    return url.rstrip("/")


def parse_document(body: bytes | str) -> Any:
    """JSON with every number that is not an integer kept as an exact ``Decimal``."""
    return json.loads(body, parse_float=Decimal)


@dataclass(frozen=True)
class Answer:
    """A successful REST answer: the exact bytes (for ``--json``) and the parsed document."""

    body: bytes
    doc: Any


def _error_text(body: bytes) -> tuple[str, str]:
    """``(code, message)`` from the service's error shape, or empty strings."""
    try:
        doc = parse_document(body)
    except ValueError:
        return "", ""
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or ""), str(error.get("message") or "")


class ServiceClient:
    """REST reads and the stream handshake against one service URL."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: Token | None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._session = session
        self.base_url = base_url
        self._token = token
        self._timeout = timeout

    def _headers(self) -> dict[str, str]:
        return self._token.header() if self._token is not None else {}

    def scrub(self, text: str) -> str:
        return self._token.scrub(text) if self._token is not None else text

    def _unreachable(self, exc: BaseException) -> ServiceUnreachable:
        reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else "connection refused"
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            reason = "host not found"
        elif isinstance(exc, aiohttp.ServerDisconnectedError):
            reason = "the connection was closed"
        return ServiceUnreachable(
            f"service not reachable at {self.base_url} ({reason}); is it running? "
            "(start it with `balance-aggregator serve`, or set --url / BALAGG_HOST+BALAGG_PORT)"
        )

    def refusal(self, status: int, body: bytes, what: str) -> ClientError:
        """The error for a non-2xx answer to ``what`` (a route, for the message)."""
        code, message = _error_text(body)
        message = self.scrub(message)
        if status == 401:
            hint = "pass --token or set BALAGG_API_TOKEN"
            if self._token is not None:
                hint = "the token given (--token / BALAGG_API_TOKEN) is not accepted"
            return TokenRefused(f"unauthorized: {hint}")
        if status == 404:
            if code == "unknown_account":
                return NotFound(f"unknown account: {message or what}")
            return NotFound(f"{what}: this service does not serve it (404)")
        if status in (400, 422):
            return BadRequest(f"invalid request: {message or code or status}")
        if status == 503:
            return UnexpectedAnswer(f"service not ready: {message or code or 503}")
        detail = message or code or "no detail"
        return UnexpectedAnswer(f"{what}: HTTP {status} ({detail})")

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Answer:
        """GET ``path``; a parsed JSON document or a :class:`ClientError`."""
        url = self.base_url + path
        try:
            async with self._session.get(
                url,
                params=dict(params or {}),
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as response:
                body = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise self._unreachable(exc) from None
        if status != 200:
            raise self.refusal(status, body, path)
        try:
            doc = parse_document(body)
        except ValueError:
            raise UnexpectedAnswer(f"{path}: the answer is not JSON; is --url right?") from None
        return Answer(body=body, doc=doc)

    def stream_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/v1/stream"

    async def open_stream(self, params: Mapping[str, str]) -> aiohttp.ClientWebSocketResponse:
        """The ``/v1/stream`` WebSocket; the token goes in the header, never in the URL."""
        try:
            return await self._session.ws_connect(
                self.stream_url(),
                params=dict(params),
                headers=self._headers(),
                heartbeat=15.0,
                max_msg_size=MAX_FRAME_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (400, 401, 404, 422):
                raise self.refusal(exc.status, b"", "/v1/stream") from None
            raise UnexpectedAnswer(f"/v1/stream: handshake refused (HTTP {exc.status})") from None
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise self._unreachable(exc) from None
