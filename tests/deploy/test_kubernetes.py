"""deploy/k8s: the manifests as written, their kustomize rendering, and schema validation."""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from types import ModuleType
from typing import Any

import pytest

from app.accounts import load_accounts
from tests.deploy.support import K8S, K8S_BASE, load_yaml, load_yaml_docs, parse_cli

# The oldest Kubernetes release the manifests are checked against, besides the newest one
# kubernetes-validate knows.
OLDEST_KUBERNETES = "1.28.0"


def _doc(name: str) -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(K8S_BASE / name)
    return data


def _deployment() -> dict[str, Any]:
    return _doc("deployment.yaml")


def _container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = _deployment()["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "balance-aggregator"]
    return container


def _env() -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container()["env"]}


def _secret_templates() -> dict[str, dict[str, str]]:
    docs = load_yaml_docs((K8S / "secret.example.yaml").read_text(encoding="utf-8"))
    return {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}


# -- the manifests as written --------------------------------------------------------------


def test_deployment_runs_replicas_as_non_root_with_a_read_only_root() -> None:
    spec = _deployment()["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["terminationGracePeriodSeconds"] > 15, "leases need time to be released"
    security = _container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_deployment_data_dir_is_an_empty_dir() -> None:
    env = _env()
    data_dir = env["BALAGG_DATA_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}
    volumes = {v["name"]: v for v in _deployment()["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[data_dir]]


def test_deployment_probes_and_resources() -> None:
    container = _container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        port = container[probe]["httpGet"]["port"]
        assert port in ports or port in ports.values(), probe
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]


def test_deployment_command_is_a_real_subcommand() -> None:
    assert "command" not in _container(), "keep the image's entrypoint (tini)"
    assert parse_cli(_container()["args"]) == "serve"


def test_deployment_identity_redis_and_credentials() -> None:
    env = _env()
    assert env["BALAGG_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    secrets = _secret_templates()
    for name, entry in env.items():
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["key"] in secrets[ref["name"]], f"{name}: key missing from the template"
    assert "secretKeyRef" in env["BALAGG_REDIS_URL"]["valueFrom"]
    assert env["BALAGG_HISTORY_URL"]["valueFrom"]["secretKeyRef"]["key"] == "history-url"
    for source in _container()["envFrom"]:
        assert source["secretRef"]["name"] in secrets


def test_deployment_mounts_the_accounts_config_map_at_the_accounts_file() -> None:
    accounts_file = PurePosixPath(_env()["BALAGG_ACCOUNTS_FILE"]["value"])
    mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
    mount = mounts[str(accounts_file.parent)]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in _deployment()["spec"]["template"]["spec"]["volumes"]}
    config_map = volumes[mount["name"]]["configMap"]["name"]
    kustomization = _doc("kustomization.yaml")
    (generator,) = [g for g in kustomization["configMapGenerator"] if g["name"] == config_map]
    assert generator["files"] == [accounts_file.name]


def test_deployment_carries_prometheus_scrape_annotations() -> None:
    annotations = _deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = [p["containerPort"] for p in _container()["ports"]]
    assert int(annotations["prometheus.io/port"]) in ports


def test_service_and_pdb_select_the_deployment_pods() -> None:
    labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    service = _doc("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in _container()["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pdb = _doc("poddisruptionbudget.yaml")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_secret_template_holds_placeholders_only() -> None:
    for name, data in _secret_templates().items():
        for key, value in data.items():
            assert "CHANGE_ME" in value, f"{name}/{key} must be a placeholder"


def test_accounts_config_map_is_valid_with_the_secret_keys_as_environment() -> None:
    """Every ${VAR} of the accounts file is a key of the venues Secret, and with those set
    the file passes the service's own validation."""
    values = json.dumps(load_yaml(K8S_BASE / "accounts.yaml"))  # values only, not comments
    references = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", values))
    (venues,) = [s["secretRef"]["name"] for s in _container()["envFrom"]]
    provided = set(_secret_templates()[venues])
    assert references == provided, "accounts.yaml and the venues Secret disagree"
    accounts = load_accounts(None, K8S_BASE / "accounts.yaml", dict.fromkeys(provided, "x"))
    assert {a.venue for a in accounts} == {"bitopro", "sfox", "deltadefi", "solanatracker"}


def test_secrets_are_not_part_of_the_kustomization() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        resources = load_yaml(kustomization).get("resources", [])
        assert not any("secret" in str(r).lower() for r in resources), kustomization


# -- kustomize and schema validation ---------------------------------------------------------


def test_kustomize_renders(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {d["kind"] for d in rendered["."]}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    (config_map,) = [d for d in rendered["."] if d["kind"] == "ConfigMap"]
    (deployment,) = [d for d in rendered["."] if d["kind"] == "Deployment"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    names = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    assert names == {config_map["metadata"]["name"]}, "generated name not wired into the pods"
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert ":" in image, f"the image should carry a tag: {image}"
    example = {d["kind"] for d in rendered["examples/redis"]}
    assert {"StatefulSet", "Deployment"} <= example


def test_manifests_validate_against_the_kubernetes_schema(
    rendered: dict[str, list[dict[str, Any]]], kubernetes_validate: ModuleType
) -> None:
    docs = [d for output in rendered.values() for d in output]
    docs += load_yaml_docs((K8S / "secret.example.yaml").read_text(encoding="utf-8"))
    versions = {OLDEST_KUBERNETES, str(kubernetes_validate.latest_version())}
    failures = []
    for version in sorted(versions):
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                failures.append(f"{version} {doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_every_pod_is_non_root_with_a_read_only_root(
    rendered: dict[str, list[dict[str, Any]]], kind: str
) -> None:
    for output in rendered.values():
        for doc in output:
            if doc["kind"] != kind:
                continue
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            for container in pod["containers"]:
                assert container["securityContext"]["readOnlyRootFilesystem"] is True
