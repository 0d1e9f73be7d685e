"""Prometheus rules and configuration, and the Grafana dashboard."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from app.metrics import Metrics
from app.prices.graph import PriceGraph
from app.prices.metrics import ValuationCollector
from tests.deploy.support import (
    EXTRA_METRICS,
    OPERATIONS_DOC,
    PROMETHEUS,
    PROMETHEUS_BUILTINS,
    ROOT,
    SPEC_METRICS,
    alert_rules,
    all_panels,
    doc_anchors,
    family_of,
    load_dashboard,
    load_yaml,
    promql_metric_names,
    promql_selector_labels,
    run,
    sample_names,
)

ALLOWED = sample_names(SPEC_METRICS) | sample_names(EXTRA_METRICS)
ALLOWED_IN_ALERTS = ALLOWED | sample_names(PROMETHEUS_BUILTINS)


def _dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable of the dashboard."""
    dashboard = load_dashboard()
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", str(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = str(query["query"] if isinstance(query, dict) else query)
            # label_values(<selector>, <label>) reads <selector>
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text.strip())
            yield f"variable {variable['name']}", match.group(1) if match else text


def _alert_queries() -> Iterator[tuple[str, str]]:
    for rule in alert_rules():
        yield f"alert {rule['alert']}", str(rule["expr"])


# -- promtool --------------------------------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    proc = run([promtool, "check", "rules", str(PROMETHEUS / "alerts.yml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_check_config(promtool: str) -> None:
    proc = run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_rule_unit_tests(promtool: str) -> None:
    proc = run([promtool, "test", "rules", str(PROMETHEUS / "alerts.test.yml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- alert rules -----------------------------------------------------------------------------


def test_required_alerts_exist() -> None:
    rules = {r["alert"]: str(r["expr"]) for r in alert_rules()}
    required = {
        "BalaggAccountDown": "balagg_upstream_connected",
        "BalaggAccountStale": 'state="stale"',
        "BalaggAccountAuthFailed": 'state="auth_failed"',
        "BalaggSequenceGaps": 'reason="sequence_gap"',
        "BalaggRedisErrors": "balagg_redis_errors_total",
        "BalaggFrequentReconnects": "balagg_upstream_reconnects_total",
        "BalaggUpstreamFramesRejected": "balagg_upstream_errors_total",
        "BalaggStreamClientsTooSlow": "balagg_downstream_disconnects_total",
        "BalaggTargetDown": "up{",
    }
    for name, fragment in required.items():
        assert name in rules, f"missing alert {name}"
        assert fragment in rules[name], f"{name}: expected {fragment!r} in {rules[name]!r}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    path, _, anchor = str(annotations["runbook_url"]).partition("#")
    assert path.endswith("docs/operations.md")
    assert anchor == rule["alert"].lower(), "runbook anchor should be the alert's own section"
    assert anchor in doc_anchors(OPERATIONS_DOC), f"docs/operations.md has no #{anchor}"


def test_alert_names_are_unique() -> None:
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))


def test_target_alerts_match_the_scrape_job() -> None:
    jobs = {j["job_name"] for j in load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]}
    for where, expr in _alert_queries():
        for name, _labels in promql_selector_labels(expr):
            if name == "up":
                assert 'job="balance-aggregator"' in expr, where
    assert "balance-aggregator" in jobs


def test_alert_reason_labels_are_set_by_the_service() -> None:
    """SPEC §10 names only some ``reason`` values; a rule on a value the service never sets
    would stay silent, so every other value must appear in the code that counts it."""
    spec_reasons = {"parse", "auth", "sequence_gap"}
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "app").rglob("*.py"))
    selector = re.compile(r'\b(balagg_\w+?)(?:_total)?\{[^}]*\breason="(\w+)"')
    for where, expr in _alert_queries():
        for metric, reason in selector.findall(expr):
            counted = f"{metric.removeprefix('balagg_')}.labels("
            if reason in spec_reasons or counted not in source:
                continue  # SPEC-fixed value, or the counting code is not there to compare
            assert f'"{reason}"' in source, f"{where}: no code sets {metric} reason={reason!r}"


