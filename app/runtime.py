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

    @property
    def account_ids(self) -> list[str]:
        return [a.id for a in self.accounts]

    def account(self, account_id: str) -> AccountConfig | None:
        for account in self.accounts:
            if account.id == account_id:
                return account
        return None
