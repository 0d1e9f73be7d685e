"""Changes into the mirror in strict ``seq`` order, from two sources: the stream and own writes.

Where it sits: inside :class:`~app.stream.hub.StreamHub`. The hub's stream read
(``XREAD`` of ``P:changes``) brings every instance's changes; this process's own writes
also arrive as its flush returns them (local apply), usually first. Both go through
:meth:`Sequencer.take`, which applies a change only when it follows the mirror's ``seq``
directly, skips one already applied, holds an own write that comes after a gap (another
instance wrote in between) until the stream read fills the gap, and reports a gap in
the stream itself (trimmed past this reader) so the hub reloads. What it applies goes
into the mirror and the resume ring; the messages clients may see are returned, in
order, for the hub to fan out. Clients therefore see each ``seq`` once, in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

from app.store import Change
from app.stream.messages import Message, parse_change, unreadable_change
from app.stream.mirror import Mirror
from app.stream.resume import Ring

log = logging.getLogger(__name__)

HELD_MAX = 100_000
"""Own writes that may wait for a gap before them (the stream has them too)."""


class Sequencer:
    """Applies changes to ``mirror`` and ``ring`` in seq order (see the module docstring)."""

    def __init__(self, mirror: Mirror, ring: Ring) -> None:
        self.mirror = mirror
        self.ring = ring
        self.held: dict[int, Change] = {}  # own writes after a gap, by seq

    def hold(self, changes: Iterable[Change]) -> bool:
        """Keep own writes not applied yet; True if any wait."""
        held = self.held
        seq = self.mirror.seq
        for change in changes:
            if change.seq > seq:
                held[change.seq] = change
        if len(held) > HELD_MAX:  # the stream read will bring them all
            for dropped in sorted(held)[: len(held) - HELD_MAX]:
                del held[dropped]
        return bool(held)

    def take(self, changes: Sequence[Change]) -> tuple[list[Message], bool]:
        """Apply ``changes`` (from the stream), then the held own writes they made
        contiguous. Returns the messages to fan out and whether the stream skipped a
        seq (the mirror must be reloaded; nothing after the gap is applied)."""
        mirror = self.mirror
        received = time.perf_counter()
        clock_offset = received - time.time()
        batch: list[Message] = []
        for change in changes:
            if change.seq <= mirror.seq:
                continue  # applied already (this process wrote it)
            if change.seq != mirror.seq + 1:
                log.warning(
                    "change stream skipped from seq %d to %d (trimmed); reloading",
                    mirror.seq,
                    change.seq,
                )
                return batch, True
            self._apply(change, received, clock_offset, batch)
        held = self.held
        if held:
            for seq in [s for s in held if s <= mirror.seq]:
                del held[seq]
            while mirror.seq + 1 in held:
                self._apply(held.pop(mirror.seq + 1), received, clock_offset, batch)
        return batch, False

    def _apply(
        self, change: Change, received: float, clock_offset: float, batch: list[Message]
    ) -> None:
        """One change into the mirror and the ring; its message joins ``batch`` if it is
        about an account served here."""
        mirror = self.mirror
        try:
            # upstream receive time when the writer recorded it (same clock across
            # processes on one host), else when the hub read the change
            at = received if change.received is None else change.received + clock_offset
            msg, doc = parse_change(change, at)
            visible = mirror.apply(msg, doc, change.message)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("unreadable change at seq %d (%s); skipped", change.seq, exc)
            msg = unreadable_change(change)
            visible = False
        mirror.advance(change.seq)
        if not visible:
            msg.text = ""
        self.ring.append(msg)
        if visible:
            batch.append(msg)
