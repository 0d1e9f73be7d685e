"""REST seeding of one connection: the venue's balance snapshot under the fold's watermark.

Streams that send no snapshot (sFOX, DeltaDeFi, SolanaTracker with a data key) are seeded
on every (re)connect from the requests their :class:`~app.venues.base.VenueSession` names
(:meth:`~app.venues.base.VenueSession.seed_requests`), while the socket already reads.
:func:`seed_from_rest` sends each request (after the venue's REST limit), reads a capped
body, has the session read it (:meth:`~app.venues.base.VenueSession.read_seed`) and
applies the snapshots through :meth:`~app.fold.AccountFold.finish_seed`, so a REST answer
never undoes a stream update that arrived after the request was sent.

It never follows a redirect on these credentialed requests and raises, for the
connection loop (:mod:`app.upstream`) to decide what a failure means::

    AuthRejected      HTTP 401/403 or a refusal in the body: the credentials
    RedirectRefused   a 3xx answer (never followed)
    SeedFailed        any other answer or body that cannot seed; ``detail`` says why
    aiohttp.ClientError, OSError, TimeoutError   the request itself failed
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import aiohttp

from app.domain import BalanceSnapshot, PriceUpdate
from app.fold import AccountFold
from app.ratelimit import VenueLimiter
from app.reconnect import RedirectRefused
from app.venues.base import MAX_FRAME_BYTES, AuthRejected, HttpRequest, ProtocolError, VenueSession

MAX_REST_BYTES = MAX_FRAME_BYTES
"""Largest REST snapshot body read; a larger one is rejected (``oversize``) unread."""
AUTH_STATUSES = frozenset({401, 403})

ErrorReport = Callable[[str, str], None]
"""``(reason, secret-free message)``: counts and logs a rejected answer."""


class SeedFailed(Exception):
    """The REST snapshot could not seed the connection (already counted and logged)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


async def seed_from_rest(
    session: VenueSession,
    requests: Sequence[HttpRequest],
    *,
    http: aiohttp.ClientSession,
    limiter: VenueLimiter,
    fold: AccountFold,
    timeout: float,
    on_error: ErrorReport,
    on_snapshot: Callable[[], None],
) -> None:
    """Send ``requests`` in order and apply each answer (``on_snapshot`` after each)."""
    for request in requests:
        # venue REST limits (VENUES.md); waited before the watermark is taken, so the
        # seed's snapshot is never older than the ticket that guards it
        await limiter.request(session.venue, request.url)
        ticket = fold.begin_seed()
        try:
            body = await _fetch(http, request, timeout, on_error)
            events = session.read_seed(request, body)
        except ProtocolError as exc:
            fold.cancel_seed(ticket)
            if isinstance(exc, AuthRejected):
                raise
            on_error(exc.reason, f"REST snapshot: {exc}")
            raise SeedFailed(f"REST snapshot rejected ({exc.reason})") from None
        except BaseException:
            fold.cancel_seed(ticket)
            raise
        for event in events:
            if isinstance(event, BalanceSnapshot):
                fold.finish_seed(ticket, event)
            elif isinstance(event, PriceUpdate):
                fold.apply_price(event)
        fold.cancel_seed(ticket)
        on_snapshot()


async def _fetch(
    http: aiohttp.ClientSession, request: HttpRequest, timeout: float, on_error: ErrorReport
) -> bytes:
    async with http.request(
        request.method,
        request.url,
        headers=dict(request.headers),
        timeout=aiohttp.ClientTimeout(total=timeout),
        # credentials must never travel on to a host a redirect names
        allow_redirects=False,
    ) as response:
        status = response.status
        if status in AUTH_STATUSES:
            raise AuthRejected(f"REST snapshot refused with HTTP {status}")
        if 300 <= status < 400:
            raise RedirectRefused(f"REST snapshot answered with a redirect (HTTP {status})")
        if status != 200:
            on_error("rest", f"REST snapshot answered HTTP {status}")
            raise SeedFailed(f"REST snapshot answered HTTP {status}")
        body = await _read_capped(response, MAX_REST_BYTES)
        if body is None:
            on_error("oversize", f"REST snapshot over {MAX_REST_BYTES} bytes")
            raise SeedFailed("REST snapshot too large")
        return body


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The body, or None once it runs past ``cap`` bytes (the rest is never read)."""
    length = response.content_length
    if length is not None and length > cap:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
