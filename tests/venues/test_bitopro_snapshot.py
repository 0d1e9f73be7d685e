"""BitoPro: a rejected first frame never lets a later, partial frame become the snapshot."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import pytest

from app.domain import BalanceSnapshot, BalanceUpdate
from app.venues.base import ProtocolError
from app.venues.bitopro import BitoproSession
from tests.venues.conftest import account


def _frame(data: Mapping[str, object], event: str = "ACCOUNT_BALANCE") -> bytes:
    return orjson.dumps({"event": event, "timestamp": 1639553303365, "data": data})


def _entry(currency: str, amount: str, **extra: object) -> dict[str, object]:
    return {"currency": currency, "amount": amount, "available": amount, "stake": "0",
            "tradable": True, **extra}  # fmt: skip


GOOD: dict[str, object] = {
    "BTC": _entry("BTC", "1.5"),
    "ADA": _entry("ADA", "999999999999.99999999"),
}
BAD_FIRST: dict[str, dict[str, object]] = {
    "negative": {**GOOD, "ETH": _entry("ETH", "-1")},
    "unknown_code": {**GOOD, "USDT(ERC20)": _entry("USDT(ERC20)", "5")},
    "tradable_string": {**GOOD, "ETH": _entry("ETH", "1", tradable="true")},
}


@pytest.mark.parametrize("kind", sorted(BAD_FIRST))
def test_partial_frame_after_a_rejected_snapshot_is_refused(kind: str) -> None:
    session = BitoproSession(account("bitopro"))
    with pytest.raises(ProtocolError):
        session.on_frame(_frame(BAD_FIRST[kind]))
    assert session.snapshot_rejected
    with pytest.raises(ProtocolError) as caught:
        session.on_frame(_frame({"BTC": _entry("BTC", "2")}))
    assert caught.value.reason == "snapshot_rejected"


def test_other_event_first_is_not_a_rejected_snapshot() -> None:
    session = BitoproSession(account("bitopro"))
    with pytest.raises(ProtocolError):
        session.on_frame(_frame(GOOD, event="SOMETHING_ELSE"))
    assert not session.snapshot_rejected
    events, _ = session.on_frame(_frame(GOOD))
    assert isinstance(events[0], BalanceSnapshot)
    events, _ = session.on_frame(_frame({"BTC": _entry("BTC", "2")}))
    assert isinstance(events[0], BalanceUpdate)
