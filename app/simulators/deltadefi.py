"""DeltaDeFi simulator: ``/accounts/stream?api_key=`` and ``GET /accounts/balance``.

The key travels in the query string; an unknown or refused key gets HTTP 401 before the
upgrade. Every 4xx (upgrade and REST) carries the venue's error body
``{"code": <status>, "msg": <text>}``, which the official SDK reads on every 4xx.
Connecting subscribes to every account event and nothing is sent on connect. Balance
changes list only the changed assets, with bare JSON numbers (or strings when
``amounts_as_strings``, as the newer SDKs type them)::

    {"type": "Account", "sub_type": "balance",
     "balance": [{"asset": "usdm", "asset_unit": "5066154a...534458",
                  "free": 1153.006812, "locked": 0}]}

``order_info`` and ``dlta_points`` events are sent on demand and never change balances.
REST (``X-API-KEY``) answers a list of ``{asset, asset_unit, free, locked}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from app.simulators.connection import Connection
from app.simulators.control import control_route, json_ok, pick, pick_mapping
from app.simulators.server import AccountBase, BurstPlan, VenueSimulator, parse_balances
from app.simulators.types import JsonObject, SimulatorError, TruthRow
from app.simulators.wire import (
    FrameTemplate,
    chunk_frames,
    counting_amounts,
    decimal_of,
    dumps,
    iso_ms,
    now_ms,
    to_decimal,
)

WS_PATH = "/accounts/stream"
REST_PATH = "/accounts/balance"
PLACES = 6

KNOWN_UNITS = {
    "ada": "",
    "usdm": "5066154a102ee037390c5236f78db23239b49c5748d3d349f3ccf04b55534458",
}
"""Cardano asset units of the assets the venue lists (ADA itself has none)."""

ORDER_STATUSES = ("building", "processing", "open", "closed", "failed", "cancelled")


def venue_error(status: int, message: str) -> web.Response:
    """DeltaDeFi's error body: ``{"code", "msg"}`` (the official SDK reads both)."""
    return json_ok({"code": status, "msg": message}, status)


@dataclass(frozen=True, slots=True)
class DeltaDefiBalance:
    """One asset; total is ``free + locked``."""

    asset_unit: str
    free: Decimal
    locked: Decimal

    def entry(self, asset: str, *, as_strings: bool = False) -> dict[str, Any]:
        return {
            "asset": asset,
            "asset_unit": self.asset_unit,
            "free": str(self.free) if as_strings else self.free,
            "locked": str(self.locked) if as_strings else self.locked,
        }


def parse_balance(asset: str, value: object, current: DeltaDefiBalance | None) -> DeltaDefiBalance:
    """A balance from ``"1.5"`` (free) or ``{"free"?, "locked"?, "asset_unit"?}``."""
    what = f"deltadefi {asset}"
    base = current or DeltaDefiBalance(KNOWN_UNITS.get(asset, ""), Decimal(0), Decimal(0))
    if not isinstance(value, Mapping):
        return DeltaDefiBalance(base.asset_unit, to_decimal(value, what), base.locked)
    given: Mapping[str, Any] = value
    free = to_decimal(given["free"], f"{what} free") if "free" in given else base.free
    locked = to_decimal(given["locked"], f"{what} locked") if "locked" in given else base.locked
    unit = given.get("asset_unit", base.asset_unit)
    if not isinstance(unit, str):
        raise SimulatorError(f"{what} asset_unit: expected a string")
    return DeltaDefiBalance(unit, free, locked)


@dataclass(eq=False)
class DeltaDefiAccount(AccountBase):
    api_key: str
    balances: dict[str, DeltaDefiBalance] = field(default_factory=dict)
    points_total: int = 15000
    season_points: int = 5000

    @property
    def key(self) -> str:
        return self.api_key

    def credentials(self) -> dict[str, Any]:
        return {"api_key": self.api_key}


