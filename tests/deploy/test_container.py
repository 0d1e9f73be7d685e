"""The image (Dockerfile, .dockerignore) and docker-compose.yml."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from app.cli import build_parser
from tests.deploy.support import (
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    PROMETHEUS,
    ROOT,
    Instruction,
    dockerfile_instructions,
    env_pairs,
    exec_form,
    load_yaml,
    parse_cli,
    run,
)


def _instructions() -> list[Instruction]:
    return dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _final(keyword: str) -> list[Instruction]:
    instructions = _instructions()
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.keyword == keyword and i.stage == last]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


def image_command(extra: list[str] | None = None) -> list[str]:
    """ENTRYPOINT + (``extra`` or CMD) of the final stage."""
    (entrypoint,) = _final("ENTRYPOINT")
    (cmd,) = _final("CMD")
    return exec_form(entrypoint.args) + (extra if extra is not None else exec_form(cmd.args))


def cli_args(command: list[str]) -> list[str]:
    """What follows the ``balance-aggregator`` program in a full command line."""
    assert "balance-aggregator" in command, command
    return command[command.index("balance-aggregator") + 1 :]


# -- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    instructions = _instructions()
    args = {}
    for i in instructions:
        if i.keyword == "ARG" and "=" in i.args:
            key, value = i.args.split("=", 1)
            args[key] = value
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "expected a builder stage and a runtime stage"
    final_image = froms[-1].split()[0]
    for key, value in args.items():
        final_image = final_image.replace(f"${{{key}}}", value)
    assert final_image.startswith("python:3.11-slim"), final_image
    assert any(i.keyword == "COPY" and "--from=" in i.args for i in _final("COPY"))


def test_dockerfile_runs_as_non_root() -> None:
    users = _final("USER")
    assert users, "the runtime stage sets no USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user


def test_dockerfile_environment_ports_volume_and_signal() -> None:
    env: dict[str, str] = {}
    for i in _final("ENV"):
        env.update(env_pairs(i.args))
    assert env["BALAGG_HOST"] == "0.0.0.0"
    assert env["BALAGG_DATA_DIR"] == "/data"
    port = env.get("BALAGG_PORT", "8000")
    assert [i.args for i in _final("EXPOSE")] == [port]
    (volume,) = _final("VOLUME")
    assert "/data" in exec_form(volume.args)
    assert [i.args for i in _final("STOPSIGNAL")] == ["SIGTERM"]


def test_dockerfile_healthcheck_probes_healthz_with_python() -> None:
    (check,) = _final("HEALTHCHECK")
    _options, _, command = check.args.partition("CMD ")
    argv = exec_form(command)
    assert argv[0] in ("python", "python3"), "slim images have no curl: use python"
    assert "/healthz" in " ".join(argv)


def test_dockerfile_command_is_a_real_subcommand() -> None:
    command = image_command()
    assert command[0] in ("tini", "balance-aggregator"), command
    assert parse_cli(cli_args(command)) == "serve"


def test_dockerignore_keeps_local_state_out_but_the_build_inputs_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("!")
    ]

    def ignored(name: str) -> bool:
        return any(fnmatch.fnmatch(name, p.lstrip("/")) for p in patterns)

    for name in (".venv", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", "data",
                 ".env", "accounts.yaml"):  # fmt: skip
        assert ignored(name), f"{name} should be in .dockerignore"
    from_context = [
        i.args.split()[:-1]
        for i in _instructions()
        if i.keyword == "COPY" and "--from=" not in i.args
    ]
    assert from_context, "the builder copies nothing from the build context"
    for sources in from_context:
        for source in sources:
            assert not ignored(source), f"{source} is copied but .dockerignore drops it"


# -- docker-compose.yml (read as YAML: no tool needed) -------------------------------------


def test_compose_redis_is_7_with_aof_on_a_named_volume_and_a_healthcheck() -> None:
    compose = _compose()
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7-alpine"
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    source = redis["volumes"][0].split(":")[0]
    assert source in compose["volumes"], "Redis data should live on a named volume"
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_compose_service_uses_redis_and_a_read_only_accounts_file() -> None:
    service = _compose()["services"]["balance-aggregator"]
    assert service["build"] == "."
    env = service["environment"]
    assert env["BALAGG_REDIS_URL"] == "redis://redis:6379/0"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    mounts = [v for v in service["volumes"] if v.endswith(f":{env['BALAGG_ACCOUNTS_FILE']}:ro")]
    assert mounts, "the accounts file is mounted read-only at BALAGG_ACCOUNTS_FILE"
    assert service["env_file"] == [{"path": ".env", "required": False}]
    assert any(str(p).endswith(":8000") for p in service["ports"])
    assert parse_cli(cli_args(image_command(service.get("command")))) == "serve"


def test_compose_prometheus_loads_the_rules_from_deploy() -> None:
    prometheus = _compose()["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus")
    mounts = {v.split(":")[0] for v in prometheus["volumes"]}
    assert {"./deploy/prometheus/prometheus.yml", "./deploy/prometheus/alerts.yml"} <= mounts
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file(), rule_file
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "balance-aggregator"]
    services = _compose()["services"]
    for sd in job["dns_sd_configs"]:
        assert sd["port"] == 8000
        for name in sd["names"]:
            assert name in services, f"prometheus.yml scrapes unknown service {name}"


def test_compose_demo_profile_runs_the_simulators_and_a_service_wired_to_them() -> None:
    services = _compose()["services"]
    simulators = services["simulators"]
    assert simulators["profiles"] == ["demo"]
    argv = cli_args(image_command(simulators["command"]))
    assert parse_cli(argv) == "simulate"
    args = build_parser().parse_args(argv)
    assert (args.host, args.port) == ("0.0.0.0", 9001)
    demo = services["balance-aggregator-demo"]
    assert demo["profiles"] == ["demo"]
    assert demo["depends_on"]["simulators"]["condition"] == "service_healthy"
    target = demo["environment"]["BALAGG_ACCOUNTS_FILE"]
    assert f"./deploy/compose/accounts.demo.yaml:{target}:ro" in demo["volumes"]
    assert "env_file" not in demo, "the demo service must not receive real credentials"
    for name, service in services.items():
        if name not in ("simulators", "balance-aggregator-demo", "grafana"):
            assert "profiles" not in service, f"{name} should start with a plain `up`"


# -- docker compose config (needs Docker Compose v2) ---------------------------------------


def _compose_config(compose: list[str], tmp_path: Path, *profiles: str) -> dict[str, Any]:
    # A copy in an empty directory: a developer's own .env must not leak into the result.
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    argv = [*compose, "-f", str(tmp_path / "docker-compose.yml")]
    for profile in profiles:
        argv += ["--profile", profile]
    proc = run([*argv, "config", "--format", "json"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_compose_config_is_valid(compose: list[str], tmp_path: Path) -> None:
    config = _compose_config(compose, tmp_path)
    assert set(config["services"]) == {"redis", "postgres", "balance-aggregator", "prometheus"}


def test_compose_service_keeps_history_in_postgresql() -> None:
    compose = _compose()
    service = compose["services"]["balance-aggregator"]
    url = service["environment"]["BALAGG_HISTORY_URL"]
    assert url.startswith("postgresql+asyncpg://balagg:") and url.endswith("@postgres:5432/balagg")
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    postgres = compose["services"]["postgres"]
    assert postgres["volumes"][0].split(":")[0] in compose["volumes"]
    assert "ports" not in postgres, "the history database stays inside the compose network"


def test_compose_config_is_valid_with_every_profile(compose: list[str], tmp_path: Path) -> None:
    demo = _compose_config(compose, tmp_path, "demo")
    assert {"simulators", "balance-aggregator-demo"} <= set(demo["services"])
    full = _compose_config(compose, tmp_path, "demo", "grafana")
    assert "grafana" in full["services"]


def test_compose_defaults_point_at_files_that_exist() -> None:
    """Every bind-mount source (with ${VAR:-default} resolved) exists in the repository."""
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            spec = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(volume))  # ${VAR:-default}
            source = spec.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_compose_ports_bind_to_loopback_by_default() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("${HTTP_BIND:-127.0.0.1}:"), f"{name}: {port}"


@pytest.mark.parametrize("service", ["balance-aggregator", "balance-aggregator-demo"])
def test_compose_service_hardening(service: str) -> None:
    spec = _compose()["services"][service]
    assert spec["read_only"] is True
    assert spec["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in spec["security_opt"]
