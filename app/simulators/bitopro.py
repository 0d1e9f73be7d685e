"""BitoPro simulator: the account-balance stream and ``GET /v3/accounts/balance``.

Auth is three headers on the upgrade request (and on REST), checked the venue's way:

- ``X-BITOPRO-APIKEY``: a known key;
- ``X-BITOPRO-PAYLOAD``: standard Base64 of compact JSON ``{"identity", "nonce"}``, where
  identity is the account's email and nonce a Unix time in ms, within ``nonce_skew``
  seconds of the simulator's clock and strictly greater than the last nonce accepted for
  that key (WebSocket upgrades and REST calls share the count);
- ``X-BITOPRO-SIGNATURE``: lowercase hex HMAC-SHA384, key = API secret, message = the
  Base64 payload string.

Anything else is refused before the upgrade: HTTP 401 ``{"error": ...}``, no 101. REST
GETs also accept a payload of ``{"nonce"}`` alone, as ccxt signs them.

The first frame of a connection lists every currency; later frames only the changed
ones. A frame, as the venue documents it::

    {"event": "ACCOUNT_BALANCE", "eventID": "dadf4ac1-665a-4f39-a139-ab95da102374",
     "timestamp": 1639553303365, "datetime": "2021-12-15T07:28:23.365Z",
     "data": {"ADA": {"currency": "ADA", "amount": "999999999999.99999999",
                      "available": "999999999999.99999999", "stake": "0",
                      "tradable": true}}}

The server pings every 20 s and drops a client that has not answered within 5 s.

Fault: :meth:`BitoproSimulator.bad_snapshot` (control API
``POST /_sim/accounts/<key>/bad_snapshot {"kind", "count"}``) makes the first frame of
the next ``count`` connections unreadable in one currency, the rest of it valid: kinds
``negative`` (an amount of ``"-1"``), ``unknown_code`` (a currency ``USDT(ERC20)``) and
``tradable_string`` (``"tradable": "true"``). Later frames are sent as usual.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from aiohttp import web

from app.simulators.connection import Connection
from app.simulators.control import control_route, json_error, json_ok, pick, pick_mapping
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

WS_PATH = "/ws/v1/pub/auth/account-balance"
REST_PATH = "/v3/accounts/balance"
EVENT = "ACCOUNT_BALANCE"
PLACES = 8
BAD_SNAPSHOT_KINDS = ("negative", "unknown_code", "tradable_string")


def encode_payload(identity: str, nonce: int) -> str:
    """The ``X-BITOPRO-PAYLOAD`` header: Base64 of compact JSON."""
    body = json.dumps({"identity": identity, "nonce": nonce}, separators=(",", ":"))
    return base64.b64encode(body.encode()).decode()


def sign_payload(api_secret: str, payload: str) -> str:
    """The ``X-BITOPRO-SIGNATURE`` header for a Base64 payload string."""
    return hmac.new(api_secret.encode(), payload.encode(), hashlib.sha384).hexdigest()


def auth_headers(api_key: str, api_secret: str, identity: str, nonce: int) -> dict[str, str]:
    """All three auth headers, as a BitoPro client sends them."""
    payload = encode_payload(identity, nonce)
    return {
        "X-BITOPRO-APIKEY": api_key,
        "X-BITOPRO-PAYLOAD": payload,
        "X-BITOPRO-SIGNATURE": sign_payload(api_secret, payload),
    }


@dataclass(frozen=True, slots=True)
class BitoproBalance:
    """One currency as BitoPro reports it; locked is ``amount - available``."""

    amount: Decimal
    available: Decimal
    stake: Decimal = Decimal(0)
    tradable: bool = True

    def entry(self, currency: str) -> dict[str, Any]:
        return {
            "currency": currency,
            "amount": str(self.amount),
            "available": str(self.available),
            "stake": str(self.stake),
            "tradable": self.tradable,
        }


def parse_balance(currency: str, value: object, current: BitoproBalance | None) -> BitoproBalance:
    """A balance from ``"1.5"`` or ``{"amount", "available"?, "stake"?, "tradable"?}``.

    Missing fields keep their current value; a new currency needs ``amount`` (available
    then defaults to the whole amount).
    """
    what = f"bitopro {currency}"
    if not isinstance(value, Mapping):
        amount = to_decimal(value, what)
        return BitoproBalance(amount, amount, current.stake if current else Decimal(0))
    fields: Mapping[str, Any] = value
    if current is None:
        if "amount" not in fields:
            raise SimulatorError(f"{what}: amount is required for a new currency")
        current = BitoproBalance(Decimal(0), Decimal(0))
    amount = current.amount
    available = current.available
    if "amount" in fields:
        amount = to_decimal(fields["amount"], f"{what} amount")
        # A new amount keeps the locked part unless told otherwise.
        available = max(Decimal(0), amount - (current.amount - current.available))
    if "available" in fields:
        available = to_decimal(fields["available"], f"{what} available")
    stake = to_decimal(fields["stake"], f"{what} stake") if "stake" in fields else current.stake
    tradable = fields.get("tradable", current.tradable)
    if not isinstance(tradable, bool):
        raise SimulatorError(f"{what} tradable: expected true or false")
    result = BitoproBalance(amount, available, stake, tradable)
    if result.available > result.amount:
        raise SimulatorError(f"{what}: available exceeds amount")
    return result


@dataclass(eq=False)
class BitoproAccount(AccountBase):
    api_key: str
    api_secret: str
    email: str
    balances: dict[str, BitoproBalance] = field(default_factory=dict)
    last_nonce: int = -1

    @property
    def key(self) -> str:
        return self.api_key

    def credentials(self) -> dict[str, Any]:
        return {"api_key": self.api_key, "api_secret": self.api_secret, "email": self.email}


class BitoproSimulator(VenueSimulator[BitoproAccount]):
    """BitoPro's account-balance WebSocket and REST balance endpoint."""

    venue = "bitopro"
    ws_path = WS_PATH
    rest_path = REST_PATH
    default_ping_interval = 20.0
    default_pong_timeout = 5.0

    def __init__(
        self,
        *,
        nonce_skew: float = 30.0,
        clock_ms: Callable[[], int] = now_ms,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.nonce_skew = nonce_skew
        self.clock_ms = clock_ms
        self._bad_snapshots: dict[str, tuple[str, int]] = {}

    # ------------------------------------------------------------------ accounts

    def add_account(
        self,
        api_key: str,
        api_secret: str,
        email: str,
        balances: Mapping[str, object] | None = None,
    ) -> str:
        """Add an account; ``balances`` maps currency to ``"1.5"`` or a field mapping."""
        account = BitoproAccount(api_key, api_secret, email)
        account.balances = self._parse_all(balances or {}, {})
        return self._add(account)

    def add_account_json(self, body: JsonObject) -> str:
        try:
            api_key, api_secret, email = body["api_key"], body["api_secret"], body["email"]
        except KeyError as exc:
            raise SimulatorError(f"bitopro account: {exc.args[0]} is required") from None
        if not all(isinstance(v, str) and v for v in (api_key, api_secret, email)):
            raise SimulatorError("bitopro account: api_key, api_secret, email must be strings")
        return self.add_account(api_key, api_secret, email, pick_mapping(body, "balances"))

    @staticmethod
    def _parse_all(
        values: Mapping[str, object], current: Mapping[str, BitoproBalance]
    ) -> dict[str, BitoproBalance]:
        return parse_balances(values, current, parse_balance, str.upper)

    def set_balances(self, key: str, balances: JsonObject) -> None:
        account = self.account(key)
        account.balances = self._parse_all(balances, {})

    async def push(self, key: str, changes: JsonObject) -> int:
        """Update the listed currencies and send one frame holding just those."""
        account = self.account(key)
        parsed = self._parse_all(changes, account.balances)
        if not parsed:
            return 0
        account.balances.update(parsed)
        return await self.send_each(self.push_targets(key), self.frame(parsed))

    async def remove_asset(self, key: str, asset: str) -> bool:
        return self.account(key).balances.pop(asset.upper(), None) is not None

    def truth(self, key: str) -> list[TruthRow]:
        return [
            TruthRow("", cur, b.amount, b.available, b.amount - b.available)
            for cur, b in sorted(self.account(key).balances.items())
        ]

    def native_truth(self, key: str) -> dict[str, Any]:
        return {cur: b.entry(cur) for cur, b in sorted(self.account(key).balances.items())}

    # ------------------------------------------------------------------ frames

    @staticmethod
    def envelope(data: Mapping[str, Any], event: str = EVENT, **extra: Any) -> bytes:
        """A serialised frame around ``data`` (currency -> entry), stamped now."""
        ms = now_ms()
        frame = {
            "event": event,
            "eventID": str(uuid.uuid4()),
            "timestamp": ms,
            "datetime": iso_ms(ms),
            "data": data,
        }
        return dumps({**frame, **extra})

    def frame(self, balances: Mapping[str, BitoproBalance]) -> bytes:
        return self.envelope({cur: b.entry(cur) for cur, b in balances.items()})

    async def on_open(self, conn: Connection) -> None:
        assert conn.key is not None
        snapshot = dict(sorted(self.account(conn.key).balances.items()))
        conn.ready = True
        fault = self._bad_snapshots.get(conn.key)
        if fault is not None:
            kind, left = fault
            if left <= 1:
                del self._bad_snapshots[conn.key]
            else:
                self._bad_snapshots[conn.key] = (kind, left - 1)
            await self.send(conn, self.bad_snapshot_frame(snapshot, kind))
            return
        await self.send(conn, self.frame(snapshot))

    def bad_snapshot(self, key: str, kind: str, count: int = 1) -> None:
        """Make the first frame of the next ``count`` connections of ``key`` unreadable
        in one currency (``count`` 0 clears it). The truth does not change."""
        self.account(key)
        if kind not in BAD_SNAPSHOT_KINDS:
            raise SimulatorError(f"bitopro: bad snapshot kind is one of {BAD_SNAPSHOT_KINDS}")
        if count < 0:
            raise SimulatorError("bitopro: count must not be negative")
        if count == 0:
            self._bad_snapshots.pop(key, None)
        else:
            self._bad_snapshots[key] = (kind, count)

    def bad_snapshot_frame(self, balances: Mapping[str, BitoproBalance], kind: str) -> bytes:
        """A full first frame with one unreadable currency (see :meth:`bad_snapshot`)."""
        data = {cur: b.entry(cur) for cur, b in balances.items()}
        if kind == "unknown_code":
            data["USDT(ERC20)"] = BitoproBalance(Decimal(5), Decimal(5)).entry("USDT(ERC20)")
        else:
            cur = min(data) if data else "BTC"
            entry = data.get(cur) or BitoproBalance(Decimal(1), Decimal(1)).entry(cur)
            if kind == "negative":
                entry = {**entry, "amount": "-1", "available": "0"}
            else:
                entry = {**entry, "tradable": "true"}
            data[cur] = entry
        return self.envelope(data)

    # ------------------------------------------------------------------ auth

    def check_auth(
        self, headers: Mapping[str, str], *, identity_optional: bool = False
    ) -> tuple[str | None, str]:
        """(key, "") when the three headers are valid, else (key or None, reason).

        ``identity_optional`` (REST GETs): BitoPro's docs sign ``{identity, nonce}``, ccxt
        signs ``{nonce}`` only; which one the venue insists on is UNCONFIRMED, so both are
        accepted there (an identity that is present must still match).
        """
        api_key = headers.get("X-BITOPRO-APIKEY")
        payload = headers.get("X-BITOPRO-PAYLOAD")
        signature = headers.get("X-BITOPRO-SIGNATURE")
        if not api_key or not payload or not signature:
            return None, "missing authentication headers"
        account = self._accounts.get(api_key)
        if account is None or not self.is_accepted(api_key):
            return api_key, "invalid API key"
        expected = sign_payload(account.api_secret, payload)
        if not hmac.compare_digest(expected, signature):
            return api_key, "invalid signature"
        try:
            body = json.loads(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            return api_key, "invalid payload"
        if not isinstance(body, dict):
            return api_key, "invalid payload"
        if not (identity_optional and "identity" not in body) and (
            body.get("identity") != account.email
        ):
            return api_key, "identity does not match the API key"
        nonce = body.get("nonce")
        if not isinstance(nonce, int) or isinstance(nonce, bool):
            return api_key, "invalid nonce"
        if abs(self.clock_ms() - nonce) > self.nonce_skew * 1000:
            return api_key, "nonce outside the allowed time window"
        if nonce <= account.last_nonce:
            return api_key, "nonce must increase"
        account.last_nonce = nonce
        return api_key, ""

    # ------------------------------------------------------------------ routes

    def add_venue_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(WS_PATH, self._ws)
        router.add_get(REST_PATH, self._rest)
        router.add_post(
            "/_sim/accounts/{key}/bad_snapshot", control_route(self._control_bad_snapshot)
        )

    async def _control_bad_snapshot(self, request: web.Request, body: dict[str, Any]) -> Any:
        kind = pick(body, "kind", str, "negative")
        count = pick(body, "count", int, 1)
        self.bad_snapshot(request.match_info["key"], kind, count)
        return {"kind": kind, "count": count}

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        key, reason = self.check_auth(request.headers)
        if reason or key is None:
            self.note_refused(key)
            return json_error(401, reason)
        return await self.serve_websocket(request, key)

    async def _rest(self, request: web.Request) -> web.Response:
        key, reason = self.check_auth(request.headers, identity_optional=True)
        if reason or key is None:
            return json_error(401, reason)
        data = []
        for cur, b in sorted(self.account(key).balances.items()):
            entry = b.entry(cur.lower())
            data.append(entry)
        return json_ok({"data": data})

    # ------------------------------------------------------------------ bursts, faults

    def _burst_currency(self, account: BitoproAccount, asset: str | None) -> str:
        if asset:
            return asset.upper()
        return "BTC" if "BTC" in account.balances or not account.balances else min(account.balances)

    def prepare_burst(self, key: str, count: int, asset: str | None) -> BurstPlan:
        account = self.account(key)
        cur = self._burst_currency(account, asset)
        start = account.balances.get(cur) or BitoproBalance(Decimal(0), Decimal(0))
        amounts = counting_amounts(start.amount, count, PLACES, quote=True)
        availables = counting_amounts(start.available, count, PLACES, quote=True)
        ms = now_ms()
        template = FrameTemplate(
            {
                "event": EVENT,
                "eventID": "<id>",
                "timestamp": ms,
                "datetime": iso_ms(ms),
                "data": {
                    cur: {
                        "currency": cur,
                        "amount": "<amount>",
                        "available": "<available>",
                        "stake": str(start.stake),
                        "tradable": start.tradable,
                    }
                },
            },
            ("id", "amount", "available"),
        )
        # Event ids keep the UUID form: a random prefix and a counter.
        id_format = b'"' + str(uuid.uuid4())[:24].encode() + b'%012x"'
        render = template.render
        chunks = chunk_frames(
            [
                render(id_format % i, amount, available)
                for i, (amount, available) in enumerate(zip(amounts, availables, strict=True))
            ]
        )
        final = replace(start, amount=decimal_of(amounts[-1]), available=decimal_of(availables[-1]))

        def commit() -> None:
            account.balances[cur] = final

        return BurstPlan(self.push_targets(key), count, lambda _conn: chunks, commit)

    def malformed_payload(self, conn: Connection, key: str, kind: str) -> bytes | None:
        account = self.account(key)
        cur = self._burst_currency(account, None)
        current = account.balances.get(cur) or BitoproBalance(Decimal(0), Decimal(0))
        # A plausible but wrong value: accepting any bad frame would corrupt the state.
        good = BitoproBalance(current.amount + 1, current.available + 1, current.stake).entry(cur)
        if kind == "bad_json":
            return b'{"event":"ACCOUNT_BALANCE","data":{"' + cur.encode() + b'":{"amount":"1'
        if kind == "oversize":
            return self.envelope({cur: good}, padding="x" * self.oversize_bytes)
        if kind == "unknown_event":
            return self.envelope({cur: good}, event="ACCOUNT_BALANCE_V9")
        if kind == "half_valid":
            other = "ZZZ" if cur != "ZZZ" else "YYY"
            bad = {"currency": other, "amount": "-1", "available": "0", "stake": "0"}
            return self.envelope({cur: good, other: bad})
        broken: dict[str, dict[str, Any]] = {
            "wrong_types": {"amount": {"value": "1"}, "available": True},
            "negative": {"amount": "-5", "available": "-5"},
            "non_numeric": {"amount": "lots", "available": "NaN"},
        }
        return self.envelope({cur: {**good, **broken[kind]}})
