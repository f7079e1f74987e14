"""The ``dagger/`` module (``airlock-ci``): its layout, its shared code, and its pipelines' GraphQL.

No Dagger engine runs here, so the module's pipelines are rendered by the real SDK against a
fake session serving the engine's schema (``tests/helpers/dagger_schema.py``) and every
request is validated. The module must run the *executor's* code (not a copy): checked by
identity here and, in a subprocess without the ``airlock`` distribution installed, by where
the modules are loaded from.
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import graphql
import pytest
from packaging.requirements import Requirement

from agents.manifest import load_manifest
from executor.runtime import dagger_pipeline
from executor.runtime.dagger import DaggerRuntime
from executor.runtime.dagger_pipeline import RESULT_PATH, SUPERVISOR_PATH
from executor.runtime.jail_core.bundle import BUNDLE_MOUNT
from tests.helpers import dagger_schema
from tests.helpers.dagger_schema import assert_valid, fake_client, field_args, jail_result_text

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "dagger"
MODULE_SRC = MODULE / "src"
SAMPLES = sorted(p.parent for p in (REPO / "sample_agents").glob("*/agent.yaml"))
TEXT_TRANSFORM = REPO / "sample_agents" / "text-transform"
AGENT_CMD = ["python3", "/app/main.py"]
# Imported when present by what is declared, not needed: beartype's click integration, and
# setuptools' hook from this venv's site.
OPTIONAL_IMPORTS = {"click", "_distutils_hack"}


def _main() -> Any:
    if str(MODULE_SRC) not in sys.path:
        sys.path.insert(0, str(MODULE_SRC))
    import airlock_ci.main

    return airlock_ci.main


@pytest.fixture(scope="module")
def main() -> Any:
    return _main()


@pytest.fixture(scope="module")
def schema() -> graphql.GraphQLSchema:
    return dagger_schema.load_schema()


def pinned_dagger_io() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [Requirement(d) for d in deps if Requirement(d).name == "dagger-io"]
    (pin,) = [s.version for s in spec.specifier if s.operator == "=="]
    return pin


class AgentSession(dagger_schema.FakeDaggerSchemaSession):
    """A fake engine holding one agent folder: ``file("agent.yaml").contents`` is its manifest,
    any other ``contents`` is the jail supervisor's result document."""

    def __init__(self, schema: graphql.GraphQLSchema, agent_dir: Path, **answers: Any) -> None:
        super().__init__(schema, {
            "sync": "fake-built-image", "entrypoint": AGENT_CMD[:1], "defaultArgs": AGENT_CMD[1:],
            "envVariables": [{"name": "PATH", "value": "/usr/bin:/bin"}], "workdir": "/app",
            "entries": ["libc.so.6", "ld-linux-x86-64.so.2"],
            "stdout": "1 passed", "contents": jail_result_text(exit_code=0, output=b'{"output": {}}'),
            **answers,
        })
        self.manifest_text = (agent_dir / "agent.yaml").read_text()

    async def answer(self, doc: graphql.DocumentNode, field: str) -> Any:
        if field == "contents" and {"path": "agent.yaml"} in field_args(doc, "file"):
            return self.manifest_text
        return await super().answer(doc, field)


# --- layout ----------------------------------------------------------------------------------


def test_module_layout() -> None:
    cfg = json.loads((MODULE / "dagger.json").read_text())
    assert cfg["name"] == "airlock-ci"
    assert cfg["sdk"] == {"source": "python"}
    # The module's engine (and so its vendored SDK) is the one the executor's dagger-io talks to.
    assert cfg["engineVersion"] == "v" + pinned_dagger_io()
    # A dagger/__init__.py would make the folder a regular package named `dagger` that
    # shadows the dagger-io SDK for anything run from the repository root.
    assert not (MODULE / "__init__.py").exists()
    project = tomllib.loads((MODULE / "pyproject.toml").read_text())["project"]
    assert project["name"] == "airlock-ci"
    assert (MODULE_SRC / "airlock_ci" / "main.py").is_file()  # uv_build: src/<package>/


def test_module_functions(main: Any) -> None:
    cls = main.AirlockCi
    params = {name: list(inspect.signature(getattr(cls, name)).parameters)[1:]
              for name in ("build_agent", "run_agent", "test")}
    assert params == {
        "build_agent": ["source", "base_image"],
        "run_agent": ["source", "capability", "input", "base_image"],
        "test": ["source", "pytest_args"],
    }
    source = inspect.signature(cls.test).parameters["source"].annotation
    default_paths = [str(m) for m in getattr(source, "__metadata__", ())
                     if type(m).__name__ == "DefaultPath"]
    assert default_paths == ["/"]  # the repository (the module's context directory)


