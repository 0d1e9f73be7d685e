"""The fold: applies one account's venue events to its state and hands real changes to the writer.

One :class:`AccountFold` per account holds the exact state the service believes in. The
merge rule comes from the event, not the venue: a :class:`BalanceSnapshot` replaces one
wallet scope (assets missing from it are gone), a :class:`BalanceUpdate` changes only the
assets it names. Updates that change nothing are dropped here, before any Redis work.

Symbols are only ever upgraded: a balance that arrives without one (a SolanaTracker
frame or REST answer on a fresh connection) keeps the symbol the account already shows
or that a mint's metadata taught, so a reconnect never turns ``TRUMP`` back into a mint
address. Token metadata (symbol, name, decimals) is merged the same way before it is
stored with the prices in ``P:prices``: a missing field never overwrites a known one.

REST seeding uses a watermark: every key the stream changes after a REST request was sent
is remembered, and the REST answer never overwrites those keys (an older snapshot must not
undo a newer stream update).

The fold is the connection loop's only way out (:mod:`app.upstream`): balances, token
metadata, venue events, the account's status and the receive times of frames all go to
the writer from here, and market prices read on the account socket to the price
recorder. Inside :meth:`AccountFold.batch` (one batch of frames read in one loop turn),
balance updates are collected, newest per asset, and handed to the writer once when the
batch ends; the state itself changes at once, so each frame is compared with the last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Final

import orjson

from app.domain import (
    AssetBalance,
    BalanceSnapshot,
    BalanceUpdate,
    LoneBalance,
    MarketPrice,
    PriceUpdate,
    VenueEvent,
)
from app.prices.model import Price
from app.store import BalanceWriter, decimal_str

Key = tuple[str, str]  # (wallet, asset)
_META_FIELDS: Final = ("price_usd", "symbol", "name", "decimals")


class AccountFold:
    """The exact state of one account and the only sink of its connection loop."""

    def __init__(
        self,
        account: str,
        venue: str,
        writer: BalanceWriter,
        *,
        market: Callable[[Price], object] | None = None,
    ) -> None:
        self.account = account
        self.venue = venue
        self._writer = writer
        self._market = market
        self._state: dict[Key, AssetBalance] = {}
        # inside a batch: one-currency values read since the batch began, newer than
        # ``_state``; made balances once per key when anything reads the state or the
        # batch ends, so a burst of frames for one asset builds one balance, not one each
        self._lone: dict[Key, LoneBalance] = {}
        self._seeding: dict[int, set[Key]] = {}
        self._next_seed = 0
        self.symbols: dict[str, str] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        # inside a batch: changed balances not yet handed to the writer, newest per key
        self._batch: dict[Key, tuple[AssetBalance, str | None]] | None = None
        self.held_version = 0
        """Grows whenever :meth:`held_assets` may have changed (cheaper than comparing)."""

    @property
    def state(self) -> dict[Key, AssetBalance]:
        """The exact state: (wallet, asset) -> balance, every frame read so far applied."""
        if self._lone:
            self._settle()
        return self._state

    def load(self, balances: Iterable[AssetBalance]) -> None:
        """Start from what Redis holds (no writes): the last known state of the account."""
        self._lone.clear()
        self._state = {(b.wallet, b.asset): b for b in balances}
        self.held_version += 1
        for balance in self.state.values():
            if balance.symbol is not None:
                self.symbols.setdefault(balance.asset, balance.symbol)

    def load_meta(self, mint: str, doc: Mapping[str, Any]) -> None:
        """Learn a mint's stored metadata (``P:prices``) without writing anything."""
        known = self.meta.setdefault(mint, {})
        for field in _META_FIELDS:
            if doc.get(field) is not None:
                known.setdefault(field, doc[field])
        symbol = known.get("symbol")
        if isinstance(symbol, str) and symbol:
            self.symbols.setdefault(mint, symbol)

    def load_stored_meta(self, stored: Mapping[Any, Any]) -> None:
        """Learn every mint's metadata from ``P:prices`` as read (mint -> JSON doc);
        entries that are not metadata docs are skipped."""
        for mint, doc in stored.items():
            with contextlib.suppress(ValueError, TypeError):
                parsed = orjson.loads(doc)
                if isinstance(parsed, dict):
                    name = mint.decode() if isinstance(mint, bytes) else str(mint)
                    self.load_meta(name, parsed)

    def merged_meta(self, price: PriceUpdate, price_usd: str | None) -> dict[str, Any]:
        """The mint's metadata with this update's non-null fields on top: what to store."""
        known = self.meta.setdefault(price.mint, {})
        fresh = {
            "price_usd": price_usd,
            "symbol": price.symbol,
            "name": price.name,
            "decimals": price.decimals,
        }
        for field, value in fresh.items():
            if value is not None:
                known[field] = value
        return {field: known.get(field) for field in _META_FIELDS}

    def _with_symbol(self, balance: AssetBalance) -> AssetBalance:
        if balance.symbol is None:
            symbol = self.symbols.get(balance.asset)
            if symbol is None:
                held = self.state.get((balance.wallet, balance.asset))
                symbol = held.symbol if held is not None else None
            if symbol is not None:
                return replace(balance, symbol=symbol)
        return balance

    def apply_snapshot(self, snapshot: BalanceSnapshot) -> None:
        scope = snapshot.wallet
        balances = [self._with_symbol(b) for b in snapshot.balances]
        new_scope = {(b.wallet, b.asset): b for b in balances}
        old_scope = {k: v for k, v in self.state.items() if k[0] == scope}
        if new_scope == old_scope:
            return
        for key in old_scope:
            del self.state[key]
        self.state.update(new_scope)
        self.held_version += 1
        for touched in self._seeding.values():
            touched.update(new_scope)
            touched.update(old_scope)
        self._submit_batch()  # what came before the replace is written before it
        self._writer.submit_snapshot(self.account, self.venue, scope, balances, snapshot.venue_ts)

    def apply_update(self, update: BalanceUpdate) -> int:
        """Apply; return how many assets really changed."""
        changed: list[AssetBalance] = []
        batch = self._batch
        for balance in update.balances:
            balance = self._with_symbol(balance)
            key = (balance.wallet, balance.asset)
            held = self.state.get(key)
            if held != balance:
                if held is None or (held.total == 0) != (balance.total == 0):
                    self.held_version += 1
                self.state[key] = balance
                changed.append(balance)
                if batch is not None:
                    older = batch.get(key)
                    if older is not None:
                        self._supersede(older[0], older[1])
                    batch[key] = (balance, update.venue_ts)
                for touched in self._seeding.values():
                    touched.add(key)
        if changed and batch is None:
            self._writer.submit_update(self.account, self.venue, changed, update.venue_ts)
        return len(changed)

    def apply_lone(self, lone: LoneBalance) -> bool:
        """One asset's new balance (:data:`~app.domain.LoneBalance`), applied as
        :meth:`apply_update` would apply its :class:`BalanceUpdate`; True if it changed.
        The lean path of a one-currency frame: no event is built, and inside a batch no
        balance either until the state is read or the batch ends (newest value per key)."""
        wallet, asset, total, available, locked, extra, venue_ts = lone
        key = (wallet, asset)
        pending = self._lone.get(key)
        if pending is not None:
            if (
                pending[2] == total
                and pending[3] == available
                and pending[4] == locked
                and pending[5] == extra
            ):
                return False
            if (pending[2] == 0) != (total == 0):
                self.held_version += 1
        else:
            held = self._state.get(key)
            if held is not None and (
                held.total == total
                and held.available == available
                and held.locked == locked
                and held.symbol == asset
                and held.extra == extra
            ):
                return False
            if held is None or (held.total == 0) != (total == 0):
                self.held_version += 1
        if self._seeding:
            for touched in self._seeding.values():
                touched.add(key)
        batch = self._batch
        if batch is not None:
            if pending is not None and self._writer.keeps(self.account, wallet, asset):
                older = batch.pop(key, None)  # settled earlier in this batch: it came first
                if older is not None:
                    self._supersede(older[0], older[1])
                w, a, t, av, lk, ex, ts = pending
                self._supersede(AssetBalance(w, a, t, av, lk, a, ex), ts)
            self._lone[key] = lone
            return True
        balance = AssetBalance(wallet, asset, total, available, locked, asset, extra)
        self._state[key] = balance
        self._writer.submit_update(self.account, self.venue, (balance,), venue_ts)
        return True

    def _supersede(self, older: AssetBalance, venue_ts: str | None) -> None:
        """A later frame of the batch replaces ``older``: hand it to the writer now while
        it still keeps superseded values (see ``BalanceWriter.submit_update``), so the
        change stream carries it too."""
        if self._writer.keeps(self.account, older.wallet, older.asset):
            self._writer.submit_update(self.account, self.venue, (older,), venue_ts)

    def _settle(self) -> None:
        """Make balances of the one-currency values read in this batch (see ``_lone``)."""
        state, batch = self._state, self._batch
        for key, (wallet, asset, total, available, locked, extra, venue_ts) in self._lone.items():
            balance = AssetBalance(wallet, asset, total, available, locked, asset, extra)
            state[key] = balance
            if batch is not None:
                older = batch.get(key)
                if older is not None:
                    self._supersede(older[0], older[1])
                batch[key] = (balance, venue_ts)
        self._lone.clear()

    def begin_batch(self) -> None:
        """From now until :meth:`end_batch`, collect balance updates instead of handing
        each to the writer (a batch of frames read together)."""
        if self._batch is None:
            self._batch = {}

    def end_batch(self) -> None:
        """Hand the batch's updates to the writer once: newest value per asset, each with
        the venue time of the frame that carried it (values a later frame superseded went
        to the writer as they were superseded, while it keeps them). Snapshots kept their
        place."""
        self._submit_batch()
        self._batch = None

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """:meth:`begin_batch` ... :meth:`end_batch`, however the block ends."""
        self.begin_batch()
        try:
            yield
        finally:
            self.end_batch()

    def _submit_batch(self) -> None:
        if self._lone:
            self._settle()
        batch = self._batch
        if not batch:
            return
        if len(batch) == 1:  # the common case: one asset moved
            for balance, venue_ts in batch.values():
                self._writer.submit_update(self.account, self.venue, (balance,), venue_ts)
            batch.clear()
            return
        groups: dict[str | None, list[AssetBalance]] = {}
        for balance, venue_ts in batch.values():
            group = groups.get(venue_ts)
            if group is None:
                groups[venue_ts] = [balance]
            else:
                group.append(balance)
        batch.clear()
        for venue_ts, balances in groups.items():
            self._writer.submit_update(self.account, self.venue, balances, venue_ts)

    def apply_price(self, price: PriceUpdate) -> None:
        """Store a mint's price and metadata (merged with what is known: a field the update
        lacks never nulls a stored one); learn its symbol and relabel the records holding it."""
        usd = decimal_str(price.price_usd) if price.price_usd is not None else None
        self._writer.submit_price(price.mint, self.merged_meta(price, usd))
        if not price.symbol or self.symbols.get(price.mint) == price.symbol:
            return
        self.symbols[price.mint] = price.symbol
        relabel = [
            replace(b, symbol=price.symbol)
            for (_wallet, asset), b in self.state.items()
            if asset == price.mint and b.symbol != price.symbol
        ]
        if relabel:
            self.apply_update(BalanceUpdate(tuple(relabel)))

    def apply_market_price(self, event: MarketPrice) -> None:
        """A market price read on the account socket: to the price recorder (may raise)."""
        if self._market is not None:
            self._market(event.price)

    def apply_event(self, event: VenueEvent) -> None:
        """A venue event (order, points, swap): re-broadcast, never a balance."""
        self._writer.submit_event(self.account, event.kind, event.data)

    def report_status(self, status: Mapping[str, Any]) -> None:
        """The account's connection status changed (stored and broadcast in order)."""
        self._writer.submit_status(self.account, status)

    def touch(self, received: float) -> None:
        """Frames arrived at ``received`` (epoch s): the account's ``last_message_at``."""
        self._writer.touch(self.account, self.venue, received)

    def resubmit(self) -> None:
        """Hand the whole state to the writer again, one replace per wallet scope (after
        Redis lost its data; what Redis already holds emits nothing)."""
        scopes: dict[str, list[AssetBalance]] = {}
        for (wallet, _asset), balance in self.state.items():
            scopes.setdefault(wallet, []).append(balance)
        for wallet, balances in scopes.items():
            self._writer.submit_snapshot(self.account, self.venue, wallet, balances)

    # -- REST seeding with a watermark ---------------------------------------------------

    def begin_seed(self) -> int:
        """Call just before sending a REST snapshot request; returns its ticket."""
        ticket = self._next_seed
        self._next_seed += 1
        self._seeding[ticket] = set()
        return ticket

    def cancel_seed(self, ticket: int) -> None:
        self._seeding.pop(ticket, None)

    def finish_seed(self, ticket: int, snapshot: BalanceSnapshot) -> None:
        """Apply a REST snapshot, keeping every key the stream changed since the request."""
        touched = self._seeding.pop(ticket, set())
        scope = snapshot.wallet
        merged: dict[Key, AssetBalance] = {}
        for balance in snapshot.balances:
            key = (balance.wallet, balance.asset)
            if key not in touched:
                merged[key] = balance
        for key in touched:
            if key[0] == scope and key in self.state:
                merged[key] = self.state[key]
        self.apply_snapshot(BalanceSnapshot(scope, tuple(merged.values()), snapshot.venue_ts))

    def held_assets(self) -> set[str]:
        """Assets with a non-zero balance in any wallet (what the price feeds must cover;
        for SolanaTracker, the mints)."""
        return {asset for (_w, asset), b in self.state.items() if b.total != 0}

    held_mints = held_assets
