"""The accounts: :class:`AccountConfig` and reading the accounts file or inline list.

Where it sits: read once at start-up (:meth:`app.settings.Settings.load_accounts`,
:func:`app.settings.load_config`), before anything connects; every upstream runner,
the stream hub's mirror and the API's account lists are built from the result.

Every mistake is reported at once, one line each, naming the account and field
(``account <id>: <field>: <what is expected>``), in one :class:`ConfigError`; nothing
invalid gets as far as a socket. ``${VAR}`` references are filled from the environment.
A missing accounts file is one of those mistakes unless ``BALAGG_ALLOW_NO_ACCOUNTS`` says
otherwise. Credentials are :class:`~pydantic.SecretStr`, so they print as
``**********``, and no message ever echoes a value that could be one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from app.domain import Venue

ACCOUNT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ID_RULE = "must be 1-64 characters of a-z, 0-9, _ and -, starting with a letter or digit"
VENUE_RULE = "must be one of bitopro, sfox, deltadefi, solanatracker"
WALLETS_RULE = "must be a list of Solana addresses"
URL_RULE = "must be an absolute ws://, wss://, http:// or https:// URL"
MISSING_FILE_HINT = "(set BALAGG_ALLOW_NO_ACCOUNTS=true to run with no accounts)"
SOLANA_ADDRESS_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
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


def _load_json_or_yaml(text: str) -> Any:
    """JSON (a subset of YAML) is read by orjson, ten times faster than libyaml on a
    10,000-account file; anything else, or text orjson refuses, by the YAML loader."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # a YAML flow mapping or sequence, or an error the YAML loader reports
    return yaml.load(text, Loader=_SAFE_LOADER) if text.strip() else None


def _parse_accounts_text(text: str, where: str) -> list[Any]:
    try:
        data = _load_json_or_yaml(text)
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
