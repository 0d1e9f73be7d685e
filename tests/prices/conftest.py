"""Fixtures for the price tests: the recorded price frames under ``tests/vectors``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
RECEIVED = 1_764_316_800.0
"""A fixed receive time (epoch s) for parser tests."""


@pytest.fixture(scope="session")
def price_vector() -> Callable[[str], bytes]:
    """Read one recorded price frame as the raw bytes a socket would deliver."""

    def read(name: str) -> bytes:
        return (VECTORS / name).read_bytes()

    return read
