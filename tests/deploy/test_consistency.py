"""What ties the deployment files to the service: every file parses, every BALAGG_*
variable is a real setting, the accounts files pass the service's own validation, and the
demo credentials stay in the demo."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.accounts import load_accounts
from app.settings import Settings
from tests.deploy.support import (
    COMPOSE_FILE,
    DEPLOY,
    DEPLOY_FILES,
    DOCKERFILE,
    K8S_BASE,
    OPERATIONS_DOC,
    ROOT,
    doc_anchors,
    dockerfile_instructions,
    env_pairs,
    load_yaml,
)

DEMO_ACCOUNTS = DEPLOY / "compose" / "accounts.demo.yaml"
# The simulators listen on consecutive ports from --port in this venue order.
SIMULATOR_ORDER = ("bitopro", "sfox", "deltadefi", "solanatracker")


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_file_parses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        assert isinstance(json.loads(text), dict)
    else:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        assert docs, f"{path} is empty"


def _balagg_variables() -> dict[str, set[str]]:
    """BALAGG_* name -> the files that set it."""
    found: dict[str, set[str]] = {}

    def add(name: str, where: str) -> None:
        if name.startswith("BALAGG_"):
            found.setdefault(name, set()).add(where)

    for instruction in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction.keyword == "ENV":
            for name in env_pairs(instruction.args):
                add(name, "Dockerfile")
    for name, service in load_yaml(COMPOSE_FILE)["services"].items():
        for var in service.get("environment", {}):
            add(var, f"docker-compose.yml:{name}")
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            for container in _containers(doc):
                for entry in container.get("env", []):
                    add(entry["name"], str(path.relative_to(ROOT)))
    return found


def _containers(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict) or doc.get("kind") not in ("Deployment", "StatefulSet"):
        return []
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return containers


def test_every_balagg_variable_is_a_setting() -> None:
    found = _balagg_variables()
    assert {"BALAGG_REDIS_URL", "BALAGG_INSTANCE_ID", "BALAGG_HOST"} <= set(found)
    fields = set(Settings.model_fields)
    for name, where in sorted(found.items()):
        field = name.removeprefix("BALAGG_").lower()
        assert field in fields, f"{name} (in {sorted(where)}) is not a setting of app.settings"


def test_no_deploy_file_mentions_an_unknown_balagg_variable() -> None:
    """Also catches variables in comments and docs snippets (a typo there misleads)."""
    fields = set(Settings.model_fields)
    paths = [*DEPLOY_FILES, DOCKERFILE, OPERATIONS_DOC]
    for path in paths:
        for name in set(re.findall(r"\bBALAGG_[A-Z_]+\b", path.read_text(encoding="utf-8"))):
            assert name.removeprefix("BALAGG_").lower() in fields, f"{path.name}: {name}"


def test_demo_accounts_reach_the_simulators() -> None:
    accounts = load_accounts(None, DEMO_ACCOUNTS, {})
    assert [a.venue for a in accounts] == list(SIMULATOR_ORDER)
    for port, account in enumerate(accounts, start=9001):
        assert account.ws_url is not None and account.rest_url is not None
        assert account.ws_url.startswith(f"ws://simulators:{port}"), account.ws_url
        assert account.rest_url == f"http://simulators:{port}"


def test_demo_accounts_use_the_simulators_default_credentials() -> None:
    runner = pytest.importorskip("app.simulators.runner")
    assert tuple(runner.VENUES) == SIMULATOR_ORDER
    for account in load_accounts(None, DEMO_ACCOUNTS, {}):
        expected = runner.DEFAULT_ACCOUNTS[account.venue]
        for name in ("api_key", "api_secret", "email", "data_api_key"):
            secret = getattr(account, name)
            actual = secret.get_secret_value() if secret is not None else None
            assert actual == expected.get(name), f"{account.id}: {name} differs"
        assert list(account.wallets) == list(expected.get("wallets", [])), account.id


def test_compose_default_accounts_file_starts_cleanly() -> None:
    assert load_accounts(None, DEPLOY / "compose" / "accounts.yaml", {}) == []


def test_demo_credentials_appear_only_in_the_demo_accounts_file() -> None:
    paths = [*DEPLOY_FILES, DOCKERFILE, OPERATIONS_DOC, K8S_BASE / "accounts.yaml"]
    for path in paths:
        if path == DEMO_ACCOUNTS:
            continue
        assert "sim-" not in path.read_text(encoding="utf-8"), f"{path} holds demo credentials"


def test_operations_doc_covers_resync_states_and_scaling() -> None:
    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    assert "POST" in text and "/v1/accounts/sfox-main/resync" in text
    for state in ("connecting", "syncing", "live", "stale", "auth_failed", "disabled"):
        assert f"`{state}`" in text, state
    assert "lease" in text


def test_operations_doc_internal_links_resolve() -> None:
    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    anchors = doc_anchors(OPERATIONS_DOC)
    for link in re.findall(r"\]\(#([^)]+)\)", text):
        assert link in anchors, f"docs/operations.md links to missing #{link}"
