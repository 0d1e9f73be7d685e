"""Recently read snapshots, kept in memory for the ``?at=`` reads that follow.

:func:`app.history.queries.state_at` answers from the newest snapshot at or before an
instant plus the changes after it; answers near one another (a dashboard asking again,
the points of a series) start from the same snapshot. A snapshot's rows never change
once committed (its seq names one state of the stream, and every writer of a snapshot
inserts its rows in the transaction that inserts it), so a copy is valid for as long as
the database is the same: one cache belongs to one engine (:class:`app.history.runtime.
History` holds it). Retention deletes older snapshots; their copies are simply never
asked for again and age out.

The cache is bounded by rows, not entries: a state of a few thousand records keeps a
few dozen snapshots, a very large state keeps fewer, and one larger than the whole
budget is never kept.
"""

from __future__ import annotations

from collections import OrderedDict

from app.history.schema import Key, RawRecord

DEFAULT_MAX_ROWS = 100_000


class SnapshotCache:
    """Least recently used snapshots by seq, each as ``{key: stored row}``."""

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self.max_rows = max_rows
        self._entries: OrderedDict[int, dict[Key, RawRecord]] = OrderedDict()
        self._rows = 0

    def get(self, seq: int) -> dict[Key, RawRecord] | None:
        """The rows of snapshot ``seq`` (a dict the caller must not change), if kept."""
        rows = self._entries.get(seq)
        if rows is not None:
            self._entries.move_to_end(seq)
        return rows

    def seqs(self) -> list[int]:
        """The seqs of the snapshots kept now."""
        return list(self._entries)

    def put(self, seq: int, rows: dict[Key, RawRecord]) -> None:
        """Keep ``rows`` (all of snapshot ``seq``; the cache owns the dict from now on)."""
        if len(rows) > self.max_rows or seq in self._entries:
            return
        self._entries[seq] = rows
        self._rows += len(rows)
        while self._rows > self.max_rows:
            _, dropped = self._entries.popitem(last=False)
            self._rows -= len(dropped)

    def __len__(self) -> int:
        return len(self._entries)
