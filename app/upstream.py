"""One supervised upstream WebSocket per account: connect, authenticate, seed, read, fold.

This is the connection loop every venue shares; venue specifics come from the pure
:class:`~app.venues.base.VenueSession` (URLs, auth, frame parsing). The loop:

* connects with a freshly signed request, sends the venue's opening messages, and seeds
  from REST where the stream gives no snapshot (with the fold's watermark);
* moves the account through ``connecting -> syncing -> live``; ``stale`` while down (the
  last balances stay, flagged stale, never zeroed); ``auth_failed`` with slow retries, but
  only on an explicit refusal (HTTP 401/403, an auth error frame), never for quiet drops,
  and a key that worked before gets one normal retry first;
* never follows a redirect on a credentialed request and caps REST bodies;
* logs every drop once, with its reason (close code, timeout, refusal...), secret-free;
* keeps liveness with protocol ping/pong (``heartbeat``) and a read timeout — never
  message silence, since balance feeds are quiet for hours;
* rejects a bad frame whole, counts it by reason, logs it once with a short secret-free
  excerpt, and carries on;
* reconnects with capped exponential backoff and full jitter, reset only after a
  connection stayed healthy for a while;
* waits on the shared :class:`~app.ratelimit.VenueLimiter` before every connection and
  every REST request, so no venue's documented limits are exceeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from app.domain import (
    AccountState,
    AccountStatus,
    BalanceSnapshot,
    BalanceUpdate,
    ControlReply,
    Event,
    MarketPrice,
    PriceUpdate,
    SequenceGap,
    Venue,
    VenueEvent,
)
from app.fold import AccountFold
from app.logs import SCRUBBER
from app.ratelimit import SocketSlot, VenueLimiter
from app.runtime import Runtime
from app.settings import AccountConfig
from app.store import decimal_str, utc_now_iso
from app.venues import make_session
from app.venues._wire import REDIRECT, SNAPSHOT_REJECTED
from app.venues.base import MAX_FRAME_BYTES, AuthRejected, ProtocolError, VenueSession

log = logging.getLogger(__name__)

_AUTH_STATUSES = {401, 403}
MAX_REST_BYTES = MAX_FRAME_BYTES
"""Largest REST snapshot body read; a larger one is rejected (``oversize``) unread."""
_EXCERPT = 120
_QUICK_CLOSE_S = 2.0
_QUICK_CLOSES_FOR_AUTH = 3


class Reconnect(Exception):
    """Leave the current connection and reconnect (``reason`` labels the metric).

    ``detail`` is the secret-free sentence the reconnect is logged with.
    """

    def __init__(self, reason: str, *, backoff: bool = True, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.backoff = backoff
        self.detail = detail


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


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """AWS-style full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


def excerpt(raw: str | bytes) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    short = text[:_EXCERPT] + ("…" if len(text) > _EXCERPT else "")
    return SCRUBBER.scrub(short)


