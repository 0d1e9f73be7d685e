"""Service settings: ``BALAGG_*`` environment variables and ``.env``.

Where it sits: read once at start-up by the CLI (:func:`load_config`), together with the
accounts (:mod:`app.accounts`); ``create_app`` and every part it builds take the
resulting :class:`Settings`. Everything a wrong setting can break is checked here, and
every mistake is reported at once, one line each (``setting BALAGG_X: ...``), together
with the accounts' problems in one :class:`~app.accounts.ConfigError`. No message ever
echoes a value that could be a secret.
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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from app.accounts import AccountConfig, ConfigError, load_accounts
from app.domain import Venue
from app.ratelimit import DEFAULT_VENUE_LIMITS, VenueLimits, parse_rule
from app.store.keys import DEFAULT_PREFIX

PRICES_RULE = 'must be a JSON object of asset to decimal price, e.g. {"BTC": "97000.5"}'
_PEG_CODE_RE = re.compile(r"^[A-Z0-9]{1,20}$")


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


class AccountSourceSettings(BaseSettings):
    """Where the accounts come from: the part of :class:`Settings` that reading them needs,
    so the accounts can still be checked when another setting is invalid."""

    model_config = SettingsConfigDict(
        env_prefix="BALAGG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    accounts_file: Path = Path("accounts.yaml")
    accounts: str | None = None
    # A missing accounts file is a mistake (a typo must not start a healthy, empty
    # service) unless this says that running with no accounts is intended.
    allow_no_accounts: bool = False

    def load_accounts(self) -> list[AccountConfig]:
        """Read, interpolate and validate the accounts (inline JSON wins over the file)."""
        return load_accounts(
            self.accounts, self.accounts_file, os.environ, allow_missing=self.allow_no_accounts
        )


class Settings(AccountSourceSettings):
    """Service settings from ``BALAGG_*`` variables and ``.env`` (see ``.env.example``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    redis_url: SecretStr | None = None
    api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    data_dir: Path = Path("data")
    key_prefix: str = DEFAULT_PREFIX
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
    static_prices: Annotated[dict[str, Decimal], NoDecode] = Field(default_factory=dict)
    price_max_age: float = Field(default=120.0, gt=0)
    price_max_ages: dict[str, float] = Field(default_factory=dict)
    # how often a replica reads the prices other replicas' feeds stored (P:prices)
    price_refresh: float = Field(default=2.0, gt=0)
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
    # History (SPEC §17, app/history): on by default, into SQLite under data_dir.
    history: bool = True
    history_url: SecretStr | None = None  # may carry a password: SecretStr, never logged
    history_retention_days: int = Field(default=0, ge=0)  # 0 keeps everything
    history_batch: int = Field(default=2_000, ge=1, le=100_000)
    history_claim_idle_ms: int = Field(default=30_000, ge=1_000)
    history_checkpoint_every: int = Field(default=10_000, ge=0)  # seqs; 0: no checkpoints
    history_price_interval: float = Field(default=60.0, gt=0)
    history_price_threshold: Decimal = Field(default=Decimal("0.005"), gt=0)
    # serve --workers: worker processes on one shared port ("auto" = CPU cores), and an
    # optional first port of one extra private listener per worker (for per-worker scrapes)
    workers: int = Field(default=1, ge=1, le=64)
    worker_port_base: int = Field(default=0, ge=0, le=65535)

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return auto_workers()
        return value

    # what the service sends each venue, per upstream host: JSON, e.g.
    # {"sfox": {"connect": ["20/60"], "rest": ["5/10", "20/60"], "sockets": 10}}
    venue_limits: dict[Venue, VenueLimitsConfig] = Field(default_factory=dict)

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

    @field_validator("history", mode="before")
    @classmethod
    def _history_switch(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("on", "off"):
            return value.strip().lower() == "on"
        return value

    @field_validator("history_url", mode="before")
    @classmethod
    def _check_history_url(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            if not re.match(r"^(sqlite\+aiosqlite|postgresql\+asyncpg)://", value):
                raise ValueError("must be a postgresql+asyncpg:// or sqlite+aiosqlite:// URL")
        return value

    @field_validator("static_prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value, parse_float=Decimal)
            except ValueError:
                raise ValueError(PRICES_RULE) from None
        if not isinstance(value, dict):
            raise ValueError(PRICES_RULE)
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


def auto_workers() -> int:
    """``--workers auto``: the CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_config() -> tuple[Settings, list[AccountConfig]]:
    """The settings and the accounts, or one :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    settings: Settings | None = None
    source: AccountSourceSettings | None = None
    try:
        settings = source = Settings()
    except (ValidationError, SettingsError) as exc:
        problems.extend(describe_settings_error(exc))
        try:
            source = AccountSourceSettings()
        except (ValidationError, SettingsError):
            source = None  # its fields' problems are already in the list
    accounts: list[AccountConfig] = []
    if source is not None:
        try:
            accounts = source.load_accounts()
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems or settings is None:
        raise ConfigError(problems)
    return settings, accounts


def _setting_message(error: Mapping[str, Any]) -> str:
    kind = str(error["type"])
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return "must be a number"
    if kind in ("decimal_parsing", "decimal_type", "decimal_max_digits"):
        return "must be a decimal number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind == "literal_error":
        return "must be one of " + ", ".join(re.findall(r"'([^']*)'", str(ctx["expected"])))
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("greater than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {ctx[key]}"
    if kind in ("string_type", "path_type"):
        return "must be text"
    return "is not valid"


def describe_settings_error(exc: ValidationError | SettingsError) -> list[str]:
    """One ``setting BALAGG_X: ...`` line per problem; inputs are never echoed (secrets)."""
    if isinstance(exc, SettingsError):
        match = re.search(r'field "([a-z_]+)"', str(exc))
        name = match.group(1).upper() if match else "?"
        return [f"setting BALAGG_{name}: could not be parsed"]
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in error["loc"]]
        where = f"setting BALAGG_{loc[0].upper()}" if loc else "settings"
        inner = "".join(f": {part}" for part in loc[1:])
        lines.append(f"{where}{inner}: {_setting_message(error)}")
    return lines
