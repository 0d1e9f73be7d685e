"""The embedded Redis: starts, persists with AOF, stops, and never outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis

from app.redis_server import EmbeddedRedis


def test_start_persist_restart(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "d") as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "1.00000001")
        client.close()
        pid = server.pid
        assert pid is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with EmbeddedRedis(tmp_path / "d") as server:  # AOF brings the data back
        client = redis.Redis.from_url(server.url)
        assert client.get("k") == b"1.00000001"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.close()


def test_long_data_dir_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    with EmbeddedRedis(deep) as server:
        assert redis.Redis.from_url(server.url).ping()


CHILD = """
import sys, time
from app.redis_server import EmbeddedRedis
server = EmbeddedRedis(sys.argv[1]).start()
print(server.pid, flush=True)
time.sleep(60)
"""


def test_no_orphan_after_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "d")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert parent.stdout is not None
    redis_pid = int(parent.stdout.readline())
    assert psutil.Process(redis_pid).is_running()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not psutil.pid_exists(redis_pid):
            break
        if psutil.Process(redis_pid).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"redis-server {redis_pid} outlived its SIGKILLed parent")
