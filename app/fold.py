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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Final

from app.domain import AssetBalance, BalanceSnapshot, BalanceUpdate, PriceUpdate
from app.store import BalanceWriter

Key = tuple[str, str]  # (wallet, asset)
_META_FIELDS: Final = ("price_usd", "symbol", "name", "decimals")


class AccountFold:
    def __init__(self, account: str, venue: str, writer: BalanceWriter) -> None:
        self.account = account
        self.venue = venue
        self._writer = writer
        self.state: dict[Key, AssetBalance] = {}
        self._seeding: dict[int, set[Key]] = {}
        self._next_seed = 0
        self.symbols: dict[str, str] = {}
        self.meta: dict[str, dict[str, Any]] = {}

    def load(self, balances: Iterable[AssetBalance]) -> None:
        """Start from what Redis holds (no writes): the last known state of the account."""
        self.state = {(b.wallet, b.asset): b for b in balances}
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
        for touched in self._seeding.values():
            touched.update(new_scope)
            touched.update(old_scope)
        self._writer.submit_snapshot(self.account, self.venue, scope, balances, snapshot.venue_ts)

    def apply_update(self, update: BalanceUpdate) -> int:
        """Apply; return how many assets really changed."""
        changed: list[AssetBalance] = []
        for balance in update.balances:
            balance = self._with_symbol(balance)
            key = (balance.wallet, balance.asset)
            if self.state.get(key) != balance:
                self.state[key] = balance
                changed.append(balance)
                for touched in self._seeding.values():
                    touched.add(key)
        if changed:
            self._writer.submit_update(self.account, self.venue, changed, update.venue_ts)
        return len(changed)

    def apply_price(self, price: PriceUpdate) -> None:
        """Learn a mint's symbol; relabel the records holding it."""
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