_REGISTER = """
import asyncio, json, sys
sys.path[:0] = [{src!r}, {repo!r}]
import dagger, graphql
from dagger.client._core import Context
from tests.helpers.dagger_schema import (
    FakeDaggerSchemaConnection, FakeDaggerSchemaSession, field_args, load_schema)
import airlock_ci

session = FakeDaggerSchemaSession(load_schema())  # validates every request
dagger.dag._ctx = Context(conn=FakeDaggerSchemaConnection(session))
asyncio.run(airlock_ci.AirlockCi.__dagger_module__._typedefs())
functions = {{}}
for doc in session.requests:
    for f in field_args(doc, "function"):
        functions[f["name"]] = [a for a in field_args(doc, "withArg")]
print(json.dumps(functions))
"""


def test_module_registers_valid_type_definitions(schema: graphql.GraphQLSchema) -> None:
    """What the engine is told about the module (``dagger functions``), rendered by the SDK's
    own registration code and validated against the engine schema."""
    code = _REGISTER.format(src=str(MODULE_SRC), repo=str(REPO))
    env = {**os.environ, "DAGGER_MAIN_OBJECT": "AirlockCi",
           "DAGGER_DEFAULT_PYTHON_PACKAGE": "airlock_ci"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr
    functions = json.loads(r.stdout)
    args = {name: [a["name"] for a in fn] for name, fn in functions.items() if name}
    assert args == {
        "build_agent": ["source", "base_image"],
        "run_agent": ["source", "capability", "input", "base_image"],
        "test": ["source", "pytest_args"],
    }
    (source,) = [a for a in functions["test"] if a["name"] == "source"]
    assert source["defaultPath"] == "/"
    assert ".git" in source["ignore"] and "dagger/sdk" in source["ignore"]


# --- shared code -----------------------------------------------------------------------------


def test_module_and_runtime_share_the_pipeline(main: Any) -> None:
    assert main.jail_container is dagger_pipeline.jail_container
    assert main.agent_build_context is dagger_pipeline.agent_build_context
    assert main.image_config is dagger_pipeline.image_config
    assert main.jail_bundle is dagger_pipeline.jail_bundle
    assert main.DaggerRuntime is DaggerRuntime
    assert inspect.getsourcefile(main.jail_container) == str(
        REPO / "executor" / "runtime" / "dagger_pipeline.py")


_PROBE = """
import json, sys
# As in the engine: the module is installed, the airlock distribution is not.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")
                    and "__editable__" not in getattr(f, "__name__", "")]
sys.path[:] = [p for p in sys.path if p not in ("", {repo!r})]
sys.path.insert(0, {src!r})
import dagger
import airlock_ci.main as main
from executor.runtime import dagger_pipeline
print(json.dumps({{
    "pipeline": dagger_pipeline.__file__,
    "same": main.jail_container is dagger_pipeline.jail_container,
    "sdk": dagger.__file__,
    "modules": {{k: getattr(v, "__file__", None) for k, v in sys.modules.items()}},
}}))
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    code = _PROBE.format(repo=str(REPO), src=str(MODULE_SRC))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_module_imports_the_repository_code_without_the_distribution(
    probe: dict[str, Any],
) -> None:
    assert probe["same"]
    assert probe["pipeline"] == str(REPO / "executor" / "runtime" / "dagger_pipeline.py")
    assert "site-packages" in probe["sdk"]  # the dagger-io SDK, never the repo's dagger/ folder


def _include_matches(rel: str, includes: list[str]) -> bool:
    ok = False
    for pattern in includes:
        negate = pattern.startswith("!")
        p = pattern.removeprefix("!").removeprefix("../")
        regex = re.escape(p).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(regex + "(/.*)?", rel):
            ok = not negate
    return ok


def test_dagger_json_includes_every_shared_file(probe: dict[str, Any]) -> None:
    includes = json.loads((MODULE / "dagger.json").read_text())["include"]
    # Repository code only: a virtualenv inside the checkout (.venv) holds third-party code.
    shared = sorted(
        Path(f).relative_to(REPO).as_posix() for f in probe["modules"].values()
        if f and f.startswith(str(REPO) + "/") and not f.startswith(str(MODULE) + "/")
        and "site-packages" not in Path(f).parts)
    assert "executor/runtime/dagger_pipeline.py" in shared
    missing = [f for f in shared if not _include_matches(f, includes)]
    assert missing == [], f"dagger.json's include does not load {missing}"
    # The jail's sources are read from disk (not imported) to build its bundle: loaded too.
    for name in ("executor/runtime/jail_core/supervisor.c", "executor/runtime/jail_core/seccomp.py"):
        assert (REPO / name).is_file() and _include_matches(name, includes), name
    # Only agents/ and executor/ files: never the control plane, the CLI or the tests.
    assert {f.split("/")[0] for f in shared} <= {"agents", "executor"}, shared
    for pattern in includes:
        assert pattern.removeprefix("!").removeprefix("../").split("/")[0] in {"agents", "executor"}


def _closure(requirements: list[Requirement]) -> set[str]:
    """Top-level import names provided by these distributions (with the extras asked for)
    and their requirements."""
    dists: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        dists.add(key)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for req in map(Requirement, reqs):
            if req.marker is None or any(req.marker.evaluate({"extra": e})
                                         for e in {"", *extras}):
                todo.append((req.name, frozenset(req.extras)))
    return {top for top, owners in md.packages_distributions().items()
            if any(o.lower().replace("_", "-") in dists for o in owners)}


def test_module_declares_its_third_party_imports(probe: dict[str, Any]) -> None:
    project = tomllib.loads((MODULE / "pyproject.toml").read_text())["project"]
    allowed = _closure([Requirement(d) for d in project["dependencies"]])
    imported = {name.split(".")[0] for name, f in probe["modules"].items()
                if f and "site-packages" in f}
    undeclared = sorted(m for m in imported - allowed - OPTIONAL_IMPORTS
                        if not m.startswith("__editable__"))
    assert undeclared == [], f"add their distributions to dagger/pyproject.toml: {undeclared}"


def test_module_pins_match_the_project() -> None:
    def pins(path: Path) -> dict[str, str]:
        deps = tomllib.loads(path.read_text())["project"]["dependencies"]
        return {Requirement(d).name.lower(): str(Requirement(d).specifier) for d in deps}

    project, module = pins(REPO / "pyproject.toml"), pins(MODULE / "pyproject.toml")
    assert module.pop("dagger-io") == ""  # the vendored SDK: pinned by dagger.json instead
    assert {k: project[k] for k in module} == module


# --- rendered pipelines ----------------------------------------------------------------------


def _sources(session: AgentSession, agent_dir: Path) -> tuple[Any, Any]:
    client = fake_client(session)
    return client, client.host().directory(str(agent_dir))


@pytest.mark.parametrize("agent_dir", SAMPLES, ids=lambda p: p.name)
async def test_build_agent_pipeline_is_valid_graphql(
    main: Any, schema: graphql.GraphQLSchema, agent_dir: Path
) -> None:
    session = AgentSession(schema, agent_dir)
    client, source = _sources(session, agent_dir)
    manifest = await main.read_manifest(source)
    assert manifest == load_manifest(agent_dir)  # read through the engine, parsed the same way
    built = main.agent_image(client, source, manifest, "localhost/airlock/base:bookworm")
    await built.sync()
    for request in session.requests:
        assert_valid(schema, request)
    doc = session.requests[-1]
    (build,) = field_args(doc, "dockerBuild")
    assert manifest.build is not None
    assert build["dockerfile"] == manifest.build.containerfile
    assert build["buildArgs"] == [{"name": "BASE_IMAGE", "value": "localhost/airlock/base:bookworm"}]
    # The in-container helper is staged where the Containerfiles COPY it from.
    assert {"path": "_airlock/agents"} in [{"path": a["path"]} for a in
                                           field_args(doc, "withDirectory")]
    files = {a["path"]: a["contents"] for r in session.requests
             for a in field_args(r, "withNewFile")}  # the helper folder is sent by ID
    for name in ("__init__.py", "_helper.py"):
        assert files[name] == (REPO / "agents" / name).read_text()
    assert "COPY _airlock/agents" in (agent_dir / manifest.build.containerfile).read_text()


async def test_run_agent_pipeline_is_valid_graphql(
    main: Any, schema: graphql.GraphQLSchema
) -> None:
    output = json.dumps({"output": {"text": "HI"}}).encode()
    session = AgentSession(schema, TEXT_TRANSFORM,
                           contents=jail_result_text(b"log line\n", output, exit_code=0))
    client, source = _sources(session, TEXT_TRANSFORM)
    runtime = DaggerRuntime(backstop_grace_seconds=1.0)
    doc = await main.run_agent_outcome(client, source, "uppercase", '{"text": "hi"}',
                                       runtime=runtime)
    assert doc["state"] == "SUCCEEDED", doc
    assert doc["output"] == {"text": "HI"}
    assert doc["logs"] == "log line\n"
    for request in session.requests:
        assert_valid(schema, request)

    exec_doc = session.requests[-1]
    (exec_args,) = field_args(exec_doc, "withExec")
    assert exec_args["insecureRootCapabilities"] is True
    argv = exec_args["args"]
    assert argv[0] == SUPERVISOR_PATH  # the bundle's static supervisor, never the image's
    assert argv[argv.index("--loader") + 1] == f"{BUNDLE_MOUNT}/lib/ld-linux-x86-64.so.2"
    assert argv[-2:] == AGENT_CMD  # the image's entrypoint, run by bwrap
    manifest = load_manifest(TEXT_TRANSFORM)
    limits = manifest.limits.default
    assert argv[argv.index("--memory") + 1] == str(limits.memory_mib << 20)
    assert argv[argv.index("--timeout-ms") + 1] == str(int(limits.timeout_seconds * 1000))
    assert "--slirp4netns" not in argv
    # It runs the image it has just built (loaded by ID, its root filesystem only).
    (rootfs,) = field_args(exec_doc, "withRootfs")
    image_request = session.origin[rootfs["directory"]]
    assert {"id": "fake-built-image"} in field_args(image_request, "node")
    assert field_args(image_request, "from") == []
    # The bundle: built in the engine from a Debian image, mounted read-only.
    (mount,) = field_args(exec_doc, "withMountedDirectory")
    assert (mount["path"], mount["readOnly"]) == (BUNDLE_MOUNT, True)
    builds = [r for r in session.requests
              if ["sh", "-c"] in [a["args"][:2] for a in field_args(r, "withExec")]]
    assert builds and field_args(builds[0], "from")[0]["address"].startswith("docker.io/library/debian:")
    env = {a["name"]: a["value"] for a in field_args(exec_doc, "withEnvVariable")}
    run_id = env["AIRLOCK_RUN_ID"].removesuffix(":1")
    (run_dir,) = field_args(exec_doc, "withDirectory")
    files = {a["path"]: a["contents"] for a in field_args(session.origin[run_dir["source"]], "withNewFile")}
    request = json.loads(files["input.json"])
    assert request == {"run_id": run_id, "capability": "uppercase", "input": {"text": "hi"}}
    assert field_args(exec_doc, "file") == [{"path": RESULT_PATH}]


async def test_run_agent_refuses_bad_requests_before_running(
    main: Any, schema: graphql.GraphQLSchema
) -> None:
    for capability, text, message in (("shout", "{}", "no capability 'shout'"),
                                       ("uppercase", "{", "not valid JSON"),
                                       ("uppercase", '{"txt": 1}', "input schema")):
        session = AgentSession(schema, TEXT_TRANSFORM)
        client, source = _sources(session, TEXT_TRANSFORM)
        with pytest.raises(main.AgentSourceError, match=message):
            await main.run_agent_outcome(client, source, capability, text)
        assert len(session.requests) == 1  # only agent.yaml was read; nothing was built or run


async def test_test_pipeline_is_valid_graphql(main: Any, schema: graphql.GraphQLSchema) -> None:
    session = AgentSession(schema, TEXT_TRANSFORM)
    client = fake_client(session)
    out = await main.suite_container(client, client.host().directory(str(REPO)),
                                     list(main.DEFAULT_PYTEST_ARGS)).stdout()
    assert out == "1 passed"
    doc = session.requests[-1]
    assert_valid(schema, doc)
    bindings = {a["alias"] for a in field_args(doc, "withServiceBinding")}
    assert bindings == {"postgres", "nats"}
    env = {a["name"]: a["value"] for a in field_args(doc, "withEnvVariable")}
    assert env["AIRLOCK_TEST_PG"].startswith("postgresql://postgres@postgres:5432/")
    assert env["AIRLOCK_TEST_NATS"] == "nats://nats:4222"
    execs = [a["args"] for a in field_args(doc, "withExec")]
    assert ["pip", "install", "-e", ".[dev]"] in execs
    assert ["python", "-m", "pytest", *main.DEFAULT_PYTEST_ARGS] in execs
    services = [a for r in session.requests for a in field_args(r, "asService")]
    assert any(a.get("args", [])[:2] == ["nats-server", "-js"] for a in services)
