"""A small Chrome DevTools Protocol client over aiohttp: headless Chromium, one page at a time.

Launches Chromium with ``--remote-debugging-port=0``, reads the chosen port from the
``DevToolsActivePort`` file in its profile directory, and talks to the browser endpoint
with flattened target sessions. Enough to load a page, evaluate JavaScript, wait for a
condition and capture a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import aiohttp

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--password-store=basic",
    "--use-mock-keychain",
    "--remote-debugging-port=0",
)


class CDPError(Exception):
    """A protocol command failed, the page threw, or the browser went away."""


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM`` if set, else ``/usr/bin/chromium`` or one on PATH."""
    override = os.environ.get("CHROMIUM")
    if override:
        return override if Path(override).exists() or shutil.which(override) else None
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


EventHandler = Callable[[str, dict[str, Any]], None]


class Browser:
    """One headless Chromium process and its browser-level DevTools connection."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        http: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
        profile: Path,
    ) -> None:
        self._proc = proc
        self._http = http
        self._ws = ws
        self.profile = profile
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, EventHandler] = {}
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")
        self._closed = False

    @classmethod
    async def launch(
        cls,
        binary: str,
        profile: Path,
        *,
        width: int = 1280,
        height: int = 900,
        timeout: float = 20.0,
    ) -> Self:
        port_file, log_path = _prepare_profile(profile)
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group, so every child is stopped
            )
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                break
            lines = _read_port_file(port_file)
            if len(lines) >= 2:
                break
            await asyncio.sleep(0.05)
        if len(lines) < 2:
            await _stop_process(proc)
            tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:]
            raise CDPError(f"Chromium did not open its DevTools port: {tail}")
        url = f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(10))
        except BaseException:
            await http.close()
            await _stop_process(proc)
            raise
        return cls(proc, http, ws, profile)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if "id" in data:
                    future = self._pending.pop(data["id"], None)
                    if future is not None and not future.done():
                        future.set_result(data)
                elif "method" in data:
                    handler = self._handlers.get(data.get("sessionId", ""))
                    if handler is not None:
                        handler(data["method"], data.get("params", {}))
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CDPError("the browser connection closed"))
            self._pending.clear()

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """Run one protocol command and return its result."""
        if self._closed:
            raise CDPError("the browser is closed")
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        await self._ws.send_str(json.dumps(message))
        try:
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(msg_id, None)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def new_page(self, width: int = 1280, height: int = 900) -> Page:
        """A fresh tab, attached with its own session, with Page and Runtime enabled."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        target_id: str = target["targetId"]
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target_id, "flatten": True}
        )
        page = Page(self, attached["sessionId"], target_id)
        self._handlers[page.session_id] = page._on_event
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    async def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(Exception):
            await self.send("Browser.close", timeout=3)
        self._closed = True
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._http.close()
        await _stop_process(self._proc)


class Page:
    """One tab: navigate, evaluate, wait for a condition, screenshot."""

    def __init__(self, browser: Browser, session_id: str, target_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        self.target_id = target_id
        self.exceptions: list[str] = []
        self.console: list[tuple[str, str]] = []
        self.paused: list[dict[str, Any]] = []  # Fetch.requestPaused, once Fetch is enabled
        self.finished: set[str] = set()  # network request ids done, once Network is enabled
        self._load = asyncio.Event()

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._load.set()
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.exceptions.append(str(text))
        elif method == "Fetch.requestPaused":
            self.paused.append(params)
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            self.finished.add(str(params.get("requestId", "")))
        elif method == "Runtime.consoleAPICalled":
            args = params.get("args", [])
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
            self.console.append((str(params.get("type", "")), text))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, session_id=self.session_id)

    async def goto(self, url: str, timeout: float = 15.0) -> None:
        """Navigate and wait for the load event."""
        self._load.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        await asyncio.wait_for(self._load.wait(), timeout)

    async def evaluate(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page (promises awaited); return its value."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{expression[:80]!r} threw: {text}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll ``expression`` until it is truthy; return that value or raise with the last one."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"waited {timeout}s for {expression!r}; last value {value!r}")
            await asyncio.sleep(interval)

    async def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole scrollable page unless ``full_page`` is False)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            }
        result = await self.send("Page.captureScreenshot", params)
        await asyncio.to_thread(_write_file, path, base64.b64decode(result["data"]))
        return path


def _prepare_profile(profile: Path) -> tuple[Path, Path]:
    """Create the profile directory; return its port file and the browser's log path."""
    profile.mkdir(parents=True, exist_ok=True)
    port_file = profile / "DevToolsActivePort"
    port_file.unlink(missing_ok=True)
    return port_file, profile.parent / f"{profile.name}-chromium.log"


def _read_port_file(port_file: Path) -> list[str]:
    """``[port, browser path]`` once Chromium has written them, else ``[]``."""
    try:
        return port_file.read_text().split()
    except OSError:
        return []


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _stop_process(proc: asyncio.subprocess.Process) -> None:
    """Stop Chromium and its children (its process group): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.returncode is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), wait)
    # the group may outlive its leader for a moment: make sure nothing is left behind
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
