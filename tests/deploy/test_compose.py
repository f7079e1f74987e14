"""docker-compose.yml and the Containerfile: valid, and the isolation they promise holds.

``docker-compose config`` (Debian's docker-compose 1.29, installed by ``scripts/setup.sh
--test``) validates and renders the file without a Docker engine; the invariants are checked
on its rendering (profiles included), so anchors and merges are resolved as Compose does.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from tests.helpers.requirements import require

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
EGRESS_OVERRIDE = REPO / "deploy" / "compose.egress.yml"
CONTAINERFILE = REPO / "Containerfile"
SOCKET = "/run/dagger/engine.sock"
ENGINES = ("dagger-engine",)
DATA_SERVICES = {"postgres", "nats"}
ENV = {"AIRLOCK_DB_PASSWORD": "test-password"}


def pinned_dagger_io() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [Requirement(d) for d in deps if Requirement(d).name == "dagger-io"]
    (pin,) = [s.version for s in spec.specifier if s.operator == "=="]
    return pin


def compose_config(
    *args: str, env: dict[str, str] | None = None, extra_files: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    require("docker-compose", None if exe else "not on PATH (Debian package docker-compose; "
            "scripts/setup.sh --test installs it)")
    assert exe is not None
    env = {"PATH": "/usr/bin:/bin", **(ENV if env is None else env)}
    files = [a for f in (COMPOSE, *extra_files) for a in ("-f", str(f))]
    return subprocess.run([exe, *files, *args, "config"], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    r = compose_config()
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]


def networks_of(service: dict[str, Any]) -> set[str]:
    nets = service.get("networks") or {}
    return set(nets)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return dict(env) if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of each volume (short syntax, as docker-compose renders it)."""
    out = {}
    for v in service.get("volumes") or []:
        source, target = v.split(":")[:2]
        out[target] = source
    return out


def test_compose_file_is_valid() -> None:
    r = compose_config()
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    default = {n for n, s in services.items() if not s.get("profiles")}
    assert {"postgres", "nats", "dagger-engine", "migrate", "control-plane", "relay",
            "executor"} <= default
    # One engine for every run: no second engine or executor pool for egress.
    assert not [n for n in services if "egress" in n]


def test_database_password_is_required() -> None:
    r = compose_config(env={})
    assert r.returncode != 0
    assert "AIRLOCK_DB_PASSWORD" in r.stderr


def test_engine_is_privileged_with_state_volume_and_socket(
    services: dict[str, dict[str, Any]], config: dict[str, Any]
) -> None:
    for name in ENGINES:
        engine = services[name]
        assert engine["privileged"] is True
        vols = volume_targets(engine)
        # A named volume (not the container's overlayfs) for the engine's state.
        assert vols["/var/lib/dagger"] in config["volumes"]
        assert vols["/run/dagger"] in config["volumes"]
        cmd = engine["command"]
        assert cmd[cmd.index("--addr") + 1] == "unix://" + SOCKET
        assert "ports" not in engine  # no TCP listener, nothing published


def test_engine_image_matches_the_sdk(services: dict[str, dict[str, Any]]) -> None:
    tag = "v" + pinned_dagger_io()
    for name in ENGINES:
        assert services[name]["image"] == f"registry.dagger.io/engine:{tag}"


def test_engine_network_is_internal_and_has_no_data_services(
    services: dict[str, dict[str, Any]], config: dict[str, Any]
) -> None:
    (net,) = networks_of(services["dagger-engine"])
    assert config["networks"][net].get("internal") is True  # no route to the internet
    members = {n for n, s in services.items() if net in networks_of(s)}
    assert not members & DATA_SERVICES
    # Everything an agent could reach through the engine: the engine and the read-only registry.
    assert members <= {"dagger-engine", "registry"}
    # No other network of the engine either; the egress engine too stays away from the data.
    for name in ENGINES:
        for other in networks_of(services[name]):
            reach = {n for n, s in services.items() if other in networks_of(s)}
            assert not reach & DATA_SERVICES, (name, other, reach)


def test_data_services_are_not_published(services: dict[str, dict[str, Any]],
                                         config: dict[str, Any]) -> None:
    for name in DATA_SERVICES:
        assert "ports" not in services[name]
        for net in networks_of(services[name]):
            assert config["networks"][net].get("internal") is True


def test_registry_seen_by_the_engines_is_read_only(services: dict[str, dict[str, Any]]) -> None:
    config_file = volume_targets(services["registry"])["/etc/docker/registry/config.yml"]
    doc = yaml.safe_load(Path(config_file).read_text())
    assert doc["storage"]["maintenance"]["readonly"]["enabled"] is True
    push = services["registry-push"]
    assert all(p.startswith("127.0.0.1:") for p in push["ports"])
    assert not networks_of(push) & set().union(*(networks_of(services[e]) for e in ENGINES))


