"""Throttles for what clients can make the service do upstream.

Where it sits: :mod:`app.api.routes.accounts` asks :class:`ResyncThrottle` (this
process), then :class:`ResyncGate` (the deployment, through Redis) before it hands a
``POST /v1/accounts/{id}/resync`` to the supervisor. A resync reconnects the account's
upstream socket and re-seeds it over REST, and venues block an IP that connects or asks
too often (sFOX: 40 requests a minute, VENUES.md), so resyncs are coalesced per account:
one per ``resync_min_interval`` seconds across every replica and worker; the rest are
refused with the seconds to wait (429 with ``Retry-After``).

:class:`VenueLimiter` keeps what the service itself sends within each venue's documented
connection and REST limits (VENUES.md; settings for the undocumented ones): the upstream
loop and the price feeds await it before every connection and REST request. It counts
per process; the workers of ``serve --workers N`` leave from one IP, so each gets a
1/N share of every limit (:meth:`VenueLimits.share`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from pydantic import TypeAdapter

from app.domain import Venue
from app.metrics import Metrics
from app.store.keys import Keys

log = logging.getLogger(__name__)


class ResyncThrottle:
    """At most one accepted resync per account per ``interval`` seconds, in this process:
    the first check, before :class:`ResyncGate` asks Redis."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}

    def acquire(self, account: str) -> int:
        """0 if a resync may go ahead now (and record it), else whole seconds to wait."""
        now = self._clock()
        last = self._last.get(account)
        if last is not None and now - last < self.interval:
            return max(1, math.ceil(self.interval - (now - last)))
        self._last[account] = now
        return 0

    def release(self, account: str, at: float) -> None:
        """Forget an accepted resync that could not be requested after all."""
        if self._last.get(account) == at:
            del self._last[account]

    def last(self, account: str) -> float | None:
        return self._last.get(account)


class ResyncGate:
    """At most one accepted resync per account per ``interval`` seconds in the whole
    deployment (every replica and worker shares one Redis): the first to ``SET NX PX``
    the account's gate key wins, the others wait for its expiry."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, interval: float) -> None:
        self._redis = redis
        self._keys = keys
        self._ms = math.ceil(interval * 1000)

    async def acquire(self, account: str) -> int:
        """0 if a resync may go ahead now (the gate is taken), else whole seconds to wait."""
        if self._ms <= 0:
            return 0
        key = self._keys.resync_gate(account)
        if await self._redis.set(key, b"1", nx=True, px=self._ms):
            return 0
        left = int(await self._redis.pttl(key))
        return max(1, math.ceil(left / 1000)) if left > 0 else 1

    async def release(self, account: str) -> None:
        """Open the gate again: the accepted resync could not be requested after all."""
        if self._ms > 0:
            await self._redis.delete(self._keys.resync_gate(account))


# -- venue limits ------------------------------------------------------------------------

MAX_HANDSHAKES = 128
"""Socket handshakes in flight at once per process (see :meth:`VenueLimiter.handshake`)."""

Kind = Literal["connect", "rest"]


@dataclass(frozen=True, slots=True)
class VenueLimits:
    """One venue's limits, per upstream host (a host stands for the IP the venue sees).

    ``connect`` and ``rest`` are sliding windows ``(count, seconds)``: at most ``count``
    connection attempts (REST requests) to one host in any ``seconds``. ``sockets`` caps
    the sockets open to one host at the same time (0: no cap).
    """

    connect: tuple[tuple[int, float], ...] = ()
    rest: tuple[tuple[int, float], ...] = ()
    sockets: int = 0

    def share(self, parts: int) -> VenueLimits:
        """One of ``parts`` processes' share of a host's limits when they all leave from
        one IP (``serve --workers``): every count and the socket cap divided between
        them, at least 1 each."""
        if parts <= 1:
            return self

        def rules(given: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
            return tuple((max(1, count // parts), seconds) for count, seconds in given)

        sockets = 0 if self.sockets == 0 else max(1, self.sockets // parts)
        return VenueLimits(rules(self.connect), rules(self.rest), sockets)

    def setting(self) -> dict[str, object]:
        """These limits as one venue's entry of ``BALAGG_VENUE_LIMITS``."""
        return {
            "connect": [f"{count}/{seconds}" for count, seconds in self.connect],
            "rest": [f"{count}/{seconds}" for count, seconds in self.rest],
            "sockets": self.sockets,
        }


