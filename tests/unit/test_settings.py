"""Settings and the accounts file: every invalid case stops start-up with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.accounts import ConfigError, load_accounts
from app.settings import Settings

CANARY = "CANARY-s3cr3t-9f8e7d"
WALLET = "FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1"
ENV = {"BP_KEY": CANARY + "-key", "BP_SECRET": CANARY + "-secret", "BP_EMAIL": "me@example.com"}

GOOD_YAML = """
accounts:
  - id: bitopro-main
    venue: bitopro
    api_key: ${BP_KEY}
    api_secret: ${BP_SECRET}
    email: ${BP_EMAIL}
  - id: sol-treasury
    venue: solanatracker
    api_key: CANARY-s3cr3t-9f8e7d-ds
    data_api_key: CANARY-s3cr3t-9f8e7d-data
    wallets: [FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1]
    ws_url: ws://127.0.0.1:9004
    enabled: false
"""


def test_yaml_file_with_interpolation(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD_YAML)
    accounts = load_accounts(None, path, ENV)
    assert [a.id for a in accounts] == ["bitopro-main", "sol-treasury"]
    assert accounts[0].api_secret is not None
    assert accounts[0].api_secret.get_secret_value() == CANARY + "-secret"
    assert CANARY not in repr(accounts) and CANARY not in str(accounts[0].masked())
    assert accounts[1].wallets == (WALLET,) and accounts[1].enabled is False


def test_inline_json_wins_over_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD_YAML)
    inline = json.dumps([{"id": "s1", "venue": "sfox", "api_key": "k" * 10}])
    assert [a.id for a in load_accounts(inline, path, ENV)] == ["s1"]


def test_json_file_and_yaml_flow_mappings_read_like_the_yaml_file(tmp_path: Path) -> None:
    import yaml

    doc = yaml.safe_load(GOOD_YAML)
    expected = [a.model_dump() for a in load_accounts(None, _write(tmp_path, GOOD_YAML), ENV)]
    as_json = json.dumps(doc, indent=2)
    assert [a.model_dump() for a in load_accounts(None, _write(tmp_path, as_json), ENV)] == (
        expected
    )
    # YAML flow style starts like JSON but is not JSON: still read, as YAML
    flow = (
        "{accounts: ["
        + ", ".join(
            "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in a.items()) + "}"
            for a in doc["accounts"]
        )
        + "]}"
    )
    assert [a.model_dump() for a in load_accounts(None, _write(tmp_path, flow), ENV)] == expected
    # broken JSON is reported like broken YAML
    with pytest.raises(ConfigError, match="not valid YAML or JSON"):
        load_accounts(None, _write(tmp_path, '{"accounts": [{"id": "x",]'), ENV)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.json"
    path.write_text(text)
    return path


def test_missing_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    absent = tmp_path / "acounts.yaml"
    with pytest.raises(ConfigError) as info:
        load_accounts(None, absent, {})
    assert info.value.problems == (
        f"setting BALAGG_ACCOUNTS_FILE: {absent} does not exist"
        " (set BALAGG_ALLOW_NO_ACCOUNTS=true to run with no accounts)",
    )


def test_missing_file_allowed_explicitly(tmp_path: Path) -> None:
    assert load_accounts(None, tmp_path / "absent.yaml", {}, allow_missing=True) == []


def test_inline_accounts_need_no_file(tmp_path: Path) -> None:
    assert load_accounts("[]", tmp_path / "absent.yaml", {}) == []


def test_settings_allow_no_accounts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BALAGG_ACCOUNTS", raising=False)
    monkeypatch.setenv("BALAGG_ACCOUNTS_FILE", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        Settings(_env_file=None).load_accounts()
    monkeypatch.setenv("BALAGG_ALLOW_NO_ACCOUNTS", "true")
    assert Settings(_env_file=None).load_accounts() == []


def test_a_mistyped_accounts_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text("acounts:\n  - id: s1\n    venue: sfox\n    api_key: k\n")
    with pytest.raises(ConfigError) as info:
        load_accounts(None, path, {})
    assert info.value.problems == (
        f"setting BALAGG_ACCOUNTS_FILE: {path}: expected a list of accounts"
        " or a mapping with the one key 'accounts'",
    )


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [
        (
            [{"id": "a", "venue": "sfox", "api_key": "${MISSING_VAR}"}],
            "account a: api_key: environment variable ${MISSING_VAR} is not set",
        ),
        (
            [{"id": "a", "venue": "kraken", "api_key": "x"}],
            "account a: venue: must be one of bitopro, sfox, deltadefi, solanatracker",
        ),
        (
            [
                {"id": "a", "venue": "sfox", "api_key": "x"},
                {"id": "a", "venue": "sfox", "api_key": "y"},
            ],
            "account a: id: duplicate account id (also account #1)",
        ),
        (
            [{"id": "Bad Id!", "venue": "sfox", "api_key": "x"}],
            "account 'Bad Id!': id: must be 1-64 characters of a-z, 0-9, _ and -,"
            " starting with a letter or digit",
        ),
        (
            [{"id": "s", "venue": "solanatracker", "api_key": "x", "wallets": ["0OIl-not-base58"]}],
            "account s: wallets: item 1 is not a Solana address (base58, 32-44 characters)",
        ),
        (
            [{"id": "s", "venue": "solanatracker", "api_key": "x"}],
            "account s: wallets: required for venue solanatracker",
        ),
        (
            [{"id": "b", "venue": "bitopro", "api_key": "x", "email": "e@x"}],
            "account b: api_secret: required for venue bitopro",
        ),
        (
            [{"id": "d", "venue": "deltadefi"}],
            "account d: api_key: required for venue deltadefi",
        ),
        (
            [{"id": "d", "venue": "deltadefi", "api_key": "x", "colour": "red"}],
            "account d: colour: unknown field",
        ),
        (
            [{"id": "d", "venue": "deltadefi", "api_key": "x", "ws_url": "not a url"}],
            "account d: ws_url: must be an absolute ws://, wss://, http:// or https:// URL",
        ),
        (
            [{"id": "s", "venue": "solanatracker", "api_key": "x", "wallets": 5}],
            "account s: wallets: must be a list of Solana addresses",
        ),
        (
            [{"id": "s", "venue": "solanatracker", "api_key": "x", "wallets": None}],
            "account s: wallets: must be a list of Solana addresses",
        ),
        (
            [{"id": "s", "venue": "sfox", "api_key": 12345}],
            "account s: api_key: must be text (quote it in YAML)",
        ),
        (
            [{"id": "s", "venue": "sfox", "api_key": "x", "enabled": "maybe"}],
            "account s: enabled: must be true or false",
        ),
        (
            ["sfox"],
            "account #1: must be a mapping of fields (id, venue, credentials)",
        ),
    ],
)
def test_invalid_accounts_name_account_and_field(
    accounts: list[dict[str, object]], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_accounts(json.dumps(accounts), Path("/nonexistent"), {})
    assert expected in info.value.problems


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("accounts: [\n  - id: x\n   bad")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_accounts(None, path, {})


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALAGG_PORT", "9100")
    monkeypatch.setenv("BALAGG_API_TOKENS", f"{CANARY}-t1, {CANARY}-t2")
    monkeypatch.setenv("BALAGG_LOG_LEVEL", "debug")
    monkeypatch.setenv("BALAGG_STATIC_PRICES", '{"BTC": 97000.123456789}')
    settings = Settings(_env_file=None)
    assert settings.port == 9100
    assert [t.get_secret_value() for t in settings.api_tokens] == [f"{CANARY}-t1", f"{CANARY}-t2"]
    assert settings.log_level == "DEBUG"
    assert str(settings.static_prices["BTC"]) == "97000.123456789"
    assert CANARY not in repr(settings)


def _check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "app", "check-config"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_prints_masked_configuration(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD_YAML)
    env = {
        **ENV,
        "BALAGG_ACCOUNTS_FILE": str(path),
        "BALAGG_API_TOKENS": CANARY + "-tok",
        "BALAGG_REDIS_URL": f"redis://:{CANARY}@127.0.0.1:6379/0",
    }
    proc = _check_config(env)
    assert proc.returncode == 0, proc.stderr
    assert "bitopro-main" in proc.stdout and "**********" in proc.stdout
    assert CANARY not in proc.stdout + proc.stderr
    assert "ok: 1 enabled account(s) of 2" in proc.stdout


@pytest.mark.parametrize(
    ("accounts", "fragment"),
    [
        (
            '[{"id":"x","venue":"sfox","api_key":"${NOT_SET_ANYWHERE}"}]',
            "account x: api_key: environment variable",
        ),
        (
            '[{"id":"x","venue":"nope","api_key":"' + CANARY + '"}]',
            "account x: venue: must be one of",
        ),
        (
            '[{"id":"s","venue":"solanatracker","api_key":"'
            + CANARY
            + '","wallets":["'
            + CANARY
            + '"]}]',
            "account s: wallets: item 1 is not a Solana address",
        ),
    ],
)
def test_check_config_fails_with_one_clear_line(accounts: str, fragment: str) -> None:
    proc = _check_config({"BALAGG_ACCOUNTS": accounts})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_rejects_bad_setting() -> None:
    proc = _check_config({"BALAGG_PORT": "not-a-port", "BALAGG_ACCOUNTS": "[]"})
    assert proc.returncode == 2
    assert "BALAGG_PORT" in proc.stderr and "Traceback" not in proc.stderr


def test_every_account_error_is_listed_at_once() -> None:
    accounts = [
        {"id": "b", "venue": "bitopro", "api_key": CANARY},
        {"id": "k", "venue": "kraken", "api_key": CANARY},
        {"id": "w", "venue": "solanatracker", "api_key": CANARY, "wallets": [CANARY, 7]},
        {"id": "k", "venue": "sfox", "api_key": "${NOT_SET_ANYWHERE}"},
    ]
    with pytest.raises(ConfigError) as info:
        load_accounts(json.dumps(accounts), Path("/nonexistent"), {})
    assert info.value.problems == (
        "account b: api_secret: required for venue bitopro",
        "account b: email: required for venue bitopro",
        "account k: venue: must be one of bitopro, sfox, deltadefi, solanatracker",
        "account w: wallets: item 1 is not a Solana address (base58, 32-44 characters)",
        "account w: wallets: item 2 is not a Solana address (base58, 32-44 characters)",
        "account k: api_key: environment variable ${NOT_SET_ANYWHERE} is not set",
        "account k: id: duplicate account id (also account #2)",
    )
    assert CANARY not in str(info.value)


def _run_cli(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BALAGG_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "app", command],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_fails_on_a_missing_accounts_file(tmp_path: Path) -> None:
    absent = tmp_path / "acounts.yaml"
    proc = _run_cli("check-config", {"BALAGG_ACCOUNTS_FILE": str(absent)}, tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.splitlines() == [
        f"configuration error: setting BALAGG_ACCOUNTS_FILE: {absent} does not exist"
        " (set BALAGG_ALLOW_NO_ACCOUNTS=true to run with no accounts)"
    ]
    assert "ok:" not in proc.stdout


def test_check_config_fails_on_the_missing_default_accounts_file(tmp_path: Path) -> None:
    proc = _run_cli("check-config", {}, tmp_path)
    assert proc.returncode == 2
    assert "setting BALAGG_ACCOUNTS_FILE: accounts.yaml does not exist" in proc.stderr


def test_check_config_runs_with_no_accounts_when_allowed(tmp_path: Path) -> None:
    env = {"BALAGG_ACCOUNTS_FILE": str(tmp_path / "absent.yaml"), "BALAGG_ALLOW_NO_ACCOUNTS": "1"}
    proc = _run_cli("check-config", env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ok: 0 enabled account(s) of 0" in proc.stdout


def test_serve_stops_at_start_up_on_a_missing_accounts_file(tmp_path: Path) -> None:
    absent = tmp_path / "acounts.yaml"
    env = {"BALAGG_ACCOUNTS_FILE": str(absent), "BALAGG_DATA_DIR": str(tmp_path / "data")}
    proc = _run_cli("serve", env, tmp_path)
    assert proc.returncode == 2
    assert f"setting BALAGG_ACCOUNTS_FILE: {absent} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


EVERY_MISTAKE = [
    {"id": "w1", "venue": "solanatracker", "api_key": CANARY + "-a", "wallets": 42},
    {"id": "w2", "venue": "solanatracker", "api_key": CANARY + "-b", "wallets": None},
    {"id": "w3", "venue": "solanatracker", "api_key": CANARY + "-c", "wallets": [CANARY]},
    {"id": "k1", "venue": "kraken", "api_key": CANARY + "-d"},
    {"id": "s1", "venue": "sfox", "api_key": CANARY + "-e"},
    {"id": "s1", "venue": "sfox", "api_key": CANARY + "-f"},
    {"id": "s2", "venue": "sfox", "api_key": "${NOT_SET_ANYWHERE}"},
    {"id": "b1", "venue": "bitopro", "api_key": CANARY + "-g", "email": "e@example.com"},
]


def test_check_config_lists_every_error_at_once(tmp_path: Path) -> None:
    env = {
        "BALAGG_ACCOUNTS": json.dumps(EVERY_MISTAKE),
        "BALAGG_STATIC_PRICES": "BTC=97000",
        "BALAGG_PORT": "eighty",
        "BALAGG_API_TOKENS": CANARY + "-tok",
        "BALAGG_REDIS_URL": f"redis://:{CANARY}@127.0.0.1:6379/0",
    }
    proc = _run_cli("check-config", env, tmp_path)
    assert proc.returncode == 2
    prefix = "configuration error: "
    assert proc.stderr.splitlines() == [
        prefix + "setting BALAGG_PORT: must be a whole number",
        prefix + "setting BALAGG_STATIC_PRICES: must be a JSON object of asset to decimal"
        ' price, e.g. {"BTC": "97000.5"}',
        prefix + "account w1: wallets: must be a list of Solana addresses",
        prefix + "account w2: wallets: must be a list of Solana addresses",
        prefix + "account w3: wallets: item 1 is not a Solana address (base58, 32-44 characters)",
        prefix + "account k1: venue: must be one of bitopro, sfox, deltadefi, solanatracker",
        prefix + "account s1: id: duplicate account id (also account #5)",
        prefix + "account s2: api_key: environment variable ${NOT_SET_ANYWHERE} is not set",
        prefix + "account b1: api_secret: required for venue bitopro",
    ]
    assert CANARY not in proc.stdout + proc.stderr
    for jargon in ("Traceback", "Input should", "pydantic", "type=", "valid list"):
        assert jargon not in proc.stderr


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "BALAGG_STATIC_PRICES",
            '{"BTC": "lots"}',
            "setting BALAGG_STATIC_PRICES: BTC: must be a decimal number",
        ),
        (
            "BALAGG_STATIC_PRICES",
            '["BTC", 1]',
            "setting BALAGG_STATIC_PRICES: must be a JSON object of asset to decimal price,"
            ' e.g. {"BTC": "97000.5"}',
        ),
        (
            "BALAGG_LOG_LEVEL",
            "loud",
            "setting BALAGG_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        ),
        ("BALAGG_LEASE_MS", "10", "setting BALAGG_LEASE_MS: must be at least 1000"),
        ("BALAGG_PORT", "70000", "setting BALAGG_PORT: must be at most 65535"),
        ("BALAGG_HEARTBEAT", "soon", "setting BALAGG_HEARTBEAT: must be a number"),
        (
            "BALAGG_REDIS_URL",
            "http://" + CANARY,
            "setting BALAGG_REDIS_URL: must be a redis://, rediss:// or unix:// URL",
        ),
        (
            "BALAGG_ALLOW_NO_ACCOUNTS",
            "perhaps",
            "setting BALAGG_ALLOW_NO_ACCOUNTS: must be true or false",
        ),
    ],
)
def test_a_bad_setting_is_one_clear_line(name: str, value: str, line: str) -> None:
    proc = _check_config({name: value, "BALAGG_ACCOUNTS": "[]"})
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["configuration error: " + line]
    assert CANARY not in proc.stderr


def test_workers_setting_takes_a_count_or_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import auto_workers

    assert Settings(_env_file=None).workers == 1
    monkeypatch.setenv("BALAGG_WORKERS", "auto")
    assert Settings(_env_file=None).workers == auto_workers() >= 1
    monkeypatch.setenv("BALAGG_WORKERS", "3")
    assert Settings(_env_file=None).workers == 3
    for bad in ("0", "65", "many"):
        monkeypatch.setenv("BALAGG_WORKERS", bad)
        with pytest.raises(ValueError):
            Settings(_env_file=None)


def test_serve_workers_argument_is_checked_before_anything_starts() -> None:
    from app.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve", "--workers", "2"]).workers == 2
    assert parser.parse_args(["serve"]).workers is None  # BALAGG_WORKERS, else 1
    assert parser.parse_args(["serve", "--workers", "auto"]).workers >= 1
    for bad in ("0", "-1", "x"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["serve", "--workers", bad])
        assert exc.value.code == 2
