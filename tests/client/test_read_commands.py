"""``balances``, ``totals``, ``accounts`` and ``prices`` against a real service fed by the
simulators: JSON and CSV equal what REST serves, tables line up, and every failure is one
line on stderr with a non-zero exit code."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson

from app.simulators.runner import Simulators
from tests.client.conftest import TOKEN, CliResult, LiveService, run_cli
from tests.integration.conftest import free_port

AMOUNTS = ("total", "available", "locked")


def timeless(doc: Any) -> Any:
    """``doc`` without price ages, which grow between two reads of the same state."""
    if isinstance(doc, dict):
        return {k: timeless(v) for k, v in doc.items() if k not in ("price_age_s", "age_s")}
    if isinstance(doc, list):
        return [timeless(v) for v in doc]
    return doc


async def same_state(
    live: LiveService, path: str, params: dict[str, str], command: Callable[[], Awaitable[Any]]
) -> tuple[Any, Any]:
    """(REST document, command result) read while the service's seq did not move."""
    deadline = time.monotonic() + 30
    while True:
        before = await live.get(path, params)
        result = await command()
        after = await live.get(path, params)
        if timeless(before) == timeless(after) or time.monotonic() > deadline:
            return after, result


def one_error_line(result: CliResult) -> str:
    assert result.rc != 0
    assert result.out == ""
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    return lines[0]


async def test_balances_json_is_the_rest_document(live: LiveService) -> None:
    cases: list[tuple[list[str], str, dict[str, str]]] = [
        ([], "/v1/balances", {}),
        (["--json"], "/v1/balances", {}),
        (
            ["--account", "bitopro-main", "--nonzero"],
            "/v1/balances/bitopro-main",
            {"nonzero": "true"},
        ),
        (
            ["--account", "bitopro-main,sfox-main", "--asset", "BTC"],
            "/v1/balances",
            {"account": "bitopro-main,sfox-main", "asset": "BTC"},
        ),
    ]
    for flags, path, params in cases:

        async def command(flags: list[str] = flags) -> CliResult:
            return await run_cli("balances", "--url", live.base, *flags)

        rest, result = await same_state(live, path, params, command)
        assert result.rc == 0, result.err
        assert orjson.loads(result.out) == rest, flags
        assert rest["balances"], f"nothing to compare for {flags}"
        assert "\x1b[" not in result.out  # piped: no colour


async def test_balances_csv_parses_to_decimals_equal_to_rest(live: LiveService) -> None:
    async def command() -> CliResult:
        return await run_cli("balances", "--url", live.base, "--csv")

    rest, result = await same_state(live, "/v1/balances", {}, command)
    assert result.rc == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert len(rows) == len(rest["balances"]) > 0
    for row, record in zip(rows, rest["balances"], strict=True):
        for name in ("account", "venue", "wallet", "asset", "updated_at"):
            assert row[name] == record[name]
        for name in AMOUNTS:
            assert row[name] == record[name]  # the exact string
            assert Decimal(row[name]) == Decimal(record[name])
        assert row["stale"] == ("true" if record["stale"] else "false")
        assert orjson.loads(row["extra"]) == record["extra"]


async def test_totals_json_and_csv_equal_rest(live: LiveService) -> None:
    async def as_json() -> CliResult:
        return await run_cli("totals", "--url", live.base, "--json")

    rest, result = await same_state(live, "/v1/totals", {"quote": "USD"}, as_json)
    assert result.rc == 0, result.err
    assert timeless(orjson.loads(result.out)) == timeless(rest)

    async def as_csv() -> CliResult:
        return await run_cli("totals", "--url", live.base, "--csv", "--quote", "usd")

    rest, result = await same_state(live, "/v1/totals", {"quote": "USD"}, as_csv)
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [r["symbol"] for r in rows] == [t["symbol"] for t in rest["totals"]]
    for row, total in zip(rows, rest["totals"], strict=True):
        for name in AMOUNTS:
            assert Decimal(row[name]) == Decimal(total[name])
        assert int(row["accounts"]) == total["accounts"]
        # unknown stays unknown: an empty cell, never 0
        assert (row["usd"] or None) == total["usd"]
    # every symbol without a value is listed as unpriced, with its reason
    unvalued = [t["symbol"] for t in rest["totals"] if t["usd"] is None]
    assert [u["symbol"] for u in rest["unpriced"]] == unvalued
    assert all(u["reason"] in ("no_price", "no_path", "stale_price") for u in rest["unpriced"])


