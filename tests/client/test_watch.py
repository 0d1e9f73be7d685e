"""``watch`` against a real service fed by the simulators: the JSON tail receives a pushed
change and resumes across a service restart with no gap or duplicate; the live table shows
a pushed change on a real terminal (tmux); Ctrl-C exits cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from app.simulators.runner import Simulators
from tests.client.conftest import ROOT, TOKEN, LiveService, assert_no_leak, cli_env


class JsonTail:
    """A ``watch --json`` subprocess; ``until`` reads lines until one matches."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.messages: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, *args: str) -> JsonTail:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            "watch",
            "--json",
            *args,
            cwd=ROOT,
            env=cli_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        return cls(proc)

    async def until(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no matching message; last: {self.messages[-3:]}"
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                self.kill()
                raise AssertionError(
                    f"no matching message; last: {self.messages[-3:]}; "
                    f"stderr: {await self.stderr()}"
                ) from None
            assert line, "watch ended: " + await self.stderr()
            assert_no_leak(line.decode())
            message: dict[str, Any] = orjson.loads(line)
            self.messages.append(message)
            if match(message):
                return message

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        await self.proc.wait()
        return (await self.proc.stderr.read()).decode()

    async def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        _out, err = await asyncio.wait_for(self.proc.communicate(), 30)
        return self.proc.returncode or 0, err.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def balance_is(account: str, asset: str, total: str) -> Callable[[dict[str, Any]], bool]:
    def match(message: dict[str, Any]) -> bool:
        record = message.get("balance") or {}
        return bool(
            message.get("type") == "balance"
            and record.get("account") == account
            and record.get("asset") == asset
            and record.get("total") == total
        )

    return match


async def test_watch_json_tails_changes_and_resumes_across_a_restart(
    live: LiveService, sims: Simulators
) -> None:
    key = sims.default_keys["bitopro"]
    tail = await JsonTail.start("--url", live.base)
    try:
        snapshot = await tail.until(lambda m: m["type"] == "snapshot")
        await sims.bitopro.push(key, {"BTC": "4.0625"})
        await tail.until(balance_is("bitopro-main", "BTC", "4.0625"))

        await live.stop()
        # changed while the service is down: the restarted service learns it from the venue
        await sims.bitopro.push(key, {"ETH": "33.5"})
        await live.start()
        await live.wait_live()
        await tail.until(balance_is("bitopro-main", "ETH", "33.5"))
        await sims.bitopro.push(key, {"BTC": "5.125"})
        await tail.until(balance_is("bitopro-main", "BTC", "5.125"))

        code, err = await tail.interrupt()
    finally:
        tail.kill()
    assert code == 0, err
    assert "Traceback" not in err
    assert_no_leak(err)
    assert "resumed after seq" in err, err  # the status line on stderr says what happened

    changes = tail.messages[1:]
    assert all(m["type"] != "snapshot" for m in changes), "restart re-snapshotted"
    seqs = [snapshot["seq"]] + [m["seq"] for m in changes]
    # an unfiltered client sees every seq: strictly increasing, no gap, no duplicate
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert f"stopped after seq {seqs[-1]}" in err

    # a script resumes its tail where it stopped: nothing before, the next change after
    resumed = await JsonTail.start("--url", live.base, "--since", str(seqs[-1]))
    try:
        await sims.bitopro.push(key, {"BTC": "6.25"})
        first = await resumed.until(lambda m: True)
        assert first["seq"] == seqs[-1] + 1
        assert balance_is("bitopro-main", "BTC", "6.25")(first), first
    finally:
        resumed.kill()
        await resumed.proc.wait()


@contextmanager
def tmux_session(command: list[str], env: dict[str, str]) -> Iterator[Callable[..., str]]:
    """A detached tmux session on its own server socket; yields ``tmux(*args) -> stdout``."""
    socket_name = f"balagg-test-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", socket_name, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return proc.stdout

    flags = [f"-e{k}={v}" for k, v in env.items() if k.startswith(("BALAGG_", "PYTHON"))]
    tmux(
        "-f",
        os.devnull,
        "new-session",
        "-d",
        "-s",
        "w",
        "-x",
        "200",
        "-y",
        "50",
        *flags,
        "-c",
        str(ROOT),
        *command,
    )
    try:
        tmux("set-option", "-t", "w", "remain-on-exit", "on")
        yield tmux
    finally:
        subprocess.run(
            ["tmux", "-L", socket_name, "kill-server"], capture_output=True, check=False, timeout=10
        )


async def test_watch_table_shows_a_pushed_change_on_a_terminal(
    live: LiveService, sims: Simulators
) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (CI installs it through .ci/run)")
    env = cli_env()
    command = [
        sys.executable,
        "-m",
        "app",
        "watch",
        "--url",
        live.base,
        "--account",
        "bitopro-main",
    ]
    # bash reports the exit status on the screen: tmux learns it only when it reaps the
    # process, which can come long after the pane's terminal closed. (bash waits out a
    # child that handles Ctrl-C itself and carries on; one killed by it kills bash too.)
    shell = ["bash", "-c", f'{shlex.join(command)}; echo "watch exited with $?"']
    with tmux_session(shell, env) as tmux:

        def screen() -> str:
            return tmux("capture-pane", "-p", "-t", "w")

        async def wait_screen(text: str, timeout: float) -> str:
            deadline = time.monotonic() + timeout
            while True:
                shown = screen()
                if text in shown:
                    return shown
                assert time.monotonic() < deadline, f"{text!r} not on screen:\n{shown}"
                await asyncio.sleep(0.05)

        shown = await wait_screen("bitopro-main", 30)
        assert "connected to" in shown and "BTC" in shown
        assert_no_leak(shown)
        await sims.bitopro.push(sims.default_keys["bitopro"], {"BTC": "271.828125"})
        # the change is on screen within a second of the push (a functional check: the view
        # redraws on changes, it does not wait for a periodic full refresh)
        await wait_screen("271.828125", 1.0)

        tmux("send-keys", "-t", "w", "C-c")
        shown = await wait_screen("watch exited with", 15)
    assert "watch exited with 0" in shown, shown
    assert "Traceback" not in shown
    assert "stopped after seq" in shown
    assert TOKEN not in shown


def highlighted(value: str) -> re.Pattern[str]:
    """``value`` drawn on the highlight: a yellow background set right before its cell."""
    return re.compile(r"\x1b\[[0-9;]*43m *" + re.escape(value))


async def test_watch_table_highlights_a_change_and_resumes_across_a_restart(
    live: LiveService, sims: Simulators
) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (CI installs it through .ci/run)")
    key = sims.default_keys["bitopro"]
    command = [sys.executable, "-m", "app", "watch", "--url", live.base]
    command += ["--account", "bitopro-main"]
    shell = ["bash", "-c", f'{shlex.join(command)}; echo "watch exited with $?"']
    with tmux_session(shell, cli_env()) as tmux:

        def screen(colours: bool = False) -> str:
            return tmux("capture-pane", "-p", *(["-e"] if colours else []), "-t", "w")

        async def wait_screen(ok: Callable[[str], bool], colours: bool = False) -> str:
            deadline = time.monotonic() + 30
            while True:
                shown = screen(colours)
                if ok(shown):
                    return shown
                assert time.monotonic() < deadline, f"not on screen:\n{screen()}"
                await asyncio.sleep(0.05)

        await wait_screen(lambda s: "connected to" in s and "BTC" in s)
        await sims.bitopro.push(key, {"BTC": "314.159265"})
        # the changed amount is drawn on a highlight, then the highlight goes away
        mark = highlighted("314.159265")
        await wait_screen(lambda s: bool(mark.search(s)), colours=True)
        await wait_screen(lambda s: "314.159265" in s and not mark.search(s), colours=True)

        await live.stop()
        await wait_screen(lambda s: "reconnecting to resume after seq" in s or "retrying" in s)
        await sims.bitopro.push(key, {"ETH": "33.515625"})  # while the service is down
        await live.start()
        await live.wait_live()
        shown = await wait_screen(lambda s: "33.515625" in s)
        # the status line says the table carried on from where it was, without a snapshot
        resumed = await wait_screen(lambda s: "resumed after seq" in s)
        assert "no gap" in resumed and "could not resume" not in resumed, resumed
        await sims.bitopro.push(key, {"BTC": "2.718281"})
        shown = await wait_screen(lambda s: "2.718281" in s)
        assert "314.159265" not in shown  # the row was updated in place, not added
        assert shown.count("│ bitopro-main") == len(
            (await live.get("/v1/balances/bitopro-main"))["balances"]
        )

        tmux("send-keys", "-t", "w", "C-c")
        shown = await wait_screen(lambda s: "watch exited with" in s)
    assert "watch exited with 0" in shown, shown
    assert "Traceback" not in shown
    assert_no_leak(shown)
