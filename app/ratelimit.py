"""Throttles for what clients can make the service do upstream.

Where it sits: :mod:`app.api` asks :class:`ResyncThrottle` before it hands a
``POST /v1/accounts/{id}/resync`` to the supervisor. A resync reconnects the account's
upstream socket and re-seeds it over REST, and venues block an IP that connects or asks
too often (sFOX: 40 requests a minute, VENUES.md), so resyncs are coalesced per account:
one per ``resync_min_interval`` seconds, in-process; the rest are refused with the
seconds to wait (429 with ``Retry-After``).
"""

from __future__ import annotations

import math
from collections.abc import Callable


class ResyncThrottle:
    """At most one accepted resync per account per ``interval`` seconds."""

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
