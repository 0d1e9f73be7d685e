"""History's running parts for one service: the engine, the writer and the price recorder.

Built by the service lifespan after Redis is up (:func:`start_history`) and stopped
before Redis goes away (:meth:`History.stop`). The routes find it as
``app.state.history`` (``None`` when ``BALAGG_HISTORY=off``).
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.history.prices import PriceRecorder
from app.history.schema import default_url, make_engine, redacted
from app.history.snapshot_cache import SnapshotCache
from app.history.value import ValuationRules
from app.history.writer import GROUP, HistoryWriter
from app.metrics import Metrics
from app.mints import STABLE_MINTS
from app.settings import Settings
from app.store import Keys

log = logging.getLogger(__name__)


@dataclass
class History:
    engine: AsyncEngine
    writer: HistoryWriter
    prices: PriceRecorder
    redis: aioredis.Redis
    rules: ValuationRules = field(default_factory=ValuationRules)
    snapshots: SnapshotCache = field(default_factory=SnapshotCache)

    @property
    def ready(self) -> bool:
        return self.writer.ready

    async def stop(self) -> None:
        await self.writer.stop()
        await self.prices.stop()
        await self.redis.aclose()
        await self.engine.dispose()


def group_name(url: str, host: str | None = None) -> str:
    """The consumer group of this database.

    A PostgreSQL database is shared by every replica: one group, so each change is written
    once. An SQLite file belongs to one host: its own group (per host and file), so each
    such instance keeps a complete history of its own rather than a share of one.
    """
    if not url.startswith("sqlite"):
        return GROUP
    digest = hashlib.sha256(f"{host or socket.gethostname()}|{url}".encode()).hexdigest()
    return f"{GROUP}:sqlite:{digest[:16]}"


def history_url(settings: Settings) -> str:
    if settings.history_url is not None:
        return settings.history_url.get_secret_value()
    return default_url(settings.data_dir)


async def start_history(
    settings: Settings,
    redis_url: str,
    keys: Keys,
    accounts: Sequence[str],
    metrics: Metrics | None,
) -> History | None:
    """Start the writer on its own Redis connection; ``None`` when history is off."""
    if not settings.history:
        log.info("history is off (BALAGG_HISTORY=off)")
        return None
    url = history_url(settings)
    engine = make_engine(url)
    # its own connection: a slow database never holds up the hub's stream reader
    client = aioredis.Redis.from_url(
        redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=10
    )
    account_list = list(accounts)
    writer = HistoryWriter(
        client,
        keys,
        engine,
        lambda: account_list,
        consumer=settings.instance_id,
        group=group_name(url),
        batch=settings.history_batch,
        claim_idle_ms=settings.history_claim_idle_ms,
        retention_days=settings.history_retention_days,
        checkpoint_every=settings.history_checkpoint_every,
        metrics=metrics,
    )
    prices = PriceRecorder(
        engine,
        interval=settings.history_price_interval,
        threshold=settings.history_price_threshold,
        # a private database (SQLite, its own consumer group) also keeps the prices this
        # instance follows from other replicas; a shared one only this instance's feeds
        record_followed=url.startswith("sqlite"),
    )
    writer.start()
    prices.start()
    log.info("history into %s", redacted(url))
    return History(
        engine=engine, writer=writer, prices=prices, redis=client, rules=valuation_rules(settings)
    )


def valuation_rules(settings: Settings) -> ValuationRules:
    """The live valuation's rules (app/prices/service.py), for past values."""
    return ValuationRules(
        max_age=settings.price_max_age,
        max_ages=dict(settings.price_max_ages),
        pegs=dict(settings.price_pegs),
        identities=dict(STABLE_MINTS),
        static=dict(settings.static_prices),
    )
