"""The in-memory mirror of the Redis balance state: pure, no I/O.

Where it sits: :class:`~app.stream.hub.StreamHub` loads it from an atomic
:class:`~app.store.StateSnapshot` and applies every change of ``P:changes`` in ``seq``
order, so ``seq`` and the state it describes always agree. REST, snapshots and
``/metrics`` read it (no Redis trip); the hub owns every read from Redis and hands the
mirror what it read (owner liveness, ``last_message_at``).

Staleness is an account property: a record is ``stale`` while its account's state is not
``live``. A status is only as good as the instance that wrote it: one whose owner is gone
— its lease is not held by that owner, or the owner has no heartbeat in ``P:instances``
within a lease time, or (embedded Redis, private to this process) it is any other
instance — is shown ``stale`` at once (``connecting``/``syncing``/``live`` alike), so a
crashed instance's last ``live`` is never served as current by its successor.

Bodies built from the mirror (``GET /v1/balances``, snapshot frames) are cached per
filter until the mirror's ``version`` changes; every change bumps it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from app.accounts import AccountConfig
from app.domain import EXACT, AccountState, AccountStatus, BalanceRecord
from app.store import StateSnapshot, decimal_str, field_name
from app.store.records import record_json
from app.stream.messages import Message, normalize_assets, snapshot_message

_OWNED_STATES = frozenset({AccountState.CONNECTING, AccountState.SYNCING, AccountState.LIVE})
_STALE_FALSE = b'"stale":false}'
_STALE_TRUE = b'"stale":true}'
_BALANCE_AT = b',"balance":'
_CACHE_MAX = 64

BalanceSums = dict[tuple[str, str], tuple[Decimal, Decimal, Decimal]]
"""Per (account, asset), wallets summed: (total, available, locked)."""


@dataclass(slots=True)
class _Entry:
    """One record of the mirror, kept as the exact JSON the stream carried."""

    raw: bytes  # record JSON ending in "stale":false}
    wallet: str
    asset: str
    symbol: str | None
    total: str
    available: str
    locked: str

    @property
    def nonzero(self) -> bool:
        return not (self.total == "0" and self.available == "0" and self.locked == "0")

    def json(self, stale: bool) -> bytes:
        if stale and self.raw.endswith(_STALE_FALSE):
            return self.raw[: -len(_STALE_FALSE)] + _STALE_TRUE
        return self.raw


class _AccountMirror:
    """The records of one account, kept sorted by field name (wallet|asset) for output."""

    __slots__ = ("entries", "venue")

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.entries: dict[str, _Entry] = {}

    def put(self, name: str, entry: _Entry) -> None:
        known = name in self.entries
        self.entries[name] = entry
        if not known:
            # values change in place far more often than keys appear: sort only then
            self.entries = dict(sorted(self.entries.items()))

    def remove(self, name: str) -> None:
        self.entries.pop(name, None)


class Mirror:
    """Records, statuses and owner liveness of the configured accounts, at ``seq``.

    ``runs_here(account)`` tells whether this process runs the account's upstream now:
    a status this instance wrote counts only while it does.
    """

    def __init__(
        self,
        accounts: Sequence[AccountConfig],
        *,
        instance_id: str,
        private_redis: bool,
        runs_here: Callable[[str], bool],
    ) -> None:
        self.seq = 0
        self.loaded = False
        self.version = 0  # bumped on every change; the cached bodies key on it
        self._accounts: dict[str, _AccountMirror] = {
            a.id: _AccountMirror(a.venue) for a in accounts
        }
        self._enabled = {a.id: a.enabled for a in accounts}
        self._statuses: dict[str, dict[str, Any]] = {}
        self._last_message_at: dict[str, str] = {}
        self._live: dict[str, bool] = dict.fromkeys(self._accounts, False)
        # owner liveness (see the module docstring); the embedded Redis is this process's
        self._instance_id = instance_id
        self._private_redis = private_redis
        self._runs_here = runs_here
        self._lease_owner: dict[str, str] = {}
        self._instances: set[str] = set()
        self._owners_read = False
        self._orphans: frozenset[str] = frozenset()
        self.owners_due = False  # a status named an owner not known alive: read the leases
        self._bodies: dict[object, bytes] = {}
        self._bodies_version = -1
        self._snapshots: dict[object, Message] = {}
        self._snapshots_version = -1

    # -- loading and changes -----------------------------------------------------------

    def install(self, snapshot: StateSnapshot) -> None:
        """Replace everything with ``snapshot`` (a load or a reload)."""
        for mirror in self._accounts.values():
            mirror.entries = {}
        for record in snapshot.records:
            target = self._accounts.get(record.account)
            if target is None:
                continue
            target.put(
                field_name(record.wallet, record.asset),
                _Entry(
                    raw=record_json(record),
                    wallet=record.wallet,
                    asset=record.asset,
                    symbol=record.symbol,
                    total=decimal_str(record.total),
                    available=decimal_str(record.available),
                    locked=decimal_str(record.locked),
                ),
            )
        self._statuses = {}
        self._last_message_at = {}
        for account, status in snapshot.statuses.items():
            status = dict(status)
            last = status.pop("last_message_at", None)
            if last:
                self._last_message_at[account] = str(last)
            if status:
                self._statuses[account] = status
        for account in self._accounts:
            self._live[account] = self.state_of(account) == AccountState.LIVE
        self._orphans = frozenset(a for a in self._accounts if self.orphaned(a))
        self.seq = snapshot.seq
        self.loaded = True
        self.version += 1

    def apply(self, msg: Message, doc: Mapping[str, Any], raw: bytes) -> bool:
        """Apply one change (not ``seq``: see :meth:`advance`); False if its account is
        not served here."""
        mirror = self._accounts.get(msg.account)
        if mirror is None:
            return False
        kind = doc.get("type")
        if kind == "balance":
            record = doc["balance"]
            at = raw.find(_BALANCE_AT)
            body = raw[at + len(_BALANCE_AT) : -1] if at >= 0 else orjson.dumps(record)
            entry = _Entry(
                raw=body,
                wallet=str(record["wallet"]),
                asset=str(record["asset"]),
                symbol=record.get("symbol"),
                total=str(record["total"]),
                available=str(record["available"]),
                locked=str(record["locked"]),
            )
            mirror.put(field_name(entry.wallet, entry.asset), entry)
        elif kind == "removed":
            mirror.remove(field_name(str(doc["wallet"]), str(doc["asset"])))
        elif kind == "status":
            status = dict(doc["account"])
            status.pop("last_message_at", None)
            self._statuses[msg.account] = status
            owner = status.get("owner")
            if (
                owner
                and not self._private_redis
                and owner != self._instance_id
                and (self._lease_owner.get(msg.account) != owner or owner not in self._instances)
            ):
                self.owners_due = True  # a new owner: read the leases before trusting it
            self._live[msg.account] = self.state_of(msg.account) == AccountState.LIVE
        return True

    def advance(self, seq: int) -> None:
        """The mirror now describes the state as of ``seq``."""
        self.seq = seq
        self.version += 1

    def set_last_message_at(self, values: Mapping[str, str]) -> bool:
        """``last_message_at`` per account as polled (it is not streamed); True if any
        changed."""
        changed = False
        for account, text in values.items():
            if self._last_message_at.get(account) != text:
                self._last_message_at[account] = text
                changed = True
        if changed:
            self.version += 1
        return changed

    # -- owner liveness ----------------------------------------------------------------

    def set_owners(self, instances: Iterable[str], lease_owner: Mapping[str, str]) -> None:
        """The instances alive now and the instance holding each account's lease."""
        self._instances = set(instances)
        self._lease_owner = dict(lease_owner)
        self._owners_read = True

    def recheck_owners(self) -> bool:
        """Re-derive liveness after the owners were read; True when what is served changed
        (clients then need a fresh snapshot)."""
        changed = False
        for account in self._accounts:
            live = self.state_of(account) == AccountState.LIVE
            if self._live[account] != live:
                self._live[account] = live
                changed = True
        orphans = frozenset(a for a in self._accounts if self.orphaned(a))
        if orphans != self._orphans:
            self._orphans = orphans
            changed = True
        if changed:
            self.version += 1
        return changed

    def state_of(self, account: str) -> str:
        """The state served for ``account``: ``disabled`` here, ``stale`` for a gone owner."""
        if not self._enabled.get(account, True):
            return AccountState.DISABLED
        status = self._statuses.get(account)
        state = status.get("state") if status else None
        if state in _OWNED_STATES and not self._owner_alive(account):
            return AccountState.STALE
        return str(state) if state else AccountState.CONNECTING

    def _owner_alive(self, account: str) -> bool:
        """False when the instance named as the status's owner is known to be gone."""
        status = self._statuses.get(account)
        owner = status.get("owner") if status else None
        if not owner:
            return True
        if owner == self._instance_id:
            return self._runs_here(account)
        if self._private_redis:
            return False  # nobody else can reach this process's own Redis
        if not self._owners_read:
            return False
        return self._lease_owner.get(account) == owner and owner in self._instances

    def orphaned(self, account: str) -> bool:
        """The account's status was written by an instance that is gone (not taken over)."""
        return self._enabled.get(account, True) and not self._owner_alive(account)

    def served_state_differs(self, accounts: frozenset[str] | None) -> bool:
        """Whether an account of ``accounts`` (None: all) is served in another state than
        its stored status says (its owner is gone)."""
        for account in self._accounts:
            if accounts is not None and account not in accounts:
                continue
            status = self._statuses.get(account)
            stored = status.get("state") if status else None
            if stored is not None and self.state_of(account) != stored:
                return True
        return False

    # -- reads -------------------------------------------------------------------------

    def has_account(self, account: str) -> bool:
        return account in self._accounts

    @property
    def account_ids(self) -> list[str]:
        return list(self._accounts)

    def records_array(
        self,
        accounts: frozenset[str] | None,
        assets: frozenset[str] | None,
        nonzero: bool,
    ) -> bytes:
        """The JSON array of the matching records, ``stale`` applied."""
        parts: list[bytes] = []
        for account, mirror in self._accounts.items():
            if accounts is not None and account not in accounts:
                continue
            stale = not self._live[account]
            for entry in mirror.entries.values():
                if assets is not None and entry.asset not in assets:
                    continue
                if nonzero and not entry.nonzero:
                    continue
                parts.append(entry.json(stale))
        return b"[" + b",".join(parts) + b"]"

    def balances_body(
        self,
        accounts: Iterable[str] | None = None,
        assets: Iterable[str] | None = None,
        nonzero: bool = False,
    ) -> bytes:
        """``{"seq", "balances"}`` as JSON bytes, consistent with ``seq`` (cached per version)."""
        acc = frozenset(accounts) if accounts is not None else None
        ast = normalize_assets(assets)
        if self._bodies_version != self.version:
            self._bodies.clear()
            self._bodies_version = self.version
        key = (acc, ast, nonzero)
        body = self._bodies.get(key)
        if body is None:
            body = b'{"seq":%d,"balances":%b}' % (self.seq, self.records_array(acc, ast, nonzero))
            if len(self._bodies) < _CACHE_MAX:
                self._bodies[key] = body
        return body

    def snapshot_message(
        self, accounts: frozenset[str] | None, assets: frozenset[str] | None
    ) -> Message:
        """One shared snapshot frame per filter and version (a reload or a burst of
        connections with the same filter builds it once)."""
        if self._snapshots_version != self.version:
            self._snapshots.clear()
            self._snapshots_version = self.version
        key = (accounts, assets)
        msg = self._snapshots.get(key)
        if msg is None:
            msg = snapshot_message(
                self.seq,
                self.records_array(accounts, assets, nonzero=False),
                self.account_views(accounts),
            )
            if len(self._snapshots) < _CACHE_MAX:
                self._snapshots[key] = msg
        return msg

    def records(self, accounts: Iterable[str] | None = None) -> Iterator[BalanceRecord]:
        """Every record of ``accounts`` (all by default) with ``stale`` applied."""
        wanted = None if accounts is None else set(accounts)
        for account, mirror in self._accounts.items():
            if wanted is not None and account not in wanted:
                continue
            stale = not self._live[account]
            for entry in mirror.entries.values():
                yield _to_record(account, mirror.venue, entry, stale)

    def balance_sums(self) -> BalanceSums:
        """Per (account, asset), wallets summed, non-zero records only: the gauges."""
        out: BalanceSums = {}
        for account, mirror in self._accounts.items():
            for entry in mirror.entries.values():
                if not entry.nonzero:
                    continue
                values = _amounts(entry)
                key = (account, entry.asset)
                prev = out.get(key)
                if prev is not None:
                    add = EXACT.add
                    values = (add(prev[0], values[0]), add(prev[1], values[1]),
                              add(prev[2], values[2]))  # fmt: skip
                out[key] = values
        return out

    def account_view(self, account: str) -> dict[str, Any]:
        """The lifecycle status of one configured account, defaults where nothing is known.

        An account with no status yet is ``connecting``; one disabled in this instance's
        configuration is ``disabled`` whatever Redis still holds from an earlier run.
        """
        mirror = self._accounts[account]
        initial = AccountStatus.initial(account, mirror.venue, AccountState.CONNECTING)
        view: dict[str, Any] = initial.view()
        status = self._statuses.get(account)
        if status:
            view.update({k: v for k, v in status.items() if k in view})
        view["account"] = account
        view["venue"] = mirror.venue
        view["state"] = self.state_of(account)
        view["last_message_at"] = self._last_message_at.get(account, view["last_message_at"])
        return view

    def account_views(self, accounts: Iterable[str] | None = None) -> list[dict[str, Any]]:
        wanted = None if accounts is None else set(accounts)
        return [self.account_view(a) for a in self._accounts if wanted is None or a in wanted]


def _amounts(entry: _Entry) -> tuple[Decimal, Decimal, Decimal]:
    try:
        return Decimal(entry.total), Decimal(entry.available), Decimal(entry.locked)
    except InvalidOperation:
        return Decimal(0), Decimal(0), Decimal(0)


def _to_record(account: str, venue: str, entry: _Entry, stale: bool) -> BalanceRecord:
    doc = orjson.loads(entry.raw)
    total, available, locked = _amounts(entry)
    return BalanceRecord(
        account=account,
        venue=venue,
        wallet=entry.wallet,
        asset=entry.asset,
        symbol=entry.symbol,
        total=total,
        available=available,
        locked=locked,
        updated_at=str(doc.get("updated_at") or ""),
        venue_ts=doc.get("venue_ts"),
        stale=stale,
        extra=doc.get("extra") or {},
    )
