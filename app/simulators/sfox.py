"""sFOX simulator: the ``/ws`` feed (authenticate, subscribe, balances) and REST balances.

Protocol, per connection:

1. client ``{"type": "authenticate", "apiKey": key}`` -> ``{"type": "success",
   "sequence": 1, "timestamp": <19-digit ns>, "payload": {"action": "authenticate"},
   "action": "authenticate"}``, or the same shape with ``"type": "error"``;
2. client ``{"type": "subscribe", "feeds": ["private.user.balances"]}`` ->
   ``{"type": "success", "sequence": 2, "timestamp": ..., "payload": {"action":
   "subscribe", "feeds": [...]}}``;
3. balance messages on the same per-connection ``sequence`` counter::

    {"sequence": 10, "recipient": "private.user.balances",
     "timestamp": 1649899310281716289,
     "payload": [{"currency": "btc", "balance": "0.17572419", "available": "0.17572419",
                  "held": "0", "trading_wallet": "0.17572419", "collateral_wallet": "0",
                  "borrow_wallet": "0", "lending_wallet": "0"}]}

   and web3 wallets as one object ``{"address", "balance", "currency", "network",
   "type": "web3"}``.

A connection that has not subscribed within ``subscribe_timeout`` is closed (1008). The
stream sends only changed currencies; ``snapshot_on_subscribe`` also sends every currency
right after the subscribe reply (whether sFOX does is not documented). REST
``GET /v1/user/balance`` (``Authorization: Bearer <key>``) answers with JSON numbers and
holds only the trading account, so each web3 wallet of the account is announced on the
stream right after the subscription (after the currencies, when those are sent), one
message per wallet: a client learns the whole truth without waiting for a change.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from app.simulators.connection import Connection
from app.simulators.control import control_route, json_error, json_ok, pick, pick_mapping
from app.simulators.server import AccountBase, BurstPlan, VenueSimulator, parse_balances
from app.simulators.types import Amount, JsonObject, SimulatorError, TruthRow
from app.simulators.wire import (
    FrameTemplate,
    chunk_frames,
    counting_amounts,
    decimal_of,
    dumps,
    to_decimal,
)

WS_PATH = "/ws"
REST_PATH = "/v1/user/balance"
BALANCES_FEED = "private.user.balances"
PLACES = 8
SEQUENCE_FAULTS = ("gap", "reorder", "duplicate")


@dataclass(frozen=True, slots=True)
class SfoxBalance:
    """One currency of the trading account; ``balance == available + held``."""

    balance: Decimal
    available: Decimal
    held: Decimal
    trading_wallet: Decimal
    collateral_wallet: Decimal = Decimal(0)
    borrow_wallet: Decimal = Decimal(0)
    lending_wallet: Decimal = Decimal(0)

    def entry(self, currency: str, *, numbers: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"currency": currency}
        for f in fields(self):
            value: Decimal = getattr(self, f.name)
            out[f.name] = value if numbers else str(value)
        return out


@dataclass(frozen=True, slots=True)
class SfoxWeb3Balance:
    """One token in one web3 wallet; a separate wallet from the trading account."""

    address: str
    network: str
    currency: str
    balance: Decimal

    def payload(self, *, numbers: bool = False) -> dict[str, Any]:
        return {
            "address": self.address,
            "balance": self.balance if numbers else str(self.balance),
            "currency": self.currency,
            "network": self.network,
            "type": "web3",
        }


def parse_balance(currency: str, value: object, current: SfoxBalance | None) -> SfoxBalance:
    """A balance from ``"1.5"`` or ``{"balance", "available"?, "held"?, ...}``.

    Two of balance/available/held fix the third; a new balance keeps ``held``.
    """
    what = f"sfox {currency}"
    if not isinstance(value, Mapping):
        total = to_decimal(value, what)
        held = current.held if current and current.held <= total else Decimal(0)
        return SfoxBalance(total, total - held, held, total)
    given: Mapping[str, Any] = value
    if current is None and "balance" not in given:
        raise SimulatorError(f"{what}: balance is required for a new currency")
    base = current or SfoxBalance(Decimal(0), Decimal(0), Decimal(0), Decimal(0))
    total = to_decimal(given["balance"], f"{what} balance") if "balance" in given else base.balance
    if "available" in given:
        available = to_decimal(given["available"], f"{what} available")
        held = to_decimal(given["held"], f"{what} held") if "held" in given else total - available
    else:
        if "held" in given:
            held = to_decimal(given["held"], f"{what} held")
        else:
            held = min(base.held, total)  # a smaller balance cannot keep more on hold
        available = total - held
    if held < 0 or available < 0 or available + held != total:
        raise SimulatorError(f"{what}: balance must equal available + held")
    extra = {
        name: to_decimal(given[name], f"{what} {name}") if name in given else getattr(base, name)
        for name in ("collateral_wallet", "borrow_wallet", "lending_wallet")
    }
    trading = to_decimal(given["trading_wallet"], what) if "trading_wallet" in given else total
    return SfoxBalance(total, available, held, trading, **extra)


def parse_web3(value: Mapping[str, Any]) -> SfoxWeb3Balance:
    try:
        address, network, currency = value["address"], value["network"], value["currency"]
    except KeyError as exc:
        raise SimulatorError(f"sfox web3: {exc.args[0]} is required") from None
    if not all(isinstance(v, str) and v for v in (address, network, currency)):
        raise SimulatorError("sfox web3: address, network, currency must be strings")
    return SfoxWeb3Balance(address, network, currency, to_decimal(value.get("balance"), "web3"))


@dataclass(eq=False)
class SfoxAccount(AccountBase):
    api_key: str
    balances: dict[str, SfoxBalance] = field(default_factory=dict)
    web3: dict[tuple[str, str, str], SfoxWeb3Balance] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.api_key

    def credentials(self) -> dict[str, Any]:
        return {"api_key": self.api_key}


class SfoxSimulator(VenueSimulator[SfoxAccount]):
    """sFOX's WebSocket feed (auth message, subscription, sequenced envelopes) and REST."""

    venue = "sfox"
    ws_path = WS_PATH
    rest_path = REST_PATH
    default_ping_interval = 20.0
    default_pong_timeout = 10.0

    def __init__(
        self,
        *,
        subscribe_timeout: float = 30.0,
        snapshot_on_subscribe: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.subscribe_timeout = subscribe_timeout
        self.snapshot_on_subscribe = snapshot_on_subscribe

    # ------------------------------------------------------------------ accounts

    def add_account(
        self,
        api_key: str,
        balances: Mapping[str, object] | None = None,
        web3: list[Mapping[str, Any]] | None = None,
    ) -> str:
        """Add an account; ``web3`` lists ``{address, network, currency, balance}``."""
        account = SfoxAccount(api_key)
        account.balances = self._parse_all(balances or {}, {})
        for item in web3 or ():
            wallet = parse_web3(item)
            account.web3[(wallet.network, wallet.address, wallet.currency)] = wallet
        return self._add(account)

    def add_account_json(self, body: JsonObject) -> str:
        api_key = pick(body, "api_key", str)
        if not api_key:
            raise SimulatorError("sfox account: api_key is required")
        web3 = pick(body, "web3", list)
        if web3 is not None and not all(isinstance(w, Mapping) for w in web3):
            raise SimulatorError("web3: expected a list of objects")
        return self.add_account(api_key, pick_mapping(body, "balances"), web3)

    @staticmethod
    def _parse_all(
        values: Mapping[str, object], current: Mapping[str, SfoxBalance]
    ) -> dict[str, SfoxBalance]:
        return parse_balances(values, current, parse_balance, str.lower)

    def set_balances(self, key: str, balances: JsonObject) -> None:
        self.account(key).balances = self._parse_all(balances, {})

    async def push(self, key: str, changes: JsonObject) -> int:
        """Update the listed currencies; one balance message (a list) per connection."""
        account = self.account(key)
        parsed = self._parse_all(changes, account.balances)
        if not parsed:
            return 0
        account.balances.update(parsed)
        payload = [b.entry(cur) for cur, b in parsed.items()]
        return await self._send_sequenced(key, payload)

    async def push_web3(
        self, key: str, address: str, network: str, currency: str, balance: Amount
    ) -> int:
        """Set one web3 wallet balance and send it as a ``type: web3`` payload."""
        account = self.account(key)
        wallet = parse_web3(
            {"address": address, "network": network, "currency": currency, "balance": balance}
        )
        account.web3[(network, address, currency)] = wallet
        return await self._send_sequenced(key, wallet.payload())

    async def remove_asset(self, key: str, asset: str) -> bool:
        return self.account(key).balances.pop(asset.lower(), None) is not None

    def truth(self, key: str) -> list[TruthRow]:
        account = self.account(key)
        rows = [
            TruthRow("", cur.upper(), b.balance, b.available, b.held)
            for cur, b in account.balances.items()
        ]
        for w in account.web3.values():
            wallet = f"web3:{w.network}:{w.address}"
            rows.append(TruthRow(wallet, w.currency.upper(), w.balance, w.balance, Decimal(0)))
        return sorted(rows, key=lambda r: (r.wallet, r.asset))

    def native_truth(self, key: str) -> dict[str, Any]:
        account = self.account(key)
        return {
            "balances": [b.entry(cur) for cur, b in sorted(account.balances.items())],
            "web3": [w.payload() for _, w in sorted(account.web3.items())],
        }

    # ------------------------------------------------------------------ messages

    def push_targets(self, key: str) -> list[Connection]:
        return [c for c in self._conns.get(key, ()) if BALANCES_FEED in c.feeds]

    @staticmethod
    def envelope(seq: int, payload: Any) -> bytes:
        return dumps(
            {
                "sequence": seq,
                "recipient": BALANCES_FEED,
                "timestamp": time.time_ns(),
                "payload": payload,
            }
        )

    async def _send_sequenced(self, key: str, payload: Any) -> int:
        sent = 0
        for conn in self.push_targets(key):
            if conn.stalled or conn.closed:
                continue
            async with conn.lock:
                frame = self.envelope(conn.next_seq(), payload)
                try:
                    await conn.ws.send_frame(frame, WSMsgType.TEXT)
                except (ConnectionError, RuntimeError):
                    continue
            sent += 1
        return sent

    async def _reply(self, conn: Connection, kind: str, payload: dict[str, Any]) -> None:
        message: dict[str, Any] = {
            "type": kind,
            "sequence": conn.next_seq(),
            "timestamp": time.time_ns(),
            "payload": payload,
        }
        if payload.get("action") == "authenticate":
            message["action"] = "authenticate"
        await self.send_json(conn, message)

    async def on_open(self, conn: Connection) -> None:
        conn.tasks.append(asyncio.create_task(self._subscribe_deadline(conn)))

    async def _subscribe_deadline(self, conn: Connection) -> None:
        await asyncio.sleep(self.subscribe_timeout)
        if not conn.feeds and not conn.closed:
            await self.close_connection(conn, 1008, b"no subscription")

    async def on_text(self, conn: Connection, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            await self._reply(conn, "error", {"action": "unknown", "message": "invalid JSON"})
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "authenticate":
            await self._authenticate(conn, message.get("apiKey"))
        elif kind in ("subscribe", "unsubscribe"):
            feeds = message.get("feeds")
            if not isinstance(feeds, list) or not all(isinstance(f, str) for f in feeds):
                await self._reply(conn, "error", {"action": kind, "message": "feeds: list"})
                return
            await self._subscribe(conn, kind, feeds)
        else:
            await self._reply(conn, "error", {"action": str(kind), "message": "unknown type"})

    async def _authenticate(self, conn: Connection, api_key: object) -> None:
        if conn.key is not None:
            await self._reply(conn, "error", {"action": "authenticate"})
            return
        key = api_key if isinstance(api_key, str) else None
        if not self.is_accepted(key):
            self.note_refused(key)
            await self._reply(conn, "error", {"action": "authenticate"})
            return
        assert key is not None
        self.register(conn, key)
        await self._reply(conn, "success", {"action": "authenticate"})

    async def _subscribe(self, conn: Connection, kind: str, feeds: list[str]) -> None:
        if conn.key is None and any(f.startswith("private.") for f in feeds):
            await self._reply(conn, "error", {"action": kind, "feeds": feeds})
            return
        if kind == "subscribe":
            conn.feeds.update(feeds)
        else:
            conn.feeds.difference_update(feeds)
        conn.ready = BALANCES_FEED in conn.feeds
        await self._reply(conn, "success", {"action": kind, "feeds": feeds})
        if kind == "subscribe" and BALANCES_FEED in feeds:
            assert conn.key is not None
            account = self.account(conn.key)
            if self.snapshot_on_subscribe:
                balances = sorted(account.balances.items())
                entries = [b.entry(c) for c, b in balances]
                await self.send(conn, self.envelope(conn.next_seq(), entries))
            for _, wallet in sorted(account.web3.items()):
                await self.send(conn, self.envelope(conn.next_seq(), wallet.payload()))

    # ------------------------------------------------------------------ routes

    def add_venue_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(WS_PATH, self._ws)
        router.add_get(REST_PATH, self._rest)
        account = "/_sim/accounts/{key}"
        router.add_post(account + "/sequence", control_route(self._control_sequence))
        router.add_post(account + "/web3", control_route(self._control_web3))

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        return await self.serve_websocket(request, None)

    async def _rest(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else None
        if not self.is_accepted(key):
            return json_error(401, "invalid API key")
        assert key is not None
        balances = sorted(self.account(key).balances.items())
        return json_ok([b.entry(cur, numbers=True) for cur, b in balances])

    async def _control_sequence(self, request: web.Request, body: dict[str, Any]) -> Any:
        kind = pick(body, "kind", str)
        skip = pick(body, "skip", int, 5)
        return {"frames": await self.sequence_fault(request.match_info["key"], kind, skip)}

    async def _control_web3(self, request: web.Request, body: dict[str, Any]) -> Any:
        wallet = parse_web3(body)
        key = request.match_info["key"]
        frames = await self.push_web3(
            key, wallet.address, wallet.network, wallet.currency, wallet.balance
        )
        return {"frames": frames}

    # ------------------------------------------------------------------ faults, bursts

    async def sequence_fault(self, key: str, kind: str | None, skip: int = 5) -> int:
        """Break the sequence on each subscribed connection; the truth does not change.

        ``gap`` skips ``skip`` numbers before the next message, ``reorder`` sends two
        messages with their sequences swapped, ``duplicate`` sends one message twice.
        The messages repeat current balances, so a service that resyncs ends up right.
        """
        account = self.account(key)
        if kind not in SEQUENCE_FAULTS:
            raise SimulatorError(f"kind: one of {', '.join(SEQUENCE_FAULTS)}")
        if skip < 1:
            raise SimulatorError("skip: at least 1")
        entries = [b.entry(cur) for cur, b in sorted(account.balances.items())] or [
            SfoxBalance(Decimal(0), Decimal(0), Decimal(0), Decimal(0)).entry("usd")
        ]
        sent = 0
        for conn in self.push_targets(key):
            if conn.stalled or conn.closed:
                continue
            async with conn.lock:
                if kind == "gap":
                    conn.seq += skip
                    frames = [self.envelope(conn.next_seq(), entries[:1])]
                elif kind == "duplicate":
                    frame = self.envelope(conn.next_seq(), entries[:1])
                    frames = [frame, frame]
                else:
                    first = self.envelope(conn.next_seq(), entries[:1])
                    second = self.envelope(conn.next_seq(), entries[-1:])
                    frames = [second, first]
                try:
                    for frame in frames:
                        await conn.ws.send_frame(frame, WSMsgType.TEXT)
                except (ConnectionError, RuntimeError):
                    continue
            sent += len(frames)
        return sent

    def prepare_burst(self, key: str, count: int, asset: str | None) -> BurstPlan:
        account = self.account(key)
        cur = (asset or "").lower() or self._default_currency(account)
        start = account.balances.get(cur) or SfoxBalance(
            Decimal(0), Decimal(0), Decimal(0), Decimal(0)
        )
        totals = counting_amounts(start.balance, count, PLACES, quote=True)
        availables = counting_amounts(start.available, count, PLACES, quote=True)
        template = FrameTemplate(
            {
                "sequence": "<seq>",
                "recipient": BALANCES_FEED,
                "timestamp": "<ts>",
                "payload": [
                    {
                        "currency": cur,
                        "balance": "<balance>",
                        "available": "<available>",
                        "held": str(start.held),
                        "trading_wallet": "<trading>",
                        "collateral_wallet": str(start.collateral_wallet),
                        "borrow_wallet": str(start.borrow_wallet),
                        "lending_wallet": str(start.lending_wallet),
                    }
                ],
            },
            ("seq", "ts", "balance", "available", "trading"),
        )
        final = replace(
            start,
            balance=decimal_of(totals[-1]),
            available=decimal_of(availables[-1]),
            trading_wallet=decimal_of(totals[-1]),
        )

        def chunks_for(conn: Connection) -> list[bytes]:
            # Sequences are per connection, so each connection gets its own frames.
            first = conn.seq + 1
            conn.seq += count
            stamp = time.time_ns()
            render = template.render
            return chunk_frames(
                [
                    render(b"%d" % (first + i), b"%d" % (stamp + i), total, available, total)
                    for i, (total, available) in enumerate(zip(totals, availables, strict=True))
                ]
            )

        def commit() -> None:
            account.balances[cur] = final

        return BurstPlan(self.push_targets(key), count, chunks_for, commit)

    @staticmethod
    def _default_currency(account: SfoxAccount) -> str:
        return "btc" if "btc" in account.balances or not account.balances else min(account.balances)

    def malformed_payload(self, conn: Connection, key: str, kind: str) -> bytes | None:
        account = self.account(key)
        cur = self._default_currency(account)
        current = account.balances.get(cur) or SfoxBalance(
            Decimal(0), Decimal(0), Decimal(0), Decimal(0)
        )
        wrong = SfoxBalance(
            current.balance + 1, current.available + 1, current.held, current.trading_wallet + 1
        ).entry(cur)
        # Frames that cannot be read carry no sequence, so they do not consume one.
        if kind == "bad_json":
            return b'{"sequence":' + str(conn.seq + 1).encode() + b',"payload":[{"currency":'
        if kind == "oversize":
            return dumps(
                {
                    "recipient": BALANCES_FEED,
                    "timestamp": time.time_ns(),
                    "payload": [wrong],
                    "padding": "x" * self.oversize_bytes,
                }
            )
        bad: Any
        recipient = BALANCES_FEED
        if kind == "wrong_types":
            bad = [{**wrong, "balance": {"value": "1"}, "available": True}]
        elif kind == "negative":
            bad = [{**wrong, "balance": "-5", "available": "-5", "trading_wallet": "-5"}]
        elif kind == "non_numeric":
            bad = [{**wrong, "balance": "lots", "available": "NaN"}]
        elif kind == "unknown_event":
            recipient = "private.user.mystery"
            bad = [wrong]
        else:  # half_valid
            bad = [wrong, {**wrong, "currency": "zzz", "balance": "-1", "available": "-1"}]
        return dumps(
            {
                "sequence": conn.next_seq(),
                "recipient": recipient,
                "timestamp": time.time_ns(),
                "payload": bad,
            }
        )
