"""Rendering the service's documents: rich tables for a terminal, CSV and JSON for scripts.

Amounts stay the exact strings the service sent. In a table they are only padded so that
a column lines up on the decimal point (and values get thousands separators); CSV cells
and JSON output carry the strings unchanged. A missing value is shown as ``—`` in a table
and an empty cell in CSV, never as 0.

Optional fields from live valuation (``value``, ``price``, ``price_source``,
``price_age_s`` per record; ``coverage`` and reasons in ``unpriced``) are shown when the
service sends them; a service without valuation gets a footer that says so.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from app.domain import EXACT, AccountState

MISSING = "—"
HIGHLIGHT = "bold black on yellow"
STATE_STYLES: dict[str, str] = {
    AccountState.LIVE: "green",
    AccountState.SYNCING: "cyan",
    AccountState.CONNECTING: "cyan",
    AccountState.STALE: "yellow",
    AccountState.AUTH_FAILED: "bold red",
    AccountState.DISABLED: "dim",
}
BALANCE_COLUMNS = (
    "account",
    "venue",
    "wallet",
    "asset",
    "symbol",
    "total",
    "available",
    "locked",
    "value",
    "price",
    "price_source",
    "price_age_s",
    "stale",
    "updated_at",
    "venue_ts",
)
TOTAL_COLUMNS = ("symbol", "total", "available", "locked", "accounts", "value", "usd")
ACCOUNT_COLUMNS = (
    "account",
    "venue",
    "state",
    "connected_since",
    "last_message_at",
    "reconnects",
    "last_error",
    "owner",
)
_REASON_KEYS = ("value_reason", "price_reason", "reason", "unpriced_reason")
AMOUNTS = ("total", "available", "locked")

Key = tuple[str, str, str]
# (record key, field) → should the cell be highlighted now
Highlight = Callable[[Key, str], bool]


def record_key(record: Mapping[str, Any]) -> Key:
    return (str(record.get("account")), str(record.get("wallet") or ""), str(record.get("asset")))


# --- exact decimal text -------------------------------------------------------------------


def positional(text: str) -> str:
    """The decimal in positional notation (``1E-8`` → ``0.00000001``), exactly."""
    if "e" not in text.lower():
        return text
    try:
        return format(Decimal(text), "f")
    except InvalidOperation:
        return text


def grouped(text: str) -> str:
    """Thousands separators in the integer part: ``-1234567.50`` → ``-1,234,567.50``."""
    text = positional(text)
    sign = "-" if text.startswith("-") else ""
    digits, dot, frac = text.lstrip("+-").partition(".")
    if not digits.isdigit():
        return text
    head = len(digits) % 3 or 3
    parts = [digits[:head]] + [digits[i : i + 3] for i in range(head, len(digits), 3)]
    return sign + ",".join(parts) + dot + frac


def align_on_point(values: Sequence[str | None], *, thousands: bool = False) -> list[str]:
    """Equal-width strings whose decimal points line up; ``None`` becomes ``—``."""
    split: list[tuple[str, str] | None] = []
    for value in values:
        if value is None or value == "":
            split.append(None)
            continue
        text = grouped(value) if thousands else positional(value)
        whole, dot, frac = text.partition(".")
        split.append((whole, dot + frac))
    present = [p for p in split if p is not None]
    width_whole = max((len(w) for w, _ in present), default=len(MISSING))
    width_whole = max(width_whole, len(MISSING))
    width_frac = max((len(f) for _, f in present), default=0)
    out = []
    for part in split:
        if part is None:
            out.append(MISSING.rjust(width_whole) + " " * width_frac)
        else:
            out.append(part[0].rjust(width_whole) + part[1].ljust(width_frac))
    return out


def shorten(text: str, keep: int = 4) -> str:
    """``FV1r15rb…hJWyV1`` → ``FV1r…WyV1`` for addresses that would swamp a table."""
    return text if len(text) <= 2 * keep + 3 else f"{text[:keep]}…{text[-keep:]}"


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- machine output -----------------------------------------------------------------------


def csv_cell(value: Any) -> str:
    """Exact text: strings as sent, ``None`` empty, objects as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def to_csv(rows: Iterable[Mapping[str, Any]], preferred: Sequence[str]) -> str:
    """CSV with the preferred columns first (those present), then any others, ``extra`` last."""
    rows = list(rows)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    columns = [c for c in preferred if c in seen]
    columns += [c for c in seen if c not in columns and c != "extra"]
    if "extra" in seen:
        columns.append("extra")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
    return out.getvalue()


# --- tables -------------------------------------------------------------------------------


