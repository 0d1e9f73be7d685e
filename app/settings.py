"""Settings (``BALAGG_*`` environment, ``.env``) and the accounts file.

Everything a wrong configuration can break is checked here, at start-up, with a message
that names the account and the field; nothing invalid gets as far as a socket.
Credentials are :class:`~pydantic.SecretStr`, so they print as ``**********``.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.ratelimit import DEFAULT_VENUE_LIMITS, VenueLimits, parse_rule

ACCOUNT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SOLANA_ADDRESS_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
_PEG_CODE_RE = re.compile(r"^[A-Z0-9]{1,20}$")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

VenueName = Literal["bitopro", "sfox", "deltadefi", "solanatracker"]

# Which credentials each venue cannot work without.
REQUIRED_CREDENTIALS: Mapping[str, tuple[str, ...]] = {
    "bitopro": ("api_key", "api_secret", "email"),
    "sfox": ("api_key",),
    "deltadefi": ("api_key",),
    "solanatracker": ("api_key", "wallets"),
}


class ConfigError(Exception):
    """The configuration is invalid; the message names the account and field, never a secret."""


class AccountConfig(BaseModel):
    """One upstream account (one WebSocket)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    venue: VenueName
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    email: SecretStr | None = None
    data_api_key: SecretStr | None = None
    wallets: tuple[str, ...] = ()
    ws_url: str | None = None
    rest_url: str | None = None
    price_url: str | None = None
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not ACCOUNT_ID_RE.match(value):
            raise ValueError("must match ^[a-z0-9][a-z0-9_-]{0,63}$")
        return value

    @field_validator("wallets")
    @classmethod
    def _check_wallets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for wallet in value:
            if not SOLANA_ADDRESS_RE.match(wallet):
                raise ValueError(f"{wallet[:48]!r} is not a Solana address (base58, 32-44 chars)")
        if len(set(value)) != len(value):
            raise ValueError("lists a wallet twice")
        return value

    @field_validator("ws_url", "rest_url", "price_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(wss?|https?)://[^\s/]+", value):
            raise ValueError("must be an absolute ws://, wss://, http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _check_credentials(self) -> AccountConfig:
        for name in REQUIRED_CREDENTIALS[self.venue]:
            value = getattr(self, name)
            empty = not value if not isinstance(value, SecretStr) else not value.get_secret_value()
            if value is None or empty:
                raise ValueError(f"{name}: required for venue {self.venue}")
        if self.wallets and self.venue != "solanatracker":
            raise ValueError("wallets: only used by venue solanatracker")
        return self

    def masked(self) -> dict[str, Any]:
        """A printable form with every secret masked."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "**********" if value.get_secret_value() else ""
            elif isinstance(value, tuple):
                out[name] = list(value)
            elif value is not None:
                out[name] = value
        return out


class VenueLimitsConfig(BaseModel):
    """One venue's limits as configured; a field left out keeps the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: tuple[str, ...] | None = None
    rest: tuple[str, ...] | None = None
    sockets: int | None = Field(default=None, ge=0)

    @field_validator("connect", "rest")
    @classmethod
    def _check_rules(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for rule in value or ():
            parse_rule(rule)
        return value

    def over(self, default: VenueLimits) -> VenueLimits:
        return VenueLimits(
            connect=default.connect
            if self.connect is None
            else tuple(parse_rule(r) for r in self.connect),
            rest=default.rest if self.rest is None else tuple(parse_rule(r) for r in self.rest),
            sockets=default.sockets if self.sockets is None else self.sockets,
        )


class Settings(BaseSettings):
    """Service settings from ``BALAGG_*`` variables and ``.env`` (see ``.env.example``)."""

    model_config = SettingsConfigDict(
        env_prefix="BALAGG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    redis_url: SecretStr | None = None
    accounts_file: Path = Path("accounts.yaml")
    accounts: str | None = None
    api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    data_dir: Path = Path("data")
    key_prefix: str = "balagg"
    stream_maxlen: int = Field(default=100_000, ge=100)
    lease_ms: int = Field(default=10_000, ge=1_000)
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    auth_retry_min: float = Field(default=60.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    heartbeat: float = Field(default=20.0, gt=0)
    healthy_after: float = Field(default=30.0, ge=0)
    client_buffer: int = Field(default=1_000, ge=10)
    client_max_lag: int = Field(default=10_000, ge=10)
    static_prices: dict[str, Decimal] = Field(default_factory=dict)
    price_max_age: float = Field(default=120.0, gt=0)
    price_max_ages: dict[str, float] = Field(default_factory=dict)
    price_pegs: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"USDT": "USD", "USDC": "USD", "USDM": "USD"}
    )
    # /metrics: public only when asked (it carries balances); per-balance gauges optional
    metrics_public: bool = False
    metrics_balances: bool = True
    # /v1/stream client ops (subscribe, ping, anything sent): a token bucket per client
    client_ops_rate: float = Field(default=20.0, gt=0)
    client_ops_burst: int = Field(default=50, ge=1)
    # POST /v1/accounts/{id}/resync: at most one per account per interval (else 429)
    resync_min_interval: float = Field(default=10.0, ge=0)
    # what the service sends each venue, per upstream host: JSON, e.g.
    # {"sfox": {"connect": ["20/60"], "rest": ["5/10", "20/60"], "sockets": 10}}
    venue_limits: dict[VenueName, VenueLimitsConfig] = Field(default_factory=dict)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(SecretStr(t.strip()) for t in value.split(",") if t.strip())
        return value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _check_redis_url(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            if not re.match(r"^(redis|rediss|unix)://", value):
                raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("static_prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value, parse_float=Decimal) if value.strip() else {}
        return value

    @field_validator("venue_limits", mode="before")
    @classmethod
    def _parse_venue_limits(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    def resolved_venue_limits(self) -> dict[str, VenueLimits]:
        """Every venue's limits: the configured fields over :data:`DEFAULT_VENUE_LIMITS`."""
        out = dict(DEFAULT_VENUE_LIMITS)
        for venue, configured in self.venue_limits.items():
            out[venue] = configured.over(out.get(venue, VenueLimits()))
        return out

    @field_validator("price_max_ages", mode="before")
    @classmethod
    def _parse_max_ages(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("price_max_ages")
    @classmethod
    def _check_max_ages(cls, value: dict[str, float]) -> dict[str, float]:
        for source, age in value.items():
            if not age > 0:
                raise ValueError(f"{source[:32]!r}: the age limit must be positive")
        return value

    @field_validator("price_pegs", mode="before")
    @classmethod
    def _parse_pegs(cls, value: object) -> object:
        """``USDT=USD,USDC=USD`` (an empty string means no pegs)."""
        if not isinstance(value, str):
            return value
        pegs: dict[str, str] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            asset, sep, target = (s.strip().upper() for s in item.partition("="))
            if not sep or not _PEG_CODE_RE.match(asset) or not _PEG_CODE_RE.match(target):
                raise ValueError("expected ASSET=QUOTE pairs separated by commas")
            if asset == target:
                raise ValueError(f"{asset} is pegged to itself")
            pegs[asset] = target
        return pegs

    def load_accounts(self) -> list[AccountConfig]:
        """Read, interpolate and validate the accounts (inline JSON wins over the file)."""
        return load_accounts(self.accounts, self.accounts_file, os.environ)


def _interpolate(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"{where}: environment variable ${{{name}}} is not set")
            return env[name]

        return _VAR_RE.sub(sub, value)
    if isinstance(value, list):
        return [_interpolate(v, env, where) for v in value]
    return value


def _parse_accounts_text(text: str, source: str) -> list[Any]:
    try:
        data = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML or JSON{where}") from None
    if data is None:
        return []
    if isinstance(data, dict):
        data = data.get("accounts", [])
    if not isinstance(data, list):
        raise ConfigError(f"{source}: expected a list of accounts or {{accounts: [...]}}")
    return data


def load_accounts(inline: str | None, path: Path, env: Mapping[str, str]) -> list[AccountConfig]:
    if inline is not None and inline.strip():
        raw = _parse_accounts_text(inline, "BALAGG_ACCOUNTS")
    elif path.exists():
        raw = _parse_accounts_text(path.read_text(encoding="utf-8"), str(path))
    else:
        raw = []
    accounts: list[AccountConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"account #{index + 1}: expected a mapping of fields")
        name = str(item.get("id", f"#{index + 1}"))[:64]
        label = f"account {name!r}"
        fields: dict[str, Any] = {}
        for key, value in item.items():
            fields[str(key)] = _interpolate(value, env, f"{label} field {key!r}")
        try:
            account = AccountConfig.model_validate(fields)
        except ValidationError as exc:
            raise ConfigError(_describe(label, exc)) from None
        if account.id in seen:
            raise ConfigError(f"{label} field 'id': duplicate account id")
        seen.add(account.id)
        accounts.append(account)
    return accounts


def _describe(label: str, exc: ValidationError) -> str:
    """One line per problem; pydantic's own text can echo input values, so never include it."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in error["loc"])
        msg = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "literal_error" and loc == "venue":
            msg = "unknown venue (expected bitopro, sfox, deltadefi or solanatracker)"
        if error["type"] == "extra_forbidden":
            msg = "unknown field"
        if not loc and ":" in msg:
            loc, msg = (s.strip() for s in msg.split(":", 1))
        parts.append(f"{label} field {loc!r}: {msg}" if loc else f"{label}: {msg}")
    return "; ".join(parts)
