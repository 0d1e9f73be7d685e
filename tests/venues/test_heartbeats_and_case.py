"""Application heartbeats and case-insensitive event names, as the venues' SDKs handle them."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from app.domain import BalanceUpdate, ControlReply, VenueEvent
from app.venues.deltadefi import DeltadefiSession
from app.venues.solanatracker import SolanatrackerSession
from tests.venues.conftest import account


def test_solanatracker_json_ping_is_answered_with_a_json_pong() -> None:
    session = SolanatrackerSession(account("solanatracker"))
    events, replies = session.on_frame('{"type":"ping"}')
    assert events == [ControlReply("ping", True)]
    assert [orjson.loads(r) for r in replies] == [{"type": "pong"}]
    events, replies = session.on_frame(b'{"type":"pong"}')
    assert events == [ControlReply("pong", True)] and replies == []


@pytest.mark.parametrize("kind", ["Account", "account", "ACCOUNT"])
@pytest.mark.parametrize("sub_type", ["balance", "Balance", "BALANCE"])
def test_deltadefi_type_and_sub_type_are_case_insensitive(kind: str, sub_type: str) -> None:
    entry = {"asset": "ada", "asset_unit": "", "free": "1.5", "locked": "0"}
    frame = {"type": kind, "sub_type": sub_type, "balance": [entry]}
    events, _ = DeltadefiSession(account("deltadefi")).on_frame(orjson.dumps(frame))
    assert isinstance(events[0], BalanceUpdate)
    assert events[0].balances[0].total == Decimal("1.5")


@pytest.mark.parametrize("sub_type", ["Order_Info", "DLTA_POINTS"])
def test_deltadefi_other_sub_types_are_case_insensitive(sub_type: str) -> None:
    body = {"order": {"id": "1"}} if sub_type.lower() == "order_info" else {
        "dlta_points": {"delta": "1"}}  # fmt: skip
    frame = {"type": "Account", "sub_type": sub_type, **body}
    events, _ = DeltadefiSession(account("deltadefi")).on_frame(orjson.dumps(frame))
    assert isinstance(events[0], VenueEvent)