# -- metric names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expr"), [*_alert_queries(), *_dashboard_queries()], ids=lambda v: str(v)[:60]
)
def test_queries_use_only_known_balagg_metrics(where: str, expr: str) -> None:
    allowed = ALLOWED_IN_ALERTS if where.startswith("alert") else ALLOWED
    names = promql_metric_names(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    for name in names:
        assert name in allowed, f"{where}: {name} is not a SPEC §10 balagg_ metric"
        assert name.startswith("balagg_") or name in PROMETHEUS_BUILTINS
    for name, labels in promql_selector_labels(expr):
        unknown = labels - allowed.get(name, frozenset())
        assert not unknown, f"{where}: {name} has no label(s) {sorted(unknown)}"


def test_metric_extraction_understands_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (instance, le) (rate(balagg_fold_seconds_bucket"
        '{instance=~"$instance"}[$__rate_interval]))) > 0.01 unless on (instance) up == 0'
    )
    assert promql_metric_names(expr) == {"balagg_fold_seconds_bucket", "up"}
    assert family_of("balagg_fold_seconds_bucket") == "balagg_fold_seconds"


def test_extra_metrics_are_exported_by_the_service() -> None:
    """The non-SPEC metrics the rules and dashboard use still exist in app.metrics, with
    the type and labels assumed here; so do the SPEC ones it defines."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    defined = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        defined[name] = family.type
    for name, (kind, labels) in {**SPEC_METRICS, **EXTRA_METRICS}.items():
        if name == "balagg_balance" or name in VALUATION_FAMILIES:
            continue  # computed at scrape time by collectors, not defined in app.metrics
        assert defined.get(name) == kind, f"{name}: app.metrics defines {defined.get(name)}"
        attribute = name.removeprefix("balagg_").removesuffix("_total")
        metric = getattr(metrics, attribute, None)
        if metric is not None:
            assert set(metric._labelnames) == labels, name


VALUATION_FAMILIES = {
    family.name: frozenset(family._labelnames)
    for family in ValuationCollector(PriceGraph(), list).describe()
}


def test_valuation_metrics_are_exported_by_their_collector() -> None:
    for name, labels in VALUATION_FAMILIES.items():
        assert EXTRA_METRICS[name] == ("gauge", labels), name


# -- dashboard -------------------------------------------------------------------------------


def test_dashboard_shape_and_datasource_variable() -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = []
    for panel in all_panels(dashboard["panels"]):
        ids.append(panel["id"])
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_covers_every_spec_metric() -> None:
    used = set()
    for _where, expr in _dashboard_queries():
        used |= {family_of(n) for n in promql_metric_names(expr)}
    missing = set(SPEC_METRICS) - used
    assert not missing, f"no dashboard panel shows {sorted(missing)}"


def _exported_names() -> set[str]:
    """Every sample and family name the service can expose on ``/metrics``."""
    registry = CollectorRegistry()
    Metrics(registry)
    families = [(f.name, f.type) for f in registry.collect()]
    families += [(name, "gauge") for name in VALUATION_FAMILIES]
    families.append(("balagg_balance", "gauge"))  # computed at scrape time
    names: set[str] = set()
    for name, kind in families:
        names.add(name)
        if kind == "counter":
            names.add(name + "_total")
        elif kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


DOCS = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / ".env.example"])


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_metrics_the_service_exports(doc: Any) -> None:
    """An operator greps /metrics for what the runbook names: every balagg_ name written
    in the docs must be one the service really exports."""
    exported = _exported_names()
    text = doc.read_text(encoding="utf-8")
    unknown = sorted(set(re.findall(r"\bbalagg_[a-z0-9_]+", text)) - exported)
    assert not unknown, f"{doc.name} names metrics the service does not export: {unknown}"
