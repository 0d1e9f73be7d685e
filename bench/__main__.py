"""``python -m bench [--quick | --smoke] [--json-only] [--out FILE]``.

stdout: the first line is one JSON object with every figure; unless ``--json-only``, a
line ``---`` and a markdown table (figure, measured, SPEC target, pass/miss) follow.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench.phases import Sizes, log, quick_sizes, run_all, smoke_sizes
from bench.procs import Stack, raise_fd_limit


def headline(runs: dict[str, Any]) -> dict[str, Any]:
    """The headline keys: the SPEC's target case, else the largest run measured."""
    fold = max(runs["fold_runs"], key=lambda r: (r["accounts"] == 100, r["accounts"]))
    latency = max(runs["latency_runs"], key=lambda r: (r["rate_per_s"] == 5000, r["rate_per_s"]))
    fanout = max(runs["fanout_runs"], key=lambda r: (r["clients"] == 1000, r["clients"]))
    scale = max(runs["scale_runs"], key=lambda r: (r["accounts"] == 2000, r["accounts"]))
    rest = runs["rest_runs"][0]
    return {
        "fold": {
            "accounts": fold["accounts"],
            "frames_per_s": fold["frames_per_s"],
            "parse_ceiling_per_s": fold["parse_ceiling_per_s"],
            "redis_ceiling_per_s": fold["redis_ceiling_per_s"],
            "ratio_parse": fold["ratio_parse"],
            "ratio_redis": fold["ratio_redis"],
            "stream_entries": fold["stream_entries"],
            "state_verified": all(r["state_verified"] for r in runs["fold_runs"]),
        },
        "latency": {k: latency[k] for k in ("rate_per_s", "p50_ms", "p99_ms", "max_ms")},
        "rest": {k: rest[k] for k in ("rps", "p99_ms", "bare_rps", "ratio_bare", "accounts")},
        "fanout": {
            k: fanout[k] for k in ("clients", "p50_lag_ms", "p99_lag_ms", "conflated", "rss_mb")
        },
        "scale": {
            k: scale[k] for k in ("accounts", "rss_mb", "rss_kb_per_account", "idle_cpu_percent")
        },
    }


def _ok(passed: bool) -> str:
    return "pass" if passed else "**miss**"


def _le(value: float, limit: float) -> bool:
    return not math.isnan(value) and value <= limit


def table(doc: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for r in doc["fold_runs"]:
        rows.append(
            (
                f"fold, {r['accounts']} account(s), {r['frames']:,} frames",
                f"{r['frames_per_s']:,} frames/s ({r['stream_entries']:,} stream entries"
                f"{'' if r['all_frames_folded'] else '; frames skipped by a reconnect'})",
                "≥ 100,000 frames/s",
                _ok(r["frames_per_s"] >= 100_000),
            )
        )
        rows.append(
            (
                f"fold / parse ceiling ({r['parse_ceiling_per_s']:,}/s), {r['accounts']} acct",
                f"{r['ratio_parse']:.0%}",
                "≥ 50 %",
                _ok(r["ratio_parse"] >= 0.5),
            )
        )
    fold = doc["fold_runs"][-1]
    rows.append(
        (
            f"fold / Redis pipeline ceiling ({fold['redis_ceiling_per_s']:,} records/s)",
            f"{fold['ratio_redis']:.0%}",
            "(reported)",
            "-",
        )
    )
    rows.append(
        (
            "final Redis state = simulator truth",
            str(doc["fold"]["state_verified"]).lower(),
            "true",
            _ok(doc["fold"]["state_verified"]),
        )
    )
    for r in doc["latency_runs"]:
        rows.append(
            (
                f"upstream → /v1/stream at {r['rate_per_s']:,}/s (p50 / p99 / max)",
                f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.2f} ms"
                f" ({r['received']:,} of {r['sent']:,} frames reached the client)",
                "p50 ≤ 1 ms, p99 ≤ 5 ms",
                _ok(_le(r["p50_ms"], 1) and _le(r["p99_ms"], 5)),
            )
        )
    for r in doc["rest_runs"]:
        rows.append(
            (
                f"GET /v1/balances ({r['accounts']} accounts, {r['records']:,} records) req/s",
                f"{r['rps']:,} (bare uvicorn {r['bare_rps']:,}: {r['ratio_bare']:.0%})",
                "≥ 50 % of bare",
                _ok(r["ratio_bare"] >= 0.5),
            )
        )
        rows.append(
            (
                "GET /v1/balances p99",
                f"{r['p99_ms']:.2f} ms (bare {r['bare_p99_ms']:.2f} ms)",
                "≤ 20 ms",
                _ok(_le(r["p99_ms"], 20)),
            )
        )
    for r in doc["fanout_runs"]:
        rows.append(
            (
                f"fan-out {r['clients']:,} clients × {r['updates_per_s']}/s (p50 / p99 lag)",
                f"{r['p50_lag_ms']:.1f} / {r['p99_lag_ms']:.1f} ms; "
                f"{r['distinct_updates_per_client']:,} of {r['updates']:,} updates reached each "
                f"client; {r['conflated']:,} conflated by the hub; RSS {r['rss_mb']} MB",
                "p99 ≤ 250 ms, every update delivered",
                _ok(
                    _le(r["p99_lag_ms"], 250)
                    and r["closed_by_server"] == 0
                    and r["distinct_updates_per_client"] >= 0.95 * r["updates"]
                ),
            )
        )
    for r in doc["scale_runs"]:
        rows.append(
            (
                f"{r['accounts']:,} upstream accounts: RSS (per account), idle CPU",
                f"{r['rss_mb']} MB ({r['rss_kb_per_account']} KB), {r['idle_cpu_percent']} %",
                "≤ 250 MB at 2,000",
                _ok(r["rss_mb"] <= 250 and r["sim_open_connections"] >= r["accounts"]),
            )
        )
    lines = ["| figure | measured | SPEC target | result |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes, under 2 minutes")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, every figure, ~30 s")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--out", type=Path, help="also write the JSON object to FILE")
    parser.add_argument("--render", type=Path, help="print the table of a saved JSON and exit")
    parser.add_argument(
        "--ping", type=float, default=20.0, help="simulator ping interval in seconds (BitoPro: 20)"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        sys.stdout.write(table(json.loads(args.render.read_text())) + "\n")
        return 0
    sizes: Sizes = smoke_sizes() if args.smoke else quick_sizes() if args.quick else Sizes()
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    fds = raise_fd_limit()
    started = time.monotonic()
    stack = Stack(ping=args.ping)
    try:
        stack.start()
        log(f"mode {mode_name}; redis {stack.redis.url} (AOF off); simulators {stack.rest_url}")
        import uvloop

        runs = uvloop.run(run_all(stack, sizes))
    finally:
        stack.stop()
    doc: dict[str, Any] = headline(runs)
    doc.update(runs)
    doc["meta"] = {
        "mode": mode_name,
        "seconds": round(time.monotonic() - started, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "fd_limit": fds,
        "redis_aof": False,
    }
    line = json.dumps(doc, separators=(",", ":"))
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    sys.stdout.write(line + "\n")
    if not args.json_only:
        sys.stdout.write("---\n" + table(doc) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
