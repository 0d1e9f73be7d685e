"""Lint and strict typing are part of the test suite, so the one test command checks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_ruff_clean() -> None:
    proc = _run("ruff", "check", "app", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_clean() -> None:
    proc = _run("mypy", "--strict")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_no_float_reaches_an_amount() -> None:
    """``float(`` has no business in the service's code: amounts are Decimal end to end."""
    offenders = []
    for path in (ROOT / "app").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if "float(" in code:
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_redis_server_available() -> None:
    from app.redis_server import find_redis_server

    assert shutil.which(find_redis_server()) or Path(find_redis_server()).exists()