def _amount_column(table: Table, header: str, cells: list[str]) -> list[str]:
    """Add a column for cells from :func:`align_on_point`; returns them padded to fit it.

    The column is left-justified on cells of one width: rich strips the trailing spaces of
    right-justified cells, which would undo the alignment of shorter fractions.
    """
    width = max([len(header), *(len(c) for c in cells)])
    table.add_column(Text(header, justify="right"), justify="left", no_wrap=True, min_width=width)
    return [c.rjust(width) for c in cells]


def _record_reason(record: Mapping[str, Any]) -> str | None:
    for key in _REASON_KEYS:
        if record.get(key):
            return str(record[key])
    return None


def _asset_label(record: Mapping[str, Any]) -> str:
    asset = str(record.get("asset") or "")
    symbol = record.get("symbol")
    if symbol and symbol != asset:
        return f"{symbol} {shorten(asset)}"
    return shorten(asset) if symbol is None else asset


def balances_table(
    records: Sequence[Mapping[str, Any]],
    *,
    quote: str | None = None,
    highlight: Highlight | None = None,
    title: str | None = None,
) -> Table:
    """One row per record: amounts aligned on the point, stale rows marked and dimmed."""
    with_wallet = any(r.get("wallet") for r in records)
    with_value = quote is not None and any("value" in r or "price" in r for r in records)
    table = Table(title=title, title_justify="left", header_style="bold", expand=False)

    def label_column(name: str, labels: Iterable[str]) -> None:
        # identifying columns keep their width; only "updated" gives way on a narrow screen
        width = max((len(label) for label in labels), default=0)
        table.add_column(name, no_wrap=True, min_width=max(width, len(name)))

    label_column("account", (str(r.get("account") or "") for r in records))
    if with_wallet:
        label_column("wallet", (shorten(str(r.get("wallet") or "")) for r in records))
    label_column("asset", (_asset_label(r) for r in records))
    columns = {
        f: _amount_column(table, f, align_on_point([_str(r.get(f)) for r in records]))
        for f in AMOUNTS
    }
    if with_value:
        prices = align_on_point([_str(r.get("price")) for r in records])
        values = align_on_point([_str(r.get("value")) for r in records], thousands=True)
        columns["price"] = _amount_column(table, "price", prices)
        columns["value"] = _amount_column(table, f"value ({quote})", values)
        table.add_column("source", overflow="ellipsis", max_width=24)
    any_stale = any(r.get("stale") for r in records)
    if any_stale:
        table.add_column("", no_wrap=True, min_width=5)  # the stale marker
    table.add_column("updated", overflow="ellipsis", no_wrap=True)
    for i, record in enumerate(records):
        key = record_key(record)
        stale = bool(record.get("stale"))
        cells: list[RenderableType] = [Text(str(record.get("account") or ""))]
        if with_wallet:
            cells.append(Text(shorten(str(record.get("wallet") or ""))))
        cells.append(Text(_asset_label(record)))
        fields = [*AMOUNTS, "price", "value"] if with_value else list(AMOUNTS)
        for field in fields:
            style = HIGHLIGHT if highlight is not None and highlight(key, field) else ""
            cells.append(Text(columns[field][i], style=style))
        if with_value:
            source = record.get("price_source") or _record_reason(record) or ""
            cells.append(Text(str(source)))
        if any_stale:
            cells.append(Text("stale", style="bold yellow") if stale else Text(""))
        cells.append(Text(str(record.get("updated_at") or "")))
        table.add_row(*cells, style="dim" if stale else None)
    return table


def _unpriced_text(items: Iterable[Any]) -> str:
    out = []
    for item in items:
        if isinstance(item, Mapping):
            name = item.get("symbol") or item.get("asset") or "?"
            reason = item.get("reason")
            out.append(f"{name} ({reason})" if reason else str(name))
        else:
            out.append(str(item))
    return ", ".join(out)


def balances_footer(doc: Mapping[str, Any], quote: str | None) -> Text:
    records: list[Mapping[str, Any]] = list(doc.get("balances") or [])
    stale = sorted({str(r.get("account")) for r in records if r.get("stale")})
    parts = [f"seq {doc.get('seq')}", f"{len(records)} balances"]
    if stale:
        parts.append(f"{len(stale)} stale account(s): {', '.join(stale)}")
    if quote is not None:
        if not any("value" in r for r in records) and records:
            parts.append(f"values in {quote}: not served by this service (no live valuation)")
        elif records:
            priced = [r for r in records if r.get("value") is not None]
            unpriced = [r for r in records if r.get("value") is None]
            parts.append(f"coverage: {len(priced)} of {len(records)} holdings priced")
            if priced:
                total = Decimal(0)
                for r in priced:  # exact: the default context would round at 28 digits
                    total = EXACT.add(total, Decimal(str(r["value"])))
                label = "value" if not unpriced else "priced value"
                parts.append(f"{label} {grouped(str(total))} {quote}")
            if unpriced:
                names = {
                    f"{r.get('symbol') or shorten(str(r.get('asset')))}"
                    + (f" ({_record_reason(r)})" if _record_reason(r) else "")
                    for r in unpriced
                }
                parts.append("unpriced: " + ", ".join(sorted(names)))
    return Text(" · ".join(parts), style="dim")


