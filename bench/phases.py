"""The measurements: fold (with its two ceilings), latency, REST, fan-out, scale."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import redis.asyncio as aioredis

from app.domain import AssetBalance
from app.simulators.bitopro import auth_headers
from app.store import Keys, decimal_str, field_name, iso_time
from app.store.records import balance_message, encode_content, encode_venue_ts
from bench.procs import Child, Service, Stack, free_port
from bench.wsclient import WsClient, connect

ASSETS = (
    "BTC",
    "ETH",
    "USDT",
    "TWD",
    "ADA",
    "SOL",
    "XRP",
    "DOGE",
    "DOT",
    "LTC",
    "BCH",
    "LINK",
    "UNI",
    "MATIC",
    "TRX",
    "AVAX",
    "ATOM",
    "XLM",
    "ETC",
    "FIL",
)
UNIT = Decimal("0.00000001")
PHASES = frozenset({"fold", "latency", "rest", "fanout", "workers", "scale"})


@dataclass
class Sizes:
    """How big each measurement is (``--quick`` and ``--smoke`` shrink them)."""

    fold_accounts: list[int] = field(default_factory=lambda: [1, 10, 100])
    fold_frames: int = 150_000
    redis_records: int = 200_000
    latency_rates: list[int] = field(default_factory=lambda: [1_000, 5_000])
    latency_seconds: float = 5.0
    rest_seconds: float = 10.0
    fanout_clients: list[int] = field(default_factory=lambda: [100, 1_000])
    fanout_rate: int = 100
    fanout_seconds: float = 5.0
    fold_workers: list[int] = field(default_factory=lambda: [1, 2])
    scale_accounts: list[int] = field(default_factory=lambda: [100, 2_000, 10_000])
    scale_window: float = 10.0
    scale_live_timeout: float = 120.0
    # the service's default (BALAGG_HEARTBEAT, 20 s); BitoPro pings every 20 s itself
    scale_heartbeat: float = 20.0
    phases: frozenset[str] = PHASES
    """Which measurements run (``--only``); the fold always runs its ceilings with it."""
    fold_repeat: int = 1
    """``--repeat N``: each fold size runs N times; the run of median frames/s is kept."""
    profile: str | None = None
    """``--py-spy PREFIX``: py-spy's raw stacks of the service during each timed fold
    burst and latency run, one file per run (``PREFIX.<workers>w-<accounts>a-<run>``,
    ``PREFIX.latency-<rate>``)."""

    @property
    def service_accounts(self) -> int:
        return max(max(self.fold_accounts), 2)


def quick_sizes() -> Sizes:
    return Sizes(
        scale_accounts=[100, 2_000],
        fold_frames=60_000,
        redis_records=60_000,
        latency_seconds=2.0,
        rest_seconds=3.0,
        fanout_seconds=2.0,
        scale_window=3.0,
    )


def smoke_sizes() -> Sizes:
    return Sizes(
        fold_accounts=[1, 3],
        fold_frames=2_000,
        redis_records=2_000,
        latency_rates=[200],
        latency_seconds=1.0,
        rest_seconds=1.0,
        fanout_clients=[5],
        fanout_rate=50,
        fanout_seconds=1.0,
        scale_accounts=[5],
        scale_window=1.0,
    )


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def effective_lags(sent: dict[int, float], seen: dict[int, float]) -> list[float]:
    """Per sent update k, ms until the client held k or a newer value (newest wins, so a
    conflated update counts as delivered by the next one that got through)."""
    lags: list[float] = []
    best = float("inf")
    for k in sorted(set(sent) | set(seen), reverse=True):
        if k in seen:
            best = min(best, seen[k])
        if k in sent and best != float("inf"):
            lags.append((best - sent[k]) * 1000)
    return lags


def sim_account(name: str, assets: int = 20) -> dict[str, Any]:
    """A BitoPro simulator account body; ``name`` doubles as the service account id."""
    balances = {
        a: {"amount": f"{1000 + i}.5", "available": f"{900 + i}.25"}
        for i, a in enumerate(ASSETS[:assets])
    }
    return {
        "api_key": f"key-{name}",
        "api_secret": f"secret-{name}",
        "email": f"{name}@bench.invalid",
        "balances": balances,
    }


def service_account(stack: Stack, name: str) -> dict[str, Any]:
    return {
        "id": name,
        "venue": "bitopro",
        "api_key": f"key-{name}",
        "api_secret": f"secret-{name}",
        "email": f"{name}@bench.invalid",
        "ws_url": stack.ws_url,
        "rest_url": stack.rest_url,
    }


class Bench:
    """Shared state of one bench run."""

    def __init__(self, stack: Stack, sizes: Sizes) -> None:
        self.stack = stack
        self.sizes = sizes
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        self.redis = aioredis.Redis.from_url(stack.redis.url)
        self._nonce = 0
        self.fold_count = 0

    async def close(self) -> None:
        await self.http.close()
        await self.redis.aclose()

    async def add_accounts(self, names: list[str], assets: int = 20) -> None:
        for i in range(0, len(names), 500):
            body = {"accounts": [sim_account(n, assets) for n in names[i : i + 500]]}
            async with self.http.post(self.stack.bench_url + "/bench/accounts", json=body) as r:
                r.raise_for_status()

    async def bench_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(self.stack.bench_url + path, json=body) as r:
            r.raise_for_status()
            doc: dict[str, Any] = await r.json()
            return doc

    async def truth(self, name: str) -> dict[str, dict[str, Decimal]]:
        url = f"{self.stack.rest_url}/_sim/accounts/key-{name}/truth"
        async with self.http.get(url) as r:
            r.raise_for_status()
            doc = await r.json()
        return {
            row["asset"]: {k: Decimal(row[k]) for k in ("total", "available", "locked")}
            for row in doc["balances"]
        }

    async def metric(self, service: Service, name: str, labels: str = "") -> float:
        """A counter summed over every worker's own ``/metrics``."""
        total = 0.0
        for base in service.metric_bases:
            async with self.http.get(base + "/metrics") as r:
                text = await r.text()
            for line in text.splitlines():
                if line.startswith(name) and labels in line:
                    head, _, value = line.rpartition(" ")
                    if head.split("{")[0] == name:
                        total += float(value)
        return total

    async def wait_sim_open(self, count: int, deadline: float) -> None:
        """Until the simulator holds ``count`` open, ready sockets (or ``deadline``)."""
        while time.monotonic() < deadline:
            async with self.http.get(self.stack.bench_url + "/bench/conns") as r:
                if (await r.json())["open"] >= count:
                    return
            await asyncio.sleep(0.2)

    def nonce(self) -> int:
        self._nonce = max(time.time_ns() // 1_000_000, self._nonce + 1)
        return self._nonce


# --------------------------------------------------------------------------- fold


def profiler(out: str | None, pid: int) -> subprocess.Popen[bytes] | None:
    """With ``out``: py-spy (not a project dependency) samples ``pid``'s thread holding
    the GIL until :func:`stop_profiler`, and writes its raw stacks to ``out``
    (``python -m bench.profile`` sums them); its own messages go to ``out.log``."""
    if out is None:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args = [spy, "record", "--gil", "--native", "-f", "raw", "-r", "250", "-o", out]
    with open(out + ".log", "wb") as spy_log:
        return subprocess.Popen(
            [*args, "--pid", str(pid)],
            stdout=spy_log,
            stderr=subprocess.STDOUT,
        )


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class CpuShares:
    """Cores used over a window by the service, the simulator host, Redis, the bench
    itself and everything else on the machine (other users' load makes a run noisy)."""

    def __init__(self, b: Bench, service: Service) -> None:
        self.service = service
        self.own = {
            "simhost": psutil.Process(b.stack.sim.pid) if b.stack.sim is not None else None,
            "redis": psutil.Process(b.stack.redis.pid) if b.stack.redis.pid else None,
            "bench": psutil.Process(),
        }
        self.t0 = time.monotonic()
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        out = {"service": self.service.cpu_seconds()}
        for name, proc in self.own.items():
            times = proc.cpu_times() if proc is not None else None
            out[name] = times.user + times.system if times is not None else 0.0
        machine = psutil.cpu_times()
        out["machine"] = (
            machine.user + machine.system + machine.nice + machine.irq + (machine.softirq)
        )
        return out

    def cores(self) -> dict[str, float]:
        end, seconds = self._sample(), max(1e-6, time.monotonic() - self.t0)
        used = {k: (end[k] - self.start[k]) / seconds for k in end}
        ours = sum(v for k, v in used.items() if k != "machine")
        result = {k: round(v, 2) for k, v in used.items() if k != "machine"}
        result["other"] = round(max(0.0, used["machine"] - ours), 2)
        return result


async def parse_ceiling(b: Bench, names: list[str], per: int) -> float:
    """Frames/s a plain aiohttp client receives and orjson-parses, with no state."""
    conns: list[aiohttp.ClientWebSocketResponse] = []
    for name in names:
        headers = auth_headers(f"key-{name}", f"secret-{name}", f"{name}@bench.invalid", b.nonce())
        ws = await b.http.ws_connect(b.stack.ws_url, headers=headers, max_msg_size=1 << 22)
        await ws.receive()  # the snapshot frame
        conns.append(ws)
    ends: list[float] = []

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        got = 0
        while got < per:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"ceiling client: unexpected {msg.type}")
            orjson.loads(msg.data)
            got += 1
        ends.append(time.monotonic())

    readers = [asyncio.create_task(read(ws)) for ws in conns]
    fired = await b.bench_post(
        "/bench/fire", {"keys": [f"key-{n}" for n in names], "count": per, "asset": "BTC"}
    )
    await asyncio.wait_for(asyncio.gather(*readers), 120)
    for ws in conns:
        await ws.close()
    return per * len(names) / (max(ends) - float(fired["t0"]))


