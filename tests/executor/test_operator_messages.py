"""Messages an operator reads: JSON depth errors name the limit; secrets env only with secrets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import graphql
import pytest

from agents.limits import Limits
from executor.results import MAX_JSON_DEPTH, interpret
from executor.runtime.base import RunSpec, SandboxResult, SecretValue, Termination
from executor.runtime.dagger_pipeline import RESULT_PATH, jail_container
from executor.runtime.jail_core.bundle import ImageConfig
from executor.runtime.podman import PodmanRuntime
from tests.helpers import dagger_schema
from tests.helpers.dagger_schema import fake_client, field_args, jail_result_text

LIMITS = Limits(memory_mib=64, timeout_seconds=5, pids=16, log_kib=64, output_kib=4096)


def exited(output: bytes) -> SandboxResult:
    return SandboxResult(Termination.EXITED, 0, output, False, b"", False, 0.1)


def test_valid_but_deep_json_output_names_the_depth_limit() -> None:
    depth = sys.getrecursionlimit() + 100  # deeper than the parser itself could go
    doc = b'{"output": ' + b"[" * depth + b"]" * depth + b"}"
    outcome = interpret(exited(doc), {"type": "array"}, limits=LIMITS)
    assert outcome.state == "FAILED"
    # Valid JSON: the reason must not call it invalid, and must say what the limit is.
    assert "not valid JSON" not in outcome.reason, outcome.reason
    assert outcome.reason.startswith("output is nested more than "), outcome.reason
    limit = int(outcome.reason.split("more than ")[1].split(" ")[0])
    assert limit == MAX_JSON_DEPTH and "levels deep" in outcome.reason
    # Exactly at the limit is accepted; one level more is refused.
    at_limit = b'{"output": ' + b"[" * (limit - 1) + b"]" * (limit - 1) + b"}"
    assert interpret(exited(at_limit), {"type": "array"}, limits=LIMITS).state == "SUCCEEDED"
    over = b'{"output": ' + b"[" * limit + b"]" * limit + b"}"
    assert interpret(exited(over), {"type": "array"}, limits=LIMITS).reason == outcome.reason


def test_json_within_the_depth_limit_is_accepted() -> None:
    doc = json.dumps({"output": [[[[[[{"a": [1]}]]]]]]}).encode()
    assert interpret(exited(doc), {"type": "array"}, limits=LIMITS).state == "SUCCEEDED"


def spec(**kw: object) -> RunSpec:
    fields: dict[str, object] = {"run_id": "run-x", "attempt": 1, "image": "localhost/x:1",
                                 "capability": "c", "input": {}, "limits": LIMITS}
    fields.update(kw)
    return RunSpec(**fields)  # type: ignore[arg-type]


def env_of(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    return dict(p.split("=", 1) for p in pairs)


def test_podman_sets_secrets_dir_only_for_runs_with_secrets(tmp_path: Path) -> None:
    rt = PodmanRuntime(executor_id="t", work_root=tmp_path)
    without = env_of(rt._argv(spec(), tmp_path))
    assert "AIRLOCK_SECRETS_DIR" not in without
    assert without["AIRLOCK_RUN_ID"] == "run-x"  # the rest of the contract is still there
    with_secrets = env_of(rt._argv(spec(secrets={"K": SecretValue(b"v")}), tmp_path))
    assert with_secrets["AIRLOCK_SECRETS_DIR"] == "/run/secrets"


@pytest.mark.parametrize("secrets", [{}, {"API_KEY": SecretValue(b"v")}])
async def test_dagger_sets_secrets_dir_only_for_runs_with_secrets(secrets: dict[str, SecretValue]) -> None:
    schema = dagger_schema.load_schema()
    session = dagger_schema.FakeDaggerSchemaSession(schema, {"contents": jail_result_text()})
    s = spec(secrets=secrets, entrypoint=("python3", "-m", "x"))
    client = fake_client(session)
    ctr = jail_container(client, s, image=client.container().from_("registry.local/x@sha256:" + "ab" * 32),
                         config=ImageConfig(argv=("python3",)), bundle=client.directory(),
                         loader="lib/ld-linux-x86-64.so.2")
    await ctr.file(RESULT_PATH).contents()
    exec_doc = session.requests[-1]
    assert graphql.validate(schema, graphql.parse(graphql.print_ast(exec_doc))) == []
    (exec_args,) = field_args(exec_doc, "withExec")
    argv = exec_args["args"]
    bwrap = argv[argv.index("--") + 1:]  # the agent's environment: bubblewrap's --setenv
    env = {bwrap[i + 1]: bwrap[i + 2] for i, a in enumerate(bwrap) if a == "--setenv"}
    assert env["AIRLOCK_RUN_ID"] == "run-x"
    if secrets:
        assert env["AIRLOCK_SECRETS_DIR"] == "/run/secrets"
    else:
        assert "AIRLOCK_SECRETS_DIR" not in env
