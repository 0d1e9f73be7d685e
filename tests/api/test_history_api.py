"""History over HTTP: ?at=, /v1/history, /v1/history/series, gaps, CSV, errors, secrets.

The real service (history on its default SQLite file under the test's data directory)
on a real socket; state is written by an owning BalanceWriter as in production.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from decimal import Decimal
from typing import Any

import pytest

from app.domain import AccountState
from app.history.runtime import History
from app.history.times import iso_us
from tests.api.conftest import Service, ServiceFactory, account, bal, status_doc


def _history(svc: Service) -> History:
    history: History | None = svc.app.state.history
    assert history is not None
    return history


async def _caught_up(svc: Service, timeout: float = 20.0) -> None:
    """Wait until history holds every change Redis has."""
    seq = await svc.settle()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = await svc.get("/v1/balances", at=iso_us(time.time_ns() // 1000))
        if status == 200 and body["seq"] >= seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("history did not catch up")


async def _csv(svc: Service, path: str, **params: Any) -> tuple[str, list[dict[str, str]]]:
    async with svc.http.get(svc.base + path, params=params, headers=svc.headers()) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
        return r.headers["content-type"], list(csv.DictReader(io.StringIO(text)))


async def _seed(svc: Service) -> str:
    """Three states of one account; returns an instant between the first and second."""
    svc.owner.submit_status("ex-a", status_doc("ex-a", AccountState.LIVE))
    svc.owner.submit_snapshot("ex-a", "deltadefi", "", [bal("BTC", "1.5", "1"), bal("USDM", "3")])
    await svc.settle()
    await asyncio.sleep(0.002)
    between = iso_us(time.time_ns() // 1000)
    await asyncio.sleep(0.002)
    svc.owner.submit_update(
        "ex-a", "deltadefi", [bal("BTC", "0.000000012345678901", "0"), bal("ADA", "1e3")]
    )
    await svc.settle()
    svc.owner.submit_snapshot("ex-a", "deltadefi", "", [bal("ADA", "1000.5")])
    await _caught_up(svc)
    return between


async def test_balances_at_and_history_pages(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        between = await _seed(svc)
        status, body = await svc.get("/v1/balances", at=between)
        assert status == 200 and body["as_of"] == between
        got = {r["asset"]: (r["total"], r["available"], r["locked"], r["stale"])
               for r in body["balances"]}  # fmt: skip
        assert got == {"BTC": ("1.5", "1", "0.5", False), "USDM": ("3", "3", "0", False)}
        status, now = await svc.get("/v1/balances", at=iso_us(time.time_ns() // 1000))
        _s, live = await svc.get("/v1/balances")
        assert now["balances"] == live["balances"]
        # pages by seq cover every change once, in order
        seen: list[int] = []
        cursor = 0
        while True:
            status, page = await svc.get("/v1/history", account="ex-a", cursor=cursor, limit=2)
            assert status == 200
            seen += [c["seq"] for c in page["changes"]]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert seen == sorted(set(seen)) and len(seen) == 7  # 2 + 2 + (1 + 2 removed)
        _s, btc = await svc.get("/v1/history", asset="btc")
        assert [c["total"] for c in btc["changes"]] == ["1.5", "0.000000012345678901", None]
        assert btc["changes"][-1]["type"] == "removed"


async def test_csv_exports_parse_back_to_the_exact_json(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        between = await _seed(svc)
        _s, js = await svc.get("/v1/history")
        ctype, rows = await _csv(svc, "/v1/history", format="csv")
        assert ctype.startswith("text/csv")
        assert len(rows) == len(js["changes"])
        for row, change in zip(rows, js["changes"], strict=True):
            assert int(row["seq"]) == change["seq"] and row["time"] == change["time"]
            for name in ("total", "available", "locked"):
                if change[name] is None:
                    assert row[name] == ""
                else:
                    assert Decimal(row[name]) == Decimal(change[name])
                    assert row[name] == change[name]  # the exact string, not a float's
        # Accept: text/csv works too, on ?at=
        async with svc.http.get(
            svc.base + "/v1/balances", params={"at": between}, headers={"accept": "text/csv"}
        ) as r:
            assert r.headers["content-type"].startswith("text/csv")
            at_rows = list(csv.DictReader(io.StringIO(await r.text())))
        _s, at_js = await svc.get("/v1/balances", at=between)
        assert [(r["asset"], Decimal(r["total"])) for r in at_rows] == [
            (r["asset"], Decimal(r["total"])) for r in at_js["balances"]
        ]
        assert {r["as_of"] for r in at_rows} == {between}
        # the series: last value per step, CSV equal to JSON
        params = {"asset": "ADA", "from": between, "step": "1s",
                  "to": iso_us(time.time_ns() // 1000)}  # fmt: skip
        status, series = await svc.get("/v1/history/series", **params)
        assert status == 200, series
        assert series["points"][0]["total"] == "0"  # no ADA yet at `between`
        assert series["points"][-1]["total"] == "1000.5"
        _c, srows = await _csv(svc, "/v1/history/series", format="csv", **params)
        assert [r["total"] for r in srows] == [p["total"] for p in series["points"]]


async def test_a_gap_is_recorded_and_reported(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")], stream_maxlen=100) as svc:
        svc.owner._maxlen = "100"
        svc.owner.submit_snapshot("ex-a", "deltadefi", "", [bal("BTC", "1")])
        await _caught_up(svc)
        writer = _history(svc).writer
        await writer.stop()  # history is away (its database down) ...
        for i in range(400):  # ... while far more changes than the stream keeps go by
            svc.owner.submit_update("ex-a", "deltadefi", [bal("BTC", f"{i + 2}.5")])
            assert await svc.owner.drain(5)
        writer.start()
        await _caught_up(svc)
        status, gaps = await svc.get("/v1/history/gaps")
        assert status == 200 and len(gaps["gaps"]) == 1
        gap = gaps["gaps"][0]
        _s, page = await svc.get("/v1/history")
        assert page["gaps"] == [gap]
        status, body = await svc.get("/v1/balances", at=gap["from"])
        assert status == 409 and body["error"]["code"] == "history_gap"
        _s, now = await svc.get("/v1/balances", at=iso_us(time.time_ns() // 1000))
        assert [r["total"] for r in now["balances"]] == ["401.5"]
        async with svc.http.get(svc.base + "/metrics") as r:
            text = await r.text()
        assert "balagg_history_gaps_total 1.0" in text
        assert "balagg_history_writes_total" in text


async def test_bad_parameters_are_refused(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")]) as svc:
        await _seed(svc)
        for path, params in [
            ("/v1/balances", {"at": "yesterday"}),
            ("/v1/history", {"from": "2026-13-01"}),
            ("/v1/history", {"account": "Bad Name"}),
            ("/v1/history/series", {"step": "1h"}),
            ("/v1/history/series", {"asset": "BTC", "step": "1 fortnight"}),
            ("/v1/history/series", {"asset": "BTC", "step": "1s",
                                    "from": "2020-01-01T00:00:00Z"}),
        ]:  # fmt: skip
            status, body = await svc.get(path, **params)
            assert status == 422, (path, params, body)
            assert body["error"]["code"] == "invalid_request"
        status, body = await svc.get("/v1/balances", at="2001-01-01T00:00:00Z")
        assert status == 409 and body["error"]["code"] == "not_covered"


async def test_history_off_answers_503(service_factory: ServiceFactory) -> None:
    async with service_factory([account("ex-a")], history="off") as svc:
        assert svc.app.state.history is None
        for path, params in [("/v1/history", {}), ("/v1/balances", {"at": "2026-01-01"})]:
            status, body = await svc.get(path, **params)
            assert status == 503 and body["error"]["code"] == "history_off"
        status, _body = await svc.get("/v1/balances")
        assert status == 200


async def test_the_database_password_never_leaks(
    service_factory: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "pw-CANARY-7c1e"
    url = f"postgresql+asyncpg://balagg:{canary}@127.0.0.1:9/history"
    caplog.set_level(logging.DEBUG)
    async with service_factory([account("ex-a")], history_url=url) as svc:
        writer = _history(svc).writer
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if writer.last_error:
                break
            await asyncio.sleep(0.05)
        assert writer.last_error, "the unreachable database was never tried"
        status, body = await svc.get("/v1/history")
        assert status == 503 and canary not in str(body)
        async with svc.http.get(svc.base + "/metrics") as r:
            assert canary not in await r.text()
        assert canary not in repr(svc.services.settings)
    assert canary not in caplog.text
    assert "***" in caplog.text  # the URL is logged, masked


async def test_series_sums_long_amounts_exactly(service_factory: ServiceFactory) -> None:
    """A sum past 28 significant digits (Python's default context) is not rounded."""
    async with service_factory([account("ex-a"), account("ex-b")]) as svc:
        for name in ("ex-a", "ex-b"):
            svc.owner.submit_status(name, status_doc(name, AccountState.LIVE))
        await svc.settle()
        svc.owner.submit_snapshot(
            "ex-a", "deltadefi", "", [bal("BIG", "1234567890123456789012345678.25")]
        )
        svc.owner.submit_snapshot("ex-b", "deltadefi", "", [bal("BIG", "0.00000001")])
        await _caught_up(svc)
        now = iso_us(time.time_ns() // 1000)
        status, series = await svc.get("/v1/history/series", asset="BIG", to=now, step="1h")
        assert status == 200, series
        assert series["points"][-1]["total"] == "1234567890123456789012345678.25000001"
