"""Reading one connection's frames into the fold: the lone-balance path, strict reading, rejections.

Where it sits: :class:`~app.upstream.AccountRunner` reads every frame its socket already
holds and hands them to the connection's :class:`FrameReader` as one batch; the reader
folds them, in order, into the account's :class:`~app.fold.AccountFold` inside one
:meth:`~app.fold.AccountFold.batch`, so the writer gets the batch's changes once.

Each frame is read whole or rejected whole. The venue's commonest frame (BitoPro's one
changed currency) is read by :meth:`~app.venues.base.VenueSession.read_lone_balance`
straight into :meth:`~app.fold.AccountFold.apply_lone`, without building events; every
other frame goes through :meth:`~app.venues.base.VenueSession.on_frame` and its events
are applied by their own merge rule. Message counts are tallied per batch and handed to
``count`` once per kind. Raises :class:`~app.venues.base.AuthRejected` on a refusal and
:class:`~app.reconnect.Reconnect` when the connection cannot go on (its snapshot frame
was rejected, a sequence gap); the frames applied before that stay applied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.domain import (
    BalanceSnapshot,
    BalanceUpdate,
    ControlReply,
    Event,
    MarketPrice,
    PriceUpdate,
    SequenceGap,
    VenueEvent,
)
from app.fold import AccountFold
from app.reconnect import Reconnect
from app.venues._wire import SNAPSHOT_REJECTED
from app.venues.base import AuthRejected, ProtocolError, VenueSession

Tally = dict[str, int]


class FrameReader:
    """The frame path of one connection (one :class:`VenueSession`).

    ``count(kind, n)`` adds to ``upstream_messages_total{kind}``; ``report(reason,
    message, raw)`` counts and logs a rejection; ``send`` sends a reply frame;
    ``on_stream_snapshot`` is called after a snapshot read from the stream and
    ``on_snapshot_rejected(message)`` before leaving over a rejected snapshot frame.
    """

    def __init__(
        self,
        session: VenueSession,
        fold: AccountFold,
        *,
        count: Callable[[str, int], None],
        report: Callable[[str, str, str | bytes | None], None],
        send: Callable[[str], Awaitable[None]],
        on_stream_snapshot: Callable[[], None],
        on_snapshot_rejected: Callable[[str], None],
    ) -> None:
        self.session = session
        self.fold = fold
        self._count = count
        self._report = report
        self._send = send
        self._on_stream_snapshot = on_stream_snapshot
        self._on_snapshot_rejected = on_snapshot_rejected

    async def read_batch(self, raws: list[str | bytes]) -> bool:
        """Fold ``raws`` in order; True if any frame carried events."""
        fold = self.fold
        lone_of = self.session.read_lone_balance
        apply_lone = fold.apply_lone
        tally: Tally = {}
        lone_frames = 0
        had_events = False
        fold.begin_batch()
        try:
            for raw in raws:
                lone = lone_of(raw)
                if lone is not None:  # the hot path: no events built
                    lone_frames += 1
                    apply_lone(lone)
                elif await self._read_frame(raw, tally):
                    had_events = True
        finally:
            fold.end_batch()
            if lone_frames:
                had_events = True
                tally["balance"] = tally.get("balance", 0) + lone_frames
            for kind, n in tally.items():
                self._count(kind, n)
        return had_events

    async def _read_frame(self, raw: str | bytes, tally: Tally) -> bool:
        """Read one frame strictly and apply it; True if it carried events."""
        session = self.session
        try:
            events, replies = session.on_frame(raw)
        except AuthRejected:
            tally["auth_error"] = tally.get("auth_error", 0) + 1
            raise
        except ProtocolError as exc:
            tally["rejected"] = tally.get("rejected", 0) + 1
            self._report(exc.reason, str(exc), raw)
            if session.snapshot_rejected:
                # the frame that had to replace the account is gone: keep the last state
                # (stale, nothing deleted) and fetch a new snapshot by reconnecting
                self._on_snapshot_rejected(f"snapshot rejected ({exc.reason}): {exc}")
                raise Reconnect(SNAPSHOT_REJECTED) from None
            return False
        for reply in replies:
            await self._send(reply)
        self._apply(events, tally)
        return bool(events)

    def _apply(self, events: list[Event], tally: Tally) -> None:
        fold = self.fold

        def count(kind: str) -> None:
            tally[kind] = tally.get(kind, 0) + 1

        for event in events:
            if isinstance(event, BalanceUpdate):
                count("balance")
                fold.apply_update(event)
            elif isinstance(event, BalanceSnapshot):
                count("snapshot")
                fold.apply_snapshot(event)
                self._on_stream_snapshot()
            elif isinstance(event, PriceUpdate):
                count("price")
                fold.apply_price(event)
            elif isinstance(event, VenueEvent):
                count(event.kind)
                fold.apply_event(event)
            elif isinstance(event, SequenceGap):
                count("control")
                self._report(
                    "sequence_gap",
                    f"expected sequence {event.expected}, got {event.received}",
                    None,
                )
                raise Reconnect("sequence_gap", backoff=False)
            elif isinstance(event, MarketPrice):
                count("ticker")
                try:  # a price is never a reason to lose the account's socket or state
                    fold.apply_market_price(event)
                except Exception as exc:
                    self._report("price", f"price not recorded ({type(exc).__name__})", None)
            elif isinstance(event, ControlReply):
                # an application heartbeat is counted as such, never as an error
                count("ping" if event.action == "ping" else "control")
