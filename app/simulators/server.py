"""The machinery every venue simulator shares: one aiohttp server, its connections, faults.

A venue module (:mod:`.bitopro`, :mod:`.sfox`, :mod:`.deltadefi`, :mod:`.solanatracker`)
subclasses :class:`VenueSimulator` and supplies the protocol: how a connection
authenticates, what it is sent, what the REST snapshot answers. This module owns what is
the same everywhere:

- the server lifecycle (``start``/``stop``) and the ``/_sim`` control API (:mod:`.control`);
- the registry of open connections per credential, with open/total/refused counts;
- keepalive: the server pings every ``ping_interval`` seconds and drops a client that has
  not answered within ``pong_timeout``. aiohttp's built-in heartbeat is not used because
  a stalled connection must stop pinging *and* stop answering pings, and BitoPro's pong
  window (5 s after a 20 s ping) is not the heartbeat's fixed half-interval;
- faults: drop (abrupt TCP close), stall (silence without closing), refuse auth;
- the venue's price stream (:attr:`VenueSimulator.price_feed`, see :mod:`.market`);
- bursts: frames are serialised and framed before the clock starts, then written to the
  transport in large chunks with flow control, which is several times faster than one
  ``send_frame`` call (and one syscall) per frame.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from aiohttp import WSMsgType, web

from app.simulators.connection import CLIENT_MAX_MSG, Connection
from app.simulators.control import add_control_routes
from app.simulators.types import (
    BurstResult,
    ConnectionCounts,
    JsonObject,
    SimulatorError,
    TruthRow,
    UnknownAccount,
)
from app.simulators.wire import dumps

if TYPE_CHECKING:
    from app.simulators.market import PriceFeed

_HIGH_WATER = 1 << 20


@dataclass
class _Stats:
    total: int = 0
    refused: int = 0


@dataclass
class BurstPlan:
    """A prepared burst: who receives it, the framed chunks each one gets, the new truth.

    ``chunks_for`` is called with the connection's send lock held, so per-connection
    numbering (sFOX sequences) cannot interleave with other messages.
    """

    targets: list[Connection]
    frames: int
    chunks_for: Callable[[Connection], list[bytes]]
    commit: Callable[[], None]


class AccountBase(abc.ABC):
    """One simulated account, identified by one credential."""

    @property
    @abc.abstractmethod
    def key(self) -> str:
        """The credential that identifies the account (the connection-count key)."""

    @abc.abstractmethod
    def credentials(self) -> dict[str, Any]:
        """The account fields a service configures to reach this account."""


A = TypeVar("A", bound=AccountBase)
B = TypeVar("B")


def parse_balances(
    values: Mapping[str, object],
    current: Mapping[str, B],
    parse: Callable[[str, object, B | None], B],
    code: Callable[[str], str],
) -> dict[str, B]:
    """Read scripted balances keyed by the venue's own currency code (``code`` normalises
    the case the venue uses); ``current`` supplies the fields a change leaves out."""
    out: dict[str, B] = {}
    for name, value in values.items():
        key = code(name)
        out[key] = parse(key, value, current.get(key))
    return out


class VenueSimulator(abc.ABC, Generic[A]):
    """An aiohttp server speaking one venue's protocol, holding accounts as the truth."""

    venue: ClassVar[str]
    ws_path: ClassVar[str]
    rest_path: ClassVar[str]
    malformed_kinds: ClassVar[tuple[str, ...]] = (
        "bad_json",
        "wrong_types",
        "negative",
        "non_numeric",
        "unknown_event",
        "oversize",
        "half_valid",
    )
    default_ping_interval: ClassVar[float] = 20.0
    default_pong_timeout: ClassVar[float] = 10.0

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ping_interval: float | None = None,
        pong_timeout: float | None = None,
        oversize_bytes: int = 2 * 1024 * 1024,
        price_interval: float = 3.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.ping_interval = self.default_ping_interval if ping_interval is None else ping_interval
        self.pong_timeout = self.default_pong_timeout if pong_timeout is None else pong_timeout
        self.oversize_bytes = oversize_bytes
        self._accounts: dict[str, A] = {}
        self._refused: set[str] = set()
        self._conns: dict[str, set[Connection]] = {}
        self._every: set[Connection] = set()
        self._stats: dict[str, _Stats] = {}
        self._runner: web.AppRunner | None = None
        self.price_interval = price_interval
        self._price_feed: PriceFeed | None = None

    # ------------------------------------------------------------------ lifecycle

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        add_control_routes(app.router, self)
        self.add_venue_routes(app.router)
        self.price_feed.add_routes(app.router)
        return app

    @property
    def price_feed(self) -> PriceFeed:
        """The venue's price stream (:mod:`.market`): set, stall, walk and break prices."""
        if self._price_feed is None:
            from app.simulators.market import make_price_feed  # the feeds build on this module

            self._price_feed = make_price_feed(self, self.price_interval)
        return self._price_feed

    async def start(self) -> None:
        if self._runner is not None:
            return
        # No access log: DeltaDeFi and SolanaTracker carry their keys in the URL.
        runner = web.AppRunner(
            self.build_app(), handle_signals=False, shutdown_timeout=2.0, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(
            runner, self.host, self._requested_port, reuse_address=True, backlog=4096
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        sockets = [s for s in runner.addresses if isinstance(s, tuple)]
        self._port = int(sockets[0][1]) if sockets else self._requested_port
        self._runner = runner
        self.price_feed.start()

    async def stop(self) -> None:
        """Close every connection with 1001 (going away), then the server."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self.price_feed.close()
        conns = list(self._every)
        if conns:
            await asyncio.gather(
                *(self.close_connection(c, 1001, b"server shutdown") for c in conns)
            )
        await runner.cleanup()

    async def __aenter__(self) -> VenueSimulator[A]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise SimulatorError("the simulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """What an account's ``rest_url`` is set to (the service appends the REST path)."""
        return self.base_url

    @property
    def ws_url(self) -> str:
        """What an account's ``ws_url`` is set to (without what the service appends)."""
        return "ws" + self.base_url.removeprefix("http") + self.ws_path

    # ------------------------------------------------------------------ venue hooks

    @abc.abstractmethod
    def add_venue_routes(self, router: web.UrlDispatcher) -> None:
        """Register the venue's WebSocket, REST and venue-specific control routes."""

    @abc.abstractmethod
    def add_account_json(self, body: JsonObject) -> str:
        """Add an account from a control-API body; returns its credential key."""

    @abc.abstractmethod
    def set_balances(self, key: str, balances: JsonObject) -> None:
        """Replace the account's balances (the truth) without sending anything."""

    @abc.abstractmethod
    async def push(self, key: str, changes: JsonObject) -> int:
        """Apply changes to the truth and send them as the venue would; frames sent."""

    @abc.abstractmethod
    async def remove_asset(self, key: str, asset: str) -> bool:
        """Forget one currency (no frame: it is absent from the next snapshot)."""

    @abc.abstractmethod
    def truth(self, key: str) -> list[TruthRow]:
        """The account's balances in the unified shape, sorted by (wallet, asset)."""

    @abc.abstractmethod
    def native_truth(self, key: str) -> dict[str, Any]:
        """The account's balances in the venue's own fields (amounts as strings)."""

    @abc.abstractmethod
    def prepare_burst(self, key: str, count: int, asset: str | None) -> BurstPlan:
        """Serialise ``count`` one-asset change frames for the account's connections."""

    @abc.abstractmethod
    def malformed_payload(self, conn: Connection, key: str, kind: str) -> bytes | None:
        """One bad frame of ``kind`` for ``conn``; ``None`` when not applicable."""

    def malformed_targets(self, key: str) -> list[Connection]:
        return self.push_targets(key)

    def push_targets(self, key: str) -> list[Connection]:
        """Connections that receive the account's balance changes."""
        return [c for c in self._conns.get(key, ()) if c.ready]

    async def on_open(self, conn: Connection) -> None:
        """Called once the upgrade is done (BitoPro sends its snapshot here)."""

    async def on_text(self, conn: Connection, text: str) -> None:
        """A text frame from the client (sFOX control messages, SolanaTracker rooms)."""

    def on_close(self, conn: Connection) -> None:
        """Called when a connection ends, before it leaves the registry."""

    # ------------------------------------------------------------------ accounts

    def account(self, key: str) -> A:
        try:
            return self._accounts[key]
        except KeyError:
            raise UnknownAccount(f"{self.venue}: no such account") from None

    def account_keys(self) -> list[str]:
        return list(self._accounts)

    def credentials(self, key: str) -> dict[str, Any]:
        return self.account(key).credentials()

    def _add(self, account: A) -> str:
        if account.key in self._accounts:
            raise SimulatorError(f"{self.venue}: an account with this key exists")
        self._accounts[account.key] = account
        self._stats.setdefault(account.key, _Stats())
        return account.key

    def remove_account(self, key: str) -> None:
        """Forget the account and drop its connections."""
        self.account(key)
        self.drop(key)
        del self._accounts[key]
        self._refused.discard(key)

    def is_accepted(self, key: str | None) -> bool:
        """Whether a credential is known and not scripted to be refused."""
        return key is not None and key in self._accounts and key not in self._refused

    def note_refused(self, key: str | None) -> None:
        if key is not None and key in self._accounts:
            self._stats.setdefault(key, _Stats()).refused += 1

    # ------------------------------------------------------------------ connections

    async def serve_websocket(self, request: web.Request, key: str | None) -> web.WebSocketResponse:
        """Upgrade an already authenticated request (``key`` None: authenticates later)."""
        ws = web.WebSocketResponse(
            autoping=False, compress=False, max_msg_size=CLIENT_MAX_MSG, timeout=2.0
        )
        await ws.prepare(request)
        conn = Connection(request, ws)
        self._every.add(conn)
        if key is not None:
            self.register(conn, key)
        if self.ping_interval > 0:
            conn.tasks.append(asyncio.create_task(self.keepalive(conn)))
        try:
            await self.on_open(conn)
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    if not conn.stalled:
                        await self.on_text(conn, msg.data)
                elif msg.type is WSMsgType.PING:
                    if not conn.stalled:
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await ws.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    conn.pong.set()
                elif msg.type is WSMsgType.ERROR:
                    break
        except ConnectionError:
            pass
        finally:
            for task in conn.tasks:
                task.cancel()
            self.on_close(conn)
            self._every.discard(conn)
            if conn.key is not None:
                self._conns.get(conn.key, set()).discard(conn)
        return ws

    def register(self, conn: Connection, key: str) -> None:
        """Count ``conn`` as an open connection of credential ``key``."""
        conn.key = key
        self._conns.setdefault(key, set()).add(conn)
        self._stats.setdefault(key, _Stats()).total += 1

    @property
    def every_connection(self) -> set[Connection]:
        """Every open connection (account and price-only sockets alike)."""
        return self._every

    async def keepalive(self, conn: Connection) -> None:
        """Ping ``conn`` every ``ping_interval``; abort it when no pong comes in time."""
        try:
            while not conn.closed:
                await asyncio.sleep(self.ping_interval)
                if conn.stalled or conn.closed:
                    continue
                conn.pong.clear()
                await conn.ws.ping()
                try:
                    await asyncio.wait_for(conn.pong.wait(), self.pong_timeout)
                except TimeoutError:
                    conn.abort()
                    return
        except (ConnectionError, RuntimeError):
            return

    async def close_connection(self, conn: Connection, code: int, message: bytes) -> None:
        """Close with a close frame, waiting at most 1 s for the client, then abort."""
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            await asyncio.wait_for(conn.ws.close(code=code, message=message), 1.0)
        conn.abort()

    async def send(self, conn: Connection, payload: bytes) -> bool:
        """Send one text frame unless the connection is stalled or gone."""
        if conn.stalled or conn.closed:
            return False
        async with conn.lock:
            try:
                await conn.ws.send_frame(payload, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                return False
        return True

    async def send_each(self, conns: Iterable[Connection], payload: bytes) -> int:
        sent = 0
        for conn in conns:
            sent += await self.send(conn, payload)
        return sent

    async def send_json(self, conn: Connection, message: Any) -> bool:
        return await self.send(conn, dumps(message))

    def connections(self, key: str) -> list[Connection]:
        return list(self._conns.get(key, ()))

    def connection_counts(self, key: str) -> ConnectionCounts:
        stats = self._stats.get(key, _Stats())
        return ConnectionCounts(len(self._conns.get(key, ())), stats.total, stats.refused)

    def all_connection_counts(self) -> dict[str, ConnectionCounts]:
        keys = set(self._accounts) | set(self._stats)
        return {key: self.connection_counts(key) for key in sorted(keys)}

    async def wait_for_connections(
        self, key: str, count: int = 1, *, timeout: float = 5.0, ready: bool = True
    ) -> None:
        """Wait until ``key`` has ``count`` open connections (``ready``: fully set up).

        Ready means: BitoPro snapshot sent, sFOX subscribed, SolanaTracker joined a room,
        DeltaDeFi connected.
        """
        deadline = time.monotonic() + timeout
        while True:
            conns = self._conns.get(key, set())
            if sum(1 for c in conns if c.ready or not ready) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.venue}: {count} connection(s) not open in {timeout}s")
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------------ faults

    def refuse_auth(self, key: str, refuse: bool = True) -> None:
        """Refuse (or accept again) this credential on new connections and REST calls."""
        self.account(key)
        if refuse:
            self._refused.add(key)
        else:
            self._refused.discard(key)

    def drop(self, key: str) -> int:
        """Abruptly close every connection of ``key`` (no close frame); how many."""
        conns = list(self._conns.get(key, ()))
        for conn in conns:
            conn.abort()
        return len(conns)

    def stall(self, key: str, stalled: bool = True) -> int:
        """Stop (or resume) sending and answering pings on ``key``'s open connections.

        A stalled connection stays open; frames that would have been sent are lost, as on
        a link that silently died. New connections of the credential are not stalled.
        """
        conns = list(self._conns.get(key, ()))
        for conn in conns:
            conn.stalled = stalled
        return len(conns)

    async def send_malformed(self, key: str, kind: str) -> int:
        """Send one bad frame of ``kind`` to each of the account's connections.

        The truth does not change: a service that rejects the frame whole stays right.
        """
        self.account(key)
        if kind not in self.malformed_kinds:
            known = ", ".join(self.malformed_kinds)
            raise SimulatorError(f"{self.venue}: unknown malformed kind (one of {known})")
        sent = 0
        for conn in self.malformed_targets(key):
            if conn.stalled or conn.closed:
                continue
            async with conn.lock:
                payload = self.malformed_payload(conn, key, kind)
                if payload is None:
                    continue
                try:
                    await conn.ws.send_frame(payload, WSMsgType.TEXT)
                except (ConnectionError, RuntimeError):
                    continue
            sent += 1
        return sent

    # ------------------------------------------------------------------ bursts

    async def burst(self, key: str, count: int, asset: str | None = None) -> BurstResult:
        """Send ``count`` one-asset change frames to each connection, as fast as possible.

        The values count up in the venue's smallest unit; the last one becomes the truth.
        """
        if count < 1:
            raise SimulatorError("burst: count must be at least 1")
        started = time.perf_counter()
        plan = self.prepare_burst(key, count, asset)
        plan.commit()
        prepare = time.perf_counter() - started
        frames = 0
        seconds = 0.0
        conns = 0
        for conn in plan.targets:
            if conn.stalled or conn.closed:
                continue
            async with conn.lock:
                t0 = time.perf_counter()
                chunks = plan.chunks_for(conn)
                t1 = time.perf_counter()
                written = await self._write_chunks(conn, chunks)
                seconds += time.perf_counter() - t1
                prepare += t1 - t0
            if written:
                frames += plan.frames
                conns += 1
        return BurstResult(frames, conns, seconds, prepare)

    async def _write_chunks(self, conn: Connection, chunks: Sequence[bytes]) -> bool:
        transport = conn.request.transport
        if transport is None:
            return False
        protocol: Any = conn.request.protocol
        for chunk in chunks:
            if transport.is_closing():
                return False
            transport.write(chunk)
            if transport.get_write_buffer_size() > _HIGH_WATER:
                # aiohttp's protocol implements asyncio flow control; wait for resume.
                await protocol._drain_helper()
        return True
