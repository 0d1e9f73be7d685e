"""The stream mirror on its own: no Redis, no sockets, changes built as the write scripts
build them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from app.accounts import AccountConfig
from app.domain import BalanceRecord
from app.store import Change, StateSnapshot
from app.stream.messages import parse_change
from app.stream.mirror import Mirror

ME = "inst-a"


def _account(name: str, enabled: bool = True) -> AccountConfig:
    return AccountConfig.model_validate(
        {
            "id": name,
            "venue": "deltadefi",
            "api_key": "test-key-not-real",
            "ws_url": "ws://127.0.0.1:9/",
            "rest_url": "http://127.0.0.1:9",
            "enabled": enabled,
        }
    )


def _record(account: str, asset: str, total: str, wallet: str = "") -> BalanceRecord:
    return BalanceRecord(
        account=account,
        venue="deltadefi",
        wallet=wallet,
        asset=asset,
        symbol=asset,
        total=Decimal(total),
        available=Decimal(total),
        locked=Decimal(0),
        updated_at="2026-01-01T00:00:00.000Z",
        venue_ts=None,
        stale=False,
        extra={},
    )


def _status(state: str, owner: str | None = "inst-b") -> dict[str, Any]:
    return {"state": state, "owner": owner, "reconnects": 0, "last_error": None}


def _mirror(*, private_redis: bool = False, runs: frozenset[str] = frozenset()) -> Mirror:
    return Mirror(
        [_account("a1"), _account("a2"), _account("off", enabled=False)],
        instance_id=ME,
        private_redis=private_redis,
        runs_here=lambda account: account in runs,
    )


def _balance(seq: int, account: str, asset: str, total: str) -> Change:
    body = orjson.dumps(
        {
            "account": account,
            "venue": "deltadefi",
            "wallet": "",
            "asset": asset,
            "symbol": asset,
            "total": total,
            "available": total,
            "locked": "0",
            "extra": {},
            "updated_at": "2026-01-01T00:00:01.000Z",
            "venue_ts": None,
            "stale": False,
        }
    )
    message = b'{"type":"balance","seq":%d,"balance":%b}' % (seq, body)
    return Change(seq, account, asset, message)


def _removed(seq: int, account: str, asset: str) -> Change:
    doc = {"type": "removed", "seq": seq, "account": account, "wallet": "", "asset": asset}
    return Change(seq, account, asset, orjson.dumps(doc))


def _status_change(seq: int, account: str, status: dict[str, Any]) -> Change:
    doc = {"type": "status", "seq": seq, "account": {"account": account, **status}}
    return Change(seq, account, "", orjson.dumps(doc))


def _apply(mirror: Mirror, *changes: Change) -> list[bool]:
    out = []
    for change in changes:
        msg, doc = parse_change(change, 0.0)
        out.append(mirror.apply(msg, doc, change.message))
        mirror.advance(change.seq)
    return out


def _loaded(mirror: Mirror, seq: int = 10) -> Mirror:
    mirror.set_owners({"inst-b"}, {"a1": "inst-b", "a2": "inst-b"})
    mirror.install(
        StateSnapshot(
            seq,
            [_record("a1", "BTC", "1.5"), _record("a2", "ETH", "2"), _record("zz", "X", "1")],
            {"a1": {**_status("live"), "last_message_at": "t1"}, "a2": _status("syncing")},
        )
    )
    return mirror


def _body(mirror: Mirror, **kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(mirror.balances_body(**kw))
    return doc


def test_install_keeps_configured_accounts_and_the_snapshot_seq() -> None:
    mirror = _loaded(_mirror())
    body = _body(mirror)
    assert mirror.loaded and body["seq"] == 10 == mirror.seq
    assert [(r["account"], r["asset"], r["total"]) for r in body["balances"]] == [
        ("a1", "BTC", "1.5"),
        ("a2", "ETH", "2"),
    ]  # "zz" is not configured here


def test_changes_apply_in_seq_order_and_bodies_follow() -> None:
    mirror = _loaded(_mirror())
    before = mirror.balances_body()
    assert mirror.balances_body() is before  # cached while nothing changes
    visible = _apply(
        mirror,
        _balance(11, "a1", "BTC", "2.25"),
        _balance(12, "a1", "ADA", "7"),
        _removed(13, "a2", "ETH"),
        _balance(14, "other", "BTC", "9"),
    )
    assert visible == [True, True, True, False]
    body = _body(mirror)
    assert body["seq"] == 14
    # sorted by wallet|asset within an account; exact decimal strings
    assert [(r["asset"], r["total"]) for r in body["balances"]] == [("ADA", "7"), ("BTC", "2.25")]
    assert mirror.balances_body() is not before


def test_staleness_follows_the_account_state() -> None:
    mirror = _loaded(_mirror())
    stale = {r.account: r.stale for r in mirror.records()}
    assert stale == {"a1": False, "a2": True}  # a2 is syncing
    _apply(mirror, _status_change(11, "a1", _status("reconnecting")))
    assert [r.stale for r in mirror.records(["a1"])] == [True]
    assert _body(mirror, accounts=["a1"])["balances"][0]["stale"] is True
    _apply(mirror, _status_change(12, "a1", _status("live")))
    assert [r.stale for r in mirror.records(["a1"])] == [False]


def test_views_apply_defaults_disabled_and_polled_last_message() -> None:
    mirror = _loaded(_mirror())
    views = {v["account"]: v for v in mirror.account_views()}
    assert views["a1"]["state"] == "live" and views["a1"]["last_message_at"] == "t1"
    assert views["a2"]["state"] == "syncing"
    assert views["off"]["state"] == "disabled"
    version = mirror.version
    assert mirror.set_last_message_at({"a1": "t2"}) is True
    assert mirror.version > version
    assert mirror.set_last_message_at({"a1": "t2"}) is False
    assert mirror.account_view("a1")["last_message_at"] == "t2"


def test_a_gone_owner_is_served_stale_and_orphaned() -> None:
    mirror = _loaded(_mirror())
    assert mirror.state_of("a1") == "live" and not mirror.orphaned("a1")
    mirror.set_owners(set(), {"a1": "inst-b"})  # inst-b stopped heartbeating
    assert mirror.recheck_owners() is True
    assert mirror.state_of("a1") == "stale" and mirror.orphaned("a1")
    assert mirror.served_state_differs(frozenset({"a1"}))
    assert [r.stale for r in mirror.records(["a1"])] == [True]
    assert mirror.recheck_owners() is False  # nothing changed since


def test_a_new_owner_in_a_status_asks_for_the_leases() -> None:
    mirror = _loaded(_mirror())
    assert not mirror.owners_due
    _apply(mirror, _status_change(11, "a2", _status("live", owner="inst-c")))
    assert mirror.owners_due


def test_own_statuses_count_only_while_this_process_runs_the_account() -> None:
    mirror = _mirror(private_redis=True, runs=frozenset({"a1"}))
    mirror.install(
        StateSnapshot(1, [], {"a1": _status("live", owner=ME), "a2": _status("live", owner=ME)})
    )
    assert mirror.state_of("a1") == "live"
    assert mirror.state_of("a2") == "stale"


def test_snapshot_frames_are_shared_per_filter_until_a_change() -> None:
    mirror = _loaded(_mirror())
    first = mirror.snapshot_message(None, None)
    assert mirror.snapshot_message(None, None) is first
    doc = orjson.loads(first.text)
    assert doc["type"] == "snapshot" and doc["seq"] == 10
    assert [a["account"] for a in doc["accounts"]] == ["a1", "a2", "off"]
    only = orjson.loads(mirror.snapshot_message(frozenset({"a2"}), None).text)
    assert [r["account"] for r in only["balances"]] == ["a2"]
    _apply(mirror, _balance(11, "a1", "BTC", "3"))
    again = mirror.snapshot_message(None, None)
    assert again is not first and orjson.loads(again.text)["seq"] == 11


def test_gauge_sums_add_wallets_and_skip_zero_records() -> None:
    mirror = _mirror()
    mirror.install(
        StateSnapshot(
            1,
            [
                _record("a1", "SOL", "1.1", wallet="w1"),
                _record("a1", "SOL", "2.2", wallet="w2"),
                _record("a1", "DUST", "0"),
            ],
            {},
        )
    )
    assert mirror.balance_sums() == {
        ("a1", "SOL"): (Decimal("3.3"), Decimal("3.3"), Decimal(0)),
    }
