"""``python -m bench --history``: the figures of balance history (issue 14).

- **writer**: changes/s the history writer commits from the change stream into SQLite and
  into a private PostgreSQL (target ≥ 20,000/s): a real embedded Redis holds ``N`` stream
  entries shaped exactly as the fold writes them; one :class:`HistoryWriter` bootstraps
  and catches up; the rate is ``N`` over that time.
- **at**: ``?at=`` over a million stored changes (target < 50 ms): the tables are filled
  directly (100 accounts x 20 assets as in the main bench, 100 µs apart), checkpoints are
  written as the writer writes them (every ``BALAGG_HISTORY_CHECKPOINT_EVERY`` seqs), then
  :func:`app.history.queries.state_at` answers 50 random instants (with a snapshot cache,
  as the service keeps one) and :func:`~app.history.queries.balances_json` encodes each
  answer as the route does (p50/p99/max, in the process: the HTTP layer adds the same
  ~1 ms as any route), and the process's CPU time per answer beside it (SQLite's driver
  thread included, PostgreSQL's server not): on a shared machine the wall time is mostly
  waiting for a core. The bench's heap is frozen first (``gc.freeze()``), as the
  service's is once started, so a full collection does not walk it. PostgreSQL is
  analyzed first (``VACUUM ANALYZE``, as autovacuum would have by then); SQLite has no
  statistics unless someone runs ``ANALYZE``, and the service does not.
- **fold**: fold throughput of ``python -m app serve`` with history on and off (target:
  on within 5 % of off), the same ``fold_run`` as the main bench, alternated on/off.

PostgreSQL comes from :mod:`tests.pgserver` (``initdb`` + ``postgres`` of this machine, a
private cluster in a temp directory, never a shared server); without those binaries the
PostgreSQL figures are skipped and say so.
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from sqlalchemy import func, select

from app.history import links, queries, schema
from app.history.rows import balance_row
from app.history.snapshot_cache import SnapshotCache
from app.history.times import iso_us
from app.history.writer import HistoryWriter
from app.redis_server import EmbeddedRedis
from app.store import Keys
from bench.phases import Bench, Sizes, fold_run, log, service_account
from bench.procs import Service, Stack

# the main bench's shape: 100 accounts with 20 assets each, 2,000 records in the state
ACCOUNTS = [f"acct-{i:03d}" for i in range(100)]
ASSETS = tuple(f"A{i:02d}" for i in range(20))


def _balance(seq: int, rng: random.Random) -> dict[str, Any]:
    total = f"{rng.randint(0, 10**12)}.{rng.randint(0, 10**8 - 1):08d}"
    return {
        "account": ACCOUNTS[seq % len(ACCOUNTS)], "venue": "bitopro", "wallet": "",
        "asset": ASSETS[(seq // len(ACCOUNTS)) % len(ASSETS)], "symbol": None,
        "total": total, "available": total, "locked": "0",
        "updated_at": "2026-11-28T08:00:00.000Z", "venue_ts": None, "extra": {},
    }  # fmt: skip


async def _fill_stream(client: aioredis.Redis, keys: Keys, n: int) -> None:
    rng = random.Random(1)
    t0 = time.time_ns() // 1000 - n
    for start in range(1, n + 1, 5_000):
        pipe = client.pipeline(transaction=False)
        for seq in range(start, min(start + 5_000, n + 1)):
            b = _balance(seq, rng)
            msg = orjson.dumps({"type": "balance", "seq": seq, "balance": b, "stale": False})
            pipe.xadd(keys.changes, {"a": b["account"], "s": b["asset"], "m": msg,
                                     "t": str(t0 + seq)}, id=f"{seq}-0")  # fmt: skip
        await pipe.execute()
    await client.set(keys.seq, n)


async def writer_run(url: str, redis_url: str, n: int, name: str) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis_url)
    keys = Keys(f"hist-{name}")
    engine = schema.make_engine(url)
    try:
        await _fill_stream(client, keys, n)
        writer = HistoryWriter(client, keys, engine, lambda: ACCOUNTS, consumer=name,
                               block_ms=10)  # fmt: skip
        t0 = time.monotonic()
        await writer.bootstrap()
        await writer.catch_up()
        seconds = time.monotonic() - t0
        async with engine.connect() as conn:
            stored = (await conn.execute(select(func.count()).select_from(schema.changes))).scalar()
    finally:
        await engine.dispose()
        await client.aclose()
    return {"database": name, "changes": n, "stored": stored, "seconds": round(seconds, 2),
            "changes_per_s": round(n / seconds), "checkpoints": writer.checkpoints}  # fmt: skip


async def _fill_tables(url: str, n: int, every: int) -> tuple[int, int]:
    """``n`` changes (and checkpoints) straight into the tables; returns the time span."""
    engine = schema.make_engine(url)
    rng = random.Random(2)
    t_first = time.time_ns() // 1000 - n * 100
    try:
        await schema.migrate(engine)
        w = schema.writes(engine)
        async with w.begin() as conn:
            await queries.insert_ignore(
                conn, schema.snapshots, [{"seq": 0, "time_us": t_first - 1, "reason": "genesis"}]
            )
        memory = links.LinkMemory()  # the writer's linking, as the writer stores them
        for start in range(1, n + 1, 10_000):
            rows = []
            for seq in range(start, min(start + 10_000, n + 1)):
                rows.append(balance_row(seq, t_first + seq * 100, _balance(seq, rng)))
            async with w.begin() as conn:
                linked = await links.store_changes(conn, rows, memory)
                if every:
                    await queries.write_checkpoint(conn, rows[-1][0], every)
            linked.remember(memory)
    finally:
        await engine.dispose()
    return t_first, t_first + n * 100


async def at_run(url: str, n: int, name: str, every: int = 10_000) -> dict[str, Any]:
    t0 = time.monotonic()
    first, last = await _fill_tables(url, n, every)
    fill = time.monotonic() - t0
    engine = schema.make_engine(url)
    analyzed = engine.dialect.name == "postgresql"
    if analyzed:
        # Measure the steady state: autovacuum analyzes a table within about a minute of
        # this many new rows; queried straight after the fill, the planner has no
        # statistics for the million rows yet.
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.exec_driver_sql("VACUUM ANALYZE")
    snapshots = SnapshotCache()  # as the service keeps one per database
    gc.collect()
    gc.freeze()  # as the service does once started (app/service.py)
    rng = random.Random(3)
    times: list[float] = []
    cpu: list[float] = []  # this process's CPU per answer (SQLite's thread included)
    sizes: list[int] = []
    try:
        for _ in range(50):
            at = rng.randint(first, last)
            s, c = time.perf_counter(), time.process_time()
            async with engine.connect() as conn:
                state = await queries.state_at(conn, at, snapshots=snapshots)
            queries.balances_json(state, iso_us(at))  # the route's JSON body
            times.append((time.perf_counter() - s) * 1000)
            cpu.append((time.process_time() - c) * 1000)
            sizes.append(len(state.raw))
    finally:
        await engine.dispose()
    times.sort()
    cpu.sort()
    return {"database": name, "changes": n, "checkpoint_every": every,
            "fill_seconds": round(fill, 1), "analyzed": analyzed,
            "records_per_answer": max(sizes),
            "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
            "max_ms": round(times[-1], 2),
            "cpu_p50_ms": round(statistics.median(cpu), 2),
            "cpu_p99_ms": round(cpu[min(len(cpu) - 1, int(len(cpu) * 0.99))], 2)}  # fmt: skip


class _Bench(Bench):
    """Adds each simulator account once (fold_run adds its ceiling accounts every run)."""

    def __init__(self, stack: Stack, sizes: Sizes) -> None:
        super().__init__(stack, sizes)
        self._added: set[str] = set()

    async def add_accounts(self, names: list[str], assets: int = 20) -> None:
        new = [n for n in names if n not in self._added]
        self._added.update(new)
        if new:
            await super().add_accounts(new, assets)


async def fold_on_off(stack: Stack, frames: int, accounts: int, rounds: int) -> dict[str, Any]:
    b = _Bench(stack, Sizes())
    runs: dict[str, list[float]] = {"on": [], "off": []}
    try:
        services = {}
        for mode in ("on", "off"):
            names = [f"h{mode}-{i:03d}" for i in range(accounts)]
            await b.add_accounts(names)
            svc = Service(stack, [service_account(stack, x) for x in names], f"hist{mode}",
                          history=mode == "on")  # fmt: skip
            await svc.wait_live(accounts)
            services[mode] = (svc, names)
        try:
            for _ in range(rounds):
                for mode in ("on", "off"):
                    svc, names = services[mode]
                    run = await fold_run(b, svc, names, frames)
                    log(f"fold, history {mode}: {run['frames_per_s']} frames/s")
                    runs[mode].append(run["frames_per_s"])
        finally:
            for svc, _names in services.values():
                svc.stop()
    finally:
        await b.close()
    on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
    return {"accounts": accounts, "frames": frames, "rounds": rounds,
            "on_frames_per_s": runs["on"], "off_frames_per_s": runs["off"],
            "ratio_on_off": round(on / off, 3)}  # fmt: skip


async def _pg_url() -> tuple[Any, str] | None:
    try:
        from tests.pgserver import PrivatePostgres, find_bin
    except ImportError:
        return None
    if find_bin("initdb") is None:
        return None
    server = PrivatePostgres()
    server.start()
    return server, server.url


async def run_history(changes: int, at_changes: int, fold: bool, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"writer_runs": [], "at_runs": []}
    tmp = Path(tempfile.mkdtemp(prefix="balagg-bench-history-"))
    redis = EmbeddedRedis(tmp / "redis", appendonly=False)
    await asyncio.to_thread(redis.start)
    pg = await _pg_url()
    try:
        urls = [("sqlite", f"sqlite+aiosqlite:///{tmp / 'w.sqlite3'}")]
        if pg is not None:
            urls.append(("postgresql", pg[0].create_database()))
        else:
            log("PostgreSQL binaries not found: PostgreSQL figures skipped")
        for name, url in urls:
            run = await writer_run(url, redis.url, changes, name)
            log(f"history writer into {name}: {run}")
            out["writer_runs"].append(run)
        at_urls = [("sqlite", f"sqlite+aiosqlite:///{tmp / 'at.sqlite3'}")]
        if pg is not None:
            at_urls.append(("postgresql", pg[0].create_database()))
        for name, url in at_urls:
            run = await at_run(url, at_changes, name)
            log(f"?at= over {at_changes:,} changes in {name}: {run}")
            out["at_runs"].append(run)
    finally:
        if pg is not None:
            pg[0].destroy()
        await asyncio.to_thread(redis.stop)
    if fold:
        stack = Stack(ping=20.0)
        try:
            stack.start()
            out["fold_history"] = await fold_on_off(
                stack, 20_000 if quick else 100_000, 10, 2 if quick else 3
            )
            log(f"fold with history on vs off: {out['fold_history']}")
        finally:
            stack.stop()
    return out


def history_table(doc: dict[str, Any]) -> str:
    lines = ["| history figure | measured | target |", "|---|---|---|"]
    for r in doc["writer_runs"]:
        lines.append(f"| writer into {r['database']}, {r['changes']:,} changes | "
                     f"{r['changes_per_s']:,} changes/s | ≥ 20,000/s |")  # fmt: skip
    for r in doc["at_runs"]:
        lines.append(
            f"| `?at=` over {r['changes']:,} changes in {r['database']} (checkpoint every "
            f"{r['checkpoint_every']:,}) | p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"max {r['max_ms']} ms (process CPU p50 {r.get('cpu_p50_ms')} ms, "
            f"p99 {r.get('cpu_p99_ms')} ms) | < 50 ms |"
        )
    fold = doc.get("fold_history")
    if fold:
        lines.append(
            f"| fold, history on / off ({fold['accounts']} accounts, {fold['frames']:,} "
            f"frames, median of {fold['rounds']}) | {fold['ratio_on_off']} "
            f"(on {fold['on_frames_per_s']}, off {fold['off_frames_per_s']}) | ≥ 0.95 |"
        )
    return "\n".join(lines)
