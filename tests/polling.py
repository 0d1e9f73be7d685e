"""Waiting for a condition in tests: poll it with a deadline instead of sleeping a fixed time.

A fixed sleep is either too short on a loaded machine (a flaky failure) or too long
everywhere else; polling returns as soon as the condition holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Return once ``check()`` is true; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.005)
