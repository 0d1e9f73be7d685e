"""How every upstream WebSocket is opened, closed and retried: one policy for all sockets.

Both connection loops use it: the account sockets (:class:`~app.upstream.AccountRunner`)
and the price sockets of their own (:class:`~app.prices.feed.PriceFeedClient`). What they
share, and so is written once here:

* :class:`SocketOptions`: heartbeat and backoff settings, a validated value object;
* :class:`Backoff`: capped exponential backoff with full jitter, reset only after a
  connection stayed healthy for ``healthy_after`` seconds; :class:`AccountRetry` adds
  what an account socket's end may say about its credentials;
* :func:`open_socket`: the upgrade with liveness by protocol ping/pong (``heartbeat``),
  never a read timeout on message silence (balance feeds are quiet for hours), and a
  transport cap above the frame cap so an oversize frame is rejected whole, not fatal;
* :func:`close_socket`: a bounded close;
* :func:`http_session`: the client session every upstream request goes through; it never
  follows a redirect (:func:`refuse_redirects`), so credentials never travel on to
  another host;
* :func:`excerpt`: the short, secret-free text a rejected frame is logged with.

Nothing here knows a venue; the venue limits are waited on by the callers, before
:func:`open_socket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import WSMsgType

from app.logs import SCRUBBER
from app.venues.base import MAX_FRAME_BYTES, HttpRequest

_EXCERPT = 120
_DATA_TYPES = (WSMsgType.TEXT, WSMsgType.BINARY)
_CLOSE_TIMEOUT_S = 2.0


class BackoffSettings(Protocol):
    """Where :meth:`SocketOptions.of` reads its values (:class:`~app.settings.Settings`)."""

    @property
    def heartbeat(self) -> float: ...
    @property
    def backoff_initial(self) -> float: ...
    @property
    def backoff_max(self) -> float: ...
    @property
    def healthy_after(self) -> float: ...


@dataclass(frozen=True, slots=True)
class SocketOptions:
    """Liveness and reconnect settings of one kind of socket (seconds)."""

    heartbeat: float = 20.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    healthy_after: float = 30.0

    def __post_init__(self) -> None:
        if self.heartbeat <= 0 or self.backoff_initial <= 0 or self.backoff_max <= 0:
            raise ValueError("heartbeat and backoff times must be positive")
        if self.healthy_after < 0:
            raise ValueError("healthy_after must not be negative")

    @classmethod
    def of(cls, settings: BackoffSettings) -> SocketOptions:
        return cls(
            settings.heartbeat,
            settings.backoff_initial,
            settings.backoff_max,
            settings.healthy_after,
        )


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """AWS-style full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


class Backoff:
    """The delay before the next connection attempt of one socket."""

    def __init__(self, options: SocketOptions) -> None:
        self.options = options
        self.attempt = 0

    def next_delay(self, healthy_for: float) -> float:
        """After a connection that lasted ``healthy_for`` seconds: how long to wait.

        A connection that stayed up for ``healthy_after`` resets the growth first.
        """
        if healthy_for >= self.options.healthy_after:
            self.attempt = 0
        delay = full_jitter(self.attempt, self.options.backoff_initial, self.options.backoff_max)
        self.attempt += 1
        return delay


