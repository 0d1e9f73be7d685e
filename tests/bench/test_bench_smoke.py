"""``python -m bench --smoke`` end to end: every figure is produced and the folded state
matches the simulator's truth. No timing assertions: figures are measured, not tested."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _numbers(doc: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = doc[key]
        assert isinstance(value, int | float), key
        assert not math.isnan(value), key


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_smoke_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    stdout = proc.stdout.decode()
    first, _, rest = stdout.partition("\n")
    doc = json.loads(first)
    assert json.loads(out.read_text()) == doc
    assert rest.startswith("---\n| figure |")

    fold = doc["fold"]
    assert fold["state_verified"] is True
    _numbers(fold, ("frames_per_s", "parse_ceiling_per_s", "redis_ceiling_per_s"))
    assert all(run["state_verified"] for run in doc["fold_runs"])
    assert all(run["frames_received"] == run["frames"] for run in doc["fold_runs"])
    # the fold ran on one worker and on `serve --workers 2`, at every account count
    by_workers = {(run["workers"], run["accounts"]) for run in doc["fold_runs"]}
    assert by_workers == {(w, a) for w in (1, 2) for a in (1, 3)}
    assert "| issue 15 acceptance |" in rest
    assert "| fold, 2 workers, 100 accounts |" in rest
    _numbers(doc["latency"], ("p50_ms", "p99_ms", "max_ms", "rate_per_s"))
    _numbers(doc["rest"], ("rps", "p99_ms", "bare_rps"))
    _numbers(doc["fanout"], ("clients", "p99_lag_ms", "rss_mb"))
    _numbers(doc["scale"], ("accounts", "rss_mb"))

    # --compare against a saved run: every figure is listed with its ratio (1.00 to itself)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--render", str(out), "--compare", str(out)],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    compared = [
        line for line in proc.stdout.decode().splitlines() if line.startswith("| fold 2w 3 acct")
    ]
    assert compared and all("| 1.00 |" in line for line in compared), compared


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_history_smoke_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "history.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--history", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    first, _, rest = proc.stdout.decode().partition("\n")
    doc = json.loads(first)
    assert json.loads(out.read_text()) == doc
    assert rest.startswith("---\n| history figure |")
    for run in doc["writer_runs"]:
        assert run["stored"] == run["changes"]  # every change written, once
        _numbers(run, ("changes_per_s",))
    assert {r["database"] for r in doc["at_runs"]} >= {"sqlite"}
    for run in doc["at_runs"]:
        assert run["records_per_answer"] == 2_000
        _numbers(run, ("p50_ms", "p99_ms", "max_ms"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_scale_phase_alone(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "scale", "--scale-accounts", "3,6",
         "--heartbeat", "7", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        timeout=110,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    first, _, rest = proc.stdout.decode().partition("\n")
    doc = json.loads(first)
    assert "fold_runs" not in doc and doc["meta"]["mode"] == "smoke --only scale"
    runs = doc["scale_runs"]
    assert [r["accounts"] for r in runs] == [3, 6]
    for run in runs:
        assert run["live_accounts"] == run["accounts"] == run["sim_open_connections"]
        assert run["heartbeat_s"] == 7.0
        _numbers(run, ("live_after_s", "start_cpu_s", "idle_cpu_percent", "rss_mb"))
    assert "| 6 upstream accounts: RSS (per account), idle CPU |" in rest
    assert "| 2,000 idle accounts | " in rest and "(at 6, not 2,000)" in rest
