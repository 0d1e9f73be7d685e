"""Rendering rules on documents shaped like the service's, including the fields live
valuation adds (which the current service does not serve yet), and the watch state."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from rich.console import Console

from app.client import render
from app.client.watch import WatchState


def text_of(renderable: Any, width: int = 200) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(renderable)
    return buffer.getvalue()


def record(account: str, asset: str, total: str, **more: Any) -> dict[str, Any]:
    return {
        "account": account,
        "venue": "sfox",
        "wallet": "",
        "asset": asset,
        "symbol": asset,
        "total": total,
        "available": total,
        "locked": "0",
        "extra": {},
        "updated_at": "2026-01-01T00:00:00.000Z",
        "venue_ts": None,
        "stale": False,
        **more,
    }


def test_exact_text_helpers() -> None:
    assert render.positional("1E-8") == "0.00000001"
    assert render.grouped("-1234567.50") == "-1,234,567.50"
    assert render.grouped("999") == "999"
    assert render.align_on_point(["1.5", "100", None, "0.00000001"]) == [
        "  1.5       ",
        "100         ",
        "  —         ",
        "  0.00000001",
    ]


def test_stale_rows_are_marked_and_valuation_fields_shown() -> None:
    records = [
        record(
            "sfox-main",
            "BTC",
            "1.5",
            value="150000.75",
            price="100000.5",
            price_source="sfox:btcusd",
        ),
        record("sfox-2", "FOO", "3", stale=True, value=None, price=None, value_reason="no_price"),
    ]
    out = text_of(render.balances_table(records, quote="USD"))
    foo = next(line for line in out.splitlines() if "FOO" in line)
    btc = next(line for line in out.splitlines() if "BTC" in line)
    assert "stale" in foo and "stale" not in btc
    assert "150,000.75" in btc and "sfox:btcusd" in btc
    assert "—" in foo and "no_price" in foo  # unknown value: a dash and the reason, not 0
    footer = text_of(render.balances_footer({"seq": 7, "balances": records}, "USD"))
    assert "seq 7" in footer and "stale account(s): sfox-2" in footer
    assert "coverage: 1 of 2 holdings priced" in footer and "FOO (no_price)" in footer


def test_without_valuation_the_footer_says_so() -> None:
    doc = {"seq": 3, "balances": [record("sfox-main", "BTC", "1")]}
    assert "not served by this service" in text_of(render.balances_footer(doc, "USD"))


def test_totals_with_coverage_and_reasons() -> None:
    doc = {
        "seq": 9,
        "totals": [
            {
                "symbol": "BTC",
                "total": "2",
                "available": "2",
                "locked": "0",
                "accounts": 1,
                "value": "200000",
            }
        ],
        "coverage": {"by_count": "0.5"},
        "unpriced": [{"symbol": "FOO", "reason": "no_path"}],
    }
    out = text_of(render.totals_table(doc, "TWD"))
    assert "value (TWD)" in out and "200,000" in out
    assert "coverage: by_count 0.5" in out and "unpriced: FOO (no_path)" in out


def test_csv_keeps_exact_strings_and_empty_unknowns() -> None:
    rows = list(
        csv.DictReader(
            io.StringIO(
                render.to_csv(
                    [record("a", "BTC", "0.000000000000000001", value=None)], render.BALANCE_COLUMNS
                )
            )
        )
    )
    assert rows[0]["total"] == "0.000000000000000001"
    assert Decimal(rows[0]["total"]) == Decimal("1E-18")
    assert rows[0]["value"] == ""


def test_watch_state_follows_status_and_highlights_changes() -> None:
    state = WatchState()
    state.apply(
        {
            "type": "snapshot",
            "seq": 1,
            "balances": [record("a", "BTC", "1")],
            "accounts": [{"account": "a", "state": "live"}],
        },
        now=0.0,
    )
    state.apply({"type": "balance", "seq": 2, "balance": record("a", "BTC", "2")}, now=10.0)
    assert state.highlighted(10.5)(("a", "", "BTC"), "total")
    assert not state.highlighted(10.5)(("a", "", "BTC"), "locked")  # unchanged
    assert not state.highlighted(20.0)(("a", "", "BTC"), "total")  # only briefly
    state.apply(
        {"type": "status", "seq": 3, "account": {"account": "a", "state": "stale"}}, now=11.0
    )
    assert state.rows(nonzero=False)[0]["stale"] is True
    state.apply(
        {"type": "removed", "seq": 4, "account": "a", "wallet": "", "asset": "BTC"}, now=12.0
    )
    assert state.rows(nonzero=False) == [] and state.seq == 4
