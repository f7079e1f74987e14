"""The Dagger pipelines' GraphQL, rendered by the real SDK and validated against the engine schema.

No Dagger engine can run on these machines (its image is in a registry they cannot reach), so
``FakeDaggerSchemaSession`` (``tests/helpers/dagger_schema.py``) stands in for the engine's
session: it serves the engine's real schema (the SDL in ``../shared/dagger``), validates every
request the SDK sends against it and answers with canned values. This checks the pipeline's
*shape* (fields, argument names and types, what goes where); ``test_dagger_live.py`` checks
behaviour where an engine is reachable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import graphql
import pytest

from agents.limits import Limits
from executor.runtime import limits_wrapper
from executor.runtime.base import RunSpec, SandboxResult, SecretValue, Termination
from executor.runtime.dagger import DaggerRuntime
from executor.runtime.dagger_pipeline import (
    RESULT_PATH,
    RUN_ID_ENV,
    WRAPPER_PATH,
    agent_container,
    build_container,
    sandbox_uid,
    wrapper_argv,
)
from tests.helpers import dagger_schema
from tests.helpers.dagger_schema import Answer, bundle_text, fake_client, fake_connect, field_args

SECRET = b"s3cr3t-Value-7f1c"
IMAGE_REF = "registry.local/airlock/echo@sha256:" + "ab" * 32
AGENT_CMD = ["python3", "-m", "echo_agent"]
WRAPPER_SOURCE = Path(limits_wrapper.__file__).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def schema() -> graphql.GraphQLSchema:
    return dagger_schema.load_schema()


class FakeDaggerSchemaSession(dagger_schema.FakeDaggerSchemaSession):
    """The shared fake engine session, answering as an engine with the echo image would."""

    def __init__(self, schema: graphql.GraphQLSchema, answers: dict[str, Answer] | None = None):
        super().__init__(schema, {
            "imageRef": IMAGE_REF,
            "entrypoint": AGENT_CMD[:1],
            "defaultArgs": AGENT_CMD[1:],
            "contents": bundle_text(exit_code=0),
            **(answers or {}),
        })


def make_spec(**kw: Any) -> RunSpec:
    fields: dict[str, Any] = {
        "run_id": "run-1", "attempt": 1, "image": "registry.local/airlock/echo:1.0",
        "capability": "echo", "input": {"text": "hi"},
        "limits": Limits(memory_mib=128, timeout_seconds=5, pids=16, log_kib=64, output_kib=32),
        "entrypoint": tuple(AGENT_CMD), "env": {"TRACEPARENT": "00-abc-def-01"},
    }
    fields.update(kw)
    return RunSpec(**fields)


async def render_run(schema: graphql.GraphQLSchema, spec: RunSpec) -> FakeDaggerSchemaSession:
    session = FakeDaggerSchemaSession(schema)
    ctr = agent_container(fake_client(session), spec, input_json=b'{"input": {"text": "hi"}}')
    await ctr.file(RESULT_PATH).contents()  # the exact call DaggerRuntime makes
    return session


# --- rendering -------------------------------------------------------------------------------


async def test_agent_run_pipeline_is_valid_graphql(schema: graphql.GraphQLSchema) -> None:
    spec = make_spec()
    session = await render_run(schema, spec)
    exec_doc = session.requests[-1]
    text = graphql.print_ast(exec_doc)
    assert graphql.validate(schema, graphql.parse(text)) == []

    (exec_args,) = field_args(exec_doc, "withExec")
    argv = exec_args["args"]
    assert argv[:4] == ["python3", "-I", "-S", WRAPPER_PATH]  # the wrapper runs first
    assert argv[argv.index("--") + 1 :] == AGENT_CMD  # then the agent's command
    assert exec_args["expect"] == "ANY"
    assert "insecureRootCapabilities" not in exec_args

    env = {a["name"]: a["value"] for a in field_args(exec_doc, "withEnvVariable")}
    assert env[RUN_ID_ENV] == "run-1:1"
    assert env["AIRLOCK_INPUT"] == "/airlock/input.json"
    assert env["AIRLOCK_OUTPUT"] == "/airlock/out/output.json"
    assert env["AIRLOCK_NETWORK"] == "none"
    assert env["TRACEPARENT"] == "00-abc-def-01"

    files = {a["path"]: a for a in field_args(exec_doc, "withNewFile")}
    # The wrapper travels inside the query, byte for byte (no file on the engine's host needed).
    assert files[WRAPPER_PATH]["contents"] == WRAPPER_SOURCE
    assert files["/airlock/input.json"]["permissions"] == 0o444
    uid = sandbox_uid(spec)
    assert field_args(exec_doc, "withUser") == [{"name": f"{uid}:{uid}"}]
    assert uid != 0
    assert field_args(exec_doc, "withMountedSecret") == []
    assert field_args(exec_doc, "file") == [{"path": RESULT_PATH}]


async def test_agent_run_with_secrets_and_network(schema: graphql.GraphQLSchema) -> None:
    spec = make_spec(network=True, secrets={"API_KEY": SecretValue(SECRET)})
    session = await render_run(schema, spec)
    exec_doc = session.requests[-1]
    text = graphql.print_ast(exec_doc)
    assert graphql.validate(schema, graphql.parse(text)) == []

    uid = sandbox_uid(spec)
    (mount,) = field_args(exec_doc, "withMountedSecret")
    assert mount["path"] == "/run/secrets/API_KEY"
    assert mount["source"].startswith("fake-id-")  # an ID, resolved by its own request
    assert mount["owner"] == f"{uid}:{uid}"
    # mode 0o400 is the schema's default (256), so the SDK leaves it out; owner makes it apply.
    assert mount.get("mode", 256) == 0o400
    assert "withSecretVariable" not in text  # never in the environment

    # The plaintext is in the setSecret request only: not in the exec's query at all.
    assert SECRET.decode() not in text
    carrying = [t for t in session.printed() if SECRET.decode() in t]
    assert len(carrying) == 1 and "setSecret" in carrying[0]
    (set_secret,) = field_args(graphql.parse(carrying[0]), "setSecret")
    assert set_secret["name"] == "airlock-run-1-1-API_KEY"

    env = {a["name"]: a["value"] for a in field_args(exec_doc, "withEnvVariable")}
    assert env["AIRLOCK_NETWORK"] == "egress"


async def test_each_attempt_renders_a_different_exec(schema: graphql.GraphQLSchema) -> None:
    first = graphql.print_ast((await render_run(schema, make_spec(attempt=1))).requests[-1])
    second = graphql.print_ast((await render_run(schema, make_spec(attempt=2))).requests[-1])
    assert first != second
    assert '"run-1:1"' in first and '"run-1:2"' in second


async def test_image_build_pipeline_is_valid_graphql(
    schema: graphql.GraphQLSchema, tmp_path: Path
) -> None:
    session = FakeDaggerSchemaSession(schema)
    built = build_container(fake_client(session), tmp_path, "Containerfile",
                            {"BASE_IMAGE": "localhost/airlock-base:bookworm", "A": "1"})
    await built.id()
    doc = session.requests[-1]
    assert graphql.validate(schema, graphql.parse(graphql.print_ast(doc))) == []
    (host_dir,) = field_args(doc, "directory")
    assert host_dir["path"] == str(tmp_path)
    (build,) = field_args(doc, "dockerBuild")
    assert build["dockerfile"] == "Containerfile"
    assert build["buildArgs"] == [
        {"name": "A", "value": "1"},
        {"name": "BASE_IMAGE", "value": "localhost/airlock-base:bookworm"},
    ]


def mutate_exec(
    doc: graphql.DocumentNode, change: Callable[[graphql.FieldNode], graphql.FieldNode]
) -> str:
    """The document, printed, with its ``withExec`` field changed by ``change``."""

    class Visitor(graphql.Visitor):
        def enter_field(self, node: graphql.FieldNode, *_: Any) -> graphql.FieldNode | None:
            return change(node) if node.name.value == "withExec" else None

    return graphql.print_ast(graphql.visit(doc, Visitor()))


def _renamed(node: graphql.FieldNode) -> graphql.FieldNode:
    return dataclasses.replace(node, name=graphql.NameNode(value="withExecute"))


def _extra_argument(node: graphql.FieldNode) -> graphql.FieldNode:
    extra = graphql.ArgumentNode(name=graphql.NameNode(value="memoryLimit"),
                                 value=graphql.IntValueNode(value="5"))
    return dataclasses.replace(node, arguments=(*node.arguments, extra))


def _bad_enum(node: graphql.FieldNode) -> graphql.FieldNode:
    args = tuple(
        graphql.ArgumentNode(name=a.name, value=graphql.EnumValueNode(value="MAYBE"))
        if a.name.value == "expect" else a
        for a in node.arguments
    )
    return dataclasses.replace(node, arguments=args)


async def test_validation_catches_a_wrong_pipeline(schema: graphql.GraphQLSchema) -> None:
    """The check can fail: the same document with a wrong field, argument or value is rejected."""
    doc = (await render_run(schema, make_spec())).requests[-1]
    text = graphql.print_ast(doc)
    assert graphql.validate(schema, graphql.parse(text)) == []
    for change, expected in ((_renamed, "withExecute"), (_extra_argument, "memoryLimit"),
                             (_bad_enum, "MAYBE")):
        wrong = mutate_exec(doc, change)
        assert wrong != text
        errors = graphql.validate(schema, graphql.parse(wrong))
        assert errors, f"{change.__name__} was not caught"
        assert expected in str(errors)


def test_pipeline_argv_is_what_the_wrapper_parses() -> None:
    limits = Limits(memory_mib=300, timeout_seconds=12.5, pids=20, log_kib=8, output_kib=4)
    argv = wrapper_argv(limits, ["agent", "--flag", "--"], kill_grace_seconds=0.5)
    ns = limits_wrapper.parse_args(argv[4:])
    assert ns.command == ["agent", "--flag", "--"]
    assert (ns.timeout, ns.kill_grace, ns.memory_mib, ns.pids) == (12.5, 0.5, 300, 20)
    assert (ns.log_kib, ns.output_kib, ns.result_file) == (8, 4, RESULT_PATH)


def test_non_utf8_secret_is_refused(schema: graphql.GraphQLSchema) -> None:
    spec = make_spec(secrets={"BLOB": SecretValue(b"\xff\xfe")})
    with pytest.raises(ValueError, match="not UTF-8"):
        agent_container(fake_client(FakeDaggerSchemaSession(schema)), spec, input_json=b"{}")


# --- DaggerRuntime against the fake engine -----------------------------------------------------


async def run_fake(
    schema: graphql.GraphQLSchema, spec: RunSpec, cancel: asyncio.Event | None = None,
    **answers: Answer,
) -> tuple[SandboxResult, FakeDaggerSchemaSession]:
    session = FakeDaggerSchemaSession(schema, answers)
    runtime = DaggerRuntime(connect=fake_connect(session), backstop_grace_seconds=0.2,
                            kill_grace_seconds=0.1, cancel_wait_seconds=0.5)
    return await runtime.run(spec, cancel or asyncio.Event()), session


def real_wrapper_bundle(tmp_path: Path) -> str:
    """A result file written by the real wrapper on this host."""
    out = tmp_path / "output.json"
    result = tmp_path / "result.json"
    code = f"print('working'); open({str(out)!r}, 'w').write('{{\"output\": \"hi\"}}'); exit(2)"
    subprocess.run(
        [sys.executable, "-I", "-S", limits_wrapper.__file__, "--timeout", "10",
         "--log-file", str(tmp_path / "logs.txt"), "--status-file", str(tmp_path / "s.json"),
         "--output-file", str(out), "--result-file", str(result),
         "--", sys.executable, "-c", code],
        check=True, timeout=60,
    )
    return result.read_text()


async def test_runtime_maps_a_real_wrapper_result(
    schema: graphql.GraphQLSchema, tmp_path: Path
) -> None:
    result, session = await run_fake(schema, make_spec(entrypoint=None),
                                     contents=real_wrapper_bundle(tmp_path))
    assert result.termination is Termination.EXITED
    assert result.exit_code == 2
    assert result.output == b'{"output": "hi"}' and not result.output_truncated
    assert result.logs == b"working\n" and not result.logs_truncated
    assert result.image_digest == "sha256:" + "ab" * 32
    assert result.peak_memory_bytes and result.peak_memory_bytes > 0
    printed = session.printed()
    assert any("imageRef" in t for t in printed)
    assert any("entrypoint" in t for t in printed) and any("defaultArgs" in t for t in printed)
    (exec_args,) = field_args(session.requests[-1], "withExec")
    assert exec_args["args"][-3:] == AGENT_CMD  # resolved from the image's entrypoint + args
    (from_,) = field_args(session.requests[-1], "from")
    assert from_["address"] == IMAGE_REF  # runs the digest-pinned image


@pytest.mark.parametrize(
    ("status", "termination"),
    [
        ({"exit_code": 137, "signal": 9, "timed_out": True}, Termination.TIMED_OUT),
        ({"exit_code": 137, "signal": 9, "oom_suspected": True,
          "oom_reason": "killed by the kernel's OOM killer (memory.events: oom_kill 0 -> 1)"},
         Termination.OOM_KILLED),
        ({"exit_code": 137, "signal": 9}, Termination.EXITED),  # a SIGKILL is not an OOM
        ({"exit_code": 127, "start_error": "cannot start 'x'"}, Termination.START_FAILED),
        ({"exit_code": 0}, Termination.EXITED),
    ],
)
async def test_runtime_maps_wrapper_status(
    schema: graphql.GraphQLSchema, status: dict[str, Any], termination: Termination
) -> None:
    result, _ = await run_fake(schema, make_spec(), contents=bundle_text(b"log", **status))
    assert result.termination is termination
    assert result.exit_code == status["exit_code"]
    assert result.logs == b"log"
    assert result.duration_seconds == 0.25


async def test_runtime_cancel_returns_within_about_a_second(
    schema: graphql.GraphQLSchema,
) -> None:
    async def hang() -> str:
        await asyncio.sleep(3600)
        return ""

    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, cancel.set)
    started = time.monotonic()
    result, _ = await run_fake(schema, make_spec(limits=Limits(timeout_seconds=60)), cancel,
                               contents=hang)
    assert result.termination is Termination.CANCELLED  # the engine never answers: only cancel
    # The contract: after the cancel (at 0.2 s) run() waits at most cancel_wait_seconds (0.5,
    # see run_fake) for the engine to let go; plus 1 s of scheduling slack.
    assert time.monotonic() - started < 0.2 + 0.5 + 1.0


async def test_runtime_backstop_times_out_a_stalled_engine(
    schema: graphql.GraphQLSchema,
) -> None:
    async def hang() -> str:
        await asyncio.sleep(3600)
        return ""

    started = time.monotonic()
    result, _ = await run_fake(schema, make_spec(limits=Limits(timeout_seconds=0.2)),
                               contents=hang)
    assert result.termination is Termination.TIMED_OUT
    assert "backstop" in result.detail
    # The contract: the backstop fires at timeout (0.2) + kill grace (0.1) + backstop grace
    # (0.2, see run_fake); plus 1 s of scheduling slack.
    assert time.monotonic() - started < 0.2 + 0.1 + 0.2 + 1.0


async def test_runtime_refuses_network_the_engine_cannot_give(
    schema: graphql.GraphQLSchema,
) -> None:
    result, session = await run_fake(schema, make_spec(network=True))
    assert result.termination is Termination.START_FAILED
    assert "internal-only network" in result.detail
    assert session.requests == []  # refused before talking to the engine
