"""``balance-aggregator demo`` as a real process: which port it listens on, that it
shows the simulators' sFOX web3 wallet without waiting for the random walk to move it,
and that it serves HTTP the way ``serve`` does (capped request heads, JSON refusals).

Port precedence: ``--port`` when given, else ``BALAGG_PORT``, else 8000.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.httpproto import MAX_HEAD_BYTES
from tests.integration.conftest import free_port

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
WEB3 = "web3:Ethereum:0x0bCdB57ae247F434C91b1d4521fFd6601f7e8999"


@contextmanager
def demo(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    full.update(env)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "demo", *args], cwd=ROOT, env=full, stdout=out, stderr=out
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def poll(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 45.0) -> Any:
    """GET ``url`` until it answers 200 (or the demo exits); its JSON body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered: {log.read_text()[-3000:]}")


def test_demo_listens_on_balagg_port_and_shows_the_web3_wallet(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "demo.log"
    with demo([], {"BALAGG_PORT": str(port)}, log) as proc:
        base = f"http://127.0.0.1:{port}"
        assert poll(base + "/healthz", proc, log) is not None
        deadline = time.monotonic() + 30
        wallets: set[str] = set()
        while WEB3 not in wallets and time.monotonic() < deadline:
            records = poll(base + "/v1/balances?accounts=sfox-main", proc, log)["balances"]
            wallets = {r["wallet"] for r in records}
            time.sleep(0.2)
        assert WEB3 in wallets, wallets


def test_demo_port_flag_wins_over_balagg_port(tmp_path: Path) -> None:
    port, other, log = free_port(), free_port(), tmp_path / "demo.log"
    with demo(["--port", str(port)], {"BALAGG_PORT": str(other)}, log) as proc:
        assert poll(f"http://127.0.0.1:{port}/healthz", proc, log) is not None
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{other}/healthz", timeout=2.0)


def test_demo_reports_a_bad_balagg_port_in_one_line(tmp_path: Path) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "demo"],
        cwd=tmp_path,
        env={**full, "BALAGG_PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "configuration error: setting BALAGG_PORT: must be a whole number"
    ]


@pytest.mark.parametrize("flag", ["demo --sim-port", "simulate --port"])
def test_a_busy_simulator_port_is_one_line_not_a_traceback(flag: str, tmp_path: Path) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = [*flag.split(), str(port)]
        if args[0] == "demo":
            args += ["--port", str(free_port())]
        proc = subprocess.run(
            [sys.executable, "-m", "app", *args],
            cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("configuration error: ") and str(port) in last, proc.stderr
    assert "address already in use" in last and "or 0 " in last, last


def _raw_exchange(port: int, request: bytes) -> tuple[int, str, bytes]:
    """Send ``request`` on a fresh socket; the status, content type and body answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # it may refuse and close before reading it all
            sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, body
            body += chunk
        return int(lines[0].split(" ")[1]), headers.get("content-type", ""), body


def test_demo_caps_request_heads_and_answers_refusals_in_json(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "demo.log"
    with demo(["--port", str(port)], {}, log) as proc:
        assert poll(f"http://127.0.0.1:{port}/healthz", proc, log) is not None
        big = b"a" * (MAX_HEAD_BYTES * 16)
        refusals = {
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n": (
                431,
                "headers_too_large",
            ),
            b"GARBAGE\r\n\r\n": (400, "bad_request"),
        }
        for request, (want_status, want_code) in refusals.items():
            status, content_type, body = _raw_exchange(port, request)
            assert status == want_status, (request[:40], status, body[:200])
            assert content_type.startswith("application/json"), (request[:40], content_type)
            assert orjson.loads(body)["error"]["code"] == want_code