async def redis_ceiling(b: Bench, records: int) -> float:
    """Records/s of HSET + XADD pipelines of 1,000 sent straight from Python."""
    sample = AssetBalance(
        wallet="",
        asset="BTC",
        total=Decimal("1000.5"),
        available=Decimal("900.25"),
        locked=Decimal("100.25"),
        symbol="BTC",
    )
    content = encode_content("acct-000", "bitopro", sample)
    message = balance_message(1, content, iso_time(time.time()), encode_venue_ts(None))
    ceil = Keys("ceil")
    t0 = time.monotonic()
    done = 0
    while done < records:
        pipe = b.redis.pipeline(transaction=False)
        for i in range(min(1000, records - done)):
            pipe.hset(ceil.balances(f"acct-{i % 100:03d}"), field_name("", "BTC"), content)
            pipe.xadd(ceil.changes, {"a": "acct", "s": "BTC", "m": message}, maxlen=1_000_000)
        await pipe.execute()
        done += 1000
    rate = records / (time.monotonic() - t0)
    keys = [k async for k in b.redis.scan_iter(f"{ceil.prefix}:*", count=1000)]
    if keys:
        await b.redis.delete(*keys)
    return rate


async def verify(b: Bench, service: Service, names: list[str]) -> bool:
    ok = True
    for name in names:
        truth = await b.truth(name)
        held = await b.redis.hgetall(Keys(service.prefix).balances(name))
        got = {}
        for raw in held.values():
            doc = orjson.loads(raw)
            got[doc["asset"]] = {k: Decimal(doc[k]) for k in ("total", "available", "locked")}
        if got != truth:
            log(f"verify: {name} differs from the simulator's truth")
            ok = False
    return ok


