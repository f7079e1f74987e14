"""The Dagger pipelines' GraphQL, rendered by the real SDK and validated against the engine schema.

No Dagger engine can run on these machines (its image is in a registry they cannot reach), so
``FakeDaggerSchemaSession`` (``tests/helpers/dagger_schema.py``) stands in for the engine's
session: it serves the engine's real schema (the SDL in ``../shared/dagger``), validates every
request the SDK sends against it and answers with canned values. This checks the pipeline's
*shape* (fields, argument names and types, what goes where); ``test_dagger_live.py`` checks
behaviour where an engine is reachable, and ``test_jail_privileged.py`` runs the same exec
(``container_exec``) in ``podman run --privileged``, Dagger's documented equivalent of
``insecureRootCapabilities``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import graphql
import pytest
from gql.transport.exceptions import TransportQueryError

from agents.limits import Limits
from executor.runtime.base import RunSpec, SandboxResult, SecretValue, Termination
from executor.runtime.dagger import DaggerRuntime
from executor.runtime.dagger_pipeline import (
    RESULT_PATH,
    RUN_ID_ENV,
    SUPERVISOR_PATH,
    build_container,
    jail_bundle,
    jail_container,
)
from executor.runtime.jail_core.bundle import (
    BUNDLE_MOUNT,
    RUN_MOUNT,
    SECRETS_MOUNT,
    Bundle,
    ImageConfig,
)
from tests.helpers import dagger_schema
from tests.helpers.dagger_schema import (
    Answer,
    assert_valid,
    fake_client,
    fake_connect,
    field_args,
    jail_result_text,
)

SECRET = b"s3cr3t-Value-7f1c"
IMAGE_REF = "registry.local/airlock/echo@sha256:" + "ab" * 32
AGENT_CMD = ["/usr/bin/echo-agent", "--serve"]
LOADER = "lib/ld-linux-x86-64.so.2"
BUNDLE = Bundle(Path("/var/cache/airlock/jail/bundle-0123456789abcdef"), LOADER)
IMAGE_ENV = [{"name": "PATH", "value": "/usr/local/bin:/usr/bin:/bin"},
             {"name": "LD_PRELOAD", "value": "/lib/evil.so"}]
CONFIG = ImageConfig(argv=tuple(AGENT_CMD), env=tuple((e["name"], e["value"]) for e in IMAGE_ENV),
                     workdir="/app")


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
            "envVariables": IMAGE_ENV,
            "workdir": "/app",
            "contents": jail_result_text(exit_code=0),
            **(answers or {}),
        })


def make_spec(**kw: Any) -> RunSpec:
    fields: dict[str, Any] = {
        "run_id": "run-1", "attempt": 1, "image": "registry.local/airlock/echo:1.0",
        "capability": "echo", "input": {"text": "hi"},
        "limits": Limits(memory_mib=128, timeout_seconds=5, pids=16, log_kib=64, output_kib=32),
        "env": {"TRACEPARENT": "00-abc-def-01"},
    }
    fields.update(kw)
    return RunSpec(**fields)


async def render_run(schema: graphql.GraphQLSchema, spec: RunSpec) -> FakeDaggerSchemaSession:
    session = FakeDaggerSchemaSession(schema)
    client = fake_client(session)
    ctr = jail_container(client, spec, image=client.container().from_(IMAGE_REF), config=CONFIG,
                         bundle=client.host().directory(str(BUNDLE.path)), loader=LOADER)
    await ctr.file(RESULT_PATH).contents()  # the exact call DaggerRuntime makes
    return session


def exec_argv(doc: graphql.DocumentNode) -> list[str]:
    (exec_args,) = field_args(doc, "withExec")
    return list(exec_args["args"])


def options(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def bwrap_env(argv: list[str]) -> dict[str, str]:
    bwrap = argv[argv.index("--") + 1:]
    return {bwrap[i + 1]: bwrap[i + 2] for i, a in enumerate(bwrap) if a == "--setenv"}


# --- rendering -------------------------------------------------------------------------------


async def test_jail_pipeline_is_valid_graphql(schema: graphql.GraphQLSchema) -> None:
    session = await render_run(schema, make_spec())
    for request in session.requests:
        assert_valid(schema, request)
    exec_doc = session.requests[-1]
    (exec_args,) = field_args(exec_doc, "withExec")
    assert exec_args["insecureRootCapabilities"] is True  # the supervisor needs root
    assert exec_args["expect"] == "ANY"  # the supervisor exits 0, or 125 with no result
    assert field_args(exec_doc, "file") == [{"path": RESULT_PATH}]

    # A fresh container whose files are the image's root filesystem, pinned by digest; none
    # of the image's configuration.
    assert [f for f in field_args(exec_doc, "from")] == []
    (rootfs,) = field_args(exec_doc, "withRootfs")
    made_by = session.origin[rootfs["directory"]]
    assert field_args(made_by, "from") == [{"address": IMAGE_REF}]
    assert field_args(made_by, "rootfs") == [{}]
    for setting in ("withUser", "withWorkdir", "withEntrypoint", "withDefaultArgs",
                    "withSecretVariable", "withServiceBinding"):
        assert field_args(exec_doc, setting) == [], setting
    env = {a["name"]: a["value"] for a in field_args(exec_doc, "withEnvVariable")}
    assert env == {RUN_ID_ENV: "run-1:1"}  # a fresh exec per attempt, nothing else

    # The bundle: mounted read-only at BUNDLE_MOUNT, from the executor's host.
    (mount,) = field_args(exec_doc, "withMountedDirectory")
    assert (mount["path"], mount["readOnly"]) == (BUNDLE_MOUNT, True)
    bundle_request = session.origin[mount["source"]]
    assert field_args(bundle_request, "directory") == [{"path": str(BUNDLE.path)}]
    assert len(field_args(bundle_request, "host")) == 1

    # The run's files in the container's own filesystem (the result is read back from there),
    # root's only: the supervisor opens them and hands bubblewrap descriptors.
    (run_dir,) = field_args(exec_doc, "withDirectory")
    assert run_dir["path"] == RUN_MOUNT
    files = {a["path"]: a for a in field_args(session.origin[run_dir["source"]], "withNewFile")}
    assert set(files) == {"input.json"}
    assert files["input.json"]["permissions"] == 0o600
    assert json.loads(files["input.json"]["contents"]) == {
        "run_id": "run-1", "capability": "echo", "input": {"text": "hi"}}
    assert field_args(exec_doc, "withMountedSecret") == []


async def test_nothing_from_the_image_runs_privileged(schema: graphql.GraphQLSchema) -> None:
    """The exec starts the bundle's static supervisor (a loader would read the image's
    /etc/ld.so.preload as root first); every program it starts as root is the bundle's, run
    through the bundle's loader and libraries; the image's command runs only inside bwrap."""
    argv = exec_argv((await render_run(schema, make_spec(network=True))).requests[-1])
    assert argv[0] == SUPERVISOR_PATH == f"{BUNDLE_MOUNT}/airlock-jail"
    assert options(argv, "--loader") == [f"{BUNDLE_MOUNT}/{LOADER}"]
    assert options(argv, "--library-path") == [f"{BUNDLE_MOUNT}/lib"]
    assert options(argv, "--slirp4netns") == [f"{BUNDLE_MOUNT}/slirp4netns"]
    assert options(argv, "--shield") == [f"{RUN_MOUNT}/shield"]  # the image's /etc covered
    assert options(argv, "--image-root") == ["/"]
    assert set(options(argv, "--hide")) == {m.lstrip("/") for m in (BUNDLE_MOUNT, RUN_MOUNT,
                                                                    SECRETS_MOUNT)}
    sep = argv.index("--")
    assert argv[sep + 1] == f"{BUNDLE_MOUNT}/bwrap"
    bwrap = argv[sep + 1:]
    agent = bwrap[bwrap.index("--") + 1:]
    assert agent == AGENT_CMD  # the image's entrypoint + default args, run by bwrap
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                 "--new-session", "--clearenv"):
        assert flag in bwrap, flag
    assert options(bwrap, "--uid") == ["65534"] and options(bwrap, "--cap-drop") == ["ALL"]
    assert "--seccomp" in bwrap and ["--remount-ro", "/"] == bwrap[bwrap.index("--seccomp") - 2:
                                                                  bwrap.index("--seccomp")]
    assert options(bwrap, "--chdir") == ["/app"]  # the image's working directory
    # The image's environment reaches the agent only (bwrap --setenv), the contract's wins.
    env = bwrap_env(argv)
    assert env["LD_PRELOAD"] == "/lib/evil.so" and env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["AIRLOCK_INPUT"] == "/airlock/input.json"
    assert env["AIRLOCK_OUTPUT"] == "/airlock/out/output.json"
    assert env["AIRLOCK_RUN_ID"] == "run-1" and env["TRACEPARENT"] == "00-abc-def-01"
    # Limits for the supervisor's cgroup (pids: the agent's + bubblewrap and its reaper).
    assert options(argv, "--memory") == [str(128 << 20)]
    assert options(argv, "--pids") == ["18"]
    assert options(argv, "--timeout-ms") == ["5000"]
    assert "--cgroup-nest" in argv  # under the exec's own cgroup


async def test_network_only_when_granted(schema: graphql.GraphQLSchema) -> None:
    without = await render_run(schema, make_spec(network=False))
    argv = exec_argv(without.requests[-1])
    assert "--slirp4netns" not in argv and "--unshare-all" in argv  # own netns: only lo
    files = {a["path"] for r in without.requests for a in field_args(r, "withNewFile")}
    assert "resolv.conf" not in files
    granted = await render_run(schema, make_spec(network=True))
    assert "--slirp4netns" in exec_argv(granted.requests[-1])
    files = {a["path"] for r in granted.requests for a in field_args(r, "withNewFile")}
    assert "resolv.conf" in files


async def test_jail_run_with_secrets(schema: graphql.GraphQLSchema) -> None:
    spec = make_spec(secrets={"API_KEY": SecretValue(SECRET)})
    session = await render_run(schema, spec)
    exec_doc = session.requests[-1]
    text = assert_valid(schema, exec_doc)
    (mount,) = field_args(exec_doc, "withMountedSecret")
    assert mount["path"] == f"{SECRETS_MOUNT}/0"
    assert mount["source"].startswith("fake-id-")  # an ID, resolved by its own request
    assert mount["owner"] == "0:0"  # root's: the supervisor opens it for bubblewrap
    # mode 0o400 is the schema's default (256), so the SDK leaves it out; owner makes it apply.
    assert mount.get("mode", 256) == 0o400
    assert "withSecretVariable" not in text  # never in the environment
    argv = exec_argv(exec_doc)
    assert f"{100 + 10}:{SECRETS_MOUNT}/0" in options(argv, "--fd")
    assert "/run/secrets/API_KEY" in argv and bwrap_env(argv)["AIRLOCK_SECRETS_DIR"] == "/run/secrets"

    # The plaintext is in the setSecret request only: not in the exec's query at all.
    assert SECRET.decode() not in text
    carrying = [t for t in session.printed() if SECRET.decode() in t]
    assert len(carrying) == 1 and "setSecret" in carrying[0]
    (set_secret,) = field_args(graphql.parse(carrying[0]), "setSecret")
    assert set_secret["name"] == "airlock-run-1-1-API_KEY"


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


async def test_bundle_build_pipeline_is_valid_graphql(schema: graphql.GraphQLSchema) -> None:
    session = FakeDaggerSchemaSession(schema)
    await jail_bundle(fake_client(session)).id()
    doc = session.requests[-1]
    assert_valid(schema, doc)
    (from_,) = field_args(doc, "from")
    assert from_["address"].startswith("docker.io/library/debian:")  # never the agent's image
    execs = [a for a in field_args(doc, "withExec")]
    assert not any(a.get("insecureRootCapabilities") for a in execs)  # built unprivileged
    assert execs[-1]["args"][:2] == ["sh", "-c"]
    files = {a["path"] for a in field_args(doc, "withNewFile")}
    assert files == {"/src/supervisor.c", "/src/seccomp.py"}


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


def _privileged_as_string(node: graphql.FieldNode) -> graphql.FieldNode:
    args = tuple(
        graphql.ArgumentNode(name=a.name, value=graphql.StringValueNode(value="yes"))
        if a.name.value == "insecureRootCapabilities" else a
        for a in node.arguments
    )
    return dataclasses.replace(node, arguments=args)


async def test_validation_catches_a_wrong_pipeline(schema: graphql.GraphQLSchema) -> None:
    """The check can fail: the same document with a wrong field, argument or value is rejected."""
    doc = (await render_run(schema, make_spec())).requests[-1]
    text = graphql.print_ast(doc)
    assert graphql.validate(schema, graphql.parse(text)) == []
    for change, expected in ((_renamed, "withExecute"), (_extra_argument, "memoryLimit"),
                             (_bad_enum, "MAYBE"), (_privileged_as_string, '"yes"')):
        wrong = mutate_exec(doc, change)
        assert wrong != text
        errors = graphql.validate(schema, graphql.parse(wrong))
        assert errors, f"{change.__name__} was not caught"
        assert expected in str(errors)


def test_bad_runs_are_refused_before_rendering(schema: graphql.GraphQLSchema) -> None:
    client = fake_client(FakeDaggerSchemaSession(schema))
    image = client.container().from_(IMAGE_REF)
    for spec, config, message in (
        (make_spec(secrets={"BLOB": SecretValue(b"\xff\xfe")}), CONFIG, "not UTF-8"),
        (make_spec(), ImageConfig(argv=()), "no entrypoint or command"),
    ):
        with pytest.raises(ValueError, match=message):
            jail_container(client, spec, image=image, config=config,
                           bundle=client.directory(), loader=LOADER)


# --- DaggerRuntime against the fake engine -----------------------------------------------------


def fake_runtime(session: FakeDaggerSchemaSession) -> DaggerRuntime:
    return DaggerRuntime(connect=fake_connect(session), bundle=BUNDLE, backstop_grace_seconds=0.3,
                         cancel_wait_seconds=0.5)


async def run_fake(
    schema: graphql.GraphQLSchema, spec: RunSpec, cancel: asyncio.Event | None = None,
    **answers: Answer,
) -> tuple[SandboxResult, FakeDaggerSchemaSession]:
    session = FakeDaggerSchemaSession(schema, answers)
    return await fake_runtime(session).run(spec, cancel or asyncio.Event()), session


async def test_runtime_runs_the_image_config_in_the_jail(schema: graphql.GraphQLSchema) -> None:
    doc = jail_result_text(b"working\n", b'{"output": "hi"}', exit_code=2, peak_memory_bytes=5 << 20)
    session = FakeDaggerSchemaSession(schema, {"contents": doc})
    runtime = fake_runtime(session)
    result = await runtime.run(make_spec(), asyncio.Event())
    assert result.termination is Termination.EXITED and result.exit_code == 2
    assert result.output == b'{"output": "hi"}' and not result.output_truncated
    assert result.logs == b"working\n" and not result.logs_truncated
    assert result.image_digest == "sha256:" + "ab" * 32
    assert result.peak_memory_bytes == 5 << 20
    assert result.duration_seconds == 0.25  # the supervisor's own measure
    printed = session.printed()
    for field in ("imageRef", "entrypoint", "defaultArgs", "envVariables", "workdir"):
        assert sum(field in t for t in printed) == 1, field
    argv = exec_argv(session.requests[-1])
    assert argv[-2:] == AGENT_CMD  # resolved from the image's entrypoint + args
    assert options(argv, "--chdir") == ["/app"] and bwrap_env(argv)["LD_PRELOAD"] == "/lib/evil.so"
    (rootfs,) = field_args(session.requests[-1], "withRootfs")
    (from_,) = field_args(session.origin[rootfs["directory"]], "from")
    assert from_["address"] == IMAGE_REF  # runs the digest-pinned image

    # The image's configuration is read once per digest: a second run asks only for the digest.
    before = len(session.requests)
    await runtime.run(make_spec(run_id="run-2", entrypoint=("/bin/other",)), asyncio.Event())
    later = session.printed()[before:]
    assert not any(f in t for t in later for f in ("entrypoint", "envVariables", "workdir"))
    argv = exec_argv(session.requests[-1])
    assert argv[-1:] == ["/bin/other"] and options(argv, "--chdir") == ["/app"]


async def test_runtime_takes_runs_with_and_without_network(schema: graphql.GraphQLSchema) -> None:
    assert DaggerRuntime(bundle=BUNDLE).network_pool is None  # any run: network is per run
    for network in (False, True):
        result, session = await run_fake(schema, make_spec(network=network))
        assert result.termination is Termination.EXITED, result.detail
        assert ("--slirp4netns" in exec_argv(session.requests[-1])) is network


@pytest.mark.parametrize(
    ("status", "termination", "exit_code"),
    [
        ({"exit_code": 137, "signal": 9, "timed_out": True}, Termination.TIMED_OUT, 137),
        ({"exit_code": 137, "signal": 9, "oom_kill": 1}, Termination.OOM_KILLED, 137),
        ({"exit_code": 137, "signal": 9}, Termination.EXITED, 137),  # a SIGKILL is not an OOM
        ({"exit_code": 1, "oom_kill": 1}, Termination.EXITED, 1),  # nor a MemoryError exit
        ({"exit_code": None, "error": "cannot create cgroup"}, Termination.START_FAILED, None),
        ({"exit_code": 0}, Termination.EXITED, 0),
    ],
)
async def test_runtime_maps_the_supervisor_status(
    schema: graphql.GraphQLSchema, status: dict[str, Any], termination: Termination,
    exit_code: int | None,
) -> None:
    result, _ = await run_fake(schema, make_spec(), contents=jail_result_text(b"log", **status))
    assert result.termination is termination
    assert result.exit_code == exit_code
    assert result.logs == b"log"


async def test_runtime_reports_a_supervisor_that_wrote_no_result(
    schema: graphql.GraphQLSchema,
) -> None:
    async def missing() -> str:
        raise TransportQueryError("lstat /.airlock-run/result.json: no such file or directory",
                                  errors=[{"message": "lstat /.airlock-run/result.json: no such file"}])

    result, session = await run_fake(schema, make_spec(), contents=missing,
                                     stderr="airlock-jail: cannot create the cgroup: Read-only file system\n")
    assert result.termination is Termination.START_FAILED
    assert "airlock-jail: cannot create the cgroup" in result.detail
    assert "stderr" in session.printed()[-1]  # read from the same exec


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
    # see fake_runtime) for the engine to let go; plus 1 s of scheduling slack.
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
    # The contract: the backstop fires at timeout (0.2) + backstop grace (0.3, see
    # fake_runtime); plus 1 s of scheduling slack.
    assert time.monotonic() - started < 0.2 + 0.3 + 1.0


async def test_check_refuses_an_engine_of_another_architecture(
    schema: graphql.GraphQLSchema, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from executor.runtime import dagger as dagger_runtime
    from executor.runtime.base import RuntimeUnavailable
    from executor.runtime.dagger import EngineProbe

    async def reachable(wait_seconds: float = 1.0) -> EngineProbe:
        return EngineProbe(True, "fake engine")

    monkeypatch.setattr(dagger_runtime, "probe_engine", reachable)
    monkeypatch.setattr(dagger_runtime.platform, "machine", lambda: "x86_64")
    await fake_runtime(FakeDaggerSchemaSession(schema)).check()  # linux/amd64: accepted
    session = FakeDaggerSchemaSession(schema, {"defaultPlatform": "linux/arm64"})
    with pytest.raises(RuntimeUnavailable, match=r"linux/arm64.*linux/amd64"):
        await fake_runtime(session).check()
