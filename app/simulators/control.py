"""The HTTP control API (``/_sim/...``) every simulator serves beside its venue routes.

It mirrors the in-process Python API one to one, for benchmarks and tests that run the
simulators in another process. Bodies and answers are JSON; amounts may be sent as
strings or numbers (numbers are read exactly) and are answered as strings.

Routes (``{key}`` is the account's credential, URL-encoded)::

    GET    /_sim                                  venue, URLs, account keys, malformed kinds
    GET    /_sim/accounts                         {"accounts": {key: credentials}}
    POST   /_sim/accounts                         add: credentials + "balances" -> 201 {"key"}
    DELETE /_sim/accounts/{key}                   forget the account, drop its connections
    GET    /_sim/accounts/{key}/truth             {"account", "balances": [row], "native"}
    PUT    /_sim/accounts/{key}/balances          replace the truth, send nothing
    POST   /_sim/accounts/{key}/push              change the truth and send -> {"frames"}
    DELETE /_sim/accounts/{key}/balances/{asset}  forget one currency -> {"removed"}
    POST   /_sim/accounts/{key}/burst             {"count", "asset"?} -> burst result
    POST   /_sim/accounts/{key}/malformed         {"kind"} -> {"frames"}
    POST   /_sim/accounts/{key}/drop              -> {"dropped"}
    POST   /_sim/accounts/{key}/refuse            {"refuse": bool = true}
    POST   /_sim/accounts/{key}/stall             {"stall": bool = true} -> {"stalled"}
    GET    /_sim/connections                      {"connections": {key: {open, total, refused}}}

Venue modules add their own with :func:`control_route`::

    POST   /_sim/accounts/{key}/sequence   sFOX {"kind": gap|reorder|duplicate, "skip"?}
    POST   /_sim/accounts/{key}/web3       sFOX {"address", "network", "currency", "balance"}
    POST   /_sim/accounts/{key}/order      DeltaDeFi order_info (fields override a sample)
    POST   /_sim/accounts/{key}/points     DeltaDeFi dlta_points {"delta"?, ...}
    POST   /_sim/accounts/{key}/bad_snapshot  BitoPro {"kind"?, "count"?}: next first frames
                                              with one unreadable currency
    POST   /_sim/swaps                     SolanaTracker {"mint", "price_usd", "side"?,
                                           "amount"?, "wallet"?}

``push`` and ``balances`` take the venue's change mapping, either bare or under
``"changes"``/``"balances"``. Errors answer ``{"error": message}`` with 400 (invalid
request) or 404 (unknown account).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from app.simulators.types import (
    BurstResult,
    ConnectionCounts,
    JsonObject,
    SimulatorError,
    TruthRow,
    UnknownAccount,
)
from app.simulators.wire import dumps, loads_exact

ControlCall = Callable[[web.Request, dict[str, Any]], Awaitable[Any]]

PREFIX = "/_sim"


class Controlled(Protocol):
    """What the control routes drive: a venue simulator
    (:class:`app.simulators.server.VenueSimulator`)."""

    @property
    def venue(self) -> str: ...
    @property
    def ws_url(self) -> str: ...
    @property
    def rest_url(self) -> str: ...
    @property
    def malformed_kinds(self) -> tuple[str, ...]: ...
    def account_keys(self) -> list[str]: ...
    def account(self, key: str) -> object: ...
    def credentials(self, key: str) -> dict[str, Any]: ...
    def add_account_json(self, body: JsonObject) -> str: ...
    def remove_account(self, key: str) -> None: ...
    def set_balances(self, key: str, balances: JsonObject) -> None: ...
    async def push(self, key: str, changes: JsonObject) -> int: ...
    async def remove_asset(self, key: str, asset: str) -> bool: ...
    def truth(self, key: str) -> list[TruthRow]: ...
    def native_truth(self, key: str) -> dict[str, Any]: ...
    def refuse_auth(self, key: str, refuse: bool = True) -> None: ...
    def drop(self, key: str) -> int: ...
    def stall(self, key: str, stalled: bool = True) -> int: ...
    async def send_malformed(self, key: str, kind: str) -> int: ...
    async def burst(self, key: str, count: int, asset: str | None = None) -> BurstResult: ...
    def all_connection_counts(self) -> dict[str, ConnectionCounts]: ...


def json_error(status: int, message: str) -> web.Response:
    """The simulators' error body: ``{"error": message}``."""
    return web.Response(
        status=status, body=dumps({"error": message}), content_type="application/json"
    )


def json_ok(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=dumps(body), content_type="application/json")


