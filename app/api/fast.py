"""The fast read path: ``GET /v1/balances[/{account}]`` without the framework's machinery.

Where it sits: an ASGI middleware inside the :class:`~app.auth.RequestGuard` (so auth and
size caps apply first) and in front of the FastAPI routes. These are the hot reads (SPEC
§16 compares them with a bare ASGI app), and their answer is already a cached byte string
in the hub. The parameters are read with the routes' own parsing (:mod:`app.api.params`);
anything this path does not fully accept (an unknown or invalid parameter, an unknown
account, a hub not loaded yet, a CSV request) goes on to the route
(:mod:`app.api.routes.balances`), which gives the same answer or the proper error.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import BadParam
from app.api.params import TRUE_FALSE, account_list, asset_list
from app.services import Services


class FastBalanceReads:
    """Answers the plain balance reads from the hub's cached body; passes on the rest."""

    _PREFIX = "/v1/balances"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(self._PREFIX):
                body = self._answer(scope, path)
                if body is not None:
                    headers = [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope, path: str) -> bytes | None:
        rt: Services | None = getattr(scope["app"].state, "services", None)
        if rt is None or not rt.hub.loaded:
            return None
        for name, value in scope["headers"]:
            if name == b"accept" and b"text/csv" in value:
                return None  # CSV is rendered by the route (format=csv falls through below)
        hub = rt.hub
        accounts: list[str] | None = None
        single = path != self._PREFIX
        if single:
            if path[len(self._PREFIX)] != "/":
                return None
            name = path[len(self._PREFIX) + 1 :]
            if not hub.has_account(name):
                return None
            accounts = [name]
        account_values: list[str] = []
        asset_values: list[str] = []
        nonzero = False
        raw: bytes = scope.get("query_string", b"")
        if raw:
            for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
                if key == "asset":
                    asset_values.append(value)
                elif key == "account" and not single:
                    account_values.append(value)
                elif key == "nonzero" and value in TRUE_FALSE:
                    nonzero = TRUE_FALSE[value]
                else:
                    return None
        try:
            if not single:
                accounts = account_list(account_values or None)
            assets = asset_list(asset_values or None)
        except BadParam:
            return None
        return hub.balances_body(accounts, assets, nonzero)