def totals_table(doc: Mapping[str, Any], quote: str) -> Group:
    totals: list[Mapping[str, Any]] = list(doc.get("totals") or [])
    value_key = "value" if any("value" in t for t in totals) else "usd"
    table = Table(header_style="bold")
    table.add_column("symbol", no_wrap=True)
    columns = {
        f: _amount_column(table, f, align_on_point([_str(t.get(f)) for t in totals]))
        for f in AMOUNTS
    }
    table.add_column("accounts", justify="right")
    values = align_on_point([_str(t.get(value_key)) for t in totals], thousands=True)
    columns["value"] = _amount_column(table, f"value ({quote})", values)
    for i, total in enumerate(totals):
        table.add_row(
            shorten(str(total.get("symbol") or "")),
            *(columns[f][i] for f in AMOUNTS),
            _str(total.get("accounts")) or "",
            columns["value"][i],
        )
    parts = [f"seq {doc.get('seq')}", f"{len(totals)} symbols"]
    coverage = doc.get("coverage")
    if isinstance(coverage, Mapping):
        parts.append("coverage: " + ", ".join(f"{k} {v}" for k, v in coverage.items()))
    elif coverage is not None:
        parts.append(f"coverage: {coverage}")
    else:
        priced = sum(1 for t in totals if t.get(value_key) is not None)
        parts.append(f"coverage: {priced} of {len(totals)} symbols priced")
    unpriced = doc.get("unpriced") or []
    parts.append("unpriced: " + (_unpriced_text(unpriced) if unpriced else "none"))
    return Group(table, Text(" · ".join(parts), style="dim"))


def accounts_table(doc: Mapping[str, Any]) -> Group:
    accounts: list[Mapping[str, Any]] = list(doc.get("accounts") or [])
    table = Table(header_style="bold")
    for name in ("account", "venue", "state", "connected since", "last message"):
        table.add_column(name, no_wrap=True)
    table.add_column("reconnects", justify="right")
    table.add_column("last error", overflow="ellipsis", max_width=40)
    table.add_column("owner", overflow="ellipsis")
    for account in accounts:
        state = str(account.get("state") or "")
        table.add_row(
            str(account.get("account") or ""),
            str(account.get("venue") or ""),
            Text(state, style=STATE_STYLES.get(state, "")),
            str(account.get("connected_since") or MISSING),
            str(account.get("last_message_at") or MISSING),
            _str(account.get("reconnects")) or "",
            str(account.get("last_error") or ""),
            str(account.get("owner") or ""),
        )
    counts: dict[str, int] = {}
    for account in accounts:
        state = str(account.get("state"))
        counts[state] = counts.get(state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    footer = Text(f"{len(accounts)} accounts" + (f" · {summary}" if summary else ""), style="dim")
    return Group(table, footer)


def price_rows(doc: Any) -> list[dict[str, Any]]:
    """The list of price entries, whether served as a list or keyed by pair."""
    prices = doc.get("prices") if isinstance(doc, Mapping) else doc
    if isinstance(prices, Mapping):
        return [
            {"pair": k, **v} if isinstance(v, Mapping) else {"pair": k, "price": v}
            for k, v in prices.items()
        ]
    if isinstance(prices, list):
        return [dict(p) for p in prices if isinstance(p, Mapping)]
    return []


def _is_decimal_text(value: Any) -> bool:
    if not isinstance(value, str | Decimal) or isinstance(value, bool):
        return False
    try:
        Decimal(str(value))
    except InvalidOperation:
        return False
    return True


def generic_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Every key a column; columns whose values are all decimals are aligned on the point."""
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    table = Table(header_style="bold")
    cells: dict[str, list[str]] = {}
    for name in columns:
        values = [row.get(name) for row in rows]
        present = [v for v in values if v is not None]
        if present and all(_is_decimal_text(v) for v in present):
            cells[name] = _amount_column(table, name, align_on_point([_str(v) for v in values]))
        else:
            cells[name] = [csv_cell(v) for v in values]
            table.add_column(name, overflow="ellipsis")
    for i in range(len(rows)):
        table.add_row(*(cells[name][i] for name in columns))
    return table
