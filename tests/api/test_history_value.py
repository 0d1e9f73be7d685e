"""``GET /v1/history/value``: past balances valued at past prices, exactly, with coverage,
the live valuation's freshness honesty, gaps, and CSV equal to the JSON.

The real service (history on SQLite under its data directory) on a real socket; balances
are written by an owning BalanceWriter and prices recorded by the service's own recorder
at chosen receive times, as a feed's prices are.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from decimal import Decimal
from typing import Any

from app.domain import AccountState
from app.history.runtime import History
from app.history.times import iso_us
from tests.api.conftest import Service, ServiceFactory, account, bal, status_doc
from tests.api.test_history_api import _caught_up


def _history(svc: Service) -> History:
    history: History | None = svc.app.state.history
    assert history is not None
    return history


def _now() -> float:
    return time.time_ns() // 1000 / 1_000_000


async def _point(svc: Service, t: str, **params: Any) -> dict[str, Any]:
    status, body = await svc.get("/v1/history/value", **{"from": t, "to": t, "step": "1h"},
                                 **params)  # fmt: skip
    assert status == 200, body
    assert len(body["points"]) == 1 and body["points"][0]["t"] == t
    point: dict[str, Any] = body["points"][0]
    return point


async def test_past_values_use_past_balances_and_past_prices(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory([account("ex-a")], price_max_age=60) as svc:
        before = iso_us(time.time_ns() // 1000)
        await asyncio.sleep(0.01)
        history = _history(svc)
        recorder = history.prices
        t0 = _now()
        recorder.record_price("BTC/USDT", "bitopro", Decimal("98765.43210987"), t0 - 10)
        recorder.record_price("ETH/USD", "sfox", Decimal("3456.78901234"), t0 - 100)
        recorder.record_price("ADA/TWD", "bitopro", Decimal("0.98765432"), t0 - 10)
        svc.owner.submit_status("ex-a", status_doc("ex-a", AccountState.LIVE))
        await svc.settle()  # the status first: _caught_up follows the newest balance seq
        svc.owner.submit_snapshot(
            "ex-a", "deltadefi", "",
            [bal("BTC", "123456789012.12345678"), bal("USDM", "1.00000001")],
        )  # fmt: skip
        await _caught_up(svc)
        point_a = iso_us(time.time_ns() // 1000)
        await asyncio.sleep(0.01)
        svc.owner.submit_update(
            "ex-a", "deltadefi",
            [bal("BTC", "0.00000001"), bal("ETH", "2"), bal("ADA", "5"), bal("SOL", "7")],
        )  # fmt: skip
        await _caught_up(svc)
        recorder.record_price("BTC/USDT", "bitopro", Decimal("99999.99999999"), _now())
        await asyncio.sleep(0.01)
        point_b = iso_us(time.time_ns() // 1000)
        assert await recorder.flush() == 4

        # before history started: nothing is known, and nothing is guessed
        early = await _point(svc, before)
        assert early == {"t": before, "value": None, "coverage": None, "unpriced": [],
                         "reason": "not_covered"}  # fmt: skip
        # 12 + 8 digit BTC at an 8-decimal price via the USDT peg, plus the pegged USDM
        a = await _point(svc, point_a)
        assert a["value"] == "12193263113679424.85497204"
        assert a["coverage"] == {"by_count": "1", "by_value": "1", "priced": 2, "holdings": 2}
        assert a["unpriced"] == [] and a["reason"] is None
        # later: the newer BTC price, and each missing value says why
        b = await _point(svc, point_b)
        assert b["value"] == "1.00100001"  # 0.00000001 * 99999.99999999 -> 0.00100000
        assert b["coverage"] == {"by_count": "0.4", "by_value": None, "priced": 2, "holdings": 5}
        assert b["unpriced"] == [
            {"symbol": "ADA", "reason": "no_path"},  # priced in TWD only
            {"symbol": "ETH", "reason": "stale_price"},  # 100 s old, max age 60 s
            {"symbol": "SOL", "reason": "no_price"},
        ]
        # another quote, reached through the same prices
        status, body = await svc.get("/v1/history/value", quote="btc", **{"from": point_a,
                                     "to": point_a, "step": "1h"})  # fmt: skip
        assert status == 200 and body["quote"] == "BTC"
        btc = body["points"][0]
        # BTC as itself, plus 1.00000001 USDM / 98765.43210987 -> 0.00001013 BTC
        assert btc["unpriced"] == [] and btc["value"] == "123456789012.12346691"

        # a series of points, and the CSV says exactly the same
        params = {"from": before, "to": point_b, "step": "1s"}
        status, series = await svc.get("/v1/history/value", **params)
        assert status == 200 and series["quote"] == "USD" and series["step"] == "1s"
        assert series["gaps"] == []
        assert series["points"][0]["reason"] == "not_covered"
        assert series["points"][-1] == b
        async with svc.http.get(
            svc.base + "/v1/history/value", params=params, headers={"accept": "text/csv"}
        ) as r:
            assert r.status == 200 and r.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(await r.text())))
        assert len(rows) == len(series["points"])
        for row, point in zip(rows, series["points"], strict=True):
            assert row["t"] == point["t"]
            if point["value"] is None:
                assert row["value"] == "" and row["reason"] == point["reason"]
            else:
                assert Decimal(row["value"]) == Decimal(point["value"])
                assert row["value"] == point["value"]
        assert rows[-1]["unpriced"] == "ADA:no_path;ETH:stale_price;SOL:no_price"


async def test_points_inside_a_gap_are_null_with_reason_gap(
    service_factory: ServiceFactory,
) -> None:
    async with service_factory([account("ex-a")], stream_maxlen=100) as svc:
        svc.owner._maxlen = "100"
        svc.owner.submit_snapshot("ex-a", "deltadefi", "", [bal("USDT", "1")])
        await _caught_up(svc)
        writer = _history(svc).writer
        await writer.stop()  # history is away ...
        for i in range(400):  # ... while more changes than the stream keeps go by
            svc.owner.submit_update("ex-a", "deltadefi", [bal("USDT", f"{i + 2}.5")])
            assert await svc.owner.drain(5)
        writer.start()
        await _caught_up(svc)
        _s, gaps = await svc.get("/v1/history/gaps")
        gap = gaps["gaps"][0]
        now = iso_us(time.time_ns() // 1000)
        status, body = await svc.get(
            "/v1/history/value", **{"from": gap["from"], "to": now, "step": "1h"}
        )
        assert status == 200, body
        assert body["gaps"] == [{"from": gap["from"], "to": gap["to"]}]
        inside, last = body["points"]
        assert inside == {"t": gap["from"], "value": None, "coverage": None, "unpriced": [],
                          "reason": "gap"}  # fmt: skip
        assert last["value"] == "401.5" and last["reason"] is None  # USDT pegged to USD


async def test_bad_value_parameters_are_refused(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _history(svc).ready:
                break
            await asyncio.sleep(0.05)
        for params in [
            {"step": "1 day"}, {"quote": "US D"}, {"from": "2026-02-30"},
            {"from": "2020-01-01T00:00:00Z", "step": "1m"}, {"account": "Bad Name"},
        ]:  # fmt: skip
            status, body = await svc.get("/v1/history/value", **params)
            assert status == 422, (params, body)
            assert body["error"]["code"] == "invalid_request"
