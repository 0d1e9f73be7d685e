"""``python -m bench [--quick | --smoke] [--json-only] [--out FILE] [--compare FILE]``.

``python -m bench --history [--quick]`` measures balance history instead (bench/history.py).

``python -m bench --only scale [--scale-accounts 2000,10000] [--heartbeat S]`` runs only the
scale phase (idle accounts: time until all are live, idle CPU, RSS).

stdout: the first line is one JSON object with every figure; unless ``--json-only``, a
line ``---`` and two markdown tables follow: every figure against its SPEC §16 target,
and the acceptance targets of issue 15 with pass/miss. ``--compare FILE`` adds a third:
each figure of this run divided by the same figure of a saved run (``--out``), so every
change is judged against the run before it. ``--render FILE`` prints the tables of a
saved run instead of measuring. Progress goes to stderr.
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

from bench.phases import PHASES, Sizes, log, quick_sizes, run_all, smoke_sizes
from bench.procs import Stack, raise_fd_limit


def headline(runs: dict[str, Any]) -> dict[str, Any]:
    """The headline keys: the SPEC's target case, else the largest run measured (a phase
    left out by ``--only`` has none)."""
    out: dict[str, Any] = {}
    ones = [r for r in runs.get("fold_runs", []) if r.get("workers", 1) == 1]
    if ones:
        fold = max(ones, key=lambda r: (r["accounts"] == 100, r["accounts"]))
        out["fold"] = {
            "accounts": fold["accounts"],
            "frames_per_s": fold["frames_per_s"],
            "parse_ceiling_per_s": fold["parse_ceiling_per_s"],
            "redis_ceiling_per_s": fold["redis_ceiling_per_s"],
            "ratio_parse": fold["ratio_parse"],
            "ratio_redis": fold["ratio_redis"],
            "stream_entries": fold["stream_entries"],
            "state_verified": all(r["state_verified"] for r in runs["fold_runs"]),
        }
        out["fold_workers"] = {
            f"{r['workers']}w": r["frames_per_s"]
            for r in runs["fold_runs"]
            if r["accounts"] == fold["accounts"]
        }
    if runs.get("latency_runs"):
        latency = max(
            runs["latency_runs"], key=lambda r: (r["rate_per_s"] == 5000, r["rate_per_s"])
        )
        out["latency"] = {k: latency[k] for k in ("rate_per_s", "p50_ms", "p99_ms", "max_ms")}
    if runs.get("rest_runs"):
        rest = runs["rest_runs"][0]
        out["rest"] = {k: rest[k] for k in ("rps", "p99_ms", "bare_rps", "ratio_bare", "accounts")}
    if runs.get("fanout_runs"):
        fanout = max(runs["fanout_runs"], key=lambda r: (r["clients"] == 1000, r["clients"]))
        out["fanout"] = {
            k: fanout[k] for k in ("clients", "p50_lag_ms", "p99_lag_ms", "conflated", "rss_mb")
        }
    if runs.get("scale_runs"):
        scale = max(runs["scale_runs"], key=lambda r: (r["accounts"] == 2000, r["accounts"]))
        out["scale"] = {
            k: scale[k] for k in ("accounts", "rss_mb", "rss_kb_per_account", "idle_cpu_percent")
        }
    return out


def _ok(passed: bool) -> str:
    return "pass" if passed else "**miss**"


def _le(value: float, limit: float) -> bool:
    return not math.isnan(value) and value <= limit


def table(doc: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for r in doc.get("fold_runs", []):
        rows.append(
            (
                f"fold, {r.get('workers', 1)} worker(s), {r['accounts']} account(s), "
                f"{r['frames']:,} frames",
                f"{r['frames_per_s']:,} frames/s ({r['stream_entries']:,} stream entries"
                f"{'' if r['all_frames_folded'] else '; frames skipped by a reconnect'})",
                "≥ 100,000 frames/s",
                _ok(r["frames_per_s"] >= 100_000),
            )
        )
        rows.append(
            (
                f"fold / parse ceiling ({r['parse_ceiling_per_s']:,}/s), "
                f"{r.get('workers', 1)} w, {r['accounts']} acct",
                f"{r['ratio_parse']:.0%}",
                "≥ 50 %",
                _ok(r["ratio_parse"] >= 0.5),
            )
        )
    if doc.get("fold_runs"):
        fold = doc["fold_runs"][-1]
        rows.append(
            (
                f"fold / Redis pipeline ceiling ({fold['redis_ceiling_per_s']:,} records/s)",
                f"{fold['ratio_redis']:.0%}",
                "(reported)",
                "-",
            )
        )
        verified = all(r["state_verified"] for r in doc["fold_runs"])
        rows.append(
            ("final Redis state = simulator truth", str(verified).lower(), "true", _ok(verified))
        )
    for r in doc.get("latency_runs", []):
        rows.append(
            (
                f"upstream → /v1/stream at {r['rate_per_s']:,}/s (p50 / p99 / max)",
                f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.2f} ms"
                f" ({r['received']:,} of {r['sent']:,} frames reached the client)",
                "p50 ≤ 1 ms, p99 ≤ 5 ms",
                _ok(_le(r["p50_ms"], 1) and _le(r["p99_ms"], 5)),
            )
        )
    for r in doc.get("rest_runs", []):
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
    for r in doc.get("fanout_runs", []):
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
    for r in doc.get("scale_runs", []):
        rows.append(
            (
                f"{r['accounts']:,} upstream accounts: RSS (per account), idle CPU",
                f"{r['rss_mb']} MB ({r['rss_kb_per_account']} KB), {r['idle_cpu_percent']} %",
                "≤ 250 MB at 2,000",
                _ok(r["rss_mb"] <= 250 and r["sim_open_connections"] >= r["accounts"])
                if r["accounts"] <= 2000
                else "-",
            )
        )
    lines = ["| figure | measured | SPEC target | result |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n\n" + acceptance(doc)


def _pick(runs: list[dict[str, Any]], key: str, want: int) -> tuple[dict[str, Any] | None, str]:
    """The run at the target size, else the largest one measured and a note saying so."""
    if not runs:
        return None, "not measured"
    exact = [r for r in runs if r[key] == want]
    if exact:
        return exact[0], ""
    largest = max(runs, key=lambda r: r[key])
    return largest, f"at {largest[key]:,}, not {want:,}"


def _verdict(passed: bool, note: str) -> str:
    return f"- ({note})" if note else _ok(passed)


def _heartbeat(run: dict[str, Any]) -> str:
    """The service heartbeat of a scale run (runs saved before it was recorded used 5 s)."""
    return f" (heartbeat {run.get('heartbeat_s', 5.0):g} s)"


def _cores(run: dict[str, Any]) -> str:
    """Where the machine's cores went during a fold run."""
    cores = run.get("cpu_cores")
    if not cores:
        return f"service {run.get('service_cpu_cores', '?')} cores"
    return "cores: " + ", ".join(f"{k} {v}" for k, v in cores.items())


