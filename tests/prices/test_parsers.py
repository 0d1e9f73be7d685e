"""The price parsers: recorded frames read exactly; every bad frame rejected whole."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import orjson
import pytest

from app.accounts import AccountConfig
from app.prices import bitopro, deltadefi, sfox, solanatracker
from app.prices.model import Price, PriceSource
from app.venues.base import ProtocolError
from tests.prices.conftest import RECEIVED
from tests.venues.conftest import CANARY_KEY, TRUMP, account

Vector = Callable[[str], bytes]


def test_bitopro_ticker_vector(price_vector: Vector) -> None:
    price = bitopro.parse_ticker(price_vector("bitopro/ticker.json"), RECEIVED)
    assert price == Price(
        PriceSource.BITOPRO, "BTC_TWD", "BTC", "TWD", Decimal("1314234"), RECEIVED,
        "2021-11-29T06:15:24.003Z",
    )  # fmt: skip
    assert price.label == "bitopro:BTC_TWD"
    assert price.key == "bitopro|BTC_TWD"


def test_bitopro_ticker_keeps_every_digit() -> None:
    raw = orjson.dumps({"event": "TICKER", "pair": "usdt_twd", "lastPrice": "31.123456789012"})
    price = bitopro.parse_ticker(raw, RECEIVED)
    assert (price.pair, price.base, price.quote) == ("USDT_TWD", "USDT", "TWD")
    assert price.price == Decimal("31.123456789012")
    assert price.venue_ts is None


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"{not json", "parse"),
        (b'{"event":"ACCOUNT_BALANCE","pair":"BTC_TWD","lastPrice":"1"}', "unknown_event"),
        (b'{"event":"TICKER","pair":"BTCTWD","lastPrice":"1"}', "schema"),
        (b'{"event":"TICKER","pair":"BTC_TWD","lastPrice":"-1"}', "amount"),
        (b'{"event":"TICKER","pair":"BTC_TWD","lastPrice":"0"}', "amount"),
        (b'{"event":"TICKER","pair":"BTC_TWD","lastPrice":"abc"}', "amount"),
        (b'{"event":"TICKER","pair":"BTC_TWD"}', "schema"),
        (b'{"event":"TICKER","pair":"BTC_TWD","lastPrice":"1","timestamp":"x"}', "schema"),
        (b'["TICKER"]', "schema"),
    ],
)
def test_bitopro_bad_tickers_are_rejected(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        bitopro.parse_ticker(frame, RECEIVED)
    assert info.value.reason == reason


def test_bitopro_ticker_url_is_derived_from_the_account_url() -> None:
    acct = account("bitopro", ws_url="ws://127.0.0.1:9000/ws/v1/pub/auth/account-balance")
    url = bitopro.ticker_url(acct)
    assert url == "ws://127.0.0.1:9000/ws/v1/pub/tickers"
    assert bitopro.subscribe_url(url, ["usdt_twd", "BTC_TWD", "BTC_TWD"]) == (
        "ws://127.0.0.1:9000/ws/v1/pub/tickers?pairs=BTC_TWD,USDT_TWD"
    )
    assert (
        bitopro.ticker_url(account("bitopro")) == "wss://stream.bitopro.com:443/ws/v1/pub/tickers"
    )
    override = account("bitopro", price_url="ws://10.0.0.1/t")
    assert bitopro.ticker_url(override) == "ws://10.0.0.1/t"


def test_sfox_ticker_vector(price_vector: Vector) -> None:
    price = sfox.parse_ticker(price_vector("sfox/ticker.json"), RECEIVED)
    assert price == Price(
        PriceSource.SFOX, "btcusd", "BTC", "USD", Decimal("41420.58"), RECEIVED,
        "2022-01-24T15:47:05.776Z",
    )  # fmt: skip


def test_sfox_inverted_pair_and_timestamp_forms() -> None:
    def frame(pair: str, last: object, stamp: object) -> bytes:
        payload = {"pair": pair, "last": last, "timestamp": stamp}
        return orjson.dumps({"sequence": 3, "recipient": f"ticker.sfox.{pair}", "payload": payload})

    inverted = sfox.parse_ticker(frame("usdxrp", "1.6180339887", 1643039225796), RECEIVED)
    assert (inverted.base, inverted.quote, inverted.price) == (
        "USD",
        "XRP",
        Decimal("1.6180339887"),
    )
    assert inverted.venue_ts == "2022-01-24T15:47:05.796Z"
    as_text = sfox.parse_ticker(frame("ethusd", "3012.123456789", "1643039225796615328"), RECEIVED)
    assert as_text.price == Decimal("3012.123456789")
    assert as_text.venue_ts == "2022-01-24T15:47:05.796Z"
    # a JSON number with more digits than a double holds survives exactly
    raw = frame("btcusd", 0, None).replace(b'"last":0', b'"last":41420.123456789012345678')
    assert sfox.parse_ticker(raw, RECEIVED).price == Decimal("41420.123456789012345678")


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"sequence": 1, "recipient": "private.user.balances", "payload": []}, "unknown_event"),
        ({"recipient": "ticker.sfox.btcusd", "payload": {"pair": "ethusd", "last": 1}}, "schema"),
        ({"recipient": "ticker.sfox.btcusd", "payload": {"pair": "btcusd", "last": -1}}, "amount"),
        ({"recipient": "ticker.sfox.btcusd", "payload": {"pair": "btcusd"}}, "schema"),
        ({"recipient": "ticker.sfox.btcusd", "payload": []}, "schema"),
        ({"recipient": "ticker.sfox.xyzabc", "payload": {"pair": "xyzabc", "last": 1}}, "schema"),
        (
            {"recipient": "ticker.sfox.btcusd", "payload": {"last": 1, "timestamp": "soon"}},
            "schema",
        ),
    ],
)
def test_sfox_bad_tickers_are_rejected(doc: object, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        sfox.parse_ticker(orjson.dumps(doc), RECEIVED)
    assert info.value.reason == reason


def test_sfox_subscribe_message() -> None:
    message = orjson.loads(sfox.subscribe_message(["ETHUSD", "btcusd", "ethusd"]))
    assert message == {"type": "subscribe", "feeds": ["ticker.sfox.btcusd", "ticker.sfox.ethusd"]}
    assert sfox.pair_for("BTC") == "btcusd"


def test_deltadefi_market_price_vector(price_vector: Vector) -> None:
    price = deltadefi.parse_market_price(
        price_vector("deltadefi/market_price.json"), "ADAUSDM", RECEIVED
    )
    assert price == Price(
        PriceSource.DELTADEFI, "ADAUSDM", "ADA", "USDM", Decimal("0.75"), RECEIVED
    )


def test_deltadefi_compares_the_type_case_insensitively() -> None:
    raw = b'{"type":"market","sub_type":"MARKET_PRICE","price":0.123456789}'
    assert deltadefi.parse_market_price(raw, "adausdm", RECEIVED).price == Decimal("0.123456789")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b'{"type":"Account","sub_type":"balance","balance":[]}', "unknown_event"),
        (b'{"type":"Market","sub_type":"market_price","price":"x"}', "amount"),
        (b'{"type":"Market","sub_type":"market_price","price":0}', "amount"),
        (b'{"type":"Market","sub_type":"market_price"}', "schema"),
        (b'{"type":"Market","price":1}', "schema"),
        (b'{"type":"Market","sub_type":"market_price","price":NaN}', "parse"),
    ],
)
def test_deltadefi_bad_frames_are_rejected(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        deltadefi.parse_market_price(frame, "ADAUSDM", RECEIVED)
    assert info.value.reason == reason


def test_deltadefi_url_carries_the_key_and_the_log_url_does_not() -> None:
    acct = account("deltadefi", ws_url="ws://127.0.0.1:9100/accounts/stream")
    request = deltadefi.market_price_request(acct, "adausdm")
    assert request.url == f"ws://127.0.0.1:9100/market/market-price/ADAUSDM?api_key={CANARY_KEY}"
    assert CANARY_KEY not in request.log_url and CANARY_KEY not in repr(request)
    default = deltadefi.market_price_request(account("deltadefi"), "ADAUSDM")
    assert default.log_url == "wss://stream.deltadefi.io/market/market-price/ADAUSDM?api_key=***"
    override = deltadefi.market_price_request(
        account("deltadefi", price_url="ws://10.0.0.2/mp"), "ADAUSDM"
    )
    assert override.url.startswith("ws://10.0.0.2/mp/ADAUSDM?api_key=")


def test_solanatracker_prefers_the_aggregated_median(price_vector: Vector) -> None:
    price = solanatracker.parse_price_message(
        price_vector("solanatracker/price_aggregated.json"), RECEIVED
    )
    assert price == Price(
        PriceSource.SOLANATRACKER, TRUMP, TRUMP, "USD", Decimal("6.00246791"), RECEIVED,
        "2025-10-11T16:48:08.835Z", 14, Decimal("150723455.62"),
    )  # fmt: skip
    assert price.label == f"solanatracker:{TRUMP}"


def test_solanatracker_single_pool_room(price_vector: Vector) -> None:
    price = solanatracker.parse_price_message(
        price_vector("solanatracker/price_pool.json"), RECEIVED
    )
    assert (price.base, price.quote, price.price) == (TRUMP, "USD", Decimal("6.0031"))
    assert price.pool_count == 1
    tiny = orjson.dumps({"type": "message", "room": f"price-by-token:{TRUMP}", "data": {}})
    tiny = tiny.replace(b"{}", b'{"price":1.23E-9}')
    assert solanatracker.parse_price_message(tiny, RECEIVED).price == Decimal("1.23E-9")


@pytest.mark.parametrize(
    ("room", "data", "reason"),
    [
        (f"price:aggregated:{TRUMP}", {"aggregated": {"median": -6}}, "amount"),
        (f"price:aggregated:{TRUMP}", {"price": 6}, "schema"),
        (f"price:aggregated:{TRUMP}", {"token": "x" * 40, "aggregated": {"median": 6}}, "schema"),
        ("price:aggregated:not-a-mint", {"aggregated": {"median": 6}}, "schema"),
        (f"price:{TRUMP}", {"price": "six"}, "amount"),
        (
            f"price:aggregated:{TRUMP}",
            {"aggregated": {"median": 6}, "topPools": [{"liquidity": -1}]},
            "amount",
        ),
        (f"price:aggregated:{TRUMP}", {"aggregated": {"median": 6, "poolCount": "x"}}, "schema"),
        (f"wallet:{TRUMP}:balance", {"amount": 1}, "unknown_event"),
    ],
)
def test_solanatracker_bad_price_messages_are_rejected(
    room: str, data: object, reason: str
) -> None:
    raw = orjson.dumps({"type": "message", "room": room, "data": data})
    with pytest.raises(ProtocolError) as info:
        solanatracker.parse_price_message(raw, RECEIVED)
    assert info.value.reason == reason


def test_solanatracker_room_names() -> None:
    assert solanatracker.aggregated_room(TRUMP) == f"price:aggregated:{TRUMP}"
    assert solanatracker.is_price_room(f"price:{TRUMP}")
    assert not solanatracker.is_price_room(f"transaction:{TRUMP}")


def test_price_url_is_validated() -> None:
    with pytest.raises(ValueError, match="price_url"):
        AccountConfig.model_validate(
            {"id": "a", "venue": "sfox", "api_key": "k", "price_url": "not a url"}
        )