def test_every_long_running_service_has_a_health_check(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        if svc.get("restart") == "no":  # one-shot jobs (migrate)
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_executors_use_dagger_through_the_socket(services: dict[str, dict[str, Any]]) -> None:
    pools = {"executor": "dagger-engine"}
    for name, engine in pools.items():
        svc = services[name]
        assert svc["command"] == ["executor"]
        env = env_of(svc)
        assert env["AIRLOCK_RUNTIME"] == "dagger"
        assert env["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] == "unix://" + SOCKET
        # The engine's socket volume, and no network shared with the engine.
        assert volume_targets(svc)["/run/dagger"] == volume_targets(services[engine])["/run/dagger"]
        assert not networks_of(svc) & networks_of(services[engine])
        assert svc["depends_on"][engine]["condition"] == "service_healthy"
        assert "privileged" not in svc
    assert services["executor"]["deploy"]["replicas"] >= 2
    assert not [k for k in env_of(services["executor"]) if "EGRESS" in k]


def test_the_engine_allows_the_jails_privileged_execs() -> None:
    """Every exec runs the jail with insecureRootCapabilities: the engine must grant it."""
    engine_json = json.loads((REPO / "deploy" / "dagger" / "engine.json").read_text())
    assert engine_json["security"]["insecureRootCapabilities"] is True
    engine_toml = tomllib.loads((REPO / "deploy" / "dagger" / "engine.toml").read_text())
    assert engine_toml["insecure-entitlements"] == ["security.insecure"]


def test_every_runtime_takes_runs_with_and_without_network() -> None:
    """The network is decided per run inside the sandbox (the jail; podman's --network), so no
    executor is limited to one kind of run and no egress pool setting exists."""
    from executor.runtime.dagger import DaggerRuntime
    from executor.runtime.jail import JailRuntime
    from executor.runtime.podman import PodmanRuntime
    from executor.settings import ExecutorSettings

    for runtime in (DaggerRuntime, JailRuntime, PodmanRuntime):
        assert runtime.network_pool is None, runtime
    assert "engine_has_egress" not in ExecutorSettings.model_fields


def test_egress_override_puts_only_the_engine_on_a_network_out() -> None:
    r = compose_config(extra_files=(EGRESS_OVERRIDE,))
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    services = cfg["services"]
    assert networks_of(services["dagger-engine"]) == {"sandbox", "egress"}
    assert not cfg["networks"]["egress"].get("internal")  # a route out
    on_egress = {n for n, s in services.items() if "egress" in networks_of(s)}
    assert on_egress == {"dagger-engine"}  # nothing else, and never PostgreSQL or NATS
    assert networks_of(services["postgres"]) == {"backend"}


def test_control_plane_and_migrations(services: dict[str, dict[str, Any]]) -> None:
    cp = services["control-plane"]
    assert cp["command"] == ["serve"]
    assert env_of(cp)["AIRLOCK_MIGRATE_ON_START"] == "false"
    assert services["migrate"]["command"] == ["migrate"]
    for name in ("control-plane", "relay", "executor"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"
    assert "grpc_health" in " ".join(cp["healthcheck"]["test"])
    assert all(p.startswith("127.0.0.1:") for p in cp["ports"])
    assert services["relay"]["command"] == ["relay"]
    assert env_of(services["relay"])["AIRLOCK_NATS_URL"] == "nats://nats:4222"


def test_nats_has_jetstream_on_a_volume(services: dict[str, dict[str, Any]],
                                        config: dict[str, Any]) -> None:
    nats = services["nats"]
    cmd = nats["command"]
    assert "-js" in cmd
    store = cmd[cmd.index("-sd") + 1]
    assert volume_targets(nats)[store] in config["volumes"]
    assert "8222" in " ".join(nats["healthcheck"]["test"])  # the monitoring port
    assert volume_targets(services["postgres"])["/var/lib/postgresql/data"] in config["volumes"]


def test_containerfile() -> None:
    text = CONTAINERFILE.read_text()
    (version,) = re.findall(r"^ARG DAGGER_VERSION=(\S+)$", text, re.M)
    assert version == pinned_dagger_io()  # the CLI the SDK drives = the engine = dagger-io
    assert "FROM registry.dagger.io/engine:v${DAGGER_VERSION}" in text
    assert re.search(r"^ARG PYTHON_IMAGE=\S*python:3\.11-slim$", text, re.M)
    assert re.search(r"^USER 10001", text, re.M)  # non-root; the engine socket's group
    assert '\nENTRYPOINT ["airlock"]' in text
    # Migrations live outside the packages: the install must keep them findable.
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    assert "pip install -e ." in text or "migrations*" in packages
    assert "COPY migrations/ migrations/" in text


def test_compose_commands_exist_in_the_cli(services: dict[str, dict[str, Any]]) -> None:
    from airlock.cli import build_parser

    for name, svc in services.items():
        if svc.get("image") != "airlock:local":
            continue
        argv = svc["command"]
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                ns = build_parser().parse_args(argv)
            except SystemExit:
                raise AssertionError(f"{name}: `airlock {' '.join(argv)}`: {err.getvalue()}") from None
        assert ns.handler is not None, name
