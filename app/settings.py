"""Settings (``BALAGG_*`` environment, ``.env``) and the accounts file.

Everything a wrong configuration can break is checked here, at start-up, and every
mistake is reported at once, one line each, naming the account and field (``account
<id>: <field>: <what is expected>``) or the setting (``setting BALAGG_X: ...``); nothing
invalid gets as far as a socket. A missing accounts file is one of those mistakes unless
``BALAGG_ALLOW_NO_ACCOUNTS`` says otherwise. Credentials are :class:`~pydantic.SecretStr`,
so they print as ``**********``, and no message ever echoes a value that could be one.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
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
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from app.domain import Venue
from app.ratelimit import DEFAULT_VENUE_LIMITS, VenueLimits, parse_rule
from app.store.keys import DEFAULT_PREFIX

ACCOUNT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ID_RULE = "must be 1-64 characters of a-z, 0-9, _ and -, starting with a letter or digit"
VENUE_RULE = "must be one of bitopro, sfox, deltadefi, solanatracker"
WALLETS_RULE = "must be a list of Solana addresses"
URL_RULE = "must be an absolute ws://, wss://, http:// or https:// URL"
PRICES_RULE = 'must be a JSON object of asset to decimal price, e.g. {"BTC": "97000.5"}'
MISSING_FILE_HINT = "(set BALAGG_ALLOW_NO_ACCOUNTS=true to run with no accounts)"
SOLANA_ADDRESS_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
_PEG_CODE_RE = re.compile(r"^[A-Z0-9]{1,20}$")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

CredentialName = Literal["api_key", "api_secret", "email", "data_api_key"]
CREDENTIAL_FIELDS: tuple[CredentialName, ...] = ("api_key", "api_secret", "email", "data_api_key")
"""The secret fields of an account (:class:`~pydantic.SecretStr`, never logged)."""

# Which credentials each venue cannot work without.
REQUIRED_CREDENTIALS: Mapping[str, tuple[str, ...]] = {
    Venue.BITOPRO: ("api_key", "api_secret", "email"),
    Venue.SFOX: ("api_key",),
    Venue.DELTADEFI: ("api_key",),
    Venue.SOLANATRACKER: ("api_key", "wallets"),
}


class ConfigError(Exception):
    """The configuration is invalid: one line per problem, naming account and field, never a
    secret. ``problems`` holds the lines; ``str()`` is them joined by newlines."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("\n".join(self.problems))


def _is_empty(value: object) -> bool:
    if isinstance(value, SecretStr):
        return not value.get_secret_value()
    return value is None or value == "" or (isinstance(value, (list, tuple)) and not value)


def credential_problems(venue: str, fields: Mapping[str, object]) -> list[tuple[str, str]]:
    """``(field, message)`` for each credential ``venue`` needs but ``fields`` lacks."""
    problems = [
        (name, f"required for venue {venue}")
        for name in REQUIRED_CREDENTIALS.get(venue, ())
        if _is_empty(fields.get(name))
    ]
    if venue in REQUIRED_CREDENTIALS and venue != Venue.SOLANATRACKER and fields.get("wallets"):
        problems.append(("wallets", "only used by venue solanatracker"))
    return problems


class AccountConfig(BaseModel):
    """One upstream account (one WebSocket)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    venue: Venue
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
            raise ValueError(ID_RULE)
        return value

    @field_validator("wallets", mode="before")
    @classmethod
    def _check_wallets(cls, value: object) -> object:
        # Before type coercion, so a number or an empty ``wallets:`` gets a plain sentence
        # and every bad item is reported; an item is never echoed (it may be a pasted key).
        if not isinstance(value, (list, tuple)):
            raise ValueError(WALLETS_RULE)
        problems = [
            f"item {n} is not a Solana address (base58, 32-44 characters)"
            for n, wallet in enumerate(value, 1)
            if not isinstance(wallet, str) or not SOLANA_ADDRESS_RE.match(wallet)
        ]
        if not problems and len(set(value)) != len(value):
            problems.append("lists a wallet twice")
        if problems:
            raise ValueError("\n".join(problems))
        return value

    @field_validator("ws_url", "rest_url", "price_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(wss?|https?)://[^\s/]+", value):
            raise ValueError(URL_RULE)
        return value

    @model_validator(mode="after")
    def _check_credentials(self) -> AccountConfig:
        fields = {
            name: getattr(self, name) for name in ("wallets", *REQUIRED_CREDENTIALS[self.venue])
        }
        problems = credential_problems(self.venue, fields)
        if problems:
            raise ValueError("\n".join(f"{field}: {message}" for field, message in problems))
        return self

    def secret(self, name: CredentialName) -> str:
        """The value of credential ``name``, for building a request that needs it.

        ``ValueError`` naming the account and the field (never a value) when it is missing
        or empty; validation refuses such accounts for the venues that need the field, so
        this only fires for a venue asked for what it does not require.
        """
        value = getattr(self, name)
        text = value.get_secret_value() if isinstance(value, SecretStr) else ""
        if not text:
            raise ValueError(f"account {self.id}: {name} required")
        return text

    def secret_values(self) -> list[str]:
        """Every credential value the account carries (for the log scrubber)."""
        values = (getattr(self, name) for name in CREDENTIAL_FIELDS)
        return [v.get_secret_value() for v in values if isinstance(v, SecretStr)]

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


def _interpolate(value: Any, env: Mapping[str, str], missing: list[str]) -> Any:
    """Fill ``${VAR}`` references from ``env``; a reference that is not set stays as it
    is and its name goes to ``missing``."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                missing.append(name)
                return match.group(0)
            return env[name]

        return _VAR_RE.sub(sub, value)
    if isinstance(value, list):
        return [_interpolate(v, env, missing) for v in value]
    return value


