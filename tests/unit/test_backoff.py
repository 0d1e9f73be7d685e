"""The reconnect backoff: full jitter, bounded by the exponential step and the cap."""

from __future__ import annotations

import random

import pytest

from app.upstream import full_jitter


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(12)


def test_every_delay_lies_between_zero_and_the_step() -> None:
    for attempt in range(12):
        step = min(30.0, 0.5 * 2**attempt)
        delays = [full_jitter(attempt, 0.5, 30.0) for _ in range(500)]
        assert all(0 <= d <= step for d in delays)


def test_delays_never_exceed_the_cap() -> None:
    for attempt in (10, 31, 64, 10_000):  # huge attempts must not overflow either
        assert all(0 <= full_jitter(attempt, 1.0, 5.0) <= 5.0 for _ in range(500))


def test_the_range_grows_with_the_attempt() -> None:
    means = []
    for attempt in range(6):
        delays = [full_jitter(attempt, 0.1, 60.0) for _ in range(2_000)]
        means.append(sum(delays) / len(delays))
        # full jitter spreads over the whole range, not around its top
        assert min(delays) < 0.1 * 2**attempt * 0.1
        assert max(delays) > 0.1 * 2**attempt * 0.9
    # the mean of uniform [0, step] is step / 2, and each step doubles
    for attempt, mean in enumerate(means):
        assert mean == pytest.approx(0.1 * 2**attempt / 2, rel=0.1)


def test_zero_base_means_no_wait() -> None:
    assert full_jitter(5, 0.0, 10.0) == 0.0
