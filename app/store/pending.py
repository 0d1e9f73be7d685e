"""What the writer holds between flushes: the newest pending value per key of each
account (:class:`PendingAccount`), the superseded values it still keeps, and the
status and event notes (:class:`Note`). Memory only; :mod:`app.store.writer` turns them
into write-script calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.domain import AssetBalance
from app.store.keys import FIELD_SEP


@dataclass(slots=True)
class Content:
    """A pending record; encoded only at flush, so conflated values cost no encoding."""

    balance: AssetBalance
    venue_ts: str | None


@dataclass(slots=True)
class PendingAccount:
    """Everything not yet written for one account: the newest value per key, and the
    superseded values the writer still keeps (``earlier``).

    Invariant: a field whose wallet has a pending replace lives in ``replaces``, never in
    ``updates``, so writing replaces and updates in one script keeps arrival order.
    """

    venue: str
    replaces: dict[str, dict[str, Content]] = field(default_factory=dict)
    updates: dict[str, Content] = field(default_factory=dict)
    # values an update superseded before they were written, oldest first, that the
    # writer keeps (see KEEP_PER_SECOND); never for a wallet with a pending replace
    earlier: list[tuple[str, Content]] = field(default_factory=list)
    last_message_ts: float = 0.0  # newest upstream receive time (epoch s)
    first_received: float = 0.0  # oldest upstream receive time not yet written (epoch s)

    def add_replace(self, wallet: str, contents: dict[str, Content]) -> None:
        self.replaces[wallet] = contents
        prefix = wallet + FIELD_SEP
        for name in [n for n in self.updates if n.startswith(prefix)]:
            del self.updates[name]
        if self.earlier:
            # the replace supersedes them, and listing them would keep assets it removes
            self.earlier = [e for e in self.earlier if not e[0].startswith(prefix)]

    def add_update(self, name: str, content: Content) -> Content | None:
        """Set ``name``'s pending value; return the different pending value it superseded
        (one a pending replace holds is not returned: the replace keeps its place)."""
        wallet = name.partition(FIELD_SEP)[0]
        scope = self.replaces.get(wallet)
        if scope is not None:
            scope[name] = content
            return None
        updates = self.updates
        older = updates.get(name)
        updates[name] = content
        if older is None or older.balance == content.balance:
            return None
        return older

    def merge_newer(self, newer: PendingAccount) -> None:
        """Fold ``newer`` (arrived later) on top of this older pending set; values that
        ``newer`` kept as :attr:`earlier` are conflated away (the write was retried)."""
        for wallet, contents in newer.replaces.items():
            self.add_replace(wallet, dict(contents))
        for name, content in newer.updates.items():
            self.add_update(name, content)
        self.last_message_ts = max(self.last_message_ts, newer.last_message_ts)
        if newer.first_received and (
            not self.first_received or newer.first_received < self.first_received
        ):
            self.first_received = newer.first_received

    def key_count(self) -> int:
        return len(self.updates) + sum(len(c) for c in self.replaces.values())


@dataclass(frozen=True, slots=True)
class Note:
    account: str
    kind: str  # "status" | "event"
    body: bytes
    prefix: bytes
