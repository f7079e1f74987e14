"""Airlock's Dagger module: build agent images, try an agent, run the test suite.

Call it from the repository root (needs a Dagger engine), e.g.::

    dagger -m dagger call build-agent --source sample_agents/text-transform
    dagger -m dagger call run-agent --source sample_agents/text-transform \\
        --capability uppercase --input '{"text": "hi"}'
    dagger -m dagger call test

- ``build-agent``: the agent's image, built from its folder as ``airlock agent build`` does
  (``agent.yaml``'s ``build`` section, with the in-container helper staged at
  ``_airlock/agents``).
- ``run-agent``: build, then run one capability as the executor's Dagger runtime does: the same
  exec (``jail_container``: the jail's supervisor run with ``insecureRootCapabilities`` from a
  read-only bundle, the image only as the jail's root filesystem), the same result mapping
  (``DaggerRuntime.run_container``) and the same output checks (``executor.results.interpret``).
  The bundle is built in the engine (``jail_bundle``: the repository's supervisor and seccomp
  policy, Debian's bubblewrap and slirp4netns), since a module has no executor host to take it
  from. Prints the outcome as ``airlock agent run-local --json`` does.
- ``test``: the project's test suite in a Python container with PostgreSQL and NATS
  (JetStream) as services.

That code is the repository's own, not a copy: see ``_repo.py``.

Network: the jail gives the agent only a loopback interface (the manifest-granted egress of
a production run is not offered here). The engine must allow ``insecureRootCapabilities``
(Dagger's default; see docs/deployment.md).
"""

import json
import time
from collections.abc import Sequence
from typing import Annotated, Any

import dagger
from dagger import DefaultPath, Doc, Ignore, dag, function, object_type

from agents.build import default_tag
from agents.ids import new_run_id
from agents.inputs import InputMismatch, check_input
from agents.limits import resolve_limits
from agents.manifest import Capability, Manifest, ManifestError, load_manifest_text
from executor.results import Outcome, interpret
from executor.runtime.base import RunSpec
from executor.runtime.dagger import DaggerRuntime
from executor.runtime.dagger_pipeline import (
    agent_build_context,
    bundle_loader,
    docker_build,
    image_config,
    jail_bundle,
    jail_container,
)

PYTHON_IMAGE = "docker.io/library/python:3.11-slim"
POSTGRES_IMAGE = "docker.io/library/postgres:16-alpine"
NATS_IMAGE = "docker.io/library/nats:2.10-alpine"
DEFAULT_PYTEST_ARGS = ("-q", "-m", "not podman", "-p", "no:cacheprovider")
# What `test` does not upload from the repository (caches, local state, generated SDK).
SOURCE_IGNORE = [
    ".git", "**/__pycache__", "**/*.pyc", ".venv", "**/node_modules", "dagger/sdk",
    "airlock-data", "*.egg-info", ".hypothesis", ".mypy_cache", ".pytest_cache", ".ruff_cache",
]


class AgentSourceError(ValueError):
    """The agent folder cannot be built or run (bad manifest, unknown capability, bad input)."""


# --- pipelines: pure functions of a client, so tests can render them without an engine -------


async def read_manifest(source: dagger.Directory) -> Manifest:
    """The agent folder's ``agent.yaml``, parsed and checked as the CLI and the registry do."""
    text = await source.file("agent.yaml").contents()
    try:
        return load_manifest_text(text)
    except ManifestError as e:
        raise AgentSourceError(f"agent.yaml: invalid manifest: {e}") from None


def agent_image(
    client: dagger.Client,
    source: dagger.Directory,
    manifest: Manifest,
    base_image: str | None = None,
) -> dagger.Container:
    """The agent's image: built from its Containerfile, or its published ``image``."""
    if manifest.build is None:
        if not manifest.image:  # the manifest model requires one of the two
            raise AgentSourceError("agent.yaml has neither 'build' nor 'image'")
        return client.container().from_(manifest.image)
    context = agent_build_context(client, source, manifest.build.context)
    args = {"BASE_IMAGE": base_image} if base_image else {}
    return docker_build(context, manifest.build.containerfile, args)


def parse_input(manifest: Manifest, capability: str, text: str) -> tuple[Capability, Any]:
    """The capability and its input, checked against its input schema (as the API does)."""
    cap = manifest.capability(capability)
    if cap is None:
        names = ", ".join(c.name for c in manifest.capabilities)
        raise AgentSourceError(f"{manifest.name} has no capability {capability!r} ({names})")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        raise AgentSourceError(f"input: not valid JSON: {e}") from None
    try:
        check_input(cap, payload)
    except InputMismatch as e:
        raise AgentSourceError(str(e)) from None
    return cap, payload


def outcome_document(outcome: Outcome) -> dict[str, Any]:
    """The outcome as ``airlock agent run-local --json`` prints it."""
    return {
        "state": outcome.state, "reason": outcome.reason, "output": outcome.output,
        "error_code": outcome.error_code, "exit_code": outcome.exit_code,
        "duration_seconds": round(outcome.duration_seconds, 3),
        "peak_memory_bytes": outcome.peak_memory_bytes, "image_digest": outcome.image_digest,
        "logs": outcome.logs, "logs_truncated": outcome.logs_truncated,
    }