class AccountRunner:
    """Owns the one upstream socket of one account for as long as the instance owns it."""

    def __init__(
        self,
        runtime: Runtime,
        account: AccountConfig,
        http: aiohttp.ClientSession,
        fold: AccountFold,
        owner: str,
        *,
        limiter: VenueLimiter,
    ) -> None:
        self.rt = runtime
        self.account = account
        self.http = http
        self.limiter = limiter
        self._slot: SocketSlot | None = None  # this account's socket slot at its venue host
        self.fold = fold
        self.owner = owner
        s = runtime.settings
        self.settings = s
        m = runtime.metrics
        a, v = account.id, account.venue
        self._m_connected = m.upstream_connected.labels(a, v)
        self._m_last = m.upstream_last_message.labels(a)
        self._m_frames: dict[str, Any] = {}
        self._m_fold = m.fold_seconds
        self.state = AccountState.CONNECTING
        self.reconnects = 0
        self.connected_since: str | None = None
        self.last_error = ""
        self.attempts = 0  # connection attempts made, for tests and metrics
        self.frames = 0  # frames read on the current connection
        self._fold_samples = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._resync = asyncio.Event()
        self._stopping = False
        self._logged_reasons: set[str] = set()
        self._rooms: set[str] = set()
        self._seed_error: Exception | None = None
        self._key_worked = False  # the credentials were accepted and data flowed
        self.on_state: Callable[[AccountRunner], None] | None = None

    # -- status ------------------------------------------------------------------------

    def status_doc(self) -> dict[str, Any]:
        return AccountStatus(
            self.account.id, self.account.venue, self.state, self.connected_since, None,
            self.reconnects, self.last_error or None, self.owner,
        ).doc()  # fmt: skip

    def set_state(self, state: AccountState, error: str | None = None) -> None:
        if error is not None:
            self.last_error = error
        if state is AccountState.LIVE:
            self._key_worked = True
        if state is self.state and error is None:
            return
        self.state = state
        m = self.rt.metrics
        for s in AccountState:
            m.upstream_state.labels(self.account.id, self.account.venue, str(s)).set(
                1 if s is state else 0
            )
        self.rt.writer.submit_status(self.account.id, self.status_doc())
        if self.on_state is not None:
            self.on_state(self)

    def _count(self, kind: str) -> None:
        child = self._m_frames.get(kind)
        if child is None:
            child = self._m_frames[kind] = self.rt.metrics.upstream_messages.labels(
                self.account.id, self.account.venue, kind
            )
        child.inc()

    def _error(self, reason: str, message: str, raw: str | bytes | None = None) -> None:
        self.rt.metrics.upstream_errors.labels(self.account.id, self.account.venue, reason).inc()
        if reason not in self._logged_reasons:  # once per reason per connection: no log floods
            self._logged_reasons.add(reason)
            log.warning(
                "%s: rejected frame (%s): %s%s",
                self.account.id,
                reason,
                SCRUBBER.scrub(message)[:200],
                f" | {excerpt(raw)}" if raw is not None else "",
            )

    def mark_disconnected(self) -> None:
        self._m_connected.set(0)

    def forget_metrics(self) -> None:
        """Drop this account's per-connection series (another instance owns it now)."""
        m = self.rt.metrics
        a, v = self.account.id, self.account.venue
        series: list[tuple[Any, tuple[str, ...]]] = [
            (m.upstream_connected, (a, v)),
            (m.upstream_last_message, (a,)),
        ]
        series += [(m.upstream_state, (a, v, str(s))) for s in AccountState]
        for gauge, labels in series:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    # -- control -----------------------------------------------------------------------

    def request_resync(self) -> None:
        self._resync.set()
        ws = self._ws
        if ws is not None and not ws.closed:
            asyncio.get_running_loop().create_task(ws.close(code=1000, message=b"resync"))

    async def stop(self) -> None:
        self._stopping = True
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"shutdown"), 2)

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        if not self.account.enabled:
            self.set_state(AccountState.DISABLED)
            return
        attempt = 0
        auth_failures = 0
        quick_closes = 0
        silent_close_may_be_auth = make_session(self.account).silent_close_may_be_auth
        self.set_state(AccountState.CONNECTING)
        if self.account.venue == Venue.SOLANATRACKER:
            await self._load_token_meta()
        while not self._stopping:
            started = time.monotonic()
            reason = "closed"
            detail = "closed"
            use_backoff = True
            self.frames = 0
            try:
                await self._connect_once()
            except Reconnect as exc:
                reason, use_backoff = exc.reason, exc.backoff
                detail = exc.detail or self.last_error or exc.reason
            except AuthRejected as exc:
                reason = "auth"
                detail = f"credentials refused: {exc}"
                self._error("auth", str(exc))
            except RedirectRefused as exc:
                reason = REDIRECT
                detail = self.last_error = str(exc)
                self._error(REDIRECT, str(exc))
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in _AUTH_STATUSES:
                    reason = "auth"
                    detail = f"upgrade refused with HTTP {exc.status}"
                    self._error("auth", detail)
                else:
                    reason = f"http_{exc.status}"
                    detail = self.last_error = f"upgrade refused with HTTP {exc.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = "connect" if self._ws is None else "network"
                self.last_error = SCRUBBER.scrub(f"{type(exc).__name__}: {exc}")[:200]
                detail = self.last_error
            finally:
                self._ws = None
                self._m_connected.set(0)
                if self._slot is not None:  # the socket is closed: its slot is free again
                    self._slot.release()
                    self._slot = None
            if self._stopping:
                break
            healthy_for = time.monotonic() - started
            frames = self.frames
            if frames or healthy_for >= self.settings.healthy_after:
                # a connection that carried frames or stayed up resets every counter
                quick_closes = 0
                auth_failures = 0
            if (
                reason in ("closed", "network")
                and silent_close_may_be_auth
                and not self._key_worked
                and frames == 0
                and healthy_for < _QUICK_CLOSE_S
            ):
                # a venue that always sends on connect and closes at once on a bad
                # signature (BitoPro, VENUES.md): only for a key that never worked here
                quick_closes += 1
                if quick_closes >= _QUICK_CLOSES_FOR_AUTH:
                    reason = "auth"
                    detail = "connection closed immediately, repeatedly"
                    self._error("auth", detail)
            self.reconnects += 1
            self.rt.metrics.upstream_reconnects.labels(
                self.account.id, self.account.venue, reason
            ).inc()
            if reason == "auth":
                auth_failures += 1
            if reason == "auth" and (auth_failures > 1 or not self._key_worked):
                # a key that worked before gets one normal retry first: one refusal may
                # be a venue hiccup, not revoked credentials
                slow = auth_failures if not self._key_worked else auth_failures - 1
                delay = min(self.settings.auth_retry_min * 2 ** (slow - 1), 3600.0)
                delay *= random.uniform(0.8, 1.0)
                self.set_state(AccountState.AUTH_FAILED, "credentials rejected by the venue")
            else:
                if reason != "auth":
                    auth_failures = 0
                if healthy_for >= self.settings.healthy_after:
                    attempt = 0
                delay = (
                    full_jitter(attempt, self.settings.backoff_initial, self.settings.backoff_max)
                    if use_backoff
                    else 0.0
                )
                attempt += 1
                if reason == "auth":
                    self.last_error = detail
                self.set_state(AccountState.STALE, self.last_error or reason)
            if self._resync.is_set():
                self._resync.clear()
                delay = 0.0
            log.log(
                logging.INFO if reason == "resync" else logging.WARNING,
                "%s: upstream connection ended (%s): %s; reconnecting in %.1f s",
                self.account.id,
                reason,
                SCRUBBER.scrub(detail)[:200],
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync.wait(), delay)
            self._resync.clear()

    async def _connect_once(self) -> None:
        """One connection from upgrade to close (always ends by raising)."""
        session = make_session(self.account)
        request = session.connect_request()
        # venue limits (VENUES.md): wait for a free socket slot and a connection attempt
        # within budget; the account stays connecting/stale meanwhile
        self._slot = await self.limiter.connect(self.account.venue, request.url)
        self.attempts += 1
        self._logged_reasons = set()
        log.info("%s: connecting to %s", self.account.id, request.log_url)
        ws = await self.http.ws_connect(
            request.url,
            headers=dict(request.headers),
            heartbeat=self.settings.heartbeat,
            # the transport accepts up to 8x the cap so an oversize frame can be rejected
            # whole and counted while the connection carries on (SPEC §14); only a frame
            # beyond that costs the connection
            max_msg_size=8 * MAX_FRAME_BYTES,
            autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        )
        self._ws = ws
        self._m_connected.set(1)
        self.connected_since = utc_now_iso()
        self._rooms = set()
        self.set_state(AccountState.SYNCING, "")
        log.info("%s: connected", self.account.id)
        seed_task: asyncio.Task[None] | None = None
        self._seed_error = None
        try:
            for message in session.opening_messages():
                await ws.send_str(message)
            self._rooms.update(_rooms_of(session.opening_messages()))
            if session.subscribed:
                seed_task = self._start_seed(session, ws)
            while True:
                # no per-call timeout: liveness is the heartbeat's ping/pong deadline (a
                # missing pong closes the socket), never message silence; arming a timer
                # for every frame would also cost ~15 % of the fold
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self.frames += 1
                    await self._handle_frame(session, msg.data, time.time())
                    if seed_task is None and session.subscribed:
                        seed_task = self._start_seed(session, ws)
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    if self._seed_error is not None:
                        raise self._seed_error
                    if self._resync.is_set():
                        raise Reconnect("resync", backoff=False, detail="resync requested")
                    raise Reconnect("closed", detail=_close_detail(ws))
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    if isinstance(msg.data, aiohttp.WebSocketError) and msg.data.code == 1009:
                        self._error("oversize", "frame over the transport limit")
                        raise Reconnect("oversize", detail="a frame over the transport limit")
                    if isinstance(msg.data, aiohttp.ServerTimeoutError):
                        raise Reconnect("read_timeout", detail="no pong within the heartbeat")
                    error = msg.data
                    raise Reconnect("network", detail=f"network error: {type(error).__name__}")
        except TimeoutError:
            raise Reconnect("read_timeout", detail="read timed out") from None
        finally:
            if seed_task is not None and not seed_task.done():
                seed_task.cancel()
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2)

    async def _handle_frame(self, session: VenueSession, raw: str | bytes, received: float) -> None:
        self._m_last.set(received)
        self.rt.writer.touch(self.account.id, self.account.venue, received)
        t0 = time.perf_counter()
        try:
            events, replies = session.on_frame(raw)
        except AuthRejected:
            self._count("auth_error")
            raise
        except ProtocolError as exc:
            self._count("rejected")
            self._error(exc.reason, str(exc), raw)
            if session.snapshot_rejected:
                # the frame that had to replace the account is gone: keep the last state
                # (stale, nothing deleted) and fetch a new snapshot by reconnecting
                self._error(SNAPSHOT_REJECTED, "the connection's snapshot frame was rejected")
                self.last_error = SCRUBBER.scrub(f"snapshot rejected ({exc.reason}): {exc}")[:200]
                raise Reconnect(SNAPSHOT_REJECTED) from None
            return
        for reply in replies:
            assert self._ws is not None
            await self._ws.send_str(reply)
        self._apply(session, events)
        self._fold_samples += 1
        if self._fold_samples & 7 == 0:  # one frame in eight: the distribution, cheaply
            self._m_fold.observe(time.perf_counter() - t0)
        if self.account.venue == Venue.SOLANATRACKER and events:
            await self._sync_rooms(session)
        elif events and session.prices_on_socket and session.subscribed:
            await self._sync_price_feeds(session)

    def _apply(self, session: VenueSession, events: list[Event]) -> None:
        fold = self.fold
        for event in events:
            if isinstance(event, BalanceUpdate):
                self._count("balance")
                fold.apply_update(event)
            elif isinstance(event, BalanceSnapshot):
                self._count("snapshot")
                fold.apply_snapshot(event)
                if session.stream_has_snapshot and self.state is not AccountState.LIVE:
                    self.set_state(AccountState.LIVE, "")
            elif isinstance(event, PriceUpdate):
                self._count("price")
                self._store_price(event)
                fold.apply_price(event)
            elif isinstance(event, VenueEvent):
                self._count(event.kind)
                self.rt.writer.submit_event(self.account.id, event.kind, event.data)
            elif isinstance(event, SequenceGap):
                self._count("control")
                self._error(
                    "sequence_gap", f"expected sequence {event.expected}, got {event.received}"
                )
                raise Reconnect("sequence_gap", backoff=False)
            elif isinstance(event, MarketPrice):
                self._count("ticker")
                self._deliver_price(event)
            elif isinstance(event, ControlReply):
                # an application heartbeat is counted as such, never as an error
                self._count("ping" if event.action == "ping" else "control")

    def _deliver_price(self, event: MarketPrice) -> None:
        # a price is never a reason to lose the account's socket or state
        try:
            self.rt.prices.record(event.price)
        except Exception as exc:
            self._error("price", f"price not recorded ({type(exc).__name__})")

    def _store_price(self, price: PriceUpdate) -> None:
        # merged with what is known: a field the update lacks never nulls a stored one
        usd = decimal_str(price.price_usd) if price.price_usd is not None else None
        self.rt.writer.submit_price(price.mint, self.fold.merged_meta(price, usd))

    async def _load_token_meta(self) -> None:
        """Learn the stored token metadata (``P:prices``) before the first connection, so
        a restart shows known symbols at once. Best effort: Redis may be down."""
        try:
            raw = await asyncio.wait_for(self.rt.redis.hgetall(self.rt.keys.prices), 2)
        except Exception as exc:  # a missing cache must not stop the account
            log.info("%s: token metadata not loaded (%s)", self.account.id, type(exc).__name__)
            return
        for mint, doc in raw.items():
            with contextlib.suppress(ValueError, TypeError):
                parsed = orjson.loads(doc)
                if isinstance(parsed, dict):
                    name = mint.decode() if isinstance(mint, bytes) else str(mint)
                    self.fold.load_meta(name, parsed)

    async def _sync_price_feeds(self, session: VenueSession) -> None:
        """Send what makes the socket carry prices for the held assets (sFOX tickers)."""
        if self._ws is None:
            return
        for message in session.price_messages(self.fold.held_assets()):
            await self._ws.send_str(message)

    async def _sync_rooms(self, session: VenueSession) -> None:
        """Join ``transaction:<mint>`` and the mint's price room for every held mint; leave
        rooms no wallet holds."""
        room_of = getattr(session, "transaction_room", None)
        price_room_of = getattr(session, "price_room", None)
        join = getattr(session, "join_message", None)
        leave = getattr(session, "leave_message", None)
        if room_of is None or join is None or leave is None or self._ws is None:
            return
        held = self.fold.held_assets()
        wanted = {room_of(mint) for mint in held}
        if price_room_of is not None:
            wanted |= {price_room_of(mint) for mint in held}
        current = {r for r in self._rooms if r.startswith(("transaction:", "price:"))}
        ws = self._ws
        for room in sorted(wanted - current):
            self._rooms.add(room)
            await ws.send_str(join(room))
        for room in sorted(current - wanted):
            self._rooms.discard(room)
            await ws.send_str(leave(room))

    def _start_seed(
        self, session: VenueSession, ws: aiohttp.ClientWebSocketResponse
    ) -> asyncio.Task[None]:
        """Seed from REST in the background; a failure closes the socket to reconnect."""

        async def seed() -> None:
            try:
                requests = session.rest_snapshot_requests()
                if requests:
                    await self._seed(session, requests)
                elif not session.stream_has_snapshot:
                    self.set_state(AccountState.LIVE, "")
            except asyncio.CancelledError:
                raise
            except AuthRejected as exc:
                self._seed_error = exc
                await ws.close()
            except Reconnect as exc:
                self._seed_error = exc
                await ws.close()
            except RedirectRefused as exc:
                self._error(REDIRECT, str(exc))
                self._seed_error = Reconnect("seed_failed", detail=str(exc))
                self.last_error = str(exc)
                await ws.close()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._error("rest", f"REST snapshot failed: {type(exc).__name__}")
                self._seed_error = Reconnect(
                    "seed_failed", detail=f"REST snapshot failed: {type(exc).__name__}"
                )
                await ws.close()

        return asyncio.get_running_loop().create_task(seed())

    async def _seed(self, session: VenueSession, requests: list[Any]) -> None:
        for request in requests:
            # venue REST limits (VENUES.md); waited before the watermark is taken, so the
            # seed's snapshot is never older than the ticket that guards it
            await self.limiter.request(self.account.venue, request.url)
            ticket = self.fold.begin_seed()
            try:
                async with self.http.request(
                    request.method,
                    request.url,
                    headers=dict(request.headers),
                    timeout=aiohttp.ClientTimeout(total=self.settings.read_timeout),
                    # credentials must never travel on to a host a redirect names
                    allow_redirects=False,
                ) as response:
                    if response.status in _AUTH_STATUSES:
                        raise AuthRejected(f"REST snapshot refused with HTTP {response.status}")
                    if 300 <= response.status < 400:
                        raise RedirectRefused(
                            f"REST snapshot answered with a redirect (HTTP {response.status})"
                        )
                    if response.status != 200:
                        self._error("rest", f"REST snapshot answered HTTP {response.status}")
                        raise Reconnect(
                            "seed_failed", detail=f"REST snapshot answered HTTP {response.status}"
                        )
                    body = await _read_capped(response, MAX_REST_BYTES)
                    if body is None:
                        self._error("oversize", f"REST snapshot over {MAX_REST_BYTES} bytes")
                        raise Reconnect("seed_failed", detail="REST snapshot too large")
                events = session.parse_rest_snapshot_for(request, body)
            except ProtocolError as exc:
                self.fold.cancel_seed(ticket)
                if isinstance(exc, AuthRejected):
                    raise
                self._error(exc.reason, f"REST snapshot: {exc}")
                raise Reconnect(
                    "seed_failed", detail=f"REST snapshot rejected ({exc.reason})"
                ) from None
            except BaseException:
                self.fold.cancel_seed(ticket)
                raise
            for event in events:
                if isinstance(event, BalanceSnapshot):
                    self.fold.finish_seed(ticket, event)
                elif isinstance(event, PriceUpdate):
                    self._store_price(event)
                    self.fold.apply_price(event)
            self.fold.cancel_seed(ticket)
            self._count("rest_snapshot")
        if self.account.venue == Venue.SOLANATRACKER:
            await self._sync_rooms(session)
        self.set_state(AccountState.LIVE, "")


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


def _close_detail(ws: aiohttp.ClientWebSocketResponse) -> str:
    """Why the venue closed: its close code, or an abrupt end of the connection."""
    code = ws.close_code
    if code is None or code == 1006:
        return "connection closed without a close frame (code 1006)"
    return f"closed by the venue with code {code}"


def _rooms_of(messages: Any) -> set[str]:
    rooms: set[str] = set()
    for message in messages:
        with contextlib.suppress(Exception):
            doc = orjson.loads(message)
            if isinstance(doc, dict) and doc.get("type") == "join":
                rooms.add(str(doc.get("room")))
    return rooms
