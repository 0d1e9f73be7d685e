"""Settings and the accounts file: every invalid case stops start-up with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import ConfigError, Settings, load_accounts

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


def test_missing_file_means_no_accounts(tmp_path: Path) -> None:
    assert load_accounts(None, tmp_path / "absent.yaml", {}) == []


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [
        (
            [{"id": "a", "venue": "sfox", "api_key": "${MISSING_VAR}"}],
            "account 'a' field 'api_key': environment variable ${MISSING_VAR} is not set",
        ),
        (
            [{"id": "a", "venue": "kraken", "api_key": "x"}],
            "account 'a' field 'venue': unknown venue",
        ),
        (
            [
                {"id": "a", "venue": "sfox", "api_key": "x"},
                {"id": "a", "venue": "sfox", "api_key": "y"},
            ],
            "account 'a' field 'id': duplicate account id",
        ),
        (
            [{"id": "Bad Id!", "venue": "sfox", "api_key": "x"}],
            "account 'Bad Id!' field 'id': must match",
        ),
        (
            [{"id": "s", "venue": "solanatracker", "api_key": "x", "wallets": ["0OIl-not-base58"]}],
            "account 's' field 'wallets': '0OIl-not-base58' is not a Solana address",
        ),
        (
            [{"id": "s", "venue": "solanatracker", "api_key": "x"}],
            "account 's' field 'wallets': required for venue solanatracker",
        ),
        (
            [{"id": "b", "venue": "bitopro", "api_key": "x", "email": "e@x"}],
            "account 'b' field 'api_secret': required for venue bitopro",
        ),
        (
            [{"id": "d", "venue": "deltadefi"}],
            "account 'd' field 'api_key': required for venue deltadefi",
        ),
        (
            [{"id": "d", "venue": "deltadefi", "api_key": "x", "colour": "red"}],
            "account 'd' field 'colour': unknown field",
        ),
        (
            [{"id": "d", "venue": "deltadefi", "api_key": "x", "ws_url": "not a url"}],
            "account 'd' field 'ws_url': must be an absolute",
        ),
    ],
)
def test_invalid_accounts_name_account_and_field(
    accounts: list[dict[str, object]], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_accounts(json.dumps(accounts), Path("/nonexistent"), {})
    assert expected in str(info.value)


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
            "account 'x' field 'api_key'",
        ),
        ('[{"id":"x","venue":"nope","api_key":"' + CANARY + '"}]', "account 'x' field 'venue'"),
        (
            '[{"id":"s","venue":"solanatracker","api_key":"'
            + CANARY
            + '","wallets":["'
            + CANARY
            + '"]}]',
            "account 's' field 'wallets'",
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
