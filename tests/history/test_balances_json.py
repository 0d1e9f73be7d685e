"""``balances_json`` encodes the same document as ``balance_records`` would give."""

from __future__ import annotations

import orjson
import pytest

from app.history import queries, schema


def _state() -> queries.StateAt:
    def raw(account: str, asset: str, total: str, extra: str | None) -> schema.RawRecord:
        return (account, "bitopro", "", asset, None, total, total, "0",
                "2026-11-28T08:00:00.000Z", None, extra)  # fmt: skip

    rows = [
        raw("b", "ETH", "1.5", "{}"),
        raw("a", "BTC", "0", '{"note": "x", "n": [1, 2]}'),
        raw("a", "ADA", "0E-8", None),
        raw("a", "SOL", "12345678901234567890.12345678", ""),
    ]
    return queries.StateAt(
        seq=42, time_us=1, raw={(r[0], r[2], r[3]): r for r in rows}, live={"a": True}
    )


@pytest.mark.parametrize("nonzero", [False, True])
def test_balances_json_matches_the_records(nonzero: bool) -> None:
    state = _state()
    expected = orjson.dumps(
        {"seq": 42, "as_of": "t", "balances": queries.balance_records(state, nonzero)}
    )
    assert queries.balances_json(state, "t", nonzero) == expected
    doc = orjson.loads(expected)
    assert [b["asset"] for b in doc["balances"]] == (
        ["SOL", "ETH"] if nonzero else ["ADA", "BTC", "SOL", "ETH"]
    )
    assert [b["stale"] for b in doc["balances"]][-1] is True
