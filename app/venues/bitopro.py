"""BitoPro private account-balance stream: signed upgrade headers, snapshot-then-changes frames.

Auth lives only in three headers on the WebSocket upgrade (and on the REST snapshot):
``X-BITOPRO-APIKEY``, ``X-BITOPRO-PAYLOAD`` (base64 of compact JSON ``{"identity", "nonce"}``)
and ``X-BITOPRO-SIGNATURE`` (hex HMAC-SHA384 of that base64 string). Nothing is sent after
connecting. The first frame of a connection carries every currency and replaces the
account; later frames carry changed currencies. This is the service's hot path: a later
frame with one currency in its usual form is read by
:meth:`BitoproSession.read_lone_balance` straight from ``orjson.loads`` (no events, no
per-frame dicts), and every other frame by the strict reader; the two agree on every
frame (tests/venues/test_bitopro_lone.py).

A first frame that cannot be read whole (one currency with ``"-1"``, an unknown code like
``USDT(ERC20)``, ``"tradable": "true"``...) is rejected whole like any frame, and the
session then refuses every later frame of the connection (reason ``snapshot_rejected``):
only the first frame lists every currency, so no later, partial frame may become the
replace. Applying the readable part alone is not done either: a currency missing from
it would be deleted. The connection loop reconnects (with its backoff) to get a fresh
snapshot; meanwhile the last state stays, flagged stale, nothing is deleted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

import orjson

from app.accounts import AccountConfig
from app.domain import (
    EXCHANGE_WALLET,
    AssetBalance,
    BalanceSnapshot,
    BalanceUpdate,
    Event,
    ExtraValue,
    LoneBalance,
    Venue,
)
from app.venues import _wire as w
from app.venues import urls
from app.venues.base import MAX_FRAME_BYTES, HttpRequest, ProtocolError, VenueSession

DEFAULT_WS_URL: Final = "wss://stream.bitopro.com:443/ws/v1/pub/auth/account-balance"
DEFAULT_REST_URL: Final = "https://api.bitopro.com"
REST_BALANCE_PATH: Final = "/v3/accounts/balance"
EVENT_ACCOUNT_BALANCE: Final = "ACCOUNT_BALANCE"

_ZERO: Final = Decimal(0)
_ASSET_CACHE_SIZE: Final = 4096
_ASSETS: dict[str, str] = {}
# the extras of the lone-balance path, shared read-only: (stake, tradable) -> extra
_LONE_EXTRAS: Final[Mapping[tuple[str | None, bool | None], Mapping[str, ExtraValue]]] = {
    (stake, tradable): MappingProxyType(
        {
            **({} if stake is None else {"stake": stake}),
            **({} if tradable is None else {"tradable": tradable}),
        }
    )
    for stake in (None, "0")
    for tradable in (None, True, False)
}
_PLAIN = w.PLAIN_DECIMAL.fullmatch
_ISO_MS_Z = w.ISO_MS_Z.fullmatch
_LONE_MAX_CHARS: Final = MAX_FRAME_BYTES // 4
_last_nonce = 0


def sign_payload(identity: str, nonce: int, secret: str) -> tuple[str, str]:
    """The ``X-BITOPRO-PAYLOAD`` and ``X-BITOPRO-SIGNATURE`` header values.

    The signature covers the base64 *string* (padding included), not the raw JSON.
    """
    body = json.dumps({"identity": identity, "nonce": nonce}, separators=(",", ":"))
    payload = base64.b64encode(body.encode("utf-8")).decode("ascii")
    signature = hmac.new(secret.encode("utf-8"), payload.encode("ascii"), hashlib.sha384)
    return payload, signature.hexdigest()


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _next_nonce(now_ms: int) -> int:
    """Unix ms, but strictly increasing within the process (two connects in one ms)."""
    global _last_nonce
    _last_nonce = max(now_ms, _last_nonce + 1)
    return _last_nonce


class BitoproSession(VenueSession):
    """One BitoPro connection: signed headers out, ``ACCOUNT_BALANCE`` frames in."""

    venue = Venue.BITOPRO

    def __init__(
        self, account: AccountConfig, *, clock_ms: Callable[[], int] = _wall_clock_ms
    ) -> None:
        super().__init__(account)
        self._clock_ms = clock_ms
        self._got_snapshot = False
        self._snapshot_rejected = False
        self._lone_stamp: str | None = None  # the last time the lone path accepted

    # -- auth --------------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """Freshly signed headers: a new nonce on every call, as the venue requires."""
        key = self.account.secret("api_key")
        secret = self.account.secret("api_secret")
        email = self.account.secret("email")
        nonce = _next_nonce(self._clock_ms())
        payload, signature = sign_payload(email, nonce, secret)
        return {
            "X-BITOPRO-APIKEY": key,
            "X-BITOPRO-PAYLOAD": payload,
            "X-BITOPRO-SIGNATURE": signature,
        }

    def connect_request(self) -> HttpRequest:
        url = self.account.ws_url or DEFAULT_WS_URL
        return HttpRequest("GET", url, urls.redact_url(url), self.auth_headers())

    @property
    def stream_has_snapshot(self) -> bool:
        return True

    @property
    def snapshot_rejected(self) -> bool:
        return self._snapshot_rejected

    @property
    def silent_close_may_be_auth(self) -> bool:
        return True

    # -- frames ------------------------------------------------------------------------

    def on_frame(self, raw: str | bytes) -> tuple[list[Event], list[str]]:
        """Read one ``ACCOUNT_BALANCE`` frame.

        The first frame of a connection lists every currency and becomes a snapshot; later
        frames list changed currencies. A later frame, verbatim::

            {
              "event": "ACCOUNT_BALANCE",
              "eventID": "88038887-1de1-4521-b411-93440156cb41",
              "timestamp": 1639553303365,
              "datetime": "2021-12-15T07:28:23.365Z",
              "data": {
                "ADA": {
                  "currency": "ADA",
                  "amount": "999999999999.99999999",
                  "available": "0",
                  "stake": "0",
                  "tradable": true
                }
              }
            }
        """
        if self._snapshot_rejected:
            raise w.reject(
                w.SNAPSHOT_REJECTED, "the connection's first frame was rejected: no snapshot"
            )
        if self._got_snapshot:
            event = w.decode(raw, self._read_frame)
        else:
            try:
                event = w.decode(raw, self._read_frame)
            except ProtocolError as exc:
                # an event of another kind is not the snapshot; anything else may have been
                if exc.reason != w.UNKNOWN_EVENT:
                    self._snapshot_rejected = True
                raise
        self._got_snapshot = True  # only once the frame was accepted whole
        if isinstance(event, BalanceUpdate) and not event.balances:
            return [], []
        return [event], []

    def read_lone_balance(self, raw: str | bytes) -> LoneBalance | None:
        """A later frame listing one currency in its usual form, read without events:
        ``amount``/``available`` plain decimal strings, ``stake`` absent or ``"0"``,
        ``tradable`` absent or a boolean, ``datetime`` absent or UTC milliseconds, a
        currency code seen before. Anything else (the first frame, a float, an
        exponent, ``"tradable": "true"``, a new code...) is ``None``: :meth:`on_frame`
        reads or rejects it."""
        if not self._got_snapshot or self._snapshot_rejected or len(raw) > _LONE_MAX_CHARS:
            return None
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if type(doc) is not dict or doc.get("event") != EVENT_ACCOUNT_BALANCE:
            return None
        data = doc.get("data")
        if type(data) is not dict or len(data) != 1:
            return None
        for key, item in data.items():
            if type(item) is not dict:
                return None
            currency = item.get("currency", key)
            asset = _ASSETS.get(currency) if type(currency) is str else None
            total = item.get("amount")
            available = item.get("available")
            if (
                asset is None
                or type(total) is not str
                or type(available) is not str
                or _PLAIN(total) is None
            ):
                return None
            stake = item.get("stake")
            tradable = item.get("tradable")
            if (stake is not None and (type(stake) is not str or stake != "0")) or (
                tradable is not None and type(tradable) is not bool
            ):
                return None
            stamp = doc.get("datetime")
            if stamp is None:
                if doc.get("timestamp") is not None:
                    return None
            elif stamp != self._lone_stamp:  # a burst shares one time: checked once
                if type(stamp) is not str or _ISO_MS_Z(stamp) is None:
                    return None
                self._lone_stamp = stamp
            amount = Decimal(total)
            if available == total:
                free, locked = amount, _ZERO
            elif _PLAIN(available) is None:
                return None
            else:
                free = Decimal(available)
                if free > amount:
                    return None
                locked = w.subtract(amount, free) if free != amount else _ZERO
            extra = _LONE_EXTRAS[stake, tradable]
            return (EXCHANGE_WALLET, asset, amount, free, locked, extra, stamp)
        return None

    def _read_frame(self, doc: Any) -> Event:
        if type(doc) is not dict:
            raise w.reject(w.SCHEMA, "frame: expected an object")
        kind = doc.get("event")
        if kind != EVENT_ACCOUNT_BALANCE:
            if type(kind) is not str:
                raise w.reject(w.SCHEMA, "event: expected a string")
            raise w.reject(w.UNKNOWN_EVENT, f"event {kind[:40]!r} is not handled")
        data = doc.get("data")
        if type(data) is not dict:
            raise w.reject(w.SCHEMA, "data: expected an object")
        if len(data) == 1:  # the hot path: one changed currency
            for key, item in data.items():
                balances: tuple[AssetBalance, ...] = (_read_currency(key, item),)
        else:
            balances = tuple([_read_currency(key, item) for key, item in data.items()])
            w.unique_assets((b.asset for b in balances), len(balances), "data")
        stamp = doc.get("datetime")
        if stamp is not None:
            venue_ts: str | None = w.iso_ms(stamp, "datetime")
        else:
            millis = doc.get("timestamp")
            venue_ts = None if millis is None else w.iso_from_epoch(millis, "timestamp")
        if self._got_snapshot:
            return BalanceUpdate(balances, venue_ts)
        return BalanceSnapshot(EXCHANGE_WALLET, balances, venue_ts)

    # -- REST --------------------------------------------------------------------------

    def balance_request(self) -> HttpRequest:
        """``GET /v3/accounts/balance``, freshly signed. Never a seed: the stream's first
        frame is the snapshot (:meth:`seed_requests` is empty); :meth:`read_seed` reads
        its answer all the same."""
        base = (self.account.rest_url or DEFAULT_REST_URL).rstrip("/")
        url = base + REST_BALANCE_PATH
        return HttpRequest("GET", url, urls.redact_url(url), self.auth_headers())

    def read_seed(self, request: HttpRequest, body: bytes) -> list[Event]:
        """``{"data": [{"currency": "btc", "amount": "1.5", "available": "1.0",
        "stake": "0", "tradable": true}, ...]}``: the whole account."""
        return [w.decode(body, _read_rest)]


def _read_currency(key: object, item: object) -> AssetBalance:
    if type(item) is not dict:
        raise w.reject(w.SCHEMA, "data: each currency must be an object")
    currency = item.get("currency", key)
    asset = _ASSETS.get(currency) if type(currency) is str else None
    if asset is None:
        asset = _remember_asset(w.ident(currency, "currency"))
    raw_total = item.get("amount")
    raw_available = item.get("available")
    total = w.amount(raw_total, "amount")
    if raw_available == raw_total and type(raw_available) is str:
        available = total  # the common "nothing locked" case: one parse, not two
        locked = _ZERO
    else:
        available = w.amount(raw_available, "available")
        if available > total:
            raise w.reject(w.AMOUNT, "available: exceeds amount")
        locked = w.subtract(total, available) if available != total else _ZERO
    extra: dict[str, ExtraValue] = {}
    stake = item.get("stake")
    if stake is not None:
        extra["stake"] = "0" if stake == "0" and type(stake) is str else _stake(stake)
    tradable = item.get("tradable")
    if tradable is not None:
        extra["tradable"] = w.boolean(tradable, "tradable")
    return AssetBalance(EXCHANGE_WALLET, asset, total, available, locked, asset, extra)


def _remember_asset(currency: str) -> str:
    """Validated currency code -> asset, cached: the same few codes arrive in every frame."""
    if len(_ASSETS) >= _ASSET_CACHE_SIZE:
        _ASSETS.clear()
    asset = _ASSETS[currency] = currency.upper()
    return asset


def _stake(value: object) -> str:
    return w.plain(w.amount(value, "stake"))


def _read_rest(doc: Any) -> Event:
    data = w.arr(w.obj(doc, "body").get("data"), "data")
    balances = tuple([_read_currency(None, item) for item in data])
    w.unique_assets((b.asset for b in balances), len(balances), "data")
    return BalanceSnapshot(EXCHANGE_WALLET, balances)
