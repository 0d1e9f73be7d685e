"""Fixtures for the venue protocol tests: the sample frames and canary accounts.

Every credential here is a canary: tests assert it never shows up where it must not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.accounts import AccountConfig
from tests.samples import VECTORS

CANARY_KEY = "CANARY-KEY-456"
CANARY_SECRET = "CANARY-SECRET-123"
CANARY_EMAIL = "canary-identity@example.com"
CANARY_DATA_KEY = "CANARY-DATA-KEY-789"
CANARIES = (CANARY_KEY, CANARY_SECRET, CANARY_DATA_KEY)

WALLET = "FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1"
OTHER_WALLET = "F7R61te4Ac8xZ4pfkJUdF6iaaHy9tnM8nVRUPv8H8EMi"
TRUMP = "6p6xgHyF7AeE6TZkSmFsko444wqoP15icUSqi2jfGiPN"


def account(venue: str, **overrides: Any) -> AccountConfig:
    """A valid account for ``venue`` carrying canary credentials."""
    fields: dict[str, Any] = {"id": f"{venue}-test", "venue": venue, "api_key": CANARY_KEY}
    if venue == "bitopro":
        fields.update(api_secret=CANARY_SECRET, email=CANARY_EMAIL)
    if venue == "solanatracker":
        fields.update(wallets=[WALLET])
    fields.update(overrides)
    return AccountConfig.model_validate(fields)


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The directory of real sample frames (``tests/vectors``, kept in the repository)."""
    if not VECTORS.is_dir():
        pytest.fail(f"sample frames not found at {VECTORS}")
    return VECTORS


@pytest.fixture(scope="session")
def vector(vectors: Path) -> Callable[[str], bytes]:
    """Read one sample frame as the raw bytes a socket would deliver."""

    def read(name: str) -> bytes:
        return (vectors / name).read_bytes()

    return read
