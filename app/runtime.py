"""The running service's parts, built by the app's lifespan and shared by every route."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from app.metrics import Metrics
from app.settings import AccountConfig, Settings
from app.store import BalanceReader, BalanceWriter, Keys

if TYPE_CHECKING:
    from app.prices.service import PriceService
    from app.stream.hub import StreamHub
    from app.supervisor import Supervisor


@dataclass
class Runtime:
    settings: Settings
    accounts: list[AccountConfig]
    redis: aioredis.Redis
    keys: Keys
    writer: BalanceWriter
    reader: BalanceReader
    metrics: Metrics
    supervisor: Supervisor = field(init=False)
    hub: StreamHub = field(init=False)
    prices: PriceService = field(init=False)
    _by_id: dict[str, AccountConfig] = field(init=False, default_factory=dict, repr=False)

    @property
    def account_ids(self) -> list[str]:
        return [a.id for a in self.accounts]

    def account(self, account_id: str) -> AccountConfig | None:
        # a dict, not a scan: the supervisor asks once per account (quadratic at 10,000)
        if len(self._by_id) != len(self.accounts):
            self._by_id = {a.id: a for a in self.accounts}
        return self._by_id.get(account_id)