def acceptance(doc: dict[str, Any]) -> str:
    """The acceptance table of issue 15, each target with pass/miss on this run."""
    rows: list[tuple[str, str, str, str]] = []
    folds = doc.get("fold_runs", [])
    one = [r for r in folds if r.get("workers", 1) == 1]
    f1, note1 = _pick(one, "accounts", 100)
    if f1 is not None:
        rows.append(
            (
                "fold, 1 worker, 100 accounts",
                f"{f1['frames_per_s']:,} frames/s = {f1['ratio_parse']:.0%} of the parse "
                f"ceiling ({f1['parse_ceiling_per_s']:,}/s); {_cores(f1)}",
                "≥ 50 % of parse ceiling and ≥ 100,000 frames/s",
                _verdict(f1["ratio_parse"] >= 0.5 and f1["frames_per_s"] >= 100_000, note1),
            )
        )
        two = [r for r in folds if r.get("workers", 1) == 2 and r["accounts"] == f1["accounts"]]
        if two:
            ratio = two[0]["frames_per_s"] / max(1, f1["frames_per_s"])
            rows.append(
                (
                    "fold, 2 workers, 100 accounts",
                    f"{two[0]['frames_per_s']:,} frames/s = {ratio:.2f} × 1 worker; "
                    f"{_cores(two[0])}",
                    "≥ 1.6 × the 1-worker figure",
                    _verdict(ratio >= 1.6, note1),
                )
            )
    lat, note = _pick(doc.get("latency_runs", []), "rate_per_s", 5000)
    if lat is not None:
        rows.append(
            (
                "upstream → stream client at 5,000 frames/s",
                f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms",
                "p50 ≤ 0.5 ms, p99 ≤ 3 ms",
                _verdict(_le(lat["p50_ms"], 0.5) and _le(lat["p99_ms"], 3), note),
            )
        )
    fan, note = _pick(doc.get("fanout_runs", []), "clients", 1000)
    if fan is not None:
        share = fan["distinct_updates_per_client"] / max(1, fan["updates"])
        rows.append(
            (
                f"fan-out, 1,000 clients × 100 updates/s (ran {fan['updates_per_s']}/s)",
                f"p99 lag {fan['p99_lag_ms']:.1f} ms; {fan['distinct_updates_per_client']:,} "
                f"of {fan['updates']:,} distinct values per client ({share:.0%})",
                "p99 lag ≤ 250 ms, ≥ 95 % of distinct values",
                _verdict(_le(fan["p99_lag_ms"], 250) and share >= 0.95, note),
            )
        )
    idle, note = _pick(doc.get("scale_runs", []), "accounts", 2000)
    if idle is not None:
        rows.append(
            (
                "2,000 idle accounts",
                f"{idle['idle_cpu_percent']} % of a core{_heartbeat(idle)}, "
                f"RSS {idle['rss_mb']} MB",
                "≤ 5 % of a core, RSS ≤ 200 MB",
                _verdict(idle["idle_cpu_percent"] <= 5 and idle["rss_mb"] <= 200, note),
            )
        )
    big, note = _pick(doc.get("scale_runs", []), "accounts", 10000)
    if big is not None:
        rows.append(
            (
                "10,000 idle accounts",
                (
                    f"all live after {big['live_after_s']} s"
                    if _le(big["live_after_s"], math.inf)
                    else f"{big.get('live_accounts', 0):,} of {big['accounts']:,} live at the "
                    f"end of a {big.get('live_wait_s', '?')} s wait"
                )
                + f" ({big.get('start_cpu_s', '?')} s of service CPU), RSS {big['rss_mb']} MB",
                "all live within 30 s, RSS ≤ 600 MB",
                _verdict(_le(big["live_after_s"], 30) and big["rss_mb"] <= 600, note),
            )
        )
    verified = all(r["state_verified"] for r in folds)
    if folds:
        rows.append(
            ("state after every run", f"equal to the simulator's truth: {str(verified).lower()}",
             "true", _ok(verified))
        )  # fmt: skip
    lines = ["| issue 15 acceptance | measured | target | result |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


# (figure name, higher is better; None for a figure of the machine, not of the code)
def figures(doc: dict[str, Any]) -> dict[str, tuple[float, bool | None]]:
    out: dict[str, tuple[float, bool | None]] = {}
    for r in doc.get("fold_runs", []):
        w, a = r.get("workers", 1), r["accounts"]
        out[f"fold {w}w {a} acct, frames/s"] = (r["frames_per_s"], True)
        out[f"fold {w}w {a} acct, / parse ceiling"] = (r["ratio_parse"], True)
        out[f"parse ceiling ({w}w {a} acct run), frames/s"] = (r["parse_ceiling_per_s"], None)
        if "service_cpu_us_per_frame" in r:
            out[f"fold {w}w {a} acct, service CPU µs/frame"] = (
                r["service_cpu_us_per_frame"],
                False,
            )
    for r in doc.get("latency_runs", []):
        out[f"latency {r['rate_per_s']}/s, p50 ms"] = (r["p50_ms"], False)
        out[f"latency {r['rate_per_s']}/s, p99 ms"] = (r["p99_ms"], False)
    for r in doc.get("rest_runs", []):
        out["REST /v1/balances, req/s"] = (r["rps"], True)
        out["REST /v1/balances, p99 ms"] = (r["p99_ms"], False)
    for r in doc.get("fanout_runs", []):
        c = r["clients"]
        out[f"fan-out {c} clients, p99 lag ms"] = (r["p99_lag_ms"], False)
        out[f"fan-out {c} clients, distinct values/client"] = (
            r["distinct_updates_per_client"],
            True,
        )
    for r in doc.get("scale_runs", []):
        a = r["accounts"]
        out[f"idle {a} accounts, CPU %"] = (r["idle_cpu_percent"], False)
        out[f"idle {a} accounts, RSS MB"] = (r["rss_mb"], False)
        out[f"idle {a} accounts, s until all live"] = (r["live_after_s"], False)
        if "start_cpu_s" in r:
            out[f"idle {a} accounts, service CPU s until all live"] = (r["start_cpu_s"], False)
    return out


def compare(now: dict[str, Any], before: dict[str, Any]) -> str:
    """Each figure of ``now`` over the same figure of ``before`` (both runs' figures)."""
    old = figures(before)
    loads = [d.get("meta", {}).get("loadavg_1m") for d in (before, now)]
    lines = [
        f"Machine load (1-minute average, start/end): before {loads[0] or '?'}, "
        f"now {loads[1] or '?'}. Compare runs made under similar load.",
        "",
        "| figure | before | now | now / before | better? |",
        "|---|---|---|---|---|",
    ]
    for name, (value, higher) in figures(now).items():
        if name not in old:
            lines.append(f"| {name} | - | {value:,} | - | - |")
            continue
        prev = old[name][0]
        if math.isnan(value) or math.isnan(prev) or prev == 0:
            lines.append(f"| {name} | {prev:,} | {value:,} | - | - |")
            continue
        ratio = value / prev
        if higher is None:
            better = "(machine)"
        else:
            better = "=" if ratio == 1 else ("yes" if (ratio > 1) == higher else "no")
        lines.append(f"| {name} | {prev:,} | {value:,} | {ratio:.2f} | {better} |")
    return "\n".join(lines)


def _phases(text: str) -> frozenset[str]:
    chosen = frozenset(p.strip() for p in text.split(",") if p.strip())
    unknown = chosen - PHASES
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"phases are {', '.join(sorted(PHASES))}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes, under 2 minutes")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, every figure, ~30 s")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--out", type=Path, help="also write the JSON object to FILE")
    parser.add_argument("--render", type=Path, help="print the table of a saved JSON and exit")
    parser.add_argument(
        "--compare", type=Path, help="also print each figure's ratio to a saved run (--out)"
    )
    parser.add_argument(
        "--ping", type=float, default=20.0, help="simulator ping interval in seconds (BitoPro: 20)"
    )
    parser.add_argument("--history", action="store_true", help="history figures only")
    parser.add_argument(
        "--only",
        type=_phases,
        default=PHASES,
        help=f"comma-separated phases to run, of {','.join(sorted(PHASES))} (default: all)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the fold at each size this many times"
    )
    parser.add_argument(
        "--py-spy",
        dest="py_spy",
        help="write py-spy's raw stacks of the service during the fold phase to FILE "
        "(py-spy installed separately; sum them with python -m bench.profile FILE)",
    )
    parser.add_argument(
        "--scale-accounts",
        type=lambda text: [int(n) for n in text.split(",")],
        help="account counts of the scale phase, comma-separated (e.g. 2000,10000)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        help="service heartbeat in the scale phase, seconds (default: the service's, 20)",
    )
    args = parser.parse_args(argv)
    if args.history:
        return history_main(args.quick, args.smoke, args.out)
    before = json.loads(args.compare.read_text()) if args.compare is not None else None
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        sys.stdout.write(table(saved) + "\n")
        if before is not None:
            sys.stdout.write("\n" + compare(saved, before) + "\n")
        return 0
    sizes: Sizes = smoke_sizes() if args.smoke else quick_sizes() if args.quick else Sizes()
    if args.scale_accounts:
        sizes.scale_accounts = args.scale_accounts
    if args.heartbeat is not None:
        sizes.scale_heartbeat = args.heartbeat
    sizes.phases = args.only
    sizes.profile = args.py_spy
    sizes.fold_repeat = max(1, args.repeat)
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    fds = raise_fd_limit()
    started = time.monotonic()
    load_before = os.getloadavg()
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
        "mode": mode_name
        + (f" --only {','.join(sorted(args.only))}" if args.only != PHASES else ""),
        "seconds": round(time.monotonic() - started, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "fd_limit": fds,
        "redis_aof": False,
        # other users of the machine make figures noisy: the 1-minute load before/after
        "loadavg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "phases": sorted(args.only),
    }
    line = json.dumps(doc, separators=(",", ":"))
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    sys.stdout.write(line + "\n")
    if not args.json_only:
        sys.stdout.write("---\n" + table(doc) + "\n")
        if before is not None:
            sys.stdout.write("\n" + compare(doc, before) + "\n")
    sys.stdout.flush()
    return 0


def history_main(quick: bool, smoke: bool, out: Path | None) -> int:
    import uvloop

    from bench.history import history_table, run_history

    changes, at_changes = (2_000, 20_000) if smoke else (100_000, 1_000_000)
    load_before = os.getloadavg()
    doc = uvloop.run(run_history(changes, at_changes, fold=not smoke, quick=quick))
    load = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    doc["meta"] = {"mode": "history", "cpus": os.cpu_count(), "loadavg_1m": load}
    if out is not None:
        out.write_text(json.dumps(doc, indent=2) + "\n")
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n---\n" + history_table(doc) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
