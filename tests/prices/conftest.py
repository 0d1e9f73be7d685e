"""Fixtures for the price tests: the price frames under ``tests/prices/frames``.

They are the examples of each venue's price channel documentation (VENUES.md names the
pages); ``tests/vectors`` stays an exact copy of the shared account-stream reference set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

FRAMES = Path(__file__).resolve().parent / "frames"
RECEIVED = 1_764_316_800.0
"""A fixed receive time (epoch s) for parser tests."""


@pytest.fixture(scope="session")
def price_vector() -> Callable[[str], bytes]:
    """Read one recorded price frame as the raw bytes a socket would deliver."""

    def read(name: str) -> bytes:
        return (FRAMES / name).read_bytes()

    return read