_NOT_THERE_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HGET', key, '|BTC')
  if not v or not string.find(v, ARGV[i], 1, true) then out[#out + 1] = i - 1 end
end
return out
"""


async def fold_run(b: Bench, service: Service, names: list[str], frames: int) -> dict[str, Any]:
    per = max(1, frames // len(names))
    b.fold_count += 1  # fresh ceiling accounts per run (repeats included)
    ceil_names = [
        f"ceil-{service.workers}w-{len(names)}-{b.fold_count}-{i:03d}" for i in range(len(names))
    ]
    await b.add_accounts(ceil_names, assets=1)
    parse = await parse_ceiling(b, ceil_names, per)
    seq_key = Keys(service.prefix).seq
    seq0 = int(await b.redis.get(seq_key) or 0)
    msgs0 = await b.metric(service, "balagg_upstream_messages_total", 'kind="balance"')
    reconnects0 = await b.metric(service, "balagg_upstream_reconnects_total")
    timed0 = await b.metric(service, "balagg_fold_seconds_count")
    profile = b.sizes.profile
    spy = profiler(
        f"{profile}.{service.workers}w-{len(names)}a-{b.fold_count}" if profile else None,
        service.pid,
    )
    if spy is not None:
        await asyncio.sleep(0.5)  # py-spy attaches before the burst
    cpu0 = service.cpu_seconds()
    shares = CpuShares(b, service)
    fired = await b.bench_post(
        "/bench/fire", {"keys": [f"key-{n}" for n in names], "count": per, "asset": "BTC"}
    )
    t0 = float(fired["t0"])
    # each account's final total as the service stores it (the canonical text, so a
    # byte comparison is the exact one): polling costs the bench little of the cores
    # the service needs, and verify() compares every amount exactly afterwards
    want = {
        n: b'"total":"' + decimal_str(Decimal(fired["totals"][f"key-{n}"])).encode() + b'"'
        for n in names
    }
    fields = [(Keys(service.prefix).balances(n), n) for n in names]
    not_there = b.redis.register_script(_NOT_THERE_LUA)
    deadline = time.monotonic() + 120
    remaining = dict(fields)
    t_done = 0.0
    while remaining and time.monotonic() < deadline:
        keys = list(remaining)
        # one script call per poll: Redis compares, the bench packs one command
        behind = await not_there(keys=keys, args=[want[remaining[k]] for k in keys])
        now = time.monotonic()
        still = {keys[int(i)] for i in behind}
        for key in keys:
            if key not in still:
                del remaining[key]
        if not remaining:
            t_done = now
            break
        await asyncio.sleep(0.002)
    cpu1 = service.cpu_seconds()
    cores = shares.cores()
    if spy is not None:
        stop_profiler(spy)
    if remaining:
        log(f"fold: {len(remaining)} account(s) never reached the final value")
        t_done = time.monotonic()
    seq1 = int(await b.redis.get(seq_key) or 0)
    await asyncio.sleep(0.3)  # let the frames counter catch up
    msgs1 = await b.metric(service, "balagg_upstream_messages_total", 'kind="balance"')
    reconnects = int(await b.metric(service, "balagg_upstream_reconnects_total") - reconnects0)
    # the service times one batch of frames in eight (balagg_fold_seconds)
    batches = 8 * (await b.metric(service, "balagg_fold_seconds_count") - timed0)
    total = per * len(names)
    received = int(msgs1 - msgs0)
    seconds = t_done - t0
    # frames folded: a reconnect mid-burst skips frames (the new snapshot has the value)
    rate = min(received, total) / seconds
    verified = not remaining and await verify(b, service, names)
    service_cpu = (cpu1 - cpu0) / seconds
    return {
        "workers": service.workers,
        "accounts": len(names),
        "frames": total,
        "frames_received": received,
        "reconnects": reconnects,
        "seconds": round(seconds, 4),
        "frames_per_s": round(rate),
        "send_seconds": round(float(fired["t1"]) - t0, 4),
        "stream_entries": seq1 - seq0,
        "parse_ceiling_per_s": round(parse),
        "ratio_parse": round(rate / parse, 3),
        "service_cpu_cores": round(service_cpu, 2),
        "frames_per_batch": round(received / batches, 1) if batches else float("nan"),
        # CPU the service spent per frame: less moved by other load than frames/s
        "service_cpu_us_per_frame": round((cpu1 - cpu0) / max(1, min(received, total)) * 1e6, 2),
        "cpu_cores": cores,
        "state_verified": verified,
        "all_frames_folded": received == total and reconnects == 0,
    }


def median_run(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """Of repeated fold runs, the one of median frames/s, listing every run's figures."""
    run = sorted(tries, key=lambda r: r["frames_per_s"])[len(tries) // 2]
    if len(tries) > 1:
        run = dict(run)
        run["repeats"] = [
            {k: r[k] for k in ("frames_per_s", "parse_ceiling_per_s", "ratio_parse")} for r in tries
        ]
        run["state_verified"] = all(r["state_verified"] for r in tries)
    return run


async def workers_fold(b: Bench, workers: int, redis_rate: float) -> list[dict[str, Any]]:
    """The fold runs again on ``serve --workers N`` (its own accounts and key prefix)."""
    sizes, stack = b.sizes, b.stack
    n = sizes.service_accounts
    names = [f"w{workers}-{i:03d}" for i in range(n)]
    await b.add_accounts(names)
    service = Service(
        stack, [service_account(stack, x) for x in names], f"fold{workers}w", workers=workers
    )
    runs = []
    try:
        await service.wait_live(n)
        spread = await service.wait_spread(n)
        log(f"service with {workers} workers up; accounts per worker {sorted(spread.values())}")
        for count in sizes.fold_accounts:
            tries = []
            for _ in range(sizes.fold_repeat):  # as the 1-worker runs: the median of N
                run = await fold_run(b, service, names[:count], sizes.fold_frames)
                log(f"fold {count} account(s), {workers} workers: {run}")
                tries.append(run)
            run = median_run(tries)
            run["redis_ceiling_per_s"] = round(redis_rate)
            run["ratio_redis"] = round(run["frames_per_s"] / redis_rate, 3)
            runs.append(run)
    finally:
        service.stop()
    return runs


# --------------------------------------------------------------------------- latency


async def latency_run(
    b: Bench, service: Service, name: str, rate: int, start: int
) -> dict[str, Any]:
    received: dict[int, float] = {}

    def on_text(payload: bytes, t: float) -> None:
        doc = orjson.loads(payload)
        if doc.get("type") == "balance":
            k = int(Decimal(doc["balance"]["total"]) / UNIT)
            received.setdefault(k, t)

    client = await connect(
        "127.0.0.1", service.port, f"/v1/stream?accounts={name}&assets=LAT", on_text
    )
    await asyncio.sleep(0.3)
    seconds = b.sizes.latency_seconds
    lag0 = [await b.metric(service, f"balagg_event_lag_seconds_{k}") for k in ("sum", "count")]
    profile = b.sizes.profile
    spy = profiler(f"{profile}.latency-{rate}" if profile else None, service.pid)
    if spy is not None:
        await asyncio.sleep(0.5)  # py-spy attaches before the pacing starts
    cpu0, t0 = service.cpu_seconds(), time.monotonic()
    doc = await b.bench_post(
        "/bench/pace",
        {"key": f"key-{name}", "asset": "LAT", "rate": rate, "seconds": seconds, "start": start},
    )
    cores = (service.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    if spy is not None:
        stop_profiler(spy)
    await asyncio.sleep(0.5)
    client.close()
    lag1 = [await b.metric(service, f"balagg_event_lag_seconds_{k}") for k in ("sum", "count")]
    lag_n = lag1[1] - lag0[1]
    sent = {int(k): float(t) for k, t in doc["sent"]}
    lags = [(received[k] - t) * 1000 for k, t in sent.items() if k in received]
    effective = effective_lags(sent, received)
    last = max(sent)
    return {
        "rate_per_s": rate,
        "sent": len(sent),
        "received": len(lags),
        "last_received": last in received,
        "p50_ms": round(pct(lags, 50), 3),
        "p99_ms": round(pct(lags, 99), 3),
        "max_ms": round(max(lags), 3) if lags else float("nan"),
        "mean_ms": round(statistics.fmean(lags), 3) if lags else float("nan"),
        "effective_p50_ms": round(pct(effective, 50), 3),
        "effective_p99_ms": round(pct(effective, 99), 3),
        # inside the service: upstream receive -> downstream send (balagg_event_lag_seconds)
        "service_mean_ms": round((lag1[0] - lag0[0]) / lag_n * 1000, 3) if lag_n else float("nan"),
        "service_cpu_cores": round(cores, 2),
    }


# --------------------------------------------------------------------------- REST


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_P99 = re.compile(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", re.M)


async def load(url: str, seconds: float) -> tuple[float, float, str]:
    """(requests/s, p99 ms, tool): wrk when installed, else an asyncio client."""
    wrk = shutil.which("wrk")
    if wrk is not None:
        proc = await asyncio.create_subprocess_exec(
            wrk,
            "-t1",
            "-c32",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out = (await proc.communicate())[0].decode()
        rps = _WRK_RPS.search(out)
        p99 = _WRK_P99.search(out)
        if rps and p99:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
            return float(rps.group(1)), float(p99.group(1)) * scale, "wrk -t1 -c32"
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:

        async def worker() -> None:
            while time.monotonic() < deadline:
                t = time.monotonic()
                async with http.get(url) as r:
                    await r.read()
                latencies.append((time.monotonic() - t) * 1000)

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(16)))
        elapsed = time.monotonic() - t0
    return len(latencies) / elapsed, pct(latencies, 99), "aiohttp x16"


async def rest_run(b: Bench, service: Service, accounts: int) -> dict[str, Any]:
    url = service.base + "/v1/balances"
    async with b.http.get(url) as r:
        body = await r.read()
    records = len(orjson.loads(body)["balances"])
    path = b.stack.tmp / "balances.json"
    path.write_bytes(body)
    port = free_port()
    bare = Child(
        [sys.executable, "-m", "bench.bare", "--port", str(port), "--body", str(path)],
        log=b.stack.tmp / "bare.log",
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with b.http.get(f"http://127.0.0.1:{port}/") as r:
                    if len(await r.read()) == len(body):
                        break
            except (aiohttp.ClientError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        bare_rps, bare_p99, tool = await load(f"http://127.0.0.1:{port}/", b.sizes.rest_seconds)
    finally:
        bare.stop()
    rps, p99, tool = await load(url, b.sizes.rest_seconds)
    return {
        "accounts": accounts,
        "records": records,
        "body_bytes": len(body),
        "rps": round(rps),
        "p99_ms": round(p99, 2),
        "bare_rps": round(bare_rps),
        "bare_p99_ms": round(bare_p99, 2),
        "ratio_bare": round(rps / bare_rps, 3),
        "tool": tool,
    }


# --------------------------------------------------------------------------- fan-out


async def fanout_run(
    b: Bench, service: Service, name: str, clients: int, start: int
) -> dict[str, Any]:
    sample_every = max(1, clients // 100)
    lags_at: list[dict[int, float]] = []
    conns: list[WsClient] = []
    path = f"/v1/stream?accounts={name}&assets=FAN"

    def recorder() -> Any:
        seen: dict[int, float] = {}
        lags_at.append(seen)
        marker = b'"total":"'

        def on_text(payload: bytes, t: float) -> None:
            at = payload.find(marker)
            if at >= 0 and payload.startswith(b'{"type":"balance"'):
                end = payload.index(b'"', at + 9)
                seen[int(Decimal(payload[at + 9 : end].decode()) / UNIT)] = t

        return on_text

    for i in range(0, clients, 100):
        batch = range(i, min(clients, i + 100))
        conns += await asyncio.gather(
            *(
                connect(
                    "127.0.0.1", service.port, path, recorder() if j % sample_every == 0 else None
                )
                for j in batch
            )
        )
    await asyncio.wait_for(asyncio.gather(*(c.first.wait() for c in conns)), 60)
    base = [c.messages for c in conns]
    conflated0 = await b.metric(service, "balagg_downstream_conflated_total")
    rate = b.sizes.fanout_rate
    server, me = psutil.Process(service.pid), psutil.Process()
    cpu0, mine0, t0 = server.cpu_times(), me.cpu_times(), time.monotonic()
    doc = await b.bench_post(
        "/bench/pace",
        {
            "key": f"key-{name}",
            "asset": "FAN",
            "rate": rate,
            "seconds": b.sizes.fanout_seconds,
            "start": start,
        },
    )
    paced = time.monotonic()
    expected = len(doc["sent"]) * clients
    # wait for the backlog: until every update reached every client or delivery stalls
    delivered, idle_since = -1, time.monotonic()
    while time.monotonic() - paced < 30:
        now_delivered = sum(c.messages - m for c, m in zip(conns, base, strict=True))
        if now_delivered >= expected:
            break
        if now_delivered != delivered:
            delivered, idle_since = now_delivered, time.monotonic()
        elif time.monotonic() - idle_since > 1.0:
            break
        await asyncio.sleep(0.05)
    drained = time.monotonic()
    cpu1, mine1 = server.cpu_times(), me.cpu_times()
    rss = server.memory_info().rss
    conflated1 = await b.metric(service, "balagg_downstream_conflated_total")
    sent = {int(k): float(t) for k, t in doc["sent"]}
    lags = [lag for seen in lags_at for lag in effective_lags(sent, seen)]
    exact = [(seen[k] - t) * 1000 for seen in lags_at for k, t in sent.items() if k in seen]
    distinct = statistics.fmean(len(seen) for seen in lags_at)
    delivered = sum(c.messages - m for c, m in zip(conns, base, strict=True))
    closed = sum(1 for c in conns if c.closed.done())
    for c in conns:
        c.close()
    return {
        "clients": clients,
        "updates_per_s": rate,
        "updates": len(sent),
        "delivered": delivered,
        "messages_per_client": round(delivered / clients, 1),
        "distinct_updates_per_client": round(distinct, 1),
        "distinct_ratio": round(distinct / len(sent), 3) if sent else float("nan"),
        "exact_p99_lag_ms": round(pct(exact, 99), 3),
        "closed_by_server": closed,
        "sampled_clients": len(lags_at),
        "p50_lag_ms": round(pct(lags, 50), 3),
        "p99_lag_ms": round(pct(lags, 99), 3),
        "max_lag_ms": round(max(lags), 3) if lags else float("nan"),
        "conflated": int(conflated1 - conflated0),
        "drain_after_last_send_s": round(drained - paced, 2),
        "service_cpu_cores": round(
            (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (drained - t0), 2
        ),
        "bench_cpu_cores": round(
            (mine1.user + mine1.system - mine0.user - mine0.system) / (drained - t0), 2
        ),
        "rss_mb": round(rss / 2**20, 1),
    }


# --------------------------------------------------------------------------- scale


async def scale_run(b: Bench, accounts: int) -> dict[str, Any]:
    names = [f"s{accounts}-{i:04d}" for i in range(accounts)]
    await b.add_accounts(names, assets=2)
    heartbeat = b.sizes.scale_heartbeat
    service = Service(
        b.stack,
        [service_account(b.stack, n) for n in names],
        f"scale{accounts}",
        heartbeat=heartbeat,
    )
    try:
        t0 = time.monotonic()
        ready = float("nan")
        all_live = True
        try:
            # the target is 30 s; a run that cannot get there is reported, not fatal.
            # Until the simulator holds every socket, only it is asked (a cheap count):
            # listing 10,000 accounts costs the service ~0.1 s of CPU each time
            deadline = t0 + b.sizes.scale_live_timeout
            await b.wait_sim_open(accounts, deadline)
            left = max(0.0, deadline - time.monotonic())
            await service.wait_live(accounts, timeout=left, interval=0.5)
            ready = time.monotonic() - t0
        except TimeoutError:
            all_live = False
        # the service's own CPU until then: what the start-up cost, whatever the other
        # users of the machine left it (the wall time above depends on them)
        start_cpu = service.cpu_seconds()
        if not all_live:
            log(f"scale {accounts}: {service.live} of {accounts} live after "
                f"{b.sizes.scale_live_timeout:.0f} s; measuring idle cost anyway")  # fmt: skip
        async with b.http.get(b.stack.bench_url + "/bench/conns") as r:
            sim_open = (await r.json())["open"]
        await asyncio.sleep(2.0)
        proc = psutil.Process(service.pid)
        cpu0, t0 = service.cpu_seconds(), time.monotonic()
        await asyncio.sleep(b.sizes.scale_window)
        cpu = (service.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        rss = service.rss()
        sockets = sum(1 for c in proc.net_connections("tcp") if c.status == "ESTABLISHED")
    finally:
        service.stop()
    return {
        "accounts": accounts,
        "live_after_s": round(ready, 2),
        "live_accounts": service.live,
        "live_wait_s": b.sizes.scale_live_timeout,
        "start_cpu_s": round(start_cpu, 2),
        "sim_open_connections": sim_open,
        "service_tcp_established": sockets,
        "rss_mb": round(rss / 2**20, 1),
        "rss_kb_per_account": round(rss / 1024 / accounts, 1),
        "idle_cpu_percent": round(cpu, 2),
        "idle_window_s": b.sizes.scale_window,
        "heartbeat_s": heartbeat,
    }


# --------------------------------------------------------------------------- all


async def run_all(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    b = Bench(stack, sizes)
    try:
        return await _run_all(b)
    finally:
        await b.close()


async def scale_runs(b: Bench) -> list[dict[str, Any]]:
    runs = []
    for accounts in b.sizes.scale_accounts:
        run = await scale_run(b, accounts)
        log(f"scale {accounts}: {run}")
        runs.append(run)
    first = runs[0]
    for run in runs[1:]:
        run["rss_kb_per_account_marginal"] = round(
            (run["rss_mb"] - first["rss_mb"]) * 1024 / (run["accounts"] - first["accounts"]), 1
        )
    return runs


async def _run_all(b: Bench) -> dict[str, Any]:
    sizes, stack = b.sizes, b.stack
    only = sizes.phases
    n = sizes.service_accounts
    names = [f"acct-{i:03d}" for i in range(n)]
    out: dict[str, Any] = {}
    redis_rate = float("nan")
    if only & {"fold", "latency", "rest", "fanout"}:
        await b.add_accounts(names)
        service = Service(stack, [service_account(stack, x) for x in names], "main")
        try:
            await service.wait_live(n)
            log(f"service up with {n} accounts x {len(ASSETS)} assets (pid {service.pid})")
            if "fold" in only:
                fold_runs = []
                for count in sizes.fold_accounts:
                    tries = []
                    for _ in range(sizes.fold_repeat):
                        run = await fold_run(b, service, names[:count], sizes.fold_frames)
                        log(f"fold {count} account(s): {run}")
                        tries.append(run)
                    fold_runs.append(median_run(tries))
                redis_rate = await redis_ceiling(b, sizes.redis_records)
                log(f"redis ceiling: {redis_rate:.0f} records/s")
                for run in fold_runs:
                    run["redis_ceiling_per_s"] = round(redis_rate)
                    run["ratio_redis"] = round(run["frames_per_s"] / redis_rate, 3)
                out["fold_runs"] = fold_runs
            if "latency" in only:
                latency_runs = []
                for i, rate in enumerate(sizes.latency_rates):
                    run = await latency_run(b, service, names[0], rate, 1 + i * 10_000_000)
                    log(f"latency {rate}/s: {run}")
                    latency_runs.append(run)
                out["latency_runs"] = latency_runs
            if "rest" in only:
                out["rest_runs"] = [await rest_run(b, service, n)]
                log(f"rest: {out['rest_runs'][0]}")
            if "fanout" in only:
                fanout_runs = []
                for i, clients in enumerate(sizes.fanout_clients):
                    run = await fanout_run(b, service, names[1], clients, 1 + i * 10_000_000)
                    log(f"fanout {clients}: {run}")
                    fanout_runs.append(run)
                out["fanout_runs"] = fanout_runs
        finally:
            service.stop()
    if "workers" in only:
        if redis_rate != redis_rate:  # NaN: the fold phase did not run
            redis_rate = await redis_ceiling(b, sizes.redis_records)
        for workers in sizes.fold_workers:
            if workers > 1:
                out.setdefault("fold_runs", [])
                out["fold_runs"] += await workers_fold(b, workers, redis_rate)
    if "scale" in only:
        out["scale_runs"] = await scale_runs(b)
    return out