async def test_accounts_json_and_csv_equal_rest(live: LiveService) -> None:
    result = await run_cli("accounts", "--url", live.base, "--json")
    rest = await live.get("/v1/accounts")
    assert result.rc == 0, result.err
    ours = orjson.loads(result.out)

    def without_clock(doc: Any) -> list[dict[str, Any]]:
        # last_message_at moves with every venue frame; everything else must be identical
        return [{k: v for k, v in a.items() if k != "last_message_at"} for a in doc["accounts"]]

    assert without_clock(ours) == without_clock(rest)
    result = await run_cli("accounts", "--url", live.base, "--csv")
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [(r["account"], r["state"]) for r in rows] == [
        (a["account"], a["state"]) for a in rest["accounts"]
    ]


def table_cells(text: str, header: str) -> list[list[str]]:
    """The body rows of a rich table as cells (columns split on the box's bars)."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("┃") and header in line)
    rows = []
    for line in lines[head + 1 :]:
        if line.startswith("│"):
            rows.append([cell.strip(" ") for cell in line.strip("│").split("│")])
        elif line.startswith("└"):
            break
    return rows


def header_names(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("┃"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


async def test_balances_table_aligns_exact_amounts_on_the_point(live: LiveService) -> None:
    async def command() -> CliResult:
        return await run_cli("balances", "--url", live.base, "--table", COLUMNS="220")

    rest, result = await same_state(live, "/v1/balances", {}, command)
    assert result.rc == 0, result.err
    assert "\x1b[" not in result.out
    assert max(len(line) for line in result.out.splitlines()) <= 220
    names = header_names(result.out)
    raw_rows = [
        [c for c in line.strip("│").split("│")]
        for line in result.out.splitlines()
        if line.startswith("│")
    ]
    assert len(raw_rows) == len(rest["balances"])
    for name in AMOUNTS:
        column = names.index(name)
        cells = [row[column] for row in raw_rows]
        # exact strings, in the service's order
        assert [c.strip() for c in cells] == [r[name] for r in rest["balances"]]
        points = {c.index(".") for c in cells if "." in c}
        assert len(points) == 1, f"{name} not aligned on the point: {cells}"
        ends = {len(c.rstrip()) for c in cells if "." not in c}
        assert all(end <= next(iter(points)) for end in ends)  # integers end before the point
    assert f"seq {rest['seq']}" in result.out
    assert "stale" not in result.out  # every account is live


async def test_totals_and_accounts_tables(live: LiveService) -> None:
    async def command() -> CliResult:
        return await run_cli("totals", "--url", live.base, "--table")

    rest, result = await same_state(live, "/v1/totals", {"quote": "USD"}, command)
    assert result.rc == 0, result.err
    rows = table_cells(result.out, "symbol")
    assert len(rows) == len(rest["totals"])
    lines = result.out.strip().splitlines()
    end = max(i for i, line in enumerate(lines) if line.startswith("└"))
    footer = " ".join(line.strip() for line in lines[end + 1 :])  # it may wrap
    assert f"seq {rest['seq']}" in footer
    listed = ", ".join(f"{u['symbol']} ({u['reason']})" for u in rest["unpriced"])
    assert "unpriced: " + (listed or "none") in footer
    usd_cells = [row[-1] for row in rows]
    for cell, total in zip(usd_cells, rest["totals"], strict=True):
        if total["usd"] is None:
            assert cell == "—"  # unknown, never 0
        else:
            assert Decimal(cell.replace(",", "")) == Decimal(total["usd"])
            if Decimal(total["usd"]) >= 1000:
                assert "," in cell  # thousands separators for values

    result = await run_cli("accounts", "--url", live.base, "--table")
    assert result.rc == 0, result.err
    rows = table_cells(result.out, "account")
    assert {(r[0], r[2]) for r in rows} == {(a.id, "live") for a in live.accounts}
    assert f"{len(live.accounts)} accounts · {len(live.accounts)} live" in result.out


async def test_errors_are_one_line_without_the_token(live: LiveService) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(await run_cli("balances", "--url", nobody))
    assert "not reachable" in line and nobody in line
    line = one_error_line(await run_cli("watch", "--url", nobody, "--json"))
    assert "not reachable" in line

    wrong = await run_cli("balances", "--url", live.base, "--token", "wrong-" + TOKEN)
    assert wrong.rc == 3
    line = one_error_line(wrong)
    assert "unauthorized" in line and "wrong-" not in line
    missing = await run_cli("totals", "--url", live.base, BALAGG_API_TOKEN="")
    assert missing.rc == 3
    assert "BALAGG_API_TOKEN" in one_error_line(missing)

    for args in (
        ["balances", "--account", "nope"],
        ["balances", "--account", "nope,bitopro-main"],
        ["totals", "--account", "nope"],
        ["watch", "--account", "nope", "--json"],
    ):
        result = await run_cli(*args, "--url", live.base)
        assert result.rc == 4, args
        assert "unknown account" in one_error_line(result) and "nope" in result.err

    bad = await run_cli("totals", "--url", live.base, "--quote", "EUR")
    assert bad.rc == 2
    assert "quote" in one_error_line(bad)
    # a JSON tail carries every change (a balance going to zero too): no silent filter
    tail = await run_cli("watch", "--url", live.base, "--json", "--nonzero")
    assert tail.rc == 2
    assert "--nonzero" in one_error_line(tail)

    # the service values live: /v1/prices answers, and the command prints it
    prices = await run_cli("prices", "--url", live.base, "--json")
    assert prices.rc == 0, prices.err
    assert {p["source"] for p in orjson.loads(prices.out)["prices"]} >= {"bitopro"}


async def test_help_has_examples_and_never_shows_the_token() -> None:
    for command in ("balances", "totals", "accounts", "prices", "watch"):
        result = await run_cli(command, "--help")
        assert result.rc == 0
        assert "examples:" in result.out and f"balance-aggregator {command}" in result.out
        assert "BALAGG_API_TOKEN" in result.out


def without_ages(doc: Any) -> list[dict[str, Any]]:
    """The price entries without ``age_s``, which grows between two reads."""
    return [{k: v for k, v in p.items() if k != "age_s"} for p in doc["prices"]]


async def test_prices_table_and_csv_equal_rest(live: LiveService) -> None:
    deadline = time.monotonic() + 30
    while not (await live.get("/v1/prices"))["prices"]:  # the feeds' first prices
        assert time.monotonic() < deadline, "no price arrived"
        await asyncio.sleep(0.05)

    async def as_csv() -> CliResult:
        return await run_cli("prices", "--url", live.base, "--csv")

    rest, result = await same_state(live, "/v1/prices", {}, as_csv)
    assert result.rc == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert rest["prices"] and len(rows) == len(rest["prices"])
    assert list(rows[0])[:4] == ["pair", "base", "quote", "price"]
    for row, entry in zip(rows, without_ages(rest), strict=True):
        for name, value in entry.items():
            if value is None:
                assert row[name] == "", name  # unknown stays an empty cell, never 0
            elif isinstance(value, bool):
                assert row[name] == ("true" if value else "false")
            else:
                assert row[name] == str(value), name
        assert Decimal(row["price"]) == Decimal(entry["price"])

    async def as_table() -> CliResult:
        return await run_cli("prices", "--url", live.base, "--table", COLUMNS="240")

    rest, result = await same_state(live, "/v1/prices", {}, as_table)
    assert result.rc == 0, result.err
    assert "\x1b[" not in result.out
    names = header_names(result.out)
    raw_rows = [line.strip("│").split("│") for line in result.out.splitlines() if line[:1] == "│"]
    assert len(raw_rows) == len(rest["prices"])
    cells = [row[names.index("price")] for row in raw_rows]
    assert [c.strip() for c in cells] == [p["price"] for p in rest["prices"]]  # exact, in order
    points = {c.index(".") for c in cells if "." in c}
    assert len(points) == 1, f"prices not aligned on the point: {cells}"
    assert f"{len(rest['prices'])} prices" in result.out


async def test_a_failed_account_is_marked_and_coloured_in_the_tables(
    live: LiveService, sims: Simulators
) -> None:
    key = sims.default_keys["bitopro"]
    sims.bitopro.refuse_auth(key)
    sims.bitopro.drop(key)
    deadline = time.monotonic() + 30
    while True:
        states = {a["account"]: a["state"] for a in (await live.get("/v1/accounts"))["accounts"]}
        if states["bitopro-main"] == "auth_failed":
            break
        assert time.monotonic() < deadline, states
        await asyncio.sleep(0.05)

    async def command() -> CliResult:
        return await run_cli("balances", "--url", live.base, "--table", COLUMNS="220")

    rest, result = await same_state(live, "/v1/balances", {}, command)
    assert result.rc == 0, result.err
    names = header_names(result.out)
    rows = table_cells(result.out, "account")
    assert len(rows) == len(rest["balances"])
    marker = names.index("")  # the stale column has no header
    for row, record in zip(rows, rest["balances"], strict=True):
        assert row[0] == record["account"]
        assert row[marker] == ("stale" if record["stale"] else ""), row
    assert {r["account"] for r in rest["balances"] if r["stale"]} == {"bitopro-main"}
    assert "1 stale account(s): bitopro-main" in result.out

    # the account's state is coloured on a terminal that takes colour (bold red here)
    coloured = await run_cli(
        "accounts", "--url", live.base, "--table", COLUMNS="220", FORCE_COLOR="1"
    )
    assert coloured.rc == 0, coloured.err
    line = next(x for x in coloured.out.splitlines() if "bitopro-main" in x)
    assert re.search(r"\x1b\[1;31mauth_failed *\x1b\[0m", line), repr(line)
    live_line = next(x for x in coloured.out.splitlines() if "sfox-main" in x)
    assert re.search(r"\x1b\[32mlive *\x1b\[0m", live_line), repr(live_line)


async def test_balances_valued_table_and_footer_equal_rest(live: LiveService) -> None:
    async def command() -> CliResult:
        return await run_cli("balances", "--url", live.base, "--quote", "USD", "--table")

    params = {"quote": "USD"}
    deadline = time.monotonic() + 30
    while not any(  # a price beyond the pegs has arrived: some crypto holding is valued
        r["value"] is not None and r["symbol"] in ("BTC", "ETH", "ADA")
        for r in (await live.get("/v1/balances", params))["balances"]
    ):
        assert time.monotonic() < deadline, "nothing valued"
        await asyncio.sleep(0.05)
    rest, result = await same_state(live, "/v1/balances", params, command)
    assert result.rc == 0, result.err
    records = rest["balances"]
    names = header_names(result.out)
    rows = table_cells(result.out, "account")
    assert len(rows) == len(records)
    value_at, price_at = names.index("value (USD)"), names.index("price")
    for row, record in zip(rows, records, strict=True):
        if record["value"] is None:
            assert row[value_at] == "—" and row[price_at] == "—"  # unknown, never 0
        else:
            assert row[value_at].replace(",", "") == record["value"]  # exact, only grouped
            assert row[price_at] == record["price"]
    lines = result.out.strip().splitlines()
    end = max(i for i, line in enumerate(lines) if line.startswith("└"))
    footer = " ".join(line.strip() for line in lines[end + 1 :])
    priced = [r for r in records if r["value"] is not None]
    assert f"seq {rest['seq']}" in footer
    assert f"coverage: {len(priced)} of {len(records)} holdings priced" in footer
    worth = sum((Decimal(r["value"]) for r in priced), Decimal(0))
    assert f"{worth:,f} USD" in footer
    unpriced = [r for r in records if r["value"] is None]
    listed = footer.partition("unpriced: ")[2]
    for record in unpriced:
        # named by symbol, else by the mint's ends; with the reason the service gave
        name = record["symbol"] or f"{record['asset'][:4]}…{record['asset'][-4:]}"
        assert f"{name} ({record['value_reason']})" in listed, (name, footer)
    assert ("unpriced: " in footer) == bool(unpriced)


async def test_the_service_is_found_from_balagg_host_and_port(live: LiveService) -> None:
    # the service's own listen settings lead the client to it; a wildcard means loopback
    result = await run_cli("accounts", "--json", BALAGG_HOST="0.0.0.0", BALAGG_PORT=str(live.port))
    assert result.rc == 0, result.err
    assert [a["account"] for a in orjson.loads(result.out)["accounts"]] == [
        a["account"] for a in (await live.get("/v1/accounts"))["accounts"]
    ]
    elsewhere = await run_cli("accounts", BALAGG_PORT=str(free_port()))
    assert elsewhere.rc == 1 and "127.0.0.1" in one_error_line(elsewhere)
