"""One supervised upstream WebSocket per account: connect, authenticate, seed, read, fold.

This is the connection loop every venue shares; venue specifics come from the pure
:class:`~app.venues.base.VenueSession` (URLs, auth, frame parsing, REST seed, what the
socket follows for the held assets), and the loop names no venue. Everything it learns
goes to the account's :class:`~app.fold.AccountFold` (balances, prices, venue events, its
status, receive times); the fold is its only way to the writer and the price recorder.
Its collaborators come through its constructor (the supervisor builds it). The loop:

* connects with a freshly signed request, sends the venue's opening messages, and seeds
  from REST where the stream gives no snapshot (:mod:`app.seed`, with the fold's
  watermark);
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
  connection stayed healthy for a while (:mod:`app.reconnect`, shared with the price
  sockets);
* waits on the shared :class:`~app.ratelimit.VenueLimiter` before every connection and
  every REST request, so no venue's documented limits are exceeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from app.accounts import AccountConfig
from app.domain import AccountState, AccountStatus
from app.fold import AccountFold
from app.frames import FrameReader
from app.logs import SCRUBBER
from app.metrics import Metrics
from app.ratelimit import SocketSlot, VenueLimiter
from app.reconnect import (
    AccountRetry,
    Reconnect,
    RedirectRefused,
    SocketOptions,
    close_socket,
    data_frame_ready,
    excerpt,
    open_socket,
)
from app.reconnect import full_jitter as full_jitter  # where tests have always found it
from app.seed import AUTH_STATUSES, SeedFailed, seed_from_rest
from app.settings import Settings
from app.store import utc_now_iso
from app.venues import make_session
from app.venues._wire import REDIRECT, SNAPSHOT_REJECTED
from app.venues.base import AuthRejected, VenueSession

log = logging.getLogger(__name__)

_DATA = (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)
_MAX_BATCH = 1024
"""Frames folded in one loop turn at most, so one busy socket never starves the rest."""

StoredTokenMeta = Callable[[], Awaitable[Mapping[Any, Any]]]
"""Reads the stored token metadata (``P:prices``: mint -> JSON doc) once per runner."""


class AccountRunner:
    """Owns the one upstream socket of one account for as long as the instance owns it.

    ``owner`` is the instance id its status names; ``stored_token_meta`` is read once
    before the first connection of a venue whose assets are token addresses.
    """

    def __init__(
        self,
        account: AccountConfig,
        fold: AccountFold,
        *,
        http: aiohttp.ClientSession,
        limiter: VenueLimiter,
        settings: Settings,
        metrics: Metrics,
        owner: str,
        stored_token_meta: StoredTokenMeta | None = None,
    ) -> None:
        self.account = account
        self.http = http
        self.limiter = limiter
        self._slot: SocketSlot | None = None  # this account's socket slot at its venue host
        self.fold = fold
        self.owner = owner
        self.settings = settings
        self.options = SocketOptions.of(settings)
        self.metrics = m = metrics
        self._stored_token_meta = stored_token_meta
        a, v = account.id, account.venue
        self._m_connected = m.upstream_connected.labels(a, v)
        self._m_last = m.upstream_last_message.labels(a)
        self._m_frames: dict[str, Any] = {}
        self._m_state: list[tuple[AccountState, Any]] | None = None
        self._m_fold = m.fold_seconds
        self.state = AccountState.CONNECTING
        self.reconnects = 0
        self.connected_since: str | None = None
        self.last_error = ""
        self.attempts = 0  # connection attempts made, for tests and metrics
        self.frames = 0  # frames read on the current connection
        self._batches = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._resync = asyncio.Event()
        self._stopping = False
        self._logged_reasons: set[str] = set()
        self._followed = -1  # the fold's held_version the socket last followed
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
        gauges = self._m_state
        if gauges is None:  # looked up once: each transition sets every state's series
            a, v = self.account.id, self.account.venue
            gauges = [(s, self.metrics.upstream_state.labels(a, v, str(s))) for s in AccountState]
            self._m_state = gauges
        for s, gauge in gauges:
            gauge.set(1 if s is state else 0)
        self.fold.report_status(self.status_doc())
        if self.on_state is not None:
            self.on_state(self)

    def _count(self, kind: str, n: int = 1) -> None:
        child = self._m_frames.get(kind)
        if child is None:
            child = self._m_frames[kind] = self.metrics.upstream_messages.labels(
                self.account.id, self.account.venue, kind
            )
        child.inc(n)

    def _error(self, reason: str, message: str, raw: str | bytes | None = None) -> None:
        self.metrics.upstream_errors.labels(self.account.id, self.account.venue, reason).inc()
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
        m = self.metrics
        a, v = self.account.id, self.account.venue
        series: list[tuple[Any, tuple[str, ...]]] = [
            (m.upstream_connected, (a, v)),
            (m.upstream_last_message, (a,)),
        ]
        series += [(m.upstream_state, (a, v, str(s))) for s in AccountState]
        for gauge, labels in series:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        self._m_state = None  # a later transition creates the series again

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
        first = make_session(self.account)
        retry = AccountRetry(
            self.options,
            auth_retry_min=self.settings.auth_retry_min,
            silent_close_may_be_auth=first.silent_close_may_be_auth,
        )
        self.set_state(AccountState.CONNECTING)
        if first.assets_are_token_addresses:
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
                if exc.status in AUTH_STATUSES:
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
            verdict = retry.judge(
                reason,
                detail,
                backoff=use_backoff,
                frames=self.frames,
                healthy_for=time.monotonic() - started,
                key_worked=self._key_worked,
            )
            if verdict.reason != reason:  # quick closes judged a refusal
                self._error("auth", verdict.detail)
            reason, detail, delay = verdict.reason, verdict.detail, verdict.delay
            self.reconnects += 1
            self.metrics.upstream_reconnects.labels(
                self.account.id, self.account.venue, reason
            ).inc()
            if verdict.auth_failed:
                self.set_state(AccountState.AUTH_FAILED, "credentials rejected by the venue")
            else:
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
        # venue limits (VENUES.md): wait for a free socket slot and a connection attempt
        # within budget; the account stays connecting/stale meanwhile
        host_url = session.connect_request().url
        self._slot = await self.limiter.connect(self.account.venue, host_url)
        self.attempts += 1
        self._logged_reasons = set()
        async with self.limiter.handshake():
            # signed only now, with the handshake slot held: a nonce signed before either
            # wait may be outside the venue's time window, or below a nonce the key used
            # meanwhile, by the time the socket opens (a fresh nonce per connect, VENUES.md)
            request = session.connect_request()
            log.info("%s: connecting to %s", self.account.id, request.log_url)
            ws = await open_socket(self.http, request, self.options)
        self._ws = ws
        self._m_connected.set(1)
        self.connected_since = utc_now_iso()
        self._followed = -1  # a new session follows nothing yet
        self.set_state(AccountState.SYNCING, "")
        log.info("%s: connected", self.account.id)
        seed_task: asyncio.Task[None] | None = None
        self._seed_error = None
        reader = FrameReader(
            session,
            self.fold,
            count=self._count,
            report=self._error,
            send=ws.send_str,
            on_stream_snapshot=lambda: self._stream_snapshot(session),
            on_snapshot_rejected=self._snapshot_rejected,
        )
        try:
            for message in session.opening_messages():
                await ws.send_str(message)
            if session.subscribed:
                seed_task = self._start_seed(session, ws)
            while True:
                # no per-call timeout: liveness is the heartbeat's ping/pong deadline (a
                # missing pong closes the socket), never message silence; arming a timer
                # for every frame would also cost ~15 % of the fold
                msg: aiohttp.WSMessage | None = await ws.receive()
                if msg is not None and msg.type in _DATA:
                    # every frame the reader already holds is one batch: one receive time,
                    # one set of metric updates, one hand-over to the writer
                    batch = [msg.data]
                    msg = None
                    while data_frame_ready(ws) and len(batch) < _MAX_BATCH:
                        more = await ws.receive()  # buffered: returns without waiting
                        if more.type not in _DATA:
                            msg = more  # handled below, after the batch
                            break
                        batch.append(more.data)
                    self.frames += len(batch)
                    await self._handle_batch(reader, session, batch)
                    if seed_task is None and session.subscribed:
                        seed_task = self._start_seed(session, ws)
                if msg is None:
                    continue
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    if self._seed_error is not None:
                        raise self._seed_error
                    if self._resync.is_set():
                        raise Reconnect("resync", backoff=False, detail="resync requested")
                    raise close_reason(ws)
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
            await close_socket(ws)

    async def _handle_batch(
        self, reader: FrameReader, session: VenueSession, raws: list[str | bytes]
    ) -> None:
        """Fold frames read together (one receive time, one set of metric updates)."""
        received = time.time()
        self._m_last.set(received)
        self.fold.touch(received)
        self._batches += 1
        if self._batches & 7:  # one batch in eight is timed: the distribution, cheaply
            had_events = await reader.read_batch(raws)
        else:
            t0 = time.perf_counter()
            had_events = await reader.read_batch(raws)
            self._m_fold.observe((time.perf_counter() - t0) / len(raws))
        if had_events:
            await self._follow(session)

    def _stream_snapshot(self, session: VenueSession) -> None:
        if session.stream_has_snapshot and self.state is not AccountState.LIVE:
            self.set_state(AccountState.LIVE, "")

    def _snapshot_rejected(self, message: str) -> None:
        self._error(SNAPSHOT_REJECTED, "the connection's snapshot frame was rejected")
        self.last_error = SCRUBBER.scrub(message)[:200]

    async def _load_token_meta(self) -> None:
        """Learn the stored token metadata (``P:prices``) before the first connection, so
        a restart shows known symbols at once. Best effort: Redis may be down."""
        if self._stored_token_meta is None:
            return
        try:
            raw = await asyncio.wait_for(self._stored_token_meta(), 2)
        except Exception as exc:  # a missing cache must not stop the account
            log.info("%s: token metadata not loaded (%s)", self.account.id, type(exc).__name__)
            return
        self.fold.load_stored_meta(raw)

    async def _follow(self, session: VenueSession) -> None:
        """Send what makes the socket follow the held assets (tickers, rooms), when they
        may have changed since it last did; nothing before the stream is subscribed."""
        version = self.fold.held_version
        if version == self._followed or not session.subscribed or self._ws is None:
            return
        self._followed = version
        for message in session.follow_holdings(self.fold.held_assets()):
            await self._ws.send_str(message)

    def _start_seed(
        self, session: VenueSession, ws: aiohttp.ClientWebSocketResponse
    ) -> asyncio.Task[None]:
        """Seed from REST in the background; a failure closes the socket to reconnect."""

        async def seed() -> None:
            try:
                requests = session.seed_requests()
                if requests:
                    await seed_from_rest(
                        session,
                        requests,
                        http=self.http,
                        limiter=self.limiter,
                        fold=self.fold,
                        timeout=self.settings.read_timeout,
                        on_error=self._error,
                        on_snapshot=lambda: self._count("rest_snapshot"),
                    )
                    await self._follow(session)
                    self.set_state(AccountState.LIVE, "")
                elif not session.stream_has_snapshot:
                    self.set_state(AccountState.LIVE, "")
            except asyncio.CancelledError:
                raise
            except AuthRejected as exc:
                self._seed_error = exc
                await ws.close()
            except SeedFailed as exc:
                self._seed_error = Reconnect("seed_failed", detail=exc.detail)
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


def close_reason(ws: aiohttp.ClientWebSocketResponse) -> Reconnect:
    """Why a socket that ``receive()`` returned as closed ended.

    aiohttp closes the socket itself when the heartbeat's pong is overdue. If its timer
    runs while no ``receive()`` waits (a busy loop runs timers before the reader
    resumes), ``receive()`` then returns only a closed socket: that is a missed pong
    (``read_timeout``), not the venue closing the connection.
    """
    if isinstance(ws.exception(), aiohttp.ServerTimeoutError):
        return Reconnect("read_timeout", detail="no pong within the heartbeat")
    return Reconnect("closed", detail=_close_detail(ws))


def _close_detail(ws: aiohttp.ClientWebSocketResponse) -> str:
    """Why the venue closed: its close code, or an abrupt end of the connection."""
    code = ws.close_code
    if code is None or code == 1006:
        return "connection closed without a close frame (code 1006)"
    return f"closed by the venue with code {code}"