def pick(body: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    """A typed field of a control-API body (``SimulatorError`` when of the wrong type)."""
    value = body.get(name, default)
    if value is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    raise SimulatorError(f"{name}: expected {kind.__name__}")


def pick_mapping(body: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """An object field of a control-API body, or ``None`` when absent."""
    value = body.get(name)
    if value is None or isinstance(value, Mapping):
        return value
    raise SimulatorError(f"{name}: expected an object")


def control_route(
    call: ControlCall, status: int = 200
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap ``call(request, body)``: parse the JSON body, map errors, answer JSON."""

    async def handler(request: web.Request) -> web.Response:
        body: dict[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    parsed = loads_exact(raw)
                except (ValueError, json.JSONDecodeError):
                    return json_error(400, "body is not valid JSON")
                if not isinstance(parsed, dict):
                    return json_error(400, "body must be a JSON object")
                body = parsed
        try:
            result = await call(request, body)
        except UnknownAccount as exc:
            return json_error(404, str(exc))
        except SimulatorError as exc:
            return json_error(400, str(exc))
        return json_ok({} if result is None else result, status)

    return handler


def add_control_routes(router: web.UrlDispatcher, sim: Controlled) -> None:
    """Register the routes listed in the module docstring for ``sim``."""

    def key_of(request: web.Request) -> str:
        return request.match_info["key"]

    async def index(_r: web.Request, _b: dict[str, Any]) -> Any:
        return {
            "venue": sim.venue,
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
            "accounts": sim.account_keys(),
            "malformed_kinds": list(sim.malformed_kinds),
        }

    async def list_accounts(_r: web.Request, _b: dict[str, Any]) -> Any:
        return {"accounts": {key: sim.credentials(key) for key in sim.account_keys()}}

    async def add_account(_r: web.Request, body: dict[str, Any]) -> Any:
        return {"key": sim.add_account_json(body)}

    async def remove_account(request: web.Request, _b: dict[str, Any]) -> Any:
        sim.remove_account(key_of(request))

    async def truth(request: web.Request, _b: dict[str, Any]) -> Any:
        key = key_of(request)
        return {
            "account": key,
            "balances": [row.as_json() for row in sim.truth(key)],
            "native": sim.native_truth(key),
        }

    async def set_balances(request: web.Request, body: dict[str, Any]) -> Any:
        sim.set_balances(key_of(request), body.get("balances", body))

    async def push(request: web.Request, body: dict[str, Any]) -> Any:
        return {"frames": await sim.push(key_of(request), body.get("changes", body))}

    async def remove_asset(request: web.Request, _b: dict[str, Any]) -> Any:
        return {"removed": await sim.remove_asset(key_of(request), request.match_info["asset"])}

    async def burst(request: web.Request, body: dict[str, Any]) -> Any:
        count = pick(body, "count", int)
        if count is None:
            raise SimulatorError("count: required")
        if count > 10_000_000:
            raise SimulatorError("count: at most 10,000,000")
        result = await sim.burst(key_of(request), count, pick(body, "asset", str))
        return result.as_json()

    async def malformed(request: web.Request, body: dict[str, Any]) -> Any:
        kind = pick(body, "kind", str)
        if kind is None:
            raise SimulatorError("kind: required")
        return {"frames": await sim.send_malformed(key_of(request), kind)}

    async def drop(request: web.Request, _b: dict[str, Any]) -> Any:
        key = key_of(request)
        sim.account(key)
        return {"dropped": sim.drop(key)}

    async def refuse(request: web.Request, body: dict[str, Any]) -> Any:
        sim.refuse_auth(key_of(request), bool(pick(body, "refuse", bool, True)))

    async def stall(request: web.Request, body: dict[str, Any]) -> Any:
        key = key_of(request)
        sim.account(key)
        return {"stalled": sim.stall(key, bool(pick(body, "stall", bool, True)))}

    async def connections(_r: web.Request, _b: dict[str, Any]) -> Any:
        counts = sim.all_connection_counts()
        return {"connections": {key: c.as_json() for key, c in counts.items()}}

    account = PREFIX + "/accounts/{key}"
    router.add_get(PREFIX, control_route(index))
    router.add_get(PREFIX + "/accounts", control_route(list_accounts))
    router.add_post(PREFIX + "/accounts", control_route(add_account, status=201))
    router.add_delete(account, control_route(remove_account))
    router.add_get(account + "/truth", control_route(truth))
    router.add_put(account + "/balances", control_route(set_balances))
    router.add_post(account + "/push", control_route(push))
    router.add_delete(account + "/balances/{asset}", control_route(remove_asset))
    router.add_post(account + "/burst", control_route(burst))
    router.add_post(account + "/malformed", control_route(malformed))
    router.add_post(account + "/drop", control_route(drop))
    router.add_post(account + "/refuse", control_route(refuse))
    router.add_post(account + "/stall", control_route(stall))
    router.add_get(PREFIX + "/connections", control_route(connections))
