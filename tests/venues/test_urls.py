"""Venue URLs: building request URLs, redacting secrets from what is logged."""

from __future__ import annotations

import pytest

from app.accounts import AccountConfig
from app.venues import urls


def test_url_helpers() -> None:
    assert urls.with_query_param("wss://h/p", "k", "v") == "wss://h/p?k=v"
    assert urls.with_query_param("wss://h/p?a=1", "k", "v") == "wss://h/p?a=1&k=v"
    assert urls.with_query_param("wss://h/p?", "k", "v") == "wss://h/p?k=v"
    assert urls.with_path_segment("wss://h", "k") == "wss://h/k"
    assert urls.with_path_segment("wss://h/a/?q=1", "k") == "wss://h/a/k?q=1"
    assert urls.redact_url("wss://u:p@h/x?token=abc&v=1") == "wss://***@h/x?token=***&v=1"
    assert urls.redact_url("wss://h/x?v=1") == "wss://h/x?v=1"


def test_scrub_blanks_secrets_and_control_characters() -> None:
    assert urls.scrub("bad key SECRET1\n", ["SECRET1"]) == "bad key ***"[:120] + " "
    assert len(urls.scrub("x" * 1000, [])) == 120


def test_quote_segment_quotes_slashes() -> None:
    assert urls.quote_segment("a/b c") == "a%2Fb%20c"


def test_a_required_secret_is_read_or_refused_by_name_only() -> None:
    account = AccountConfig(id="s1", venue="sfox", api_key="CANARY-KEY-1")
    assert account.secret("api_key") == "CANARY-KEY-1"
    with pytest.raises(ValueError, match="account s1: data_api_key required") as info:
        account.secret("data_api_key")
    assert "CANARY" not in str(info.value)
    assert account.secret_values() == ["CANARY-KEY-1"]
