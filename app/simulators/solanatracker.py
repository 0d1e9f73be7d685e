"""SolanaTracker Datastream simulator: ``/<datastream key>`` rooms and wallet REST.

The datastream key is the URL path; an unknown or refused key gets HTTP 401 before the
upgrade. Clients join and leave rooms::

    {"type": "join", "room": "wallet:<addr>:balance"}  ->  {"type": "joined", "room": ...}
    {"type": "leave", "room": ...}                      ->  {"type": "left", "room": ...}

Nothing else is sent on join. A connection only receives messages for rooms it joined:

- ``wallet:<addr>:balance`` (and ``wallet:<addr>:<mint>:balance``)::

    {"type": "message", "room": "wallet:FV1r...WyV1:balance",
     "data": {"wallet": "FV1r...WyV1", "token": "Es9v...wNYB", "amount": 78816.844996}}

- ``transaction:<mint>``: ``data`` is a list of swaps shaped like the venue's
  (``tx, amount, priceUsd, volume, solVolume, type, wallet, time, program, token:{from,
  to}``), all prices and amounts bare JSON numbers.

Heartbeat: besides protocol pings, the server sends ``{"type": "ping"}`` every
``app_ping_interval`` seconds and drops a client that has not answered
``{"type": "pong"}`` within ``app_pong_timeout`` (0 disables the drop). The real server's
rate and whether it drops silent clients are UNCONFIRMED (VENUES.md); the simulator
assumes it does, so a client that ignores the ping is caught in tests.

Balances belong to wallets (on-chain state shared by every key); an account is a
datastream key, an optional data-API key and the wallets it tracks. REST
``GET /wallet/<owner>/basic`` (``x-api-key`` = a data-API key) answers
``{"tokens": [{"address", "balance", "value", "price": {"usd", "quote"}}], "total",
"totalSol"}``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from app.simulators.connection import Connection
from app.simulators.control import control_route, json_error, json_ok, pick, pick_mapping
from app.simulators.server import AccountBase, BurstPlan, VenueSimulator
from app.simulators.types import Amount, JsonObject, SimulatorError, TruthRow
from app.simulators.wire import (
    FrameTemplate,
    chunk_frames,
    counting_amounts,
    decimal_of,
    dumps,
    now_ms,
    to_decimal,
)

REST_PATH = "/wallet/{owner}/basic"
ADDRESS_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
MAX_ROOM = 200

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
USDT = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"
WSOL = "So11111111111111111111111111111111111111112"
TRUMP = "6p6xgHyF7AeE6TZkSmFsko444wqoP15icUSqi2jfGiPN"
BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    name: str
    symbol: str
    decimals: int
    image: str = ""


TOKENS: dict[str, TokenInfo] = {
    USDC: TokenInfo("USD Coin", "USDC", 6),
    USDT: TokenInfo("USDT", "USDT", 6),
    WSOL: TokenInfo("Wrapped SOL", "SOL", 9),
    TRUMP: TokenInfo("OFFICIAL TRUMP", "TRUMP", 6),
    BONK: TokenInfo("Bonk", "Bonk", 5),
}
"""Metadata the transactions room reports for well-known mints."""

INITIAL_PRICES: dict[str, Decimal] = {
    USDC: Decimal(1),
    USDT: Decimal(1),
    WSOL: Decimal("150.25"),
    TRUMP: Decimal("6.002467911111111"),
    BONK: Decimal("0.00002137"),
}


def token_info(mint: str) -> TokenInfo:
    return TOKENS.get(mint) or TokenInfo(f"Token {mint[:4]}", mint[:4].upper(), 6)


def check_address(value: object, what: str) -> str:
    if not isinstance(value, str) or not ADDRESS_RE.match(value):
        raise SimulatorError(f"{what}: not a Solana address (base58, 32-44 chars)")
    return value


def balance_room(wallet: str) -> str:
    return f"wallet:{wallet}:balance"


def token_room(wallet: str, mint: str) -> str:
    return f"wallet:{wallet}:{mint}:balance"


def transaction_room(mint: str) -> str:
    return f"transaction:{mint}"


@dataclass(eq=False)
class SolanaAccount(AccountBase):
    api_key: str
    data_api_key: str | None = None
    wallets: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.api_key

    def credentials(self) -> dict[str, Any]:
        out: dict[str, Any] = {"api_key": self.api_key, "wallets": list(self.wallets)}
        if self.data_api_key:
            out["data_api_key"] = self.data_api_key
        return out


class SolanaTrackerSimulator(VenueSimulator[SolanaAccount]):
    """SolanaTracker's Datastream (rooms) and its wallet REST endpoint."""

    venue = "solanatracker"
    ws_path = ""
    rest_path = REST_PATH
    malformed_kinds = (
        "bad_json",
        "wrong_types",
        "negative",
        "non_numeric",
        "unknown_event",
        "oversize",
        "invalid_wallet",
    )

    def __init__(
        self,
        *,
        seed: int | None = None,
        app_ping_interval: float = 30.0,
        app_pong_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.app_ping_interval = app_ping_interval
        self.app_pong_timeout = app_pong_timeout
        self._app_pongs: dict[Connection, asyncio.Event] = {}
        self.holdings: dict[str, dict[str, Decimal]] = {}
        self.prices: dict[str, Decimal] = dict(INITIAL_PRICES)
        self._members: dict[str, set[Connection]] = {}
        self._rng = random.Random(seed)

    # ------------------------------------------------------------------ accounts

    def add_account(
        self,
        api_key: str,
        data_api_key: str | None = None,
        wallets: Sequence[str] = (),
        balances: Mapping[str, Mapping[str, Amount]] | None = None,
    ) -> str:
        """Add a datastream key tracking ``wallets``; ``balances``: wallet -> mint -> amount."""
        account = SolanaAccount(
            api_key, data_api_key, [check_address(w, "wallet") for w in wallets]
        )
        self._add(account)
        if balances:
            self._apply(account, balances, replace=True)
        return api_key

    def add_account_json(self, body: JsonObject) -> str:
        api_key = pick(body, "api_key", str)
        if not api_key:
            raise SimulatorError("solanatracker account: api_key is required")
        wallets = pick(body, "wallets", list) or []
        return self.add_account(
            api_key, pick(body, "data_api_key", str), wallets, pick_mapping(body, "balances")
        )

    def _apply(
        self, account: SolanaAccount, balances: Mapping[str, object], *, replace: bool
    ) -> list[tuple[str, str, Decimal]]:
        """Validate everything first, then write: a bad entry changes nothing.

        ``replace`` (setting balances) empties each listed wallet first and starts
        tracking wallets the account did not list; a push must name tracked wallets.
        """
        parsed: list[tuple[str, str, Decimal]] = []
        for wallet, mints in balances.items():
            check_address(wallet, "wallet")
            if not replace and wallet not in account.wallets:
                raise SimulatorError(f"wallet {wallet} is not tracked by this account")
            if not isinstance(mints, Mapping):
                raise SimulatorError(f"balances of {wallet}: expected an object keyed by mint")
            for mint, amount in mints.items():
                check_address(mint, "mint")
                parsed.append((wallet, mint, to_decimal(amount, f"{wallet} {mint}")))
        for wallet in balances:
            if replace:
                self.holdings[wallet] = {}
            if wallet not in account.wallets:
                account.wallets.append(wallet)
        for wallet, mint, amount in parsed:
            self.holdings.setdefault(wallet, {})[mint] = amount
        return parsed

    def set_balances(self, key: str, balances: JsonObject) -> None:
        """Replace the holdings of every wallet listed (wallet -> mint -> amount)."""
        self._apply(self.account(key), balances, replace=True)

    async def push(self, key: str, changes: JsonObject) -> int:
        """Set amounts (wallet -> mint -> amount); one message per joined room."""
        account = self.account(key)
        sent = 0
        for wallet, mint, amount in self._apply(account, changes, replace=False):
            sent += await self._send_balance(wallet, mint, amount)
        return sent

    async def _send_balance(self, wallet: str, mint: str, amount: Decimal) -> int:
        sent = 0
        for room in (balance_room(wallet), token_room(wallet, mint)):
            data = {"wallet": wallet, "token": mint, "amount": amount}
            frame = dumps({"type": "message", "data": data, "room": room})
            sent += await self.send_each(list(self._members.get(room, ())), frame)
        return sent

    async def remove_asset(self, key: str, asset: str) -> bool:
        """Forget ``asset`` (a mint) in every wallet the account tracks."""
        removed = False
        for wallet in self.account(key).wallets:
            removed |= self.holdings.get(wallet, {}).pop(asset, None) is not None
        return removed

    def truth(self, key: str) -> list[TruthRow]:
        rows = []
        for wallet in self.account(key).wallets:
            for mint, amount in self.holdings.get(wallet, {}).items():
                rows.append(TruthRow(wallet, mint, amount, amount, Decimal(0)))
        return sorted(rows, key=lambda r: (r.wallet, r.asset))

    def native_truth(self, key: str) -> dict[str, Any]:
        return {
            wallet: {m: str(a) for m, a in sorted(self.holdings.get(wallet, {}).items())}
            for wallet in self.account(key).wallets
        }

    # ------------------------------------------------------------------ swaps

    def random_address(self, length: int = 44) -> str:
        return "".join(self._rng.choice(_B58) for _ in range(length))

    def swap(
        self,
        mint: str,
        price_usd: Decimal,
        *,
        side: str = "buy",
        amount: Decimal = Decimal(100),
        wallet: str | None = None,
        program: str = "raydium",
    ) -> dict[str, Any]:
        """One swap of ``amount`` of ``mint`` at ``price_usd``, shaped like the venue's."""
        info = token_info(mint)
        quote_mint = USDC if mint != USDC else WSOL
        quote = token_info(quote_mint)
        quote_price = self.prices.get(quote_mint, Decimal(1))
        volume = (amount * price_usd).quantize(Decimal("0.000001"))
        quote_amount = (volume / quote_price).quantize(Decimal(1).scaleb(-quote.decimals))
        sol_volume = (volume / self.prices[WSOL]).quantize(Decimal("0.000000001"))

        def leg(leg_mint: str, leg_info: TokenInfo, leg_amount: Decimal, usd: Decimal) -> Any:
            return {
                "name": leg_info.name,
                "symbol": leg_info.symbol,
                "image": leg_info.image,
                "decimals": leg_info.decimals,
                "amount": leg_amount,
                "address": leg_mint,
                "price": {"usd": usd},
            }

        token_leg = leg(mint, info, amount, price_usd)
        quote_leg = leg(quote_mint, quote, quote_amount, quote_price)
        return {
            "tx": self.random_address(88),
            "amount": amount,
            "priceUsd": price_usd,
            "solVolume": sol_volume,
            "volume": volume,
            "type": side,
            "wallet": wallet or self.random_address(),
            "time": now_ms(),
            "program": program,
            "token": (
                {"from": token_leg, "to": quote_leg}
                if side == "sell"
                else {"from": quote_leg, "to": token_leg}
            ),
        }

    async def push_swap(
        self,
        mint: str,
        price_usd: Amount,
        *,
        side: str = "buy",
        amount: Amount = 100,
        wallet: str | None = None,
    ) -> int:
        """Record ``price_usd`` for ``mint`` and send a swap to its transactions room."""
        check_address(mint, "mint")
        if side not in ("buy", "sell"):
            raise SimulatorError("side: buy or sell")
        if wallet is not None:
            check_address(wallet, "wallet")
        price = to_decimal(price_usd, "price_usd")
        self.prices[mint] = price
        swap = self.swap(mint, price, side=side, amount=to_decimal(amount, "amount"), wallet=wallet)
        room = transaction_room(mint)
        frame = dumps({"type": "message", "data": [swap], "room": room})
        return await self.send_each(list(self._members.get(room, ())), frame)

    # ------------------------------------------------------------------ connections

    async def on_open(self, conn: Connection) -> None:
        if self.app_ping_interval > 0:
            self._app_pongs[conn] = asyncio.Event()
            conn.tasks.append(asyncio.create_task(self._app_keepalive(conn)))

    async def _app_keepalive(self, conn: Connection) -> None:
        """Send ``{"type":"ping"}`` every ``app_ping_interval`` s; drop a client that has
        not answered ``{"type":"pong"}`` within ``app_pong_timeout`` s (0: never drop)."""
        pong = self._app_pongs[conn]
        while not conn.closed:
            await asyncio.sleep(self.app_ping_interval)
            if conn.stalled or conn.closed:
                continue
            pong.clear()
            if not await self.send_json(conn, {"type": "ping"}):
                continue
            if self.app_pong_timeout > 0:
                try:
                    await asyncio.wait_for(pong.wait(), self.app_pong_timeout)
                except TimeoutError:
                    conn.abort()
                    return

    async def on_text(self, conn: Connection, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind, room = message.get("type"), message.get("room")
        if kind == "pong":
            pong = self._app_pongs.get(conn)
            if pong is not None:
                pong.set()
            return
        if not isinstance(room, str) or not room or len(room) > MAX_ROOM:
            return
        if kind == "join":
            conn.rooms.add(room)
            self._members.setdefault(room, set()).add(conn)
            conn.ready = True
            await self.send_json(conn, {"type": "joined", "room": room})
        elif kind == "leave":
            conn.rooms.discard(room)
            self._members.get(room, set()).discard(conn)
            await self.send_json(conn, {"type": "left", "room": room})

    def on_close(self, conn: Connection) -> None:
        self._app_pongs.pop(conn, None)
        for room in conn.rooms:
            members = self._members.get(room)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self._members[room]

    def room_members(self, room: str) -> int:
        return len(self._members.get(room, ()))

    # ------------------------------------------------------------------ routes

    def add_venue_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(REST_PATH, self._rest)
        router.add_post("/_sim/swaps", control_route(self._control_swap))
        router.add_get("/{key}", self._ws)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        if not self.is_accepted(key):
            self.note_refused(key)
            return json_error(401, "invalid datastream key")
        return await self.serve_websocket(request, key)

    async def _rest(self, request: web.Request) -> web.Response:
        data_key = request.headers.get("x-api-key")
        accepted = data_key and any(
            a.data_api_key == data_key and self.is_accepted(a.key) for a in self._accounts.values()
        )
        if not accepted:
            return json_error(401, "invalid api key")
        owner = request.match_info["owner"]
        if not ADDRESS_RE.match(owner):
            return json_error(400, "invalid wallet address")
        tokens = []
        total = Decimal(0)
        for mint, amount in sorted(self.holdings.get(owner, {}).items()):
            price = self.prices.get(mint, Decimal(0))
            value = amount * price
            total += value
            tokens.append(
                {
                    "address": mint,
                    "balance": amount,
                    "value": value,
                    "price": {"quote": price / self.prices[WSOL], "usd": price},
                }
            )
        total_sol = (total / self.prices[WSOL]).quantize(Decimal("0.000000001"))
        return json_ok({"tokens": tokens, "total": total, "totalSol": total_sol})

    async def _control_swap(self, _request: web.Request, body: dict[str, Any]) -> Any:
        mint = pick(body, "mint", str)
        if mint is None or "price_usd" not in body:
            raise SimulatorError("mint and price_usd are required")
        frames = await self.push_swap(
            mint,
            body["price_usd"],
            side=pick(body, "side", str, "buy"),
            amount=body.get("amount", 100),
            wallet=pick(body, "wallet", str),
        )
        return {"frames": frames}

    # ------------------------------------------------------------------ faults, bursts

    def _first_wallet(self, key: str) -> str:
        account = self.account(key)
        if not account.wallets:
            raise SimulatorError("solanatracker: the account tracks no wallet")
        return account.wallets[0]

    def push_targets(self, key: str) -> list[Connection]:
        rooms = [balance_room(w) for w in self.account(key).wallets]
        return list({c for room in rooms for c in self._members.get(room, ())})

    def prepare_burst(self, key: str, count: int, asset: str | None) -> BurstPlan:
        wallet = self._first_wallet(key)
        held = self.holdings.setdefault(wallet, {})
        mint = asset or (USDC if USDC in held or not held else min(held))
        check_address(mint, "mint")
        amounts = counting_amounts(held.get(mint, Decimal(0)), count, token_info(mint).decimals)
        rooms = (balance_room(wallet), token_room(wallet, mint))
        cache: dict[str, list[bytes]] = {}

        def chunks_for(conn: Connection) -> list[bytes]:
            # Each frame names the room it is for: per-room frames, built once per room.
            room = rooms[0] if rooms[0] in conn.rooms else rooms[1]
            if room not in cache:
                data = {"wallet": wallet, "token": mint, "amount": "<amount>"}
                template = FrameTemplate(
                    {"type": "message", "data": data, "room": room}, ("amount",)
                )
                cache[room] = chunk_frames([template.render(a) for a in amounts])
            return cache[room]

        def commit() -> None:
            held[mint] = decimal_of(amounts[-1])

        targets = list({c for room in rooms for c in self._members.get(room, ())})
        return BurstPlan(targets, count, chunks_for, commit)

    def malformed_payload(self, conn: Connection, key: str, kind: str) -> bytes | None:
        wallets = [w for w in self.account(key).wallets if balance_room(w) in conn.rooms]
        if not wallets:
            return None
        wallet = wallets[0]
        room = balance_room(wallet)
        held = self.holdings.get(wallet, {})
        mint = USDC if USDC in held or not held else min(held)
        data: dict[str, Any] = {
            "wallet": wallet,
            "token": mint,
            "amount": held.get(mint, Decimal(0)) + 1,
        }
        message: dict[str, Any] = {"type": "message", "data": data, "room": room}
        if kind == "bad_json":
            return b'{"type":"message","room":"' + room.encode() + b'","data":{"amount":'
        if kind == "oversize":
            message["padding"] = "x" * self.oversize_bytes
        elif kind == "wrong_types":
            data["amount"] = {"value": 1}
        elif kind == "negative":
            data["amount"] = Decimal(-5)
        elif kind == "non_numeric":
            data["amount"] = "lots"
        elif kind == "unknown_event":
            message["type"] = "mystery"
        else:  # invalid_wallet
            data["wallet"] = "not-a-wallet-0OIl"
        return dumps(message)
