"""What every venue module provides: how to connect, and how to read frames into events.

Venue modules are pure: they build URLs, headers and messages and turn raw frames into
:mod:`app.domain` events, but never touch a socket. The shared connection loop
(:mod:`app.upstream`) does the I/O, the backoff and the liveness checks for all venues.

Exceptions::

    ProtocolError            a frame or REST body the service cannot accept; ``reason`` is
    |                        the ``upstream_errors_total{reason}`` label
    +-- AuthRejected         the venue refused the credentials (reason ``auth``)
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from app.accounts import AccountConfig
from app.domain import Event, LoneBalance, Venue

MAX_FRAME_BYTES = 1 << 20
"""Frames larger than this are rejected whole (reason ``oversize``)."""


class ProtocolError(Exception):
    """A frame was rejected whole. ``reason`` is a short metric label, ``str()`` is secret-free."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AuthRejected(ProtocolError):
    """The venue refused the credentials."""

    def __init__(self, message: str) -> None:
        super().__init__("auth", message)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request to make. ``url`` and ``headers`` may carry secrets; log only ``log_url``.

    ``wallet`` names the wallet scope a REST snapshot request reads, for venues that need
    one request per wallet (SolanaTracker); ``None`` otherwise.
    """

    method: str
    url: str
    log_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    wallet: str | None = None

    def __repr__(self) -> str:
        return f"HttpRequest({self.method} {self.log_url})"


class VenueSession(abc.ABC):
    """Protocol state of ONE upstream connection of one account.

    A new session is created for every (re)connect, so per-connection state (BitoPro's
    "first frame is the snapshot", sFOX's sequence counter) starts fresh each time.
    """

    venue: Venue
    assets_are_token_addresses: bool = False
    """True if the account's assets are token addresses (SolanaTracker mints), whose
    symbols come from stored token metadata until the stream teaches them."""

    def __init__(self, account: AccountConfig) -> None:
        self.account = account

    def __repr__(self) -> str:
        return f"<{type(self).__name__} account={self.account.id!r}>"

    @abc.abstractmethod
    def connect_request(self) -> HttpRequest:
        """The WebSocket upgrade request (URL and headers), freshly signed where needed."""

    def opening_messages(self) -> Sequence[str]:
        """Text frames to send right after the socket opens (sFOX authenticate, ST joins)."""
        return ()

    def follow_holdings(self, held: Iterable[str]) -> list[str]:
        """Frames that make this socket follow the ``held`` assets, given what it already
        follows: sFOX ticker subscriptions, SolanaTracker transaction and price room joins
        and leaves. Empty by default: most sockets carry the same feeds whatever is held.

        The connection loop calls it, once :attr:`subscribed`, after every frame that
        carried events and after the REST seed, with the assets the fold holds now;
        the session remembers what it asked for, so an unchanged set sends nothing.
        """
        return []

    @abc.abstractmethod
    def on_frame(self, raw: str | bytes) -> tuple[list[Event], list[str]]:
        """Read one frame: the events it carries and any text frames to send in reply.

        Raises :class:`ProtocolError` (rejecting the whole frame) on anything malformed.
        """

    def read_lone_balance(self, raw: str | bytes) -> LoneBalance | None:
        """The venue's commonest frame, one asset's new balance, read straight from the
        decoded JSON without building events (the per-frame hot path); ``None`` for any
        other frame, which :meth:`on_frame` then reads. ``None`` by default.

        Never more lenient than :meth:`on_frame`: a frame it reads, :meth:`on_frame`
        would read into the same :class:`~app.domain.BalanceUpdate` with the same
        session state after; anything :meth:`on_frame` would reject gives ``None``.
        """
        return None

    @property
    def subscribed(self) -> bool:
        """True once the stream will deliver balances (sFOX: after the subscribe reply)."""
        return True

    @property
    def stream_has_snapshot(self) -> bool:
        """True if the stream itself begins with a full snapshot (BitoPro)."""
        return False

    @property
    def silent_close_may_be_auth(self) -> bool:
        """True if a venue that always sends on connect may answer a bad signature by just
        closing (BitoPro, UNCONFIRMED in VENUES.md). Never for venues quiet on connect."""
        return False

    @property
    def snapshot_rejected(self) -> bool:
        """True once the frame that had to be this connection's snapshot was rejected.

        Nothing later on the connection may stand in for it (a partial frame must never
        replace the account), so the connection loop leaves and reconnects.
        """
        return False

    # -- REST seeding: one pair --------------------------------------------------------

    def seed_requests(self) -> list[HttpRequest]:
        """The REST balance requests that seed this connection, in order; empty when the
        stream needs none (it begins with a snapshot, or no seed is configured).

        Called once per connection, once :attr:`subscribed`; the connection loop sends
        each request (waiting on the venue's REST limit), hands its body to
        :meth:`read_seed` and applies the snapshots under the fold's watermark, so a REST
        answer never undoes a newer stream update. Venues that read one wallet per
        request (SolanaTracker) return several, each naming its ``wallet``.
        """
        return []

    def read_seed(self, request: HttpRequest, body: bytes) -> list[Event]:
        """Read the answer to ``request`` (one of :meth:`seed_requests`): one
        :class:`~app.domain.BalanceSnapshot` per wallet scope it covers, plus any
        :class:`~app.domain.PriceUpdate` it carries. Raises :class:`ProtocolError`
        (:class:`AuthRejected` for a refusal) on a body it cannot accept whole."""
        raise NotImplementedError(f"{type(self).__name__} has no REST balance snapshot")
