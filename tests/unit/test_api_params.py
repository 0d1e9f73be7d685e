"""The one reading of filter lists, flags and resume positions (app/api/params.py)."""

from __future__ import annotations

import pytest

from app.accounts import ACCOUNT_ID_RE
from app.api.errors import BadParam
from app.api.params import (
    MAX_FILTER_ITEMS,
    account_list,
    asset_list,
    parse_flag,
    parse_since,
    split_list,
)


def test_comma_lists_and_repeats_read_alike() -> None:
    assert asset_list(["BTC,eth", " USDT "]) == ["BTC", "eth", "USDT"]
    assert account_list(["a-1", "b_2,c"]) == ["a-1", "b_2", "c"]


def test_absent_or_empty_filters_are_none() -> None:
    assert asset_list(None) is None
    assert asset_list(["", " , "]) is None


def test_invalid_values_are_refused_with_the_parameter_name() -> None:
    with pytest.raises(BadParam) as caught:
        account_list(["Upper"])
    assert caught.value.status == 422 and caught.value.code == "invalid_request"
    assert caught.value.message == "account: 'Upper' is not a valid value"
    with pytest.raises(BadParam, match=r"^assets: '.{64}…' is not a valid value$"):
        asset_list(["?" * 100], "assets")


def test_too_many_values_are_refused() -> None:
    names = [f"a{i}" for i in range(MAX_FILTER_ITEMS + 1)]
    with pytest.raises(BadParam, match="at most 1000 values"):
        split_list([",".join(names)], "account", ACCOUNT_ID_RE)
    assert split_list(names[:MAX_FILTER_ITEMS], "account", ACCOUNT_ID_RE) == names[:-1]


def test_since_and_flags() -> None:
    assert parse_since(None) is None and parse_since("") is None
    assert parse_since("42") == 42
    for bad in ("-1", "x", "1" * 20):
        with pytest.raises(BadParam, match="since"):
            parse_since(bad)
    assert parse_flag("true", "prices") and parse_flag("1", "prices")
    assert not parse_flag(None, "prices") and not parse_flag("false", "prices")
    with pytest.raises(BadParam, match="prices: expected true or false"):
        parse_flag("yes", "prices")
