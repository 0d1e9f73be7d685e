"""The conversion graph: exact values, named paths, pegs as assumptions, freshness."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.mints import USDC
from app.prices.graph import PriceGraph, Reason, Unvalued, Valued
from app.prices.model import Price, PriceSource
from tests.venues.conftest import TRUMP

NOW = 1_764_316_800.0
BIG = Decimal("999999999999.99999999")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def bitopro(pair: str, price: str, age: float = 1.0) -> Price:
    base, quote = pair.split("_")
    return Price(PriceSource.BITOPRO, pair, base, quote, Decimal(price), NOW - age)


def sfox(base: str, price: str, age: float = 1.0) -> Price:
    pair = f"{base.lower()}usd"
    return Price(PriceSource.SFOX, pair, base, "USD", Decimal(price), NOW - age)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def graph(clock: Clock) -> PriceGraph:
    g = PriceGraph(clock=clock)
    g.put(bitopro("BTC_TWD", "3012345.12345678"))
    g.put(bitopro("USDT_TWD", "31.12345678", age=5.0))
    g.put(sfox("BTC", "96786.12345678"))
    return g


def valued(result: object) -> Valued:
    assert isinstance(result, Valued), result
    return result


def test_twd_pair_reaches_usd_through_usdt_twd_and_a_peg(graph: PriceGraph) -> None:
    result = valued(graph.view().value("BTC", BIG, "USD", "bitopro"))
    # num = 999999999999.99999999 * 3012345.12345678 = 3012345123456779999.9698765487654322
    # (exact); value = num / 31.12345678 to 50 digits, quantized to 8 places half-even
    assert result.value == Decimal("96786971471386154.94014147")
    conversion = result.conversion
    assert conversion.path == "bitopro:BTC_TWD / bitopro:USDT_TWD * peg:USDT=USD"
    assert conversion.assumptions == ("peg:USDT=USD",)
    assert conversion.source == "bitopro+peg"
    assert conversion.age_s == 5.0
    assert conversion.unit_price == Decimal("96786.971471386154941109340361646036928421162348792")


def test_the_venue_where_the_asset_sits_is_preferred(graph: PriceGraph) -> None:
    result = valued(graph.view().value("BTC", BIG, "USD", "sfox"))
    assert result.conversion.path == "sfox:btcusd"
    # BIG * 96786.12345678 = 96786123456779999.9990321387654322 exactly, then 8 places
    assert result.value == Decimal("96786123456779999.99903214")
    assert result.conversion.unit_price == Decimal("96786.12345678")
    assert result.conversion.assumptions == ()


def test_quote_twd_and_the_inverse_of_a_pair(graph: PriceGraph) -> None:
    view = graph.view()
    in_twd = valued(view.value("BTC", Decimal("1.5"), "TWD", "bitopro"))
    assert in_twd.value == Decimal("4518517.68518517")
    assert in_twd.conversion.path == "bitopro:BTC_TWD"
    twd = valued(view.value("TWD", Decimal("123456789012.34567891"), "USD", "bitopro"))
    assert twd.conversion.path == "1 / bitopro:USDT_TWD * peg:USDT=USD"
    assert twd.value == Decimal("3966679854.52307714")
    # no home venue: the path with fewer market edges wins over a BTC cross rate
    usd_in_twd = valued(view.value("USD", Decimal("10"), "TWD"))
    assert usd_in_twd.conversion.path == "1 / peg:USDT=USD * bitopro:USDT_TWD"
    assert usd_in_twd.value == Decimal("311.23456780")
    # held on sFOX, a path through sFOX's own price has fewer assumptions (no peg)
    on_sfox = valued(view.value("USD", Decimal("10"), "TWD", "sfox"))
    assert on_sfox.conversion.path == "1 / sfox:btcusd * bitopro:BTC_TWD"


def test_the_quote_itself_is_worth_its_amount(graph: PriceGraph) -> None:
    result = valued(graph.view().value("TWD", BIG, "TWD", "bitopro"))
    assert result.value == BIG
    assert result.conversion.path == ""


def test_unknown_asset_is_no_price_and_unreachable_quote_is_no_path(graph: PriceGraph) -> None:
    view = graph.view()
    assert view.value("BITO", Decimal(1), "USD", "bitopro") == Unvalued(Decimal(1), Reason.NO_PRICE)
    result = view.value("BTC", Decimal(1), "EUR", "bitopro")
    assert isinstance(result, Unvalued) and result.reason is Reason.NO_PATH


def test_a_stale_price_makes_the_value_null_until_a_fresh_one(
    graph: PriceGraph, clock: Clock
) -> None:
    graph.put(sfox("BTC", "96786.12345678", age=-60))  # sFOX answered a minute later
    clock.now = NOW + 114
    home = valued(graph.view().value("BTC", BIG, "USD", "bitopro"))
    assert home.conversion.path.startswith("bitopro:BTC_TWD")
    clock.now = NOW + 116  # USDT_TWD (received 5 s before the rest) is now 121 s old
    result = graph.view().value("BTC", BIG, "USD", "bitopro")
    # another venue's fresh price exists: a fresh path beats the home venue's stale one
    assert isinstance(result, Valued) and result.conversion.path == "sfox:btcusd"
    clock.now = NOW + 200
    result = graph.view().value("BTC", BIG, "USD", "bitopro")
    assert isinstance(result, Unvalued) and result.reason is Reason.STALE_PRICE
    assert result.conversion is not None and result.conversion.stale
    graph.put(bitopro("BTC_TWD", "3000000", age=-200))
    graph.put(bitopro("USDT_TWD", "30", age=-200))
    fresh = valued(graph.view().value("BTC", Decimal(3), "USD", "bitopro"))
    assert fresh.value == Decimal("300000.00000000")


def test_per_source_age_limits(clock: Clock) -> None:
    graph = PriceGraph(clock=clock, max_age=120, max_ages={"sfox": 10})
    graph.put(sfox("ETH", "3000.5", age=11))
    result = graph.view().value("ETH", Decimal(1), "USD", "sfox")
    assert isinstance(result, Unvalued) and result.reason is Reason.STALE_PRICE
    assert [q.stale for q in graph.prices()] == [True]


def test_pegs_are_configurable_and_always_reported(clock: Clock) -> None:
    graph = PriceGraph(clock=clock)
    graph.put(Price(PriceSource.DELTADEFI, "ADAUSDM", "ADA", "USDM", Decimal("0.75"), NOW))
    result = valued(graph.view().value("ADA", Decimal("1000000.123456"), "USD", "deltadefi"))
    assert result.conversion.path == "deltadefi:ADAUSDM * peg:USDM=USD"
    assert result.conversion.assumptions == ("peg:USDM=USD",)
    assert result.value == Decimal("750000.09259200")
    usdt = valued(graph.view().value("USDT", Decimal("5"), "USD", "sfox"))
    assert usdt.conversion.path == "peg:USDT=USD" and usdt.conversion.age_s is None
    without = PriceGraph(clock=clock, pegs={})
    without.put(Price(PriceSource.DELTADEFI, "ADAUSDM", "ADA", "USDM", Decimal("0.75"), NOW))
    result_without = without.view().value("ADA", Decimal(1), "USD", "deltadefi")
    assert isinstance(result_without, Unvalued) and result_without.reason is Reason.NO_PATH


def test_static_prices_are_the_last_resort(clock: Clock) -> None:
    graph = PriceGraph(clock=clock, static={"BTC": Decimal("50000")})
    only_static = valued(graph.view().value("BTC", Decimal(2), "USD", "bitopro"))
    assert only_static.conversion.path == "static:BTC=USD"
    assert only_static.conversion.assumptions == ("static:BTC=USD",)
    graph.put(sfox("BTC", "96000", age=3))
    market = valued(graph.view().value("BTC", Decimal(2), "USD", "bitopro"))
    assert market.conversion.path == "sfox:btcusd"


def test_solana_mints_and_identities(clock: Clock) -> None:
    graph = PriceGraph(clock=clock, identities={USDC: "USDC"})
    graph.put(
        Price(PriceSource.SOLANATRACKER, TRUMP, TRUMP, "USD", Decimal("6.00246791"), NOW, None, 14)
    )
    trump = valued(graph.view().value(TRUMP, Decimal("12.345678"), "USD", "solanatracker"))
    assert trump.conversion.path == f"solanatracker:{TRUMP}"
    assert trump.value == Decimal("74.10453602")  # 74.10453602219298 to 8 places
    usdc = valued(graph.view().value(USDC, Decimal("7"), "USD", "solanatracker"))
    assert usdc.conversion.path == f"identity:{USDC}=USDC * peg:USDC=USD"


def test_restored_prices_are_served_stale_until_their_feed_answers(clock: Clock) -> None:
    graph = PriceGraph(clock=clock)
    old = sfox("BTC", "96000", age=2)
    assert graph.restore([old]) == 1
    result = graph.view().value("BTC", Decimal(1), "USD", "sfox")
    assert isinstance(result, Unvalued) and result.reason is Reason.STALE_PRICE
    [quote] = graph.prices()
    assert quote.stale and quote.restored and quote.age_s == 2.0
    assert graph.put(old)  # the same price confirmed by its feed
    assert isinstance(graph.view().value("BTC", Decimal(1), "USD", "sfox"), Valued)
    assert graph.restore([sfox("BTC", "1", age=1)]) == 0  # never replaces a live price


def test_an_older_price_never_replaces_a_newer_one(graph: PriceGraph) -> None:
    assert not graph.put(sfox("BTC", "1", age=50))
    assert not graph.put(sfox("BTC", "96786.12345678"))
    result = valued(graph.view().value("BTC", Decimal(1), "USD", "sfox"))
    assert result.conversion.unit_price == Decimal("96786.12345678")
