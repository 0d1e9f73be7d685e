"""Two ``serve`` processes by mistake: the second refuses to start and touches nothing.

Real service processes (``python -m app serve`` with the embedded Redis) against the real
simulators: a second start on the same data directory, or on the same port, must exit
non-zero with one line naming the directory or the address, and leave the first
service's Redis, its socket file and its upstream sockets exactly as they were.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import psutil

from app.simulators.runner import Simulators
from tests.integration.conftest import all_default_accounts, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
VENUES = ("bitopro", "sfox", "deltadefi", "solanatracker")


def _serve(
    sims: Simulators, data_dir: Path, port: int, lease_ms: int | None = 2000
) -> subprocess.Popen[bytes]:
    accounts = []
    for full in all_default_accounts(sims):
        account = full.masked()
        for name in ("api_key", "api_secret", "email", "data_api_key"):
            value = getattr(full, name)
            if value is not None:
                account[name] = value.get_secret_value()
        accounts.append(account)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    env.update(
        BALAGG_ACCOUNTS=orjson.dumps(accounts).decode(),
        BALAGG_DATA_DIR=str(data_dir),
        BALAGG_PORT=str(port),
        BALAGG_HEARTBEAT="1",
    )
    if lease_ms is not None:
        env["BALAGG_LEASE_MS"] = str(lease_ms)
    return subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def _ready(port: int) -> bool:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def ready() -> bool:
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        return await wait_until(ready, 30)


def _redis_children(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    children = psutil.Process(proc.pid).children(recursive=True)
    return [c for c in children if "redis-server" in " ".join(c.cmdline())]


async def _second_start_fails(sims: Simulators, data_dir: Path, port: int) -> str:
    second = _serve(sims, data_dir, port)
    try:
        rc = await asyncio.to_thread(second.wait, 30)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    output = second.stdout.read().decode() if second.stdout else ""
    assert rc != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    return output


def _first_untouched(
    sims: Simulators, first: subprocess.Popen[bytes], redis_pid: int, socket_inode: int
) -> None:
    assert first.poll() is None
    assert [c.pid for c in _redis_children(first)] == [redis_pid]
    assert os.stat(_socket_path(first)).st_ino == socket_inode
    for venue in VENUES:
        assert sims[venue].connection_counts(sims.default_keys[venue]).open == 1, venue


def _socket_path(proc: subprocess.Popen[bytes]) -> str:
    (redis,) = _redis_children(proc)
    title = " ".join(redis.cmdline())  # redis-server shows "redis-server unixsocket:<path>"
    return title.partition("unixsocket:")[2].split()[0]


async def test_second_serve_on_one_data_dir_exits_and_leaves_the_first_alone(
    sims: Simulators, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    first = _serve(sims, data_dir, port)
    try:
        assert await _ready(port), "first service never became ready"
        (redis,) = _redis_children(first)
        inode = os.stat(_socket_path(first)).st_ino

        output = await _second_start_fails(sims, data_dir, free_port())
        lines = [line for line in output.splitlines() if line.strip()]
        assert any(str(data_dir.resolve()) in line for line in lines), output[-3000:]

        assert await _ready(port)
        _first_untouched(sims, first, redis.pid, inode)
    finally:
        first.kill()
        first.wait()


async def test_second_serve_on_one_port_exits_before_starting_anything(
    sims: Simulators, tmp_path: Path
) -> None:
    port = free_port()
    first = _serve(sims, tmp_path / "first", port)
    try:
        assert await _ready(port), "first service never became ready"
        (redis,) = _redis_children(first)
        inode = os.stat(_socket_path(first)).st_ino

        totals = {v: sims[v].connection_counts(sims.default_keys[v]).total for v in VENUES}
        second_dir = tmp_path / "second"
        output = await _second_start_fails(sims, second_dir, port)
        assert any(f"127.0.0.1:{port}" in line for line in output.splitlines()), output[-3000:]
        # it failed before starting a Redis or connecting to any venue
        assert not (second_dir / "redis").exists()
        for venue in VENUES:
            assert sims[venue].connection_counts(sims.default_keys[venue]).total == totals[venue]
        _first_untouched(sims, first, redis.pid, inode)
    finally:
        first.kill()
        first.wait()


async def test_a_killed_instance_is_never_shown_live_by_its_successor(
    sims: Simulators, tmp_path: Path
) -> None:
    """SIGKILL the service, make every venue refuse, restart it on the same data.

    The restarted service serves the state the dead one left in Redis; from its very
    first answer no account may be ``live``, no balance ``stale: false`` and ``/readyz``
    not 200 on the strength of a status written by the dead instance.
    """
    data_dir = tmp_path / "data"
    port = free_port()
    first = _serve(sims, data_dir, port, lease_ms=None)
    try:
        assert await _ready(port), "first service never became ready"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def all_live() -> bool:
                accounts = (await http.get("/v1/accounts")).json()["accounts"]
                return all(a["state"] == "live" for a in accounts)

            assert await wait_until(all_live, 30)
            accounts = (await http.get("/v1/accounts")).json()["accounts"]
            dead = {a["owner"] for a in accounts}
            assert len(dead) == 1 and None not in dead
    finally:
        first.kill()
        first.wait()
    for venue in VENUES:
        sims[venue].refuse_auth(sims.default_keys[venue])

    second = _serve(sims, data_dir, port, lease_ms=None)
    try:
        answered = 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = asyncio.get_running_loop().time() + 20
            taken_over = False
            while asyncio.get_running_loop().time() < deadline and not taken_over:
                try:
                    ready = (await http.get("/readyz")).status_code
                    accounts = (await http.get("/v1/accounts")).json()["accounts"]
                    balances = (await http.get("/v1/balances")).json()["balances"]
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
                    continue
                answered += 1
                assert balances, "the last state is served"
                assert [a["account"] for a in accounts if a["state"] == "live"] == []
                assert [b["account"] for b in balances if not b["stale"]] == []
                from_dead = [a["account"] for a in accounts if a["owner"] in dead]
                assert ready != 200 or not from_dead, from_dead
                taken_over = not from_dead
                await asyncio.sleep(0.05)
        assert answered, "the restarted service never answered"
        assert taken_over, "the restarted service never took its accounts over"
    finally:
        second.kill()
        second.wait()
