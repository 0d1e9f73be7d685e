"""Every Redis key name and kind the service uses, in one place.

The store (this package), the leases, the supervisor, the hub, the price persistence and
the history writer all address Redis through :class:`Keys`; nothing else spells a key.

Layout (``P`` is the configurable prefix; ``{acct}`` is a Redis Cluster hash tag so one
account's keys share a slot)::

    P:{acct}:bal     hash  "wallet|ASSET" -> record content JSON (amounts as strings)
    P:{acct}:ts      hash  "wallet|ASSET" -> ["updated_at", venue_ts or null]
    P:{acct}:status  hash  doc -> lifecycle JSON, last_message_at -> ISO time
    P:{acct}:lease   string owner token (see app.leases); checked by every write
    P:{acct}:holder  string token of the last acquisition (no expiry; see app.leases)
    P:{acct}:resync_gate  string set NX with an expiry by an accepted resync (app.ratelimit)
    P:seq            string the deployment-wide change counter
    P:changes        stream entry id "<seq>-0"; fields a (account), s (asset), m (message),
                     t (write time, epoch µs), r (upstream receive time, epoch µs)
    P:prices         hash  Solana mint -> {"price_usd", "symbol", "name", "decimals"};
                           "source|pair" -> market price doc (app.prices.persistence)
    P:instances      zset  instance id -> last heartbeat (ms), for fair lease sharing
    P:dataset        string random id of this data set: changes when Redis lost its data
    P:resync         stream resync requests, field a (account), read by the owner
"""

from __future__ import annotations

import enum
from typing import Final

DEFAULT_PREFIX: Final = "balagg"

FIELD_SEP: Final = "|"
"""Separates wallet and asset in the field names of the ``bal`` and ``ts`` hashes."""


class AccountKey(enum.StrEnum):
    """The kinds of per-account key: ``P:{acct}:<kind>``."""

    BALANCES = "bal"
    TIMES = "ts"
    STATUS = "status"
    LEASE = "lease"
    HOLDER = "holder"
    RESYNC_GATE = "resync_gate"


class GlobalKey(enum.StrEnum):
    """The kinds of deployment-wide key: ``P:<kind>``."""

    SEQ = "seq"
    CHANGES = "changes"
    PRICES = "prices"
    INSTANCES = "instances"
    DATASET = "dataset"
    RESYNC = "resync"


def field_name(wallet: str, asset: str) -> str:
    """The hash field of one balance: ``wallet|ASSET``."""
    return f"{wallet}{FIELD_SEP}{asset}"


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.seq = self.shared(GlobalKey.SEQ)
        self.changes = self.shared(GlobalKey.CHANGES)
        self.prices = self.shared(GlobalKey.PRICES)
        self.instances = self.shared(GlobalKey.INSTANCES)
        self.dataset = self.shared(GlobalKey.DATASET)
        self.resync = self.shared(GlobalKey.RESYNC)

    def shared(self, kind: GlobalKey) -> str:
        return f"{self.prefix}:{kind}"

    def account(self, account: str, kind: AccountKey) -> str:
        return f"{self.prefix}:{{{account}}}:{kind}"

    def balances(self, account: str) -> str:
        return self.account(account, AccountKey.BALANCES)

    def times(self, account: str) -> str:
        return self.account(account, AccountKey.TIMES)

    def status(self, account: str) -> str:
        return self.account(account, AccountKey.STATUS)

    def lease(self, account: str) -> str:
        return self.account(account, AccountKey.LEASE)

    def holder(self, account: str) -> str:
        return self.account(account, AccountKey.HOLDER)

    def resync_gate(self, account: str) -> str:
        return self.account(account, AccountKey.RESYNC_GATE)