async def run_agent_outcome(
    client: dagger.Client,
    source: dagger.Directory,
    capability: str,
    input_text: str,
    *,
    base_image: str | None = None,
    runtime: DaggerRuntime | None = None,
) -> dict[str, Any]:
    """Build the agent and run one capability the way the executor's Dagger runtime does."""
    manifest = await read_manifest(source)
    cap, payload = parse_input(manifest, capability, input_text)
    limits, _ = resolve_limits(None, manifest.limits.default, manifest.limits.max)
    runtime = runtime or DaggerRuntime()
    spec = RunSpec(
        run_id=new_run_id(), attempt=1, image=manifest.image or default_tag(manifest),
        capability=capability, input=payload, limits=limits, entrypoint=manifest.entrypoint,
        executor_id="dagger-module",
    )
    # Build (or pull) the image and the bundle before the run's clock starts: the runtime's
    # backstop covers the run only.
    image = await agent_image(client, source, manifest, base_image).sync()
    config = await image_config(image)
    if not (spec.entrypoint or config.argv):
        raise AgentSourceError("the image has no entrypoint or default command")
    bundle = await jail_bundle(client).sync()
    ctr = jail_container(client, spec, image=image, config=config, bundle=bundle,
                         loader=await bundle_loader(bundle))
    result = await runtime.run_container(ctr, spec, started=time.monotonic())
    return outcome_document(interpret(result, cap.output_schema, limits=limits))


def suite_container(
    client: dagger.Client, source: dagger.Directory, pytest_args: Sequence[str]
) -> dagger.Container:
    """The test suite in a Python 3.11 container, PostgreSQL and NATS (JetStream) as services.

    The suite finds them through ``AIRLOCK_TEST_PG`` / ``AIRLOCK_TEST_NATS``; tests that need
    podman or a Dagger engine skip (or are deselected by the default ``-m "not podman"``).
    """
    postgres = (
        client.container()
        .from_(POSTGRES_IMAGE)
        .with_env_variable("POSTGRES_HOST_AUTH_METHOD", "trust")
        .with_exposed_port(5432)
        .as_service(use_entrypoint=True)
    )
    nats = (
        client.container()
        .from_(NATS_IMAGE)
        .with_exposed_port(4222)
        .as_service(args=["nats-server", "-js", "-sd", "/tmp/nats"])
    )
    return (
        client.container()
        .from_(PYTHON_IMAGE)
        .with_env_variable("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .with_mounted_cache("/root/.cache/pip", client.cache_volume("airlock-pip"))
        .with_directory("/src", source)
        .with_workdir("/src")
        .with_exec(["pip", "install", "-e", ".[dev]"])
        .with_service_binding("postgres", postgres)
        .with_service_binding("nats", nats)
        .with_env_variable("AIRLOCK_TEST_PG", "postgresql://postgres@postgres:5432/postgres")
        .with_env_variable("AIRLOCK_TEST_NATS", "nats://nats:4222")
        .with_exec(["python", "-m", "pytest", *pytest_args])
    )


# --- the module's functions ------------------------------------------------------------------


@object_type
class AirlockCi:
    """Build and try Airlock agents; run Airlock's test suite."""

    @function
    async def build_agent(
        self,
        source: Annotated[dagger.Directory, Doc("the agent's folder: agent.yaml, Containerfile")],
        base_image: Annotated[str, Doc("passed as the BASE_IMAGE build arg")] = "",
    ) -> dagger.Container:
        """Build an agent's image from its folder, as `airlock agent build` does."""
        manifest = await read_manifest(source)
        if manifest.build is None:
            raise AgentSourceError("agent.yaml has no 'build' section: nothing to build")
        return agent_image(dag, source, manifest, base_image or None)

    @function
    async def run_agent(
        self,
        source: Annotated[dagger.Directory, Doc("the agent's folder: agent.yaml, Containerfile")],
        capability: Annotated[str, Doc("the capability to run")],
        input: Annotated[str, Doc("the capability's input, as JSON")],
        base_image: Annotated[str, Doc("passed as the BASE_IMAGE build arg")] = "",
    ) -> str:
        """Build the agent and run one capability under the executor's limits and checks."""
        doc = await run_agent_outcome(dag, source, capability, input,
                                      base_image=base_image or None)
        return json.dumps(doc, indent=2, ensure_ascii=False)

    @function
    async def test(
        self,
        source: Annotated[
            dagger.Directory,
            Doc("the repository (default: this module's git repository)"),
            DefaultPath("/"),
            Ignore(SOURCE_IGNORE),
        ],
        pytest_args: Annotated[
            list[str] | None, Doc("arguments for pytest (default: -q -m 'not podman')")
        ] = None,
    ) -> str:
        """Run the test suite in containers, with PostgreSQL and NATS as services."""
        args = list(pytest_args) if pytest_args else list(DEFAULT_PYTEST_ARGS)
        return await suite_container(dag, source, args).stdout()
