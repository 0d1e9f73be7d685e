"""Totals in a quote currency: exact sums, coverage by count and value, unpriced reasons."""

from __future__ import annotations

from decimal import Decimal

from app.domain import BalanceRecord
from app.prices.graph import PriceGraph, Reason
from app.prices.model import Price, PriceSource
from app.prices.report import totals_doc
from app.prices.totals import Holding, value_totals
from tests.venues.conftest import TRUMP

NOW = 1_764_316_800.0


def graph(now: float = NOW) -> PriceGraph:
    g = PriceGraph(clock=lambda: now)
    g.put(Price(PriceSource.BITOPRO, "BTC_TWD", "BTC", "TWD", Decimal("3000000.5"), NOW))
    g.put(Price(PriceSource.BITOPRO, "USDT_TWD", "USDT", "TWD", Decimal("32"), NOW))
    g.put(Price(PriceSource.SFOX, "btcusd", "BTC", "USD", Decimal("94000.25"), NOW - 100))
    return g


def hold(account: str, venue: str, asset: str, amount: str, symbol: str | None = None) -> Holding:
    return Holding(account, venue, asset, symbol or asset, Decimal(amount))


HOLDINGS = [
    hold("bito", "bitopro", "BTC", "999999999999.99999999"),
    hold("bito", "bitopro", "TWD", "64000"),
    hold("sfox", "sfox", "BTC", "0.5"),
    hold("sfox", "sfox", "USD", "100.25"),
    hold("sfox", "sfox", "ETH", "0"),
]


def test_every_holding_priced_gives_full_coverage() -> None:
    totals = value_totals(graph().view(), HOLDINGS, "usd")
    assert totals.quote == "USD"
    rows = {r.symbol: r for r in totals.rows}
    assert set(rows) == {"BTC", "TWD", "USD"}  # a zero balance is not a holding
    # bitopro BTC: 999999999999.99999999 * 3000000.5 / 32 = 93750015624999999.99906249984375
    # -> 93750015624999999.99906250; sfox BTC: 0.5 * 94000.25 = 47000.125 (its own venue)
    assert rows["BTC"].amount == Decimal("1000000000000.49999999")
    assert rows["BTC"].value == Decimal("93750015625047000.12406250")
    assert rows["TWD"].value == Decimal("2000.00000000")
    assert rows["USD"].value == Decimal("100.25")
    assert totals.value == rows["BTC"].value + rows["TWD"].value + rows["USD"].value
    assert totals.coverage.by_count == Decimal("1.0000")
    assert totals.coverage.by_value == Decimal("1.0000")
    assert totals.unpriced == ()


def test_unpriced_symbols_are_listed_with_reasons_and_coverage_drops() -> None:
    holdings = [
        *HOLDINGS,
        hold("bito", "bitopro", "BITO", "1000"),
        hold("sol", "solanatracker", TRUMP, "3", "TRUMP"),
    ]
    totals = value_totals(graph().view(), holdings, "USD")
    assert totals.unpriced == (("BITO", Reason.NO_PRICE), ("TRUMP", Reason.NO_PRICE))
    assert totals.coverage.priced == 3 and totals.coverage.held == 5
    assert totals.coverage.by_count == Decimal("0.6000")
    assert totals.coverage.by_value is None  # what BITO is worth is unknown, so is the share


def test_a_stale_price_nulls_the_symbol_and_is_estimated_for_coverage() -> None:
    # 60 s on: sFOX's price is 160 s old, so the BTC held on sFOX falls back to BitoPro's
    fallback = value_totals(graph(NOW + 60).view(), HOLDINGS, "USD")
    btc = {r.symbol: r for r in fallback.rows}["BTC"]
    paths = [v.conversion.path for _, v in btc.valuations]  # type: ignore[union-attr]
    assert paths == ["bitopro:BTC_TWD / bitopro:USDT_TWD * peg:USDT=USD"] * 2
    assert fallback.coverage.by_value == Decimal("1.0000")
    # 130 s on: every market price is stale
    totals = value_totals(graph(NOW + 130).view(), HOLDINGS, "USD")
    rows = {r.symbol: r for r in totals.rows}
    assert rows["BTC"].value is None and rows["BTC"].reason is Reason.STALE_PRICE
    assert totals.unpriced == (("BTC", Reason.STALE_PRICE), ("TWD", Reason.STALE_PRICE))
    assert totals.value == Decimal("100.25")
    # estimated at their stale prices, BTC and TWD dwarf the rest: rounded DOWN to 0
    assert totals.coverage.by_value == Decimal("0.0000")
    assert totals.coverage.by_count == Decimal("0.3333")


def test_quote_twd() -> None:
    totals = value_totals(graph().view(), HOLDINGS[1:3], "twd")
    rows = {r.symbol: r for r in totals.rows}
    assert rows["TWD"].value == Decimal("64000")
    # sFOX prices BTC only in USD, so a direct TWD market (one edge) beats three edges
    [(_, btc)] = rows["BTC"].valuations
    assert btc.conversion is not None and btc.conversion.path == "bitopro:BTC_TWD"


def test_nothing_held() -> None:
    totals = value_totals(graph().view(), [], "USD")
    assert totals.rows == () and totals.value == 0
    assert totals.coverage.by_count is None and totals.coverage.by_value is None


def test_a_symbols_amount_is_the_exact_sum_of_long_holdings() -> None:
    # two holdings of 40 integer and 40 fraction digits: 80 significant digits each, more
    # than any valuation context keeps; the amount is a balance sum and must not round
    long = "1234567890123456789012345678901234567890.1234567890123456789012345678901234567891"
    holdings = [hold("a", "sfox", "ZZZ", long), hold("b", "sfox", "ZZZ", long)]
    totals = value_totals(graph().view(), holdings, "usd")
    (row,) = totals.rows
    assert row.amount == Decimal(
        "2469135780246913578024691357802469135780.2469135780246913578024691357802469135782"
    )


def test_totals_document_sums_long_balances_exactly() -> None:
    long = "1234567890123456789012345678901234567890.1234567890123456789012345678901234567891"

    def record(account: str) -> BalanceRecord:
        amount = Decimal(long)
        return BalanceRecord(
            account, "sfox", "", "ZZZ", "ZZZ", amount, amount, Decimal(0),
            "2026-11-28T00:00:00.000Z", None, False, {},
        )  # fmt: skip

    doc = totals_doc(graph().view(), [record("a"), record("b")], "usd", 7)
    (row,) = doc["totals"]
    twice = "2469135780246913578024691357802469135780.2469135780246913578024691357802469135782"
    assert (row["total"], row["available"], row["locked"]) == (twice, twice, "0")