class _Window:
    """A sliding window: the times of the last ``count`` grants."""

    def __init__(self, count: int, seconds: float) -> None:
        self.count = count
        self.seconds = seconds
        self.times: deque[float] = deque()

    def wait_for(self, now: float) -> float:
        """Seconds until one more grant fits (0: now)."""
        while self.times and now - self.times[0] >= self.seconds:
            self.times.popleft()
        if len(self.times) < self.count:
            return 0.0
        return self.times[0] + self.seconds - now


class _Budget:
    """The windows of one (venue, host, kind); grants in arrival order (a FIFO lock)."""

    def __init__(self, rules: tuple[tuple[int, float], ...]) -> None:
        self.windows = [_Window(count, seconds) for count, seconds in rules]
        self.lock = asyncio.Lock()


class SocketSlot:
    """One open-socket slot of a host; :meth:`release` gives it back (idempotent)."""

    def __init__(self, semaphore: asyncio.Semaphore | None) -> None:
        self._semaphore = semaphore

    def release(self) -> None:
        semaphore, self._semaphore = self._semaphore, None
        if semaphore is not None:
            semaphore.release()


class VenueLimiter:
    """Keeps everything the service sends to a venue within that venue's limits.

    Where it sits: every :class:`~app.upstream.AccountRunner` awaits :meth:`connect`
    before it opens its socket and :meth:`request` before each REST snapshot request, and
    the own-socket price feeds (:mod:`app.prices.feed`) await :meth:`connect` too. The
    supervisor builds one per process from ``BALAGG_VENUE_LIMITS`` and shares it.

    Limits are per (venue, host): the venue counts per IP, so every account of a venue
    host shares one budget, and a wait for one host never holds up another host or
    another venue. A caller that waits keeps its account ``connecting``/``stale`` (or
    ``syncing`` for a REST seed): nothing here marks anything live. Every wait is counted
    (``balagg_upstream_throttled_total{venue,kind}``) and logged at debug level.
    """

    def __init__(
        self,
        limits: Mapping[str, VenueLimits],
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        handshakes: int = MAX_HANDSHAKES,
    ) -> None:
        self.limits = dict(limits)
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._budgets: dict[tuple[str, str, str], _Budget] = {}
        self._sockets: dict[tuple[str, str], asyncio.Semaphore] = {}
        self._handshakes = asyncio.Semaphore(handshakes)

    def handshake(self) -> asyncio.Semaphore:
        """Held around one socket's opening handshake (``async with``): at most
        :data:`MAX_HANDSHAKES` at a time in this process, whatever the venue.

        Thousands of accounts starting at once otherwise open thousands of connections
        in the same instant: the venue's accept queue overflows (dropped SYNs come back
        only after 1, 3, 7 s) and this loop is too busy with handshakes to answer the
        open sockets' pings in time, so healthy sockets are dropped and retried.
        """
        return self._handshakes

    async def connect(self, venue: str, url: str) -> SocketSlot:
        """Wait for a free socket slot and a connection attempt within budget.

        The slot is held until the caller releases it (when its socket is closed).
        """
        host = upstream_host(url)
        limits = self.limits.get(venue, VenueLimits())
        semaphore: asyncio.Semaphore | None = None
        if limits.sockets > 0:
            semaphore = self._sockets.get((venue, host))
            if semaphore is None:
                semaphore = self._sockets[(venue, host)] = asyncio.Semaphore(limits.sockets)
            if semaphore.locked():
                started = self._waiting(venue, "sockets")
                log.debug(
                    "%s %s: all %d sockets in use; waiting for one to close",
                    venue, host, limits.sockets,
                )  # fmt: skip
                try:
                    await semaphore.acquire()
                finally:
                    self._waited(venue, "sockets", started)
            else:
                await semaphore.acquire()
        slot = SocketSlot(semaphore)
        try:
            await self._take(venue, host, "connect", limits.connect)
        except BaseException:
            slot.release()
            raise
        return slot

    async def request(self, venue: str, url: str) -> None:
        """Wait until one more REST request to ``url``'s host is within budget."""
        limits = self.limits.get(venue, VenueLimits())
        await self._take(venue, upstream_host(url), "rest", limits.rest)

    def over_capacity(self, planned: Iterable[tuple[str, str]]) -> list[str]:
        """Sentences for each host that more sockets are planned for than it allows.

        ``planned`` is (venue, url) per socket the configuration asks for.
        """
        counts: Counter[tuple[str, str]] = Counter((v, upstream_host(u)) for v, u in planned)
        out = []
        for (venue, host), count in sorted(counts.items()):
            cap = self.limits.get(venue, VenueLimits()).sockets
            if cap and count > cap:
                out.append(
                    f"{count} {venue} sockets are configured for {host}, but the venue allows "
                    f"{cap} at a time per IP: {count - cap} wait (connecting, then stale) "
                    f"until a socket closes; spread the accounts over replicas on other IPs "
                    f"or raise BALAGG_VENUE_LIMITS if the venue granted more"
                )
        return out

    async def _take(
        self, venue: str, host: str, kind: Kind, rules: tuple[tuple[int, float], ...]
    ) -> None:
        if not rules:
            return
        budget = self._budgets.get((venue, host, kind))
        if budget is None:
            budget = self._budgets[(venue, host, kind)] = _Budget(rules)
        started: float | None = None
        if budget.lock.locked():  # someone is already waiting: so do we
            started = self._waiting(venue, kind)
        try:
            async with budget.lock:  # FIFO: the first to ask is the first served
                while True:
                    now = self._clock()
                    wait = max(w.wait_for(now) for w in budget.windows)
                    if wait <= 0:
                        for window in budget.windows:
                            window.times.append(now)
                        return
                    if started is None:
                        started = self._waiting(venue, kind)
                    log.debug("%s %s: %s limit reached; waiting %.2f s", venue, host, kind, wait)
                    await self._sleep(wait)
        finally:
            if started is not None:
                self._waited(venue, kind, started)

    def _waiting(self, venue: str, kind: str) -> float:
        """Count a wait as it starts (a wait that never ends shows too); its start time."""
        if self._metrics is not None:
            self._metrics.upstream_throttled.labels(venue, kind).inc()
        return self._clock()

    def _waited(self, venue: str, kind: str, started: float) -> None:
        if self._metrics is not None:
            seconds = max(self._clock() - started, 0.0)
            self._metrics.upstream_throttled_seconds.labels(venue, kind).inc(seconds)


