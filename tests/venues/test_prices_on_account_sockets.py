"""Prices on the account sockets: sFOX ticker feeds (shared sequence) and SolanaTracker
price rooms come out as MarketPrice events and never touch balances."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from app.domain import BalanceUpdate, ControlReply, MarketPrice, SequenceGap
from app.prices.model import PriceSource
from app.venues.base import ProtocolError
from app.venues.sfox import SfoxSession
from app.venues.solanatracker import SolanatrackerSession
from tests.venues.conftest import TRUMP, WALLET, account


def sfox_subscribed() -> SfoxSession:
    session = SfoxSession(account("sfox"))
    assert session.follow_holdings({"BTC"}) == []  # nothing before balances are subscribed
    session.on_frame(b'{"type":"success","sequence":1,"payload":{"action":"authenticate"}}')
    session.on_frame(b'{"type":"success","sequence":2,"payload":{"action":"subscribe"}}')
    assert session.subscribed
    return session


def ticker(sequence: int, last: object = "41420.58", pair: str = "btcusd") -> bytes:
    return orjson.dumps(
        {
            "sequence": sequence,
            "recipient": f"ticker.sfox.{pair}",
            "timestamp": 1643039225796615328,
            "payload": {"last": last, "pair": pair, "timestamp": "2022-01-24T15:47:05.776Z"},
        }
    )


def test_sfox_subscribes_tickers_for_what_is_held_and_drops_the_rest() -> None:
    session = sfox_subscribed()
    (subscribe,) = session.follow_holdings({"BTC", "ETH", "USD"})
    assert orjson.loads(subscribe) == {
        "type": "subscribe",
        "feeds": ["ticker.sfox.btcusd", "ticker.sfox.ethusd"],
    }
    assert session.follow_holdings({"BTC", "ETH"}) == []  # nothing new: nothing sent
    messages = [orjson.loads(m) for m in session.follow_holdings({"ETH", "ADA"})]
    assert messages == [
        {"type": "subscribe", "feeds": ["ticker.sfox.adausd"]},
        {"type": "unsubscribe", "feeds": ["ticker.sfox.btcusd"]},
    ]


def test_sfox_tickers_share_the_sequence_and_are_read_exactly() -> None:
    session = sfox_subscribed()
    events, _ = session.on_frame(ticker(3, 41420.58123456789))
    (event,) = events
    assert isinstance(event, MarketPrice)
    assert event.price.source is PriceSource.SFOX and event.price.pair == "btcusd"
    assert event.price.price == Decimal("41420.58123456789")
    assert session.last_sequence == 3
    # a balance frame after the ticker continues the same counter
    balance = orjson.dumps(
        {
            "sequence": 4,
            "recipient": "private.user.balances",
            "payload": [{"currency": "btc", "balance": "1", "available": "1", "held": "0"}],
        }
    )
    events, _ = session.on_frame(balance)
    assert [type(e) for e in events] == [BalanceUpdate]
    # a lost ticker frame is a gap like any other
    events, _ = session.on_frame(ticker(6))
    assert isinstance(events[-1], SequenceGap) and events[-1].expected == 5


def test_a_bad_ticker_is_rejected_whole_and_keeps_the_sequence() -> None:
    session = sfox_subscribed()
    with pytest.raises(ProtocolError) as rejected:
        session.on_frame(ticker(3, "-1"))
    assert rejected.value.reason == "amount"
    events, _ = session.on_frame(ticker(4))  # in order: no gap for the refused frame
    assert [type(e) for e in events] == [MarketPrice]


def test_a_refused_ticker_subscription_never_costs_the_balance_feed() -> None:
    session = sfox_subscribed()
    refusal = orjson.dumps(
        {
            "type": "error",
            "sequence": 3,
            "payload": {"action": "subscribe", "feeds": ["ticker.sfox.xyzusd"], "error": "no"},
        }
    )
    events, _ = session.on_frame(refusal)
    assert events == [ControlReply("subscribe", False, "no")]
    assert session.subscribed


def test_solanatracker_price_rooms_are_prices_not_balances() -> None:
    session = SolanatrackerSession(account("solanatracker"))
    assert session.price_room(TRUMP) == f"price:aggregated:{TRUMP}"
    frame = orjson.dumps(
        {
            "type": "message",
            "room": f"price:aggregated:{TRUMP}",
            "data": {
                "token": TRUMP,
                "price": 6.0031,
                "aggregated": {"median": 6.00246791, "poolCount": 14},
                "topPools": [{"poolId": WALLET, "liquidity": 148223455.12}],
            },
        }
    )
    (event,), replies = session.on_frame(frame)
    assert replies == []
    assert isinstance(event, MarketPrice)
    price = event.price
    assert (price.base, price.quote, price.price) == (TRUMP, "USD", Decimal("6.00246791"))
    assert price.pool_count == 14 and price.liquidity == Decimal("148223455.12")
    with pytest.raises(ProtocolError):
        session.on_frame(frame.replace(b"6.00246791", b'"lots"'))