class Reconnect(Exception):
    """Leave the current connection and reconnect (``reason`` labels the metric).

    ``detail`` is the secret-free sentence the reconnect is logged with; ``backoff``
    false reconnects at once (a resync, a sequence gap).
    """

    def __init__(self, reason: str, *, backoff: bool = True, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.backoff = backoff
        self.detail = detail


QUICK_CLOSE_S = 2.0
QUICK_CLOSES_FOR_AUTH = 3
_AUTH_RETRY_CAP_S = 3600.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do after a connection ended: wait ``delay`` seconds, and whether the
    credentials count as refused (``auth_failed``: slow retries, state ``auth_failed``).
    ``reason`` is the metric label, ``"auth"`` when quick closes were judged a refusal
    (then ``detail`` says so)."""

    reason: str
    detail: str
    delay: float
    auth_failed: bool


class AccountRetry:
    """The retry rules of one account socket (SPEC §14, VENUES.md).

    Only an explicit refusal (``reason == "auth"``) is an auth failure, retried slowly
    (doubling from ``auth_retry_min``); a key that worked before gets one normal retry
    first, since one refusal may be a venue hiccup, not revoked credentials. Quick quiet
    closes count as a refusal only on a venue that may answer a bad signature that way
    (``silent_close_may_be_auth``, BitoPro), and only for a key that never worked. A
    connection that carried frames or stayed up resets every counter.
    """

    def __init__(
        self, options: SocketOptions, *, auth_retry_min: float, silent_close_may_be_auth: bool
    ) -> None:
        self.backoff = Backoff(options)
        self.auth_retry_min = auth_retry_min
        self.silent_close_may_be_auth = silent_close_may_be_auth
        self.auth_failures = 0
        self.quick_closes = 0

    def judge(
        self,
        reason: str,
        detail: str,
        *,
        backoff: bool,
        frames: int,
        healthy_for: float,
        key_worked: bool,
    ) -> Verdict:
        if frames or healthy_for >= self.backoff.options.healthy_after:
            self.quick_closes = 0
            self.auth_failures = 0
        if (
            reason in ("closed", "network")
            and self.silent_close_may_be_auth
            and not key_worked
            and frames == 0
            and healthy_for < QUICK_CLOSE_S
        ):
            self.quick_closes += 1
            if self.quick_closes >= QUICK_CLOSES_FOR_AUTH:
                reason, detail = "auth", "connection closed immediately, repeatedly"
        if reason == "auth":
            self.auth_failures += 1
            if self.auth_failures > 1 or not key_worked:
                slow = self.auth_failures if not key_worked else self.auth_failures - 1
                delay = min(self.auth_retry_min * 2 ** (slow - 1), _AUTH_RETRY_CAP_S)
                return Verdict(reason, detail, delay * random.uniform(0.8, 1.0), True)
        else:
            self.auth_failures = 0
        delay = self.backoff.next_delay(healthy_for)
        return Verdict(reason, detail, delay if backoff else 0.0, False)


class RedirectRefused(aiohttp.ClientError):
    """A venue answered a credentialed request with a redirect: never followed."""


async def refuse_redirects(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """Client middleware: a 3xx answer is an error, so credentials (headers, a key in the
    URL) are never sent on to the host a redirect names, and its answer never trusted."""
    response = await handler(request)
    if 300 <= response.status < 400:
        status = response.status
        response.release()
        raise RedirectRefused(f"{request.method} answered with a redirect (HTTP {status})")
    return response


def http_session() -> aiohttp.ClientSession:
    """The client session shared by every upstream socket and REST request of a process."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(total=None, connect=15, sock_connect=15),
        middlewares=(refuse_redirects,),  # credentials never follow a redirect
    )


async def open_socket(
    http: aiohttp.ClientSession, request: HttpRequest, options: SocketOptions
) -> aiohttp.ClientWebSocketResponse:
    """Upgrade to a WebSocket for ``request`` (its URL and headers may carry secrets)."""
    return await http.ws_connect(
        request.url,
        headers=dict(request.headers),
        heartbeat=options.heartbeat,
        # the transport accepts up to 8x the cap so an oversize frame can be rejected
        # whole and counted while the connection carries on (SPEC §14); only a frame
        # beyond that costs the connection
        max_msg_size=8 * MAX_FRAME_BYTES,
        autoping=True,
        # no receive timeout: liveness is the heartbeat's ping/pong deadline (a missing
        # pong closes the socket), never message silence
        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
    )


async def close_socket(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close ``ws`` if it is open, giving up after a short while; never raises."""
    if not ws.closed:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), _CLOSE_TIMEOUT_S)


def data_frame_ready(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """True if the socket's reader already holds a text or binary message, so the next
    ``receive()`` returns it without waiting (frames read together form one batch).

    aiohttp keeps read messages in its reader's queue (``_reader._buffer``, public in its
    compiled reader and its pure-Python one alike). Only a data message counts: a pong
    is consumed inside ``receive()``, which would then wait for the next frame. A version
    without that queue reads as False, which only turns batching off
    (tests/unit/test_reconnect.py fails loudly if that happens).
    """
    buffer = getattr(getattr(ws, "_reader", None), "_buffer", None)
    if not buffer:
        return False
    head = buffer[0][0]  # (message, size)
    return head.type in _DATA_TYPES


def excerpt(raw: str | bytes) -> str:
    """The start of a rejected frame, secret-free, for its one log line."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    short = text[:_EXCERPT] + ("…" if len(text) > _EXCERPT else "")
    return SCRUBBER.scrub(short)
