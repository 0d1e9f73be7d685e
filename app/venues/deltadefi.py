"""DeltaDeFi account stream: the API key in the URL's query, account events pushed on connect.

Connecting subscribes to every account event; nothing is sent. Events are
``{"type": "Account", "sub_type": ...}`` (older docs spell the type ``account``; type
and sub_type are compared case-insensitively, as the official SDKs do): ``balance``
changes balances, ``order_info`` and ``dlta_points`` are re-broadcast as events. The
stream sends no snapshot, so every connection is seeded from REST. The key travels in
the URL: only ``log_url`` may be logged.
"""

from __future__ import annotations

from typing import Any, Final

from app.accounts import AccountConfig
from app.domain import (
    EXCHANGE_WALLET,
    AssetBalance,
    BalanceSnapshot,
    BalanceUpdate,
    ControlReply,
    Event,
    Venue,
    VenueEvent,
)
from app.venues import _wire as w
from app.venues import urls
from app.venues.base import HttpRequest, VenueSession

DEFAULT_WS_URL: Final = "wss://stream.deltadefi.io/accounts/stream"
DEFAULT_REST_URL: Final = "https://api.deltadefi.io"
REST_BALANCE_PATH: Final = "/accounts/balance"
_MAX_ASSET_UNIT = 256


class DeltadefiSession(VenueSession):
    """One DeltaDeFi connection: URL-key auth, then ``Account`` events."""

    venue = Venue.DELTADEFI

    def __init__(self, account: AccountConfig) -> None:
        super().__init__(account)

    def _api_key(self) -> str:
        return self.account.secret("api_key")

    def connect_request(self) -> HttpRequest:
        base = self.account.ws_url or DEFAULT_WS_URL
        url = urls.with_query_param(base, "api_key", urls.quote_segment(self._api_key()))
        log_url = urls.with_query_param(urls.redact_url(base), "api_key", urls.REDACTED)
        return HttpRequest("GET", url, log_url)

    def on_frame(self, raw: str | bytes) -> tuple[list[Event], list[str]]:
        """Read one account event (see :func:`_read_frame` for samples).

        A bare text ``ping`` (an application keepalive some clients use) is answered
        with ``pong``; a bare ``pong`` is accepted and ignored.
        """
        if raw in ("ping", b"ping"):
            return [ControlReply("ping", True)], ["pong"]
        if raw in ("pong", b"pong"):
            return [ControlReply("pong", True)], []
        events = w.decode(raw, _read_frame)
        return events, []

    def seed_requests(self) -> list[HttpRequest]:
        """``GET /accounts/balance``: every connection is seeded (the stream has no snapshot)."""
        base = (self.account.rest_url or DEFAULT_REST_URL).rstrip("/")
        url = base + REST_BALANCE_PATH
        return [HttpRequest("GET", url, urls.redact_url(url), {"X-API-KEY": self._api_key()})]

    def read_seed(self, request: HttpRequest, body: bytes) -> list[Event]:
        """``[{"asset": "ada", "asset_unit": "", "free": 10.5, "locked": 0}, ...]``."""
        return [w.decode(body, _read_rest)]


def _read_frame(doc: Any) -> list[Event]:
    """One ``Account`` event. A balance change, verbatim::

        {
          "type": "Account",
          "sub_type": "balance",
          "balance": [
            {
              "asset": "usdm",
              "asset_unit": "5066154a102ee037390c5236f78db23239b49c5748d3d349f3ccf04b55534458",
              "free": 1153.006812,
              "locked": 0
            },
            {
              "asset": "ada",
              "asset_unit": "",
              "free": 1383.52097,
              "locked": 0
            }
          ]
        }

    Points, verbatim::

        {
          "type": "Account",
          "sub_type": "dlta_points",
          "dlta_points": {
            "delta": "150",
            "new_total": "15150",
            "season_points": "5150",
            "source_type": "trade",
            "source_ref": "550e8400-e29b-41d4-a716-446655440000",
            "league": "gold"
          }
        }

    An order, verbatim::

        {
          "type": "Account",
          "sub_type": "order_info",
          "order": {
            "id": "550e8400-e29b-41d4-a716-446655440000",
            "account_id": "550e8400-e29b-41d4-a716-446655440001",
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
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "order_execution_records": []
          }
        }
    """
    doc = w.obj(doc, "frame")
    kind = doc.get("type")
    if type(kind) is not str:
        raise w.reject(w.SCHEMA, "type: expected a string")
    if kind.lower() != "account":
        raise w.reject(w.UNKNOWN_EVENT, f"type {kind[:40]!r} is not handled")
    raw_sub_type = doc.get("sub_type")
    # the official SDKs compare type and sub_type case-insensitively; so does the service
    sub_type = raw_sub_type.lower() if type(raw_sub_type) is str else raw_sub_type
    if sub_type == "balance":
        balances = _read_balances(doc.get("balance"), "balance")
        return [BalanceUpdate(balances)] if balances else []
    if sub_type == "order_info":
        order = w.obj(doc.get("order"), "order")
        return [VenueEvent("order", w.json_safe(order, "order"))]
    if sub_type == "dlta_points":
        points = w.obj(doc.get("dlta_points"), "dlta_points")
        return [VenueEvent("points", w.json_safe(points, "dlta_points"))]
    if type(raw_sub_type) is not str:
        raise w.reject(w.SCHEMA, "sub_type: expected a string")
    raise w.reject(w.UNKNOWN_EVENT, f"sub_type {raw_sub_type[:40]!r} is not handled")


def _read_balances(items: object, field: str) -> tuple[AssetBalance, ...]:
    balances = tuple([_read_asset(item) for item in w.arr(items, field)])
    w.unique_assets((b.asset for b in balances), len(balances), field)
    return balances


def _read_asset(item: object) -> AssetBalance:
    item = w.obj(item, "balance item")
    asset = w.ident(item.get("asset"), "asset").upper()
    unit = item.get("asset_unit", "")
    unit = "" if unit is None else w.text(unit, "asset_unit", max_len=_MAX_ASSET_UNIT)
    free = w.amount(item.get("free"), "free")
    locked = w.amount(item.get("locked"), "locked")
    total = w.add(free, locked) if locked else free
    return AssetBalance(EXCHANGE_WALLET, asset, total, free, locked, asset, {"asset_unit": unit})


def _read_rest(doc: Any) -> Event:
    if type(doc) is dict:  # tolerate an enveloped list
        doc = w.first_present(doc, "balance", "data", "balances")
    return BalanceSnapshot(EXCHANGE_WALLET, _read_balances(doc, "body"))
