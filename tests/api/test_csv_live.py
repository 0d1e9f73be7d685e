"""CSV of the live state: ``format=csv`` or ``Accept: text/csv`` on ``/v1/balances``,
``/v1/balances/{account}`` and ``/v1/totals``; parsed back, every amount equals the JSON.

The real service on a real socket; state written by an owning BalanceWriter. The fast
read path of ``/v1/balances`` must hand a CSV request on to the route.
"""

from __future__ import annotations

import csv
import io
import time
from decimal import Decimal
from typing import Any

from app.domain import AccountState
from app.prices.model import Price, PriceSource
from tests.api.conftest import Service, ServiceFactory, account, bal, status_doc


async def _csv(
    svc: Service, path: str, accept: bool = False, **params: Any
) -> list[dict[str, str]]:
    headers = {"accept": "text/csv"} if accept else {}
    async with svc.http.get(svc.base + path, params=params, headers=headers) as r:
        assert r.status == 200, await r.text()
        assert r.headers["content-type"].startswith("text/csv"), r.headers["content-type"]
        text = await r.text()
    assert text.startswith(text.splitlines()[0]) and "\r\n" in text
    return list(csv.DictReader(io.StringIO(text)))


async def _seed(svc: Service) -> None:
    for name in ("ex-a", "ex-b"):
        svc.owner.submit_status(name, status_doc(name, AccountState.LIVE))
    svc.owner.submit_snapshot(
        "ex-a", "deltadefi", "",
        [bal("BTC", "123456789012.12345678", "100000000000.00000001"),
         bal("USDM", "0.000000000000000001")],
    )  # fmt: skip
    svc.owner.submit_snapshot("ex-b", "deltadefi", "", [bal("BTC", "1e-8"), bal("ADA", "7")])
    svc.services.prices.record(
        Price(PriceSource.BITOPRO, "BTC_USDT", "BTC", "USDT", Decimal("98765.43210987"),
              time.time())
    )  # fmt: skip
    await svc.settle()


def _same(row: dict[str, str], doc: dict[str, Any], fields: tuple[str, ...]) -> None:
    for name in fields:
        if doc[name] is None:
            assert row[name] == "", (name, row, doc)
        else:
            assert Decimal(row[name]) == Decimal(doc[name]), (name, row, doc)
            assert row[name] == doc[name]  # the exact string, never a float's


async def test_live_balances_as_csv(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a"), account("ex-b")]) as svc:
        await _seed(svc)
        _s, js = await svc.get("/v1/balances")
        for rows in (await _csv(svc, "/v1/balances", format="csv"),
                     await _csv(svc, "/v1/balances", accept=True)):  # fmt: skip
            assert len(rows) == len(js["balances"]) == 4
            for row, doc in zip(rows, js["balances"], strict=True):
                assert (row["account"], row["asset"]) == (doc["account"], doc["asset"])
                _same(row, doc, ("total", "available", "locked"))
                assert row["stale"] == "false" and row["as_of"].endswith("Z")
        one = await _csv(svc, "/v1/balances/ex-b", accept=True, nonzero="true")
        assert [(r["asset"], r["total"]) for r in one] == [("ADA", "7"), ("BTC", "0.00000001")]
        # with quote=: the value columns too
        _s, valued = await svc.get("/v1/balances", quote="USD")
        rows = await _csv(svc, "/v1/balances", format="csv", quote="USD")
        for row, doc in zip(rows, valued["balances"], strict=True):
            _same(row, doc, ("total", "value", "price"))
            assert row["value_reason"] == (doc["value_reason"] or "")
        assert rows[0]["value"] == "12193263113679423.85497203"


async def test_totals_as_csv_parse_back_to_the_json(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a"), account("ex-b")]) as svc:
        await _seed(svc)
        _s, js = await svc.get("/v1/totals", quote="USD")
        for rows in (await _csv(svc, "/v1/totals", format="csv", quote="USD"),
                     await _csv(svc, "/v1/totals", accept=True)):  # fmt: skip
            assert [r["symbol"] for r in rows] == [t["symbol"] for t in js["totals"]]
            for row, doc in zip(rows, js["totals"], strict=True):
                _same(row, doc, ("total", "available", "locked", "value", "price"))
                assert int(row["accounts"]) == doc["accounts"] and row["quote"] == "USD"
                assert row["reason"] == (doc["reason"] or "")
        btc = next(r for r in rows if r["symbol"] == "BTC")
        assert btc["total"] == "123456789012.12345679"
        assert btc["value"] == "12193263113679423.85595968"  # 1e-8 BTC adds 0.00098765
        usdm = next(r for r in rows if r["symbol"] == "USDM")
        assert usdm["total"] == "0.000000000000000001"


async def test_bad_format_is_refused(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        await _seed(svc)
        for path in ("/v1/balances", "/v1/balances/ex-a", "/v1/totals"):
            status, body = await svc.get(path, format="xlsx")
            assert status == 422 and body["error"]["code"] == "invalid_request", (path, body)
