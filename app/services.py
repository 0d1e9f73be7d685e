"""The running service's parts as one immutable value, and the seam for the upstream side.

Where it sits: the app's lifespan (:mod:`app.service`) builds the parts in dependency
order — Redis, the lease manager and its :class:`~app.leases.Fence`, the batched writer,
the price service, the stream hub, then the upstream side — each with its collaborators
passed to its constructor. Once every part exists it puts one :class:`Services` on
``app.state.services``; the routes read it through :mod:`app.api.deps`. Nothing in it is
filled in later.

The upstream side (leases, one runner per owned account, the price sockets) is built by
an :class:`UpstreamFactory` — :class:`app.supervisor.Supervisor` unless ``create_app`` is
given another one (the API tests pass a stand-in without venue sockets). What the service
needs from it is :class:`Upstream`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import redis.asyncio as aioredis

from app.accounts import AccountConfig
from app.leases import LeaseManager
from app.metrics import Metrics
from app.prices.service import PriceService
from app.settings import Settings
from app.store import BalanceReader, BalanceWriter, Keys
from app.stream.hub import StreamHub

if TYPE_CHECKING:
    from app.upstream import AccountRunner


class Upstream(Protocol):
    """What the service asks of its upstream side."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def resync(self, account_id: str) -> None:
        """Reconnect and re-seed an account on whichever instance owns it; ``KeyError``
        for an account that is not configured."""

    def fence_token(self, account_id: str) -> str | None:
        """The lease token the account's writes must match (``None``: not ours)."""

    def on_fenced(self, account_id: str) -> None:
        """A write for the account was refused: another instance owns it now."""

    def runner(self, account_id: str) -> AccountRunner | None:
        """The account's upstream runner when this process runs it."""


class UpstreamFactory(Protocol):
    """Builds the upstream side from its collaborators (``Supervisor`` is one).

    ``runners`` is the registry of the accounts this process runs (the hub reads it to
    tell whether a status this instance wrote is still backed by a runner); ``fenced``
    carries the accounts whose writes the writer found fenced.
    """

    def __call__(
        self,
        *,
        settings: Settings,
        accounts: Sequence[AccountConfig],
        redis: aioredis.Redis,
        keys: Keys,
        writer: BalanceWriter,
        reader: BalanceReader,
        metrics: Metrics,
        prices: PriceService,
        seq_seen: Callable[[], int],
        leases: LeaseManager,
        runners: dict[str, AccountRunner],
        fenced: asyncio.Queue[str],
    ) -> Upstream: ...


@dataclass(frozen=True, slots=True)
class Services:
    """The parts every route reads, all of them built and started by the lifespan."""

    settings: Settings
    accounts: Sequence[AccountConfig]
    redis: aioredis.Redis
    keys: Keys
    writer: BalanceWriter
    reader: BalanceReader
    metrics: Metrics
    prices: PriceService
    hub: StreamHub
    supervisor: Upstream
