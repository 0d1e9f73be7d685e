"""SolanaTracker: key in the path, room joins, wallet balances, token prices and swaps."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest

from app.domain import (
    AssetBalance,
    BalanceSnapshot,
    BalanceUpdate,
    ControlReply,
    PriceUpdate,
    VenueEvent,
)
from app.mints import USDC, USDT
from app.venues.base import HttpRequest, ProtocolError
from app.venues.solanatracker import SWAP_DEDUP_SIZE, BoundedSet, SolanatrackerSession
from tests.venues.conftest import (
    CANARIES,
    CANARY_DATA_KEY,
    CANARY_KEY,
    OTHER_WALLET,
    TRUMP,
    WALLET,
    account,
)

ZERO = Decimal(0)
TX = "5V4apVkgHf49J5acYPiuh5rB89EGsF8ocSysgnD9vFfZsTtDamhN3MFDKJSq7Dn7Z6Y5XhjghuVYuvvYWnSFpnvW"
BALANCE_ROOM = f"wallet:{WALLET}:balance"


def session(**overrides: Any) -> SolanatrackerSession:
    return SolanatrackerSession(account("solanatracker", **overrides))


def balance(mint: str, amount: object, wallet: str = WALLET, room: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "type": "message",
            "room": room or f"wallet:{wallet}:balance",
            "data": {"wallet": wallet, "token": mint, "amount": amount},
        }
    )


def swap(tx: str, wallet: str, price: object, time: int, **more: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "tx": tx,
        "amount": 10,
        "priceUsd": price,
        "volume": 60,
        "solVolume": 0.3,
        "type": "buy",
        "wallet": wallet,
        "time": time,
        "program": "raydium",
        "token": {
            "from": {
                "address": USDC,
                "symbol": "USDC",
                "name": "USD Coin",
                "decimals": 6,
                "amount": 60,
            },
            "to": {
                "address": TRUMP,
                "symbol": "TRUMP",
                "name": "OFFICIAL TRUMP",
                "decimals": 6,
                "amount": 10,
            },
        },
    }
    doc.update(more)
    return doc


def transactions(*swaps: object, mint: str = TRUMP) -> bytes:
    return orjson.dumps({"type": "message", "room": f"transaction:{mint}", "data": list(swaps)})


def test_connect_url_puts_the_key_in_the_path() -> None:
    request = session().connect_request()
    assert request.url == f"wss://datastream.solanatracker.io/{CANARY_KEY}"
    assert request.log_url == "wss://datastream.solanatracker.io/***"
    override = session(ws_url="ws://127.0.0.1:9005/ds/?x=1").connect_request()
    assert override.url == f"ws://127.0.0.1:9005/ds/{CANARY_KEY}?x=1"
    assert override.log_url == "ws://127.0.0.1:9005/ds/***?x=1"


def test_opening_messages_join_every_wallet(vector: Callable[[str], bytes]) -> None:
    s = session(wallets=[WALLET, OTHER_WALLET])
    joins = [json.loads(m) for m in s.opening_messages()]
    assert joins[0] == json.loads(vector("solanatracker/join_balance.json"))
    assert joins[1] == {"type": "join", "room": f"wallet:{OTHER_WALLET}:balance"}


def test_room_messages_match_the_vectors(vector: Callable[[str], bytes]) -> None:
    s = session()
    assert s.transaction_room(TRUMP) == f"transaction:{TRUMP}"
    assert json.loads(s.join_message(s.transaction_room(TRUMP))) == json.loads(
        vector("solanatracker/join_transactions.json")
    )
    assert json.loads(s.leave_message(BALANCE_ROOM)) == json.loads(
        vector("solanatracker/leave_balance.json")
    )


def test_follow_holdings_joins_and_leaves_the_rooms_of_held_mints() -> None:
    s = session()
    first = [orjson.loads(m) for m in s.follow_holdings({TRUMP, USDC})]
    assert first == [
        {"type": "join", "room": f"price:aggregated:{TRUMP}"},
        {"type": "join", "room": f"price:aggregated:{USDC}"},
        {"type": "join", "room": f"transaction:{TRUMP}"},
        {"type": "join", "room": f"transaction:{USDC}"},
    ]
    assert s.follow_holdings({USDC, TRUMP}) == []  # nothing new: nothing sent
    second = [orjson.loads(m) for m in s.follow_holdings({USDC})]
    assert second == [
        {"type": "leave", "room": f"price:aggregated:{TRUMP}"},
        {"type": "leave", "room": f"transaction:{TRUMP}"},
    ]  # the wallet balance rooms are never left
    assert session().follow_holdings(set()) == []  # a new connection follows nothing yet


def test_vector_joined_is_a_control_reply(vector: Callable[[str], bytes]) -> None:
    assert session().on_frame(vector("solanatracker/joined_balance.json")) == (
        [ControlReply("join", True, BALANCE_ROOM)],
        [],
    )


def test_vector_balance_is_exact_with_a_known_symbol(vector: Callable[[str], bytes]) -> None:
    events, _ = session().on_frame(vector("solanatracker/balance_message.json"))
    amount = Decimal("78816.844996")
    assert events == [BalanceUpdate((AssetBalance(WALLET, USDT, amount, amount, ZERO, "USDT"),))]
    assert str(events[0].balances[0].total) == "78816.844996"  # type: ignore[union-attr]


def test_vector_transactions_give_price_and_metadata(vector: Callable[[str], bytes]) -> None:
    s = session()
    events, _ = s.on_frame(vector("solanatracker/transactions_message.json"))
    # the swapper is not a tracked wallet: a price, no swap event
    assert events == [
        PriceUpdate(TRUMP, Decimal("6.002467911111111"), "TRUMP", "OFFICIAL TRUMP", 6)
    ]
    assert s.symbol_of(TRUMP) == "TRUMP"
    # what the transactions room taught labels the balance of that mint from now on
    events, _ = s.on_frame(balance(TRUMP, 12))
    assert events == [
        BalanceUpdate((AssetBalance(WALLET, TRUMP, Decimal(12), Decimal(12), ZERO, "TRUMP"),))
    ]


def test_tracked_wallet_swaps_are_events_with_string_decimals(
    vector: Callable[[str], bytes],
) -> None:
    s = session(wallets=["F7R61te4Ac8xZ4pfkJUdF6iaaHy9tnM8nVRUPv8H8EMi"])
    events, _ = s.on_frame(vector("solanatracker/transactions_message.json"))
    assert len(events) == 2
    event = events[1]
    assert isinstance(event, VenueEvent) and event.kind == "swap"
    assert event.data == {
        "tx": TX,
        "mint": TRUMP,
        "wallet": "F7R61te4Ac8xZ4pfkJUdF6iaaHy9tnM8nVRUPv8H8EMi",
        "type": "sell",
        "program": "okx",
        "time": 1760201288835,
        "priceUsd": "6.002467911111111",
        "amount": "90",
        "volume": "540.222112",
        "solVolume": "2.9566243262290475",
        "from": {
            "address": TRUMP,
            "symbol": "TRUMP",
            "name": "OFFICIAL TRUMP",
            "decimals": 6,
            "amount": "90",
        },
        "to": {
            "address": USDC,
            "symbol": "USDC",
            "name": "USD Coin",
            "decimals": 6,
            "amount": "540.222112",
        },
    }
    orjson.dumps(event.data)


def test_newest_swap_sets_the_price_and_duplicates_are_dropped() -> None:
    s = session()
    events, _ = s.on_frame(
        transactions(
            swap("tx-new", WALLET, "7.5", 2000),
            swap("tx-old", OTHER_WALLET, "7.0", 1000),
            swap("tx-new", WALLET, "7.5", 2000),  # repeated within the frame
        )
    )
    assert events[0] == PriceUpdate(TRUMP, Decimal("7.5"), "TRUMP", "OFFICIAL TRUMP", 6)
    assert [e.data["tx"] for e in events[1:] if isinstance(e, VenueEvent)] == ["tx-new"]
    # the same transactions again: nothing new at all
    assert s.on_frame(transactions(swap("tx-new", WALLET, "9", 3000))) == ([], [])


def test_swap_dedup_is_bounded() -> None:
    seen = BoundedSet(3)
    seen.add_all(["a", "b", "c"])
    seen.add_all(["d"])
    assert len(seen) == 3 and "a" not in seen and "d" in seen
    s = session()
    for start in range(0, SWAP_DEDUP_SIZE + 500, 500):
        batch = [swap(f"tx{i}", OTHER_WALLET, 1, i) for i in range(start, start + 500)]
        s.on_frame(transactions(*batch))
    assert len(s._seen_tx) == SWAP_DEDUP_SIZE


def test_per_token_balance_room() -> None:
    room = f"wallet:{WALLET}:{USDC}:balance"
    events, _ = session().on_frame(balance(USDC, "5.25", room=room))
    assert events == [
        BalanceUpdate((AssetBalance(WALLET, USDC, Decimal("5.25"), Decimal("5.25"), ZERO, "USDC"),))
    ]
    with pytest.raises(ProtocolError) as info:
        session().on_frame(balance(USDT, "1", room=room))
    assert info.value.reason == "schema"


def test_untracked_wallet_is_rejected() -> None:
    with pytest.raises(ProtocolError) as info:
        session().on_frame(balance(USDC, 1, wallet=OTHER_WALLET))
    assert info.value.reason == "unknown_wallet"


def test_rest_snapshot_per_wallet_with_prices() -> None:
    s = session(
        wallets=[WALLET, OTHER_WALLET],
        data_api_key=CANARY_DATA_KEY,
        rest_url="http://127.0.0.1:9006/",
    )
    requests = s.seed_requests()
    assert [r.url for r in requests] == [
        f"http://127.0.0.1:9006/wallet/{WALLET}/basic",
        f"http://127.0.0.1:9006/wallet/{OTHER_WALLET}/basic",
    ]
    assert [r.wallet for r in requests] == [WALLET, OTHER_WALLET]
    assert all(r.headers == {"x-api-key": CANARY_DATA_KEY} for r in requests)
    body = (
        b'{"tokens":[{"address":"' + USDC.encode() + b'","balance":1153.006812,"value":1153.0,'
        b'"price":{"usd":1,"quote":0.005}},'
        b'{"address":"' + TRUMP.encode() + b'","balance":90,"value":540.2,"price":6.0024}],'
        b'"total":1693.2,"totalSol":8.1}'
    )
    events = s.read_seed(requests[1], body)
    assert events == [
        BalanceSnapshot(
            OTHER_WALLET,
            (
                AssetBalance(
                    OTHER_WALLET, USDC, Decimal("1153.006812"), Decimal("1153.006812"), ZERO, "USDC"
                ),
                AssetBalance(OTHER_WALLET, TRUMP, Decimal(90), Decimal(90), ZERO, None),
            ),
        ),
        PriceUpdate(USDC, Decimal(1), "USDC", None, None),
        PriceUpdate(TRUMP, Decimal("6.0024"), None, None, None),
    ]
    with pytest.raises(ValueError, match="wallet is required"):
        s.read_seed(HttpRequest("GET", "http://h/", "http://h/"), body)


def test_no_rest_seed_without_a_data_api_key() -> None:
    s = session()
    assert s.seed_requests() == []
    events = s.read_seed(HttpRequest("GET", "http://h/", "http://h/"), b'{"tokens":[]}')
    assert events == [BalanceSnapshot(WALLET, ())]


BAD: list[tuple[str, bytes, str]] = [
    ("not json", b"}", "parse"),
    ("unknown type", b'{"type":"welcome"}', "unknown_event"),
    ("type missing", b'{"room":"x"}', "schema"),
    ("unknown room", b'{"type":"message","room":"pool:abc","data":{}}', "unknown_event"),
    ("room missing", b'{"type":"message","data":{}}', "schema"),
    ("bad room shape", b'{"type":"message","room":"wallet:a:b:c:d","data":{}}', "schema"),
    ("room wallet invalid", balance(USDC, 1, room="wallet:0OIl:balance"), "schema"),
    ("wallet mismatch", balance(USDC, 1, room=f"wallet:{OTHER_WALLET}:balance"), "schema"),
    ("invalid wallet", balance(USDC, 1, wallet="not-a-solana-address"), "schema"),
    ("pipe in wallet", balance(USDC, 1, wallet=WALLET[:-1] + "|"), "schema"),
    ("invalid mint", balance("0x0bCdB57ae247F434C91b1d4521fFd6601f7e8999", 1), "schema"),
    ("negative amount", balance(USDC, -5), "amount"),
    ("text amount", balance(USDC, "many"), "amount"),
    (
        "data a list",
        b'{"type":"message","room":"' + BALANCE_ROOM.encode() + b'","data":[]}',
        "schema",
    ),
    (
        "swaps an object",
        b'{"type":"message","room":"transaction:' + TRUMP.encode() + b'","data":{}}',
        "schema",
    ),
    ("swap negative price", transactions(swap("t", WALLET, -1, 1)), "amount"),
    ("swap bad wallet", transactions(swap("t", "nope", 1, 1)), "schema"),
    ("swap no tx", transactions(swap("", WALLET, 1, 1)), "schema"),
    (
        "swap bad decimals",
        transactions(swap("t", WALLET, 1, 1, token={"from": {"address": TRUMP, "decimals": -1}})),
        "schema",
    ),
    ("room mint invalid", transactions(swap("t", WALLET, 1, 1), mint="x"), "schema"),
]


@pytest.mark.parametrize(("case", "raw", "reason"), BAD, ids=[c[0] for c in BAD])
def test_malformed_frames_are_rejected(case: str, raw: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        session().on_frame(raw)
    assert info.value.reason == reason, case


def test_rejected_transactions_frame_changes_no_state() -> None:
    s = session()
    good = swap("tx-1", WALLET, 2, 1)
    with pytest.raises(ProtocolError):
        s.on_frame(transactions(good, swap("tx-2", WALLET, "bad", 2)))
    assert "tx-1" not in s._seen_tx and s.symbol_of(TRUMP) is None
    events, _ = s.on_frame(transactions(good))
    assert [type(e) for e in events] == [PriceUpdate, VenueEvent]


def test_secrets_stay_out_of_repr_and_log_urls() -> None:
    s = session(data_api_key=CANARY_DATA_KEY)
    requests: list[HttpRequest] = [s.connect_request(), *s.seed_requests()]
    for text in [repr(s)] + [t for r in requests for t in (repr(r), r.log_url)]:
        for canary in CANARIES:
            assert canary not in text
