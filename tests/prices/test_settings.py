"""Valuation settings: age limits and pegs read from the environment, bad ones refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.price_max_age == 120.0
    assert settings.price_max_ages == {}
    assert settings.price_pegs == {"USDT": "USD", "USDC": "USD", "USDM": "USD"}


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALAGG_PRICE_MAX_AGE", "30")
    monkeypatch.setenv("BALAGG_PRICE_MAX_AGES", '{"solanatracker": 300}')
    monkeypatch.setenv("BALAGG_PRICE_PEGS", "usdt=usd, DAI=USD")
    settings = Settings(_env_file=None)
    assert settings.price_max_age == 30.0
    assert settings.price_max_ages == {"solanatracker": 300.0}
    assert settings.price_pegs == {"USDT": "USD", "DAI": "USD"}
    monkeypatch.setenv("BALAGG_PRICE_PEGS", "")
    assert Settings(_env_file=None).price_pegs == {}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BALAGG_PRICE_PEGS", "USDT"),
        ("BALAGG_PRICE_PEGS", "USDT=USDT"),
        ("BALAGG_PRICE_PEGS", "US DT=USD"),
        ("BALAGG_PRICE_MAX_AGES", '{"sfox": 0}'),
        ("BALAGG_PRICE_MAX_AGE", "-1"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)
