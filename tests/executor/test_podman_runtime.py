"""The podman runtime with real containers: the contract, limits as seen from inside, secrets,
start failures, cleanup and the runtime factory."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agents.limits import Limits
from agents.manifest import Manifest
from executor.base_image import apt_mirror
from executor.results import interpret
from executor.runtime.base import (
    LABEL_RUN_ID,
    RunSpec,
    RuntimeUnavailable,
    SandboxResult,
    SandboxRuntime,
    SecretValue,
    Termination,
)
from executor.runtime.podman import PodmanRuntime
from executor.runtime.registry import resolve_runtime
from tests.executor.conftest import SMALL, new_run_id, output_schema, run_agent
from tests.executor.conftest import containers as _containers
from tests.helpers.wait import wait_for_condition

podman = pytest.mark.podman


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _mounted(path: Path) -> bool:
    return any(
        line.split()[1] == str(path) for line in Path("/proc/mounts").read_text().splitlines()
    )


# ---------------------------------------------------------------- no containers needed


def test_command_line_has_every_limit_and_no_secret_value() -> None:
    rt = PodmanRuntime()
    spec = RunSpec(
        run_id="r1",
        attempt=2,
        image="localhost/x:1",
        capability="c",
        input={},
        limits=Limits(memory_mib=64, pids=32, cpus=0.5),
        secrets={"TOKEN": SecretValue(b"hunter2")},
        env={"TRACEPARENT": "00-abc-def-01"},
    )
    argv = rt._argv(spec, Path("/run/airlock/airlock-r1-2"))
    line = " ".join(argv)
    assert argv[:5] == ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
    for flag in (
        "--name airlock-r1-2",
        "--network=none",
        "--read-only",
        "--memory 64m --memory-swap 64m",
        "--pids-limit 32",
        "--cpus 0.5",
        "--ulimit nofile=1024:1024",
        "--cap-drop=ALL",
        "--security-opt no-new-privileges",
        "--user 65534:65534",
        "--init",
        f"--label {LABEL_RUN_ID}=r1",
        "--env TRACEPARENT=00-abc-def-01",
        "/run/airlock/airlock-r1-2/secrets:/run/secrets:ro",
    ):
        assert flag in line, flag
    assert "--ulimit nproc=" in line
    assert "hunter2" not in line
    assert argv[-1] == "localhost/x:1"
    assert "--network=bridge" in " ".join(rt._argv(_with(spec, network=True), Path("/w")))


def _with(spec: RunSpec, **changes: object) -> RunSpec:
    from dataclasses import replace

    return replace(spec, **changes)  # type: ignore[arg-type]


def test_secret_value_repr_hides_the_value() -> None:
    assert "hunter2" not in repr(SecretValue(b"hunter2"))


async def test_check_names_a_missing_podman_and_caches_the_answer() -> None:
    rt = PodmanRuntime(podman="/nonexistent/podman")
    probes = 0
    real_probe = rt._probe

    async def counted() -> Any:
        nonlocal probes
        probes += 1
        return await real_probe()

    rt._probe = counted  # type: ignore[method-assign]
    with pytest.raises(RuntimeUnavailable, match="'/nonexistent/podman' not found") as first:
        await rt.check()
    with pytest.raises(RuntimeUnavailable) as second:
        await rt.check()
    assert second.value is first.value  # the cached answer itself
    assert probes == 1  # and no second probe


async def test_factory_rejects_unknown_names_and_never_runs_unsandboxed() -> None:
    with pytest.raises(ValueError, match="unknown sandbox runtime 'docker'"):
        await resolve_runtime("docker")
    with pytest.raises(RuntimeUnavailable, match=r"no sandbox runtime usable: .*podman"):
        await resolve_runtime("auto", podman="/nonexistent/podman")


def test_apt_mirror_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    apt = tmp_path / "etc/apt/sources.list.d"
    apt.mkdir(parents=True)
    (apt / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"
    (apt / "debian.sources").unlink()
    (tmp_path / "etc/apt/sources.list").write_text(
        "# comment\ndeb [arch=amd64] https://other.example/debian bookworm main\n"
    )
    assert apt_mirror(tmp_path) == "https://other.example/debian"
    (tmp_path / "etc/apt/sources.list").write_text("")
    assert apt_mirror(tmp_path) == "http://deb.debian.org/debian"


# ---------------------------------------------------------------- real containers


@podman
async def test_check_runs_podman_once_and_caches_the_answer(
    podman_runtime: PodmanRuntime, tmp_path: Path
) -> None:
    # A podman that logs each call, then is the real one.
    calls = tmp_path / "calls.log"
    real = shutil.which("podman")
    assert real is not None
    shim = tmp_path / "podman"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    shim.chmod(0o755)
    rt = PodmanRuntime(podman=str(shim), executor_id="pytest")
    await rt.check()
    first = calls.read_text().splitlines()
    assert any(" info " in f" {c} " for c in first), first  # the probe did ask podman
    await rt.check()
    await rt.check()
    assert calls.read_text().splitlines() == first  # cached: not one more podman call


@podman
async def test_factory_resolves_podman_when_no_dagger_engine(podman_runtime: PodmanRuntime) -> None:
    rt = await resolve_runtime("podman")
    assert isinstance(rt, PodmanRuntime) and isinstance(rt, SandboxRuntime)
    # No Dagger engine runs on this project's machines (its image is in a registry they cannot
    # reach); were one reachable, this test would have to be rewritten, so say so loudly.
    from executor.runtime.dagger import probe_engine  # dagger-io is optional for podman hosts

    probe = await probe_engine()
    assert probe.reachable is not True, f"a Dagger engine answers here: {probe.reason}"
    # auto prefers the jail; where the jail cannot run (here: its work root cannot be made),
    # podman. That auto picks the jail where it runs is tested with the jail.
    auto = await resolve_runtime("auto", executor_id="x", jail_work_root="/dev/null/jail")
    assert auto.name == "podman" and isinstance(auto, PodmanRuntime)


@podman
async def test_ok_run_succeeds_with_digest_peak_memory_and_no_leftovers(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    run_id = new_run_id("ok")
    result, outcome = await run_agent(
        podman_runtime, misbehave_image, misbehave_manifest, "ok", {"x": [1, "ü"]}, run_id=run_id
    )
    assert outcome.state == "SUCCEEDED", outcome
    assert outcome.output == {"ok": True, "echo": {"x": [1, "ü"]}}
    assert result.termination is Termination.EXITED and result.exit_code == 0
    assert result.image_digest and result.image_digest.startswith("sha256:")
    assert result.peak_memory_bytes and 1 << 20 < result.peak_memory_bytes < 64 << 20
    assert _containers(run_id) == []
    assert not (podman_runtime.work_root / f"airlock-{run_id}-1").exists()


@podman
async def test_sandbox_identity_limits_env_and_secrets_from_inside(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    run_id = new_run_id("who")
    result, outcome = await run_agent(
        podman_runtime,
        misbehave_image,
        misbehave_manifest,
        "whoami",
        secrets={"SIGNING_KEY": b"hunter2-secret"},
        env={"TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        run_id=run_id,
    )
    assert outcome.state == "SUCCEEDED", outcome
    me = outcome.output
    assert (me["uid"], me["gid"]) == (65534, 65534)
    assert me["cap_eff"] == "0000000000000000"
    assert me["no_new_privs"] == "1"
    assert me["nofile"] == [1024, 1024]
    assert me["pid1"] == "/run/podman-init"  # --init (catatonit): reaps, ends orphans
    assert me["env"]["AIRLOCK_RUN_ID"] == run_id
    assert me["env"]["AIRLOCK_INPUT"] == "/airlock/input.json"
    assert me["env"]["AIRLOCK_OUTPUT"] == "/airlock/out/output.json"
    assert me["env"]["TRACEPARENT"].startswith("00-0af7")
    # The secret is a 0400 file owned by the sandbox user, never an environment variable.
    assert me["secrets"] == {"SIGNING_KEY": {"mode": "0o400", "uid": 65534, "size": 14}}
    assert "hunter2-secret" not in json.dumps(me["env_values"])
    assert b"hunter2" not in result.logs
    # ... and it is gone from the host after the run.
    work = podman_runtime.work_root / f"airlock-{run_id}-1"
    assert not work.exists() and not _mounted(work)


@podman
@pytest.mark.parametrize(
    ("capability", "payload", "reason"),
    [
        ("crash", {}, "agent exited with code 3"),
        ("fail", {}, "agent error E_BAD: bad things"),
        (
            "garbage_output",
            {},
            "output is not valid JSON: Expecting value: line 1 column 1 (char 0)",
        ),
        (
            "schema_violation",
            {},
            "output does not match the output schema at $.count: 'x' is not of type 'integer'",
        ),
        ("big_output", {"kib": 100}, "output larger than 64 KiB"),
        # Far over the cap: the bounded output tmpfs refuses it (ENOSPC), the helper crashes.
        ("big_output", {"kib": 3000}, "agent exited with code 1"),
    ],
)
async def test_contract_violations_fail_with_a_precise_reason(
    podman_runtime: PodmanRuntime,
    misbehave_image: str,
    misbehave_manifest: Manifest,
    capability: str,
    payload: dict[str, int],
    reason: str,
) -> None:
    _, outcome = await run_agent(
        podman_runtime, misbehave_image, misbehave_manifest, capability, payload
    )
    assert (outcome.state, outcome.reason) == ("FAILED", reason)


@podman
async def test_crash_logs_are_captured(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    result, outcome = await run_agent(podman_runtime, misbehave_image, misbehave_manifest, "crash")
    assert outcome.exit_code == 3
    assert b"crashing on purpose" in result.logs and not result.logs_truncated


@podman
async def test_missing_image_is_a_start_failure(
    podman_runtime: PodmanRuntime, misbehave_manifest: Manifest
) -> None:
    result, outcome = await run_agent(
        podman_runtime, "localhost/airlock/does-not-exist:0", misbehave_manifest, "ok"
    )
    assert result.termination is Termination.START_FAILED
    assert outcome.state == "FAILED"
    assert outcome.reason.startswith("sandbox failed to start: ")
    assert "image not known" in outcome.reason


@podman
async def test_missing_entrypoint_is_a_start_failure(
    podman_runtime: PodmanRuntime, misbehave_image: str
) -> None:
    spec = RunSpec(
        run_id=new_run_id("noexec"),
        attempt=1,
        image=misbehave_image,
        capability="ok",
        input={},
        limits=SMALL,
        entrypoint=("/no/such/binary",),
    )
    result = await podman_runtime.run(spec, asyncio.Event())
    assert result.termination is Termination.START_FAILED, result
    assert "/no/such/binary" in result.detail or "failed to exec" in result.detail


@podman
async def test_cancel_stops_a_spinning_run_before_its_deadline(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    cancel = asyncio.Event()
    run_id = new_run_id("cancel")
    run = asyncio.create_task(
        run_agent(podman_runtime, misbehave_image, misbehave_manifest, "spin", cancel=cancel,
                  run_id=run_id)
    )
    await wait_for_condition(lambda: _running(run_id), timeout=60, what="the spin container runs")
    assert not run.done()
    cancel.set()
    result, outcome = await run
    # The agent spins forever and ignores SIGTERM: only the cancel can have ended it, before
    # its 10 s limit (else TIMED_OUT).
    assert result.termination is Termination.CANCELLED
    assert (outcome.state, outcome.reason) == ("CANCELLED", "cancelled")
    assert result.duration_seconds < SMALL.timeout_seconds
    assert _containers(run_id) == []


def _running(run_id: str) -> bool:
    out = subprocess.run(
        ["podman", "ps", "--filter", f"label={LABEL_RUN_ID}={run_id}", "--filter",
         "status=running", "--format", "{{.Names}}"],
        capture_output=True, text=True, check=True).stdout
    return bool(out.split())


@podman
async def test_self_sigkill_well_under_the_memory_limit_is_a_failure_not_an_oom(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    # The agent touches 16 MiB of its 64, prints MemoryError, then SIGKILLs itself.
    result, outcome = await run_agent(
        podman_runtime, misbehave_image, misbehave_manifest, "kill_self", {"mib": 16}
    )
    assert result.termination is Termination.EXITED and result.exit_code == 137, result
    assert result.peak_memory_bytes is not None
    assert 16 << 20 < result.peak_memory_bytes < (64 - 16) << 20
    assert b"MemoryError" in result.logs
    assert (outcome.state, outcome.reason) == ("FAILED", "agent exited with code 137")


@podman
async def test_self_sigkill_at_the_memory_limit_is_a_failure_not_an_oom(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    # The agent reads its own cgroup, fills memory to within 1 MiB of the 64 MiB limit without
    # tripping it, then SIGKILLs itself: exit 137 with a peak at the limit, everything an OOM
    # shows from outside except the kernel's own notification (conmon's), which never came.
    result, outcome = await run_agent(
        podman_runtime, misbehave_image, misbehave_manifest, "kill_self", {"to_limit": True}
    )
    assert result.termination is Termination.EXITED and result.exit_code == 137, result
    assert result.peak_memory_bytes is not None
    assert result.peak_memory_bytes >= (64 << 20) - (1 << 20), "the fake did not reach the limit"
    assert (outcome.state, outcome.reason) == ("FAILED", "agent exited with code 137")


@podman
async def test_cancel_before_start_runs_nothing(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    cancel = asyncio.Event()
    cancel.set()
    run_id = new_run_id("precancel")
    result, _ = await run_agent(
        podman_runtime, misbehave_image, misbehave_manifest, "ok", cancel=cancel, run_id=run_id
    )
    assert result.termination is Termination.CANCELLED and result.exit_code is None


@podman
async def test_stale_container_with_the_same_name_is_replaced(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    run_id = new_run_id("stale")
    _sh("podman", "create", "--name", f"airlock-{run_id}-1", misbehave_image)
    _, outcome = await run_agent(
        podman_runtime, misbehave_image, misbehave_manifest, "ok", run_id=run_id
    )
    assert outcome.state == "SUCCEEDED", outcome


@podman
async def test_reap_removes_what_a_crashed_executor_left(
    podman_runtime: PodmanRuntime, misbehave_image: str
) -> None:
    run_id = new_run_id("reap")
    label = f"{LABEL_RUN_ID}={run_id}"
    _sh("podman", "create", "--name", f"airlock-{run_id}-1", "--label", label, misbehave_image)
    work = podman_runtime.work_root / f"airlock-{run_id}-1"
    work.mkdir()
    _sh("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(work))
    assert await podman_runtime.reap(run_id) == 1
    assert _containers(run_id) == []
    assert not work.exists() and not _mounted(work)
    assert await podman_runtime.reap(run_id) == 0


def test_interpret_judges_output_by_the_manifest_schema(misbehave_manifest: Manifest) -> None:
    # run_agent interprets with the capability's schema from agent.yaml; the schema_violation
    # test above relies on that schema saying integer. Same result shape, two outputs.
    schema = output_schema(misbehave_manifest, "schema_violation")

    def outcome_of(output: object) -> tuple[str, str]:
        result = SandboxResult(
            Termination.EXITED, 0, json.dumps({"output": output}).encode(), False, b"", False, 0.1
        )
        o = interpret(result, schema, limits=SMALL)
        return o.state, o.reason

    assert outcome_of({"count": 3}) == ("SUCCEEDED", "")
    assert outcome_of({"count": "3"}) == (
        "FAILED",
        "output does not match the output schema at $.count: '3' is not of type 'integer'",
    )
    assert outcome_of({}) == (
        "FAILED", "output does not match the output schema at $: 'count' is a required property"
    )