_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML has it: the pure-Python one took a third of the
start-up time of a service with 2,000 accounts."""


def _parse_accounts_text(text: str, where: str) -> list[Any]:
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER) if text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML or JSON{line}") from None
    if data is None:
        return []
    if isinstance(data, dict):
        # Only the one documented key: a misspelt ``acounts:`` must not read as no accounts.
        if set(data) != {"accounts"}:
            raise ConfigError(
                f"{where}: expected a list of accounts or a mapping with the one key 'accounts'"
            )
        data = data["accounts"] if data["accounts"] is not None else []
    if not isinstance(data, list):
        raise ConfigError(
            f"{where}: expected a list of accounts or a mapping with the one key 'accounts'"
        )
    return data


def _read_accounts_source(inline: str | None, path: Path, allow_missing: bool) -> list[Any]:
    if inline is not None and inline.strip():
        return _parse_accounts_text(inline, "setting BALAGG_ACCOUNTS")
    where = "setting BALAGG_ACCOUNTS_FILE"
    if not path.exists():
        if allow_missing:
            return []
        raise ConfigError(f"{where}: {path} does not exist {MISSING_FILE_HINT}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: {path} cannot be read ({reason})") from None
    return _parse_accounts_text(text, f"{where}: {path}")


_FIELD_RULES: Mapping[str, str] = {
    "id": ID_RULE,
    "venue": VENUE_RULE,
    "api_key": "must be text (quote it in YAML)",
    "api_secret": "must be text (quote it in YAML)",
    "email": "must be text (quote it in YAML)",
    "data_api_key": "must be text (quote it in YAML)",
    "wallets": WALLETS_RULE,
    "ws_url": URL_RULE,
    "rest_url": URL_RULE,
    "enabled": "must be true or false",
}


def _account_label(item: Mapping[Any, Any], index: int) -> str:
    value = item.get("id")
    if isinstance(value, str) and ACCOUNT_ID_RE.match(value):
        return f"account {value}"
    if isinstance(value, str) and value:
        return f"account {value[:64]!r}"
    return f"account #{index}"


def _field_name(name: object) -> str:
    # A field name is echoed only when it looks like one: a key pasted in the wrong
    # place (mixed case, long) must not be printed.
    text = str(name)
    return text if re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", text) else "(a field with an odd name)"


def _account_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field, message)`` per problem, in plain words; pydantic's own text is never used
    (it is jargon, and can echo the input)."""
    out: list[tuple[str, str]] = []
    for error in exc.errors(include_input=False, include_url=False):
        field = _field_name(error["loc"][0]) if error["loc"] else ""
        kind = str(error["type"])
        if kind == "value_error":
            for line in str(error["msg"]).removeprefix("Value error, ").splitlines():
                if not field and ": " in line:  # a model check: "field: message"
                    name, message = line.split(": ", 1)
                    out.append((name, message))
                else:
                    out.append((field, line))
        elif kind == "extra_forbidden":
            out.append((field, "unknown field"))
        elif kind == "missing":
            rule = f" ({VENUE_RULE.removeprefix('must be ')})" if field == "venue" else ""
            out.append((field, f"required{rule}"))
        else:
            out.append((field, _FIELD_RULES.get(field, "is not valid")))
    return out


def load_accounts(
    inline: str | None,
    path: Path,
    env: Mapping[str, str],
    *,
    allow_missing: bool = False,
) -> list[AccountConfig]:
    """Read, interpolate and validate the accounts; every problem goes into one
    :class:`ConfigError`. A missing file is a problem unless ``allow_missing``."""
    raw = _read_accounts_source(inline, path, allow_missing)
    problems: list[str] = []
    accounts: list[AccountConfig] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            problems.append(
                f"account #{index}: must be a mapping of fields (id, venue, credentials)"
            )
            continue
        label = _account_label(item, index)
        # Three stages, each a list of (field, message); a field with a problem in an earlier
        # stage is not reported again by a later one (a missing ${VAR} says all there is).
        interpolation: list[tuple[str, str]] = []
        fields: dict[str, Any] = {}
        for key, value in item.items():
            missing: list[str] = []
            fields[str(key)] = _interpolate(value, env, missing)
            interpolation.extend(
                (_field_name(key), f"environment variable ${{{name}}} is not set")
                for name in dict.fromkeys(missing)
            )
        validation: list[tuple[str, str]] = []
        credentials: list[tuple[str, str]] = []
        try:
            account = AccountConfig.model_validate(fields)
        except ValidationError as exc:
            validation = _account_problems(exc)
            venue = fields.get("venue")
            if isinstance(venue, str):  # the model checks credentials only once fields are valid
                credentials = credential_problems(venue, fields)
        else:
            if not interpolation:
                accounts.append(account)
        reported: set[str] = set()
        for stage in (interpolation, validation, credentials):
            fresh = [(field, message) for field, message in stage if field not in reported]
            reported.update(field for field, _ in fresh)
            problems.extend(
                f"{label}: {field}: {message}" if field else f"{label}: {message}"
                for field, message in dict.fromkeys(fresh)
            )
        account_id = item.get("id")
        if isinstance(account_id, str):
            if account_id in first_index:
                problems.append(
                    f"{label}: id: duplicate account id (also account #{first_index[account_id]})"
                )
            else:
                first_index[account_id] = index
    if problems:
        raise ConfigError(problems)
    return accounts
