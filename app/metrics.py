"""Prometheus metrics (SPEC §10), one registry per service instance.

A registry per :class:`Metrics` object (not the process-global default) lets tests and
benchmarks run several services in one process without collisions. Label values are
account ids, venues, states and reasons only: never anything secret.

Besides the families below, :class:`BalanceCollector` reads the per-balance gauges from
the stream hub's mirror at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip


class Metrics:
    """Every metric family the service exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.upstream_connected = Gauge(
            "balagg_upstream_connected",
            "1 while the account's upstream WebSocket is open",
            ["account", "venue"],
            registry=r,
        )
        self.upstream_state = Gauge(
            "balagg_upstream_state",
            "1 for the account's current lifecycle state, 0 for the others",
            ["account", "venue", "state"],
            registry=r,
        )
        self.upstream_messages = Counter(
            "balagg_upstream_messages",
            "Upstream frames received, by kind",
            ["account", "venue", "kind"],
            registry=r,
        )
        self.upstream_reconnects = Counter(
            "balagg_upstream_reconnects",
            "Upstream reconnects, by reason",
            ["account", "venue", "reason"],
            registry=r,
        )
        self.upstream_last_message = Gauge(
            "balagg_upstream_last_message_timestamp_seconds",
            "Unix time of the last upstream frame",
            ["account"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "balagg_upstream_errors",
            "Upstream errors, by reason (parse, schema, amount, auth, sequence_gap, ...)",
            ["account", "venue", "reason"],
            registry=r,
        )
        self.upstream_throttled = Counter(
            "balagg_upstream_throttled",
            "Waits to stay within a venue's limits, by kind (connect, rest, sockets)",
            ["venue", "kind"],
            registry=r,
        )
        self.upstream_throttled_seconds = Counter(
            "balagg_upstream_throttled_seconds",
            "Seconds spent waiting to stay within a venue's limits, by kind",
            ["venue", "kind"],
            registry=r,
        )
        self.fold_seconds = Histogram(
            "balagg_fold_seconds",
            "Time to parse and fold one upstream frame: the mean over a batch of frames read "
            "together (one batch in eight is timed)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.balance_updates = Counter(
            "balagg_balance_updates",
            "Balance records changed (written to the change stream)",
            ["account"],
            registry=r,
        )
        self.redis_errors = Counter(
            "balagg_redis_errors", "Redis errors, by operation", ["op"], registry=r
        )
        self.downstream_clients = Gauge(
            "balagg_downstream_clients", "Connected /v1/stream clients", registry=r
        )
        self.downstream_messages = Counter(
            "balagg_downstream_messages", "Messages sent to /v1/stream clients", registry=r
        )
        self.downstream_conflated = Counter(
            "balagg_downstream_conflated",
            "Pending messages replaced by a newer one for the same key (slow clients)",
            registry=r,
        )
        self.downstream_disconnects = Counter(
            "balagg_downstream_disconnects",
            "Stream clients disconnected, by reason",
            ["reason"],
            registry=r,
        )
        self.event_lag_seconds = Histogram(
            "balagg_event_lag_seconds",
            "Upstream receive to downstream send",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.leases_held = Gauge(
            "balagg_leases_held", "Account leases this instance holds", registry=r
        )
        self.lease_takeovers = Counter(
            "balagg_lease_takeovers",
            "Accounts this instance took over from another owner",
            registry=r,
        )
        self.fenced_writes = Counter(
            "balagg_fenced_writes",
            "Writes refused because this instance no longer held the account's lease",
            ["account"],
            registry=r,
        )
        self.redis_up = Gauge("balagg_redis_up", "1 while Redis answers writes", registry=r)
        self.pending_writes = Gauge(
            "balagg_pending_writes", "Keys waiting to be written to Redis", registry=r
        )
        self.history_lag_seconds = Gauge(
            "balagg_history_lag_seconds",
            "Age of the oldest change the history writer has not committed yet (0 = caught up)",
            registry=r,
        )
        self.history_writes = Counter(
            "balagg_history_writes", "Changes committed to the history database", registry=r
        )
        self.history_gaps = Counter(
            "balagg_history_gaps",
            "Gaps recorded because the change stream no longer held unwritten changes",
            registry=r,
        )
        self.price_feed_errors = Counter(
            "balagg_price_feed_errors",
            "Frames rejected whole on an own price socket, by feed and reason",
            ["feed", "reason"],
            registry=r,
        )


class BalanceCollector(Collector):
    """``balagg_balance{account,asset,field}`` for non-zero balances, read at scrape time.

    ``balance_sums()`` gives (total, available, locked) per (account, asset) with the
    wallets of one account holding the same asset summed, so every label set is unique
    (a Solana account may track several wallets holding one mint).
    """

    def __init__(
        self,
        balance_sums: Callable[[], Mapping[tuple[str, str], tuple[Decimal, Decimal, Decimal]]],
    ) -> None:
        self._balance_sums = balance_sums

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "balagg_balance",
            "Current balance per account and asset (non-zero only; wallets summed)",
            labels=["account", "asset", "field"],
        )

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = self._family()
        for (account, asset), sums in self._balance_sums().items():
            for name, value in zip(("total", "available", "locked"), sums, strict=True):
                # the exposition format is float text; prometheus_client converts it there
                family.add_metric([account, asset, name], value)  # type: ignore[arg-type]
        return [family]