class DeltaDefiSimulator(VenueSimulator[DeltaDefiAccount]):
    """DeltaDeFi's account stream and REST balance endpoint."""

    venue = "deltadefi"
    ws_path = WS_PATH
    rest_path = REST_PATH

    def __init__(self, *, amounts_as_strings: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.amounts_as_strings = amounts_as_strings

    # ------------------------------------------------------------------ accounts

    def add_account(self, api_key: str, balances: Mapping[str, object] | None = None) -> str:
        """Add an account; ``balances`` maps asset to ``"1.5"`` (free) or a field mapping."""
        account = DeltaDefiAccount(api_key)
        account.balances = self._parse_all(balances or {}, {})
        return self._add(account)

    def add_account_json(self, body: JsonObject) -> str:
        api_key = pick(body, "api_key", str)
        if not api_key:
            raise SimulatorError("deltadefi account: api_key is required")
        return self.add_account(api_key, pick_mapping(body, "balances"))

    @staticmethod
    def _parse_all(
        values: Mapping[str, object], current: Mapping[str, DeltaDefiBalance]
    ) -> dict[str, DeltaDefiBalance]:
        return parse_balances(values, current, parse_balance, str.lower)

    def set_balances(self, key: str, balances: JsonObject) -> None:
        self.account(key).balances = self._parse_all(balances, {})

    def balance_frame(self, balances: Mapping[str, DeltaDefiBalance]) -> bytes:
        entries = [b.entry(a, as_strings=self.amounts_as_strings) for a, b in balances.items()]
        return dumps({"type": "Account", "sub_type": "balance", "balance": entries})

    async def push(self, key: str, changes: JsonObject) -> int:
        """Update the listed assets and send one ``balance`` event holding just those."""
        account = self.account(key)
        parsed = self._parse_all(changes, account.balances)
        if not parsed:
            return 0
        account.balances.update(parsed)
        return await self.send_each(self.push_targets(key), self.balance_frame(parsed))

    async def push_order(self, key: str, order: Mapping[str, Any] | None = None) -> int:
        """Send an ``order_info`` event (fields of ``order`` override a sample order)."""
        self.account(key)
        stamp = iso_ms(now_ms()).replace(".000Z", "Z")
        sample: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "account_id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
            "status": "open",
            "symbol": "ADAUSDM",
            "base_qty": "100.00",
            "quote_qty": "93.00",
            "side": "buy",
            "price": "0.93",
            "type": "limit",
            "locked_base_qty": "100.00",
            "locked_quote_qty": "93.00",
            "executed_base_qty": "0",
            "executed_quote_qty": "0",
            "ob_open_order_base_qty": "100.00",
            "commission_unit": "lovelace",
            "commission": "0",
            "commission_rate_bp": 10,
            "executed_price": "0",
            "created_at": stamp,
            "updated_at": stamp,
            "order_execution_records": [],
        }
        sample.update(order or {})
        frame = dumps({"type": "Account", "sub_type": "order_info", "order": sample})
        return await self.send_each(self.push_targets(key), frame)

    async def push_points(self, key: str, delta: int = 150, **extra: Any) -> int:
        """Send a ``dlta_points`` event; the account's running totals grow by ``delta``."""
        account = self.account(key)
        account.points_total += delta
        account.season_points += delta
        points: dict[str, Any] = {
            "delta": str(delta),
            "new_total": str(account.points_total),
            "season_points": str(account.season_points),
            "source_type": "trade",
            "source_ref": str(uuid.uuid4()),
            "league": "gold",
        }
        points.update(extra)
        frame = dumps({"type": "Account", "sub_type": "dlta_points", "dlta_points": points})
        return await self.send_each(self.push_targets(key), frame)

    async def remove_asset(self, key: str, asset: str) -> bool:
        return self.account(key).balances.pop(asset.lower(), None) is not None

    def truth(self, key: str) -> list[TruthRow]:
        return [
            TruthRow("", asset.upper(), b.free + b.locked, b.free, b.locked)
            for asset, b in sorted(self.account(key).balances.items())
        ]

    def native_truth(self, key: str) -> dict[str, Any]:
        balances = sorted(self.account(key).balances.items())
        return {"balance": [b.entry(a, as_strings=True) for a, b in balances]}

    # ------------------------------------------------------------------ routes

    def add_venue_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(WS_PATH, self._ws)
        router.add_get(REST_PATH, self._rest)
        account = "/_sim/accounts/{key}"
        router.add_post(account + "/order", control_route(self._control_order))
        router.add_post(account + "/points", control_route(self._control_points))

    async def on_open(self, conn: Connection) -> None:
        conn.ready = True

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("api_key")
        if not self.is_accepted(key):
            self.note_refused(key)
            return venue_error(401, "invalid api key")
        return await self.serve_websocket(request, key)

    async def _rest(self, request: web.Request) -> web.Response:
        key = request.headers.get("X-API-KEY")
        if not self.is_accepted(key):
            return venue_error(401, "invalid api key")
        assert key is not None
        balances = sorted(self.account(key).balances.items())
        return json_ok([b.entry(a, as_strings=self.amounts_as_strings) for a, b in balances])

    async def _control_order(self, request: web.Request, body: dict[str, Any]) -> Any:
        return {"frames": await self.push_order(request.match_info["key"], body)}

    async def _control_points(self, request: web.Request, body: dict[str, Any]) -> Any:
        delta = pick(body, "delta", int, 150)
        extra = {k: v for k, v in body.items() if k != "delta"}
        return {"frames": await self.push_points(request.match_info["key"], delta, **extra)}

    # ------------------------------------------------------------------ faults, bursts

    def _pick_asset(self, account: DeltaDefiAccount, asset: str | None) -> str:
        if asset:
            return asset.lower()
        return "ada" if "ada" in account.balances or not account.balances else min(account.balances)

    def prepare_burst(self, key: str, count: int, asset: str | None) -> BurstPlan:
        account = self.account(key)
        name = self._pick_asset(account, asset)
        start = account.balances.get(name) or parse_balance(name, "0", None)
        as_strings = self.amounts_as_strings
        frees = counting_amounts(start.free, count, PLACES, quote=as_strings)
        entry = start.entry(name, as_strings=as_strings)
        entry["free"] = "<free>"
        template = FrameTemplate(
            {"type": "Account", "sub_type": "balance", "balance": [entry]}, ("free",)
        )
        chunks = chunk_frames([template.render(free) for free in frees])
        final = DeltaDefiBalance(start.asset_unit, decimal_of(frees[-1]), start.locked)

        def commit() -> None:
            account.balances[name] = final

        return BurstPlan(self.push_targets(key), count, lambda _conn: chunks, commit)

    def malformed_payload(self, conn: Connection, key: str, kind: str) -> bytes | None:
        account = self.account(key)
        name = self._pick_asset(account, None)
        current = account.balances.get(name) or parse_balance(name, "0", None)
        wrong = DeltaDefiBalance(current.asset_unit, current.free + 1, current.locked).entry(name)
        if kind == "bad_json":
            return b'{"type":"Account","sub_type":"balance","balance":[{"asset":'
        if kind == "oversize":
            padding = "x" * self.oversize_bytes
            return dumps(
                {"type": "Account", "sub_type": "balance", "balance": [wrong], "padding": padding}
            )
        body: dict[str, Any] = {"type": "Account", "sub_type": "balance"}
        if kind == "wrong_types":
            body["balance"] = [{**wrong, "free": {"value": 1}, "locked": [0]}]
        elif kind == "negative":
            body["balance"] = [{**wrong, "free": Decimal(-5)}]
        elif kind == "non_numeric":
            body["balance"] = [{**wrong, "free": "lots"}]
        elif kind == "unknown_event":
            body = {"type": "Account", "sub_type": "mystery_event", "balance": [wrong]}
        else:  # half_valid
            body["balance"] = [wrong, {**wrong, "asset": "zzz", "free": Decimal(-1)}]
        return dumps(body)
