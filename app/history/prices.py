"""Prices over time, so a past value can be computed from past balances and past prices.

The price service (:mod:`app.prices.service`) hands every price its graph takes to
:meth:`PriceRecorder.offer`, which calls :meth:`PriceRecorder.record_price` (memory
only, never awaits). Which prices are offered for recording: those from a feed socket of
this instance always; those followed from another replica (``P:prices``) only when this
database is private to this instance (``record_followed``, the SQLite default). On a
shared database the replica whose feed received a price records it, so it is stored once.

A price is kept when its pair was last kept at least ``interval`` seconds ago, or when
it moved by more than ``threshold`` (relative) since the last kept price of that pair and
source; everything else is dropped as redundant. Kept prices are
written in batches by :meth:`flush` (the service runs :meth:`run`). The buffer is
bounded: when the database is down for long, the oldest unwritten samples are dropped and
counted, and a later reader sees no price at those times (``null`` with a reason), never
an invented one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.history import schema
from app.prices.model import Price
from app.store import decimal_str

log = logging.getLogger(__name__)


class PriceRecorder:
    """Samples prices per (pair, source) and writes the kept ones in batches."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        interval: float = 60.0,
        threshold: Decimal = Decimal("0.005"),
        max_buffer: int = 100_000,
        flush_every: float = 1.0,
        record_followed: bool = False,
    ) -> None:
        self._engine = schema.writes(engine)
        self._interval = interval
        self._threshold = threshold
        self._max_buffer = max_buffer
        self._flush_every = flush_every
        self.record_followed = record_followed
        self._last: dict[tuple[str, str], tuple[float, Decimal]] = {}
        self._buffer: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def offer(self, price: Price, own: bool) -> bool:
        """A price the valuation took: ``own`` when a feed of this instance received it.

        Recorded as ``BASE/QUOTE`` from its source at its receive time. True when kept.
        """
        if not own and not self.record_followed:
            return False  # the replica that received it records it
        pair = f"{price.base}/{price.quote}"
        return self.record_price(pair, price.source.value, price.price, price.received)

    def record_price(self, pair: str, source: str, price: Decimal, at: float | None = None) -> bool:
        """Offer a price of ``pair`` (``BASE/QUOTE``) from ``source`` seen at ``at`` (epoch s).

        Returns True when it is kept. ``price`` must be a ``Decimal``: a float is refused.
        """
        if not isinstance(price, Decimal):
            raise TypeError("price must be a Decimal")
        now = time.time() if at is None else at
        key = (pair, source)
        last = self._last.get(key)
        if last is not None:
            last_time, last_price = last
            moved = last_price == 0 or abs(price - last_price) / abs(last_price) > self._threshold
            if now - last_time < self._interval and not moved:
                return False
        self._last[key] = (now, price)
        if len(self._buffer) >= self._max_buffer:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(
            {
                "pair": pair[:64],
                "source": source[:64],
                "price": decimal_str(price),
                "time_us": int(now * 1_000_000),
            }
        )
        return True

    async def flush(self) -> int:
        """Write what is buffered in one transaction; on error it stays buffered."""
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, deque()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(schema.prices.insert(), list(batch))
        except BaseException:
            batch.extend(self._buffer)  # newer samples go after the ones that failed
            while len(batch) > self._max_buffer:
                batch.popleft()
                self.dropped += 1
            self._buffer = batch
            raise
        return len(batch)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="history-prices")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_every)
            try:
                await self.flush()
            except Exception as exc:  # the database may be down; keep the buffer
                log.warning("price history write failed (%s)", type(exc).__name__)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()