_SECONDS = TypeAdapter(float)  # a duration, never an amount


def parse_rule(text: str) -> tuple[int, float]:
    """``"5/10"`` -> (5, 10.0): at most 5 in any 10 seconds."""
    count, sep, seconds = text.partition("/")
    try:
        rule = (int(count.strip()), _SECONDS.validate_python(seconds.strip()))
    except ValueError:
        rule = (0, 0.0)
    if not sep or rule[0] < 1 or not rule[1] > 0 or not math.isfinite(rule[1]):
        raise ValueError(f"{text[:32]!r}: expected COUNT/SECONDS, e.g. 5/10")
    return rule


# sFOX (VENUES.md): 10 sockets per IP; 40 requests a minute per IP (then blocked for two
# minutes), split here between connection attempts and REST so that together they stay
# within it; the REST snapshot allows 5 per 10 s. The other venues document no limits:
# conservative defaults that still connect a typical deployment at once.
DEFAULT_VENUE_LIMITS: Mapping[str, VenueLimits] = {
    Venue.SFOX: VenueLimits(connect=((20, 60.0),), rest=((5, 10.0), (20, 60.0)), sockets=10),
    Venue.BITOPRO: VenueLimits(connect=((30, 60.0),), rest=((30, 60.0),)),
    Venue.DELTADEFI: VenueLimits(connect=((30, 60.0),), rest=((30, 60.0),)),
    Venue.SOLANATRACKER: VenueLimits(connect=((30, 60.0),), rest=((30, 60.0),)),
}


def upstream_host(url: str) -> str:
    """``host:port`` of a URL (never its path or query, which may carry a key)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme in ("https", "wss") else 80
    return f"{host}:{port}"
