"""The ``airlock`` command line against a real control plane (in-process ``main``, real gRPC)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airlock.cli import main
from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import run_service_pb2 as rs
from server.domain.models import ExecutorInfo
from tests.conftest import REPO, Plane, manifest_text
from tests.helpers.requirements import require
from tests.helpers.wait import assert_eventually


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


@dataclass
class Cli:
    """Runs ``main([...])`` in a thread (it calls ``asyncio.run``) and captures its output."""

    capsys: pytest.CaptureFixture[str]
    plane: Plane | None = None

    async def __call__(self, *args: str, token: str | None = None) -> Result:
        argv = list(args)
        if self.plane is not None:
            argv += ["--address", self.plane.address]
            if token is not None:
                argv += ["--token", token]
        self.capsys.readouterr()
        rc = await asyncio.to_thread(main, argv)
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err, err
        return Result(rc, out, err)

    async def ok(self, *args: str, token: str | None = None) -> Result:
        r = await self(*args, token=token)
        assert r.rc == 0, f"exit {r.rc}\nstdout: {r.out}\nstderr: {r.err}"
        return r


@pytest.fixture
def cli(plane: Plane, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys, plane)


def admin_token(plane: Plane) -> str:
    assert plane.cp.admin_token
    return plane.cp.admin_token


async def new_token(cli: Cli, plane: Plane, owner: str, role: str) -> str:
    r = await cli.ok("keys", "create", "--owner", owner, "--role", role, token=admin_token(plane))
    return r.out.strip()


async def test_keys_create_list_revoke(cli: Cli, plane: Plane) -> None:
    admin = admin_token(plane)
    r = await cli.ok("keys", "create", "--owner", "alice", "--role", "submitter", token=admin)
    token = r.out.strip()
    assert token and "\n" not in token  # the token alone on stdout, for $(...)
    assert "shown only once" in r.err
    assert (await cli.ok("whoami", token=token)).out.startswith("alice (submitter")

    listed = await cli.ok("keys", "list", token=admin)
    header, *rows = listed.out.splitlines()
    assert header.split() == ["ID", "OWNER", "ROLE", "CREATED", "REVOKED"]
    alice = next(row for row in rows if " alice " in row)
    key_id = alice.split()[0]
    assert alice.split()[2] == "submitter"

    await cli.ok("keys", "revoke", key_id, token=admin)
    keys = (await cli.ok("--json", "keys", "list", token=admin)).json()["keys"]
    assert next(k for k in keys if k["id"] == key_id)["revoke_time"]
    denied = await cli("whoami", token=token)
    assert denied.rc == 1 and "UNAUTHENTICATED" in denied.err


async def test_agents_register_list_get_deprecate(cli: Cli, plane: Plane, tmp_path: Path) -> None:
    admin = admin_token(plane)
    (tmp_path / "agent.yaml").write_text(manifest_text())
    v2 = tmp_path / "v2.yaml"
    v2.write_text(manifest_text(version="2.0.0", risk="high"))

    r = await cli.ok("agents", "register", str(tmp_path), token=admin)  # a folder
    assert "registered echo 1.0.0 (risk low" in r.out
    digest = "sha256:" + "ab" * 32
    r = await cli.ok("agents", "register", str(v2), "--image-digest", digest, token=admin)
    assert "registered echo 2.0.0 (risk high" in r.out and digest in r.out

    r = await cli.ok("agents", "list", token=admin)
    header, row = r.out.splitlines()
    assert header.split() == ["NAME", "LATEST", "VERSIONS", "DESCRIPTION"]
    assert row.split()[:2] == ["echo", "2.0.0"]

    r = await cli.ok("agents", "get", "echo", token=admin)
    assert "latest       2.0.0" in r.out
    assert any(line.split()[:2] == ["1.0.0", "low"] for line in r.out.splitlines())
    version = (await cli.ok("agents", "get", "echo", "--version", "2.0.0", "--json",
                            token=admin)).json()["version"]
    assert version["image_digest"] == digest and version["risk"] == "RISK_HIGH"

    r = await cli.ok("agents", "deprecate", "echo", "2.0.0", "--reason", "too risky", token=admin)
    assert "deprecated echo 2.0.0: too risky" in r.out
    agents = (await cli.ok("agents", "list", "--json", token=admin)).json()["agents"]
    assert agents[0]["latest_version"] == "1.0.0"
    missing = await cli("agents", "get", "nope", token=admin)
    assert missing.rc == 1 and missing.err.startswith("error: NOT_FOUND: ")


async def test_runs_submit_get_list_cancel_watch_result(cli: Cli, plane: Plane) -> None:
    admin = admin_token(plane)
    await cli.ok("agents", "register", manifest_text(), token=admin)  # manifest text itself
    alice = await new_token(cli, plane, "alice", "submitter")

    r = await cli.ok("runs", "submit", "echo", "echo", "--input", '{"text": "hi"}', token=alice)
    run_id = r.out.strip()
    assert run_id.startswith("run_") and "QUEUED" in r.err and "risk low" in r.err
    again = await cli.ok("runs", "submit", "echo", "echo", "--input", '{"text": "x"}',
                         "--idempotency-key", "k1", "--memory-mib", "256", "--json", token=alice)
    assert again.json()["run"]["limits"]["memory_mib"] == 256
    dup = await cli.ok("runs", "submit", "echo", "echo", "--input", '{"text": "x"}',
                       "--idempotency-key", "k1", "--memory-mib", "256", "--json", token=alice)
    assert dup.json()["deduplicated"] is True

    detail = (await cli.ok("runs", "get", run_id, token=alice)).out
    assert f"id               {run_id}" in detail and "state            QUEUED" in detail

    r = await cli.ok("runs", "list", "--agent", "echo", "--state", "queued", token=alice)
    header, *rows = r.out.splitlines()
    assert header.split()[:5] == ["ID", "AGENT", "VERSION", "CAPABILITY", "STATE"]
    assert len(rows) == 2 and all(row.split()[4] == "QUEUED" for row in rows)
    one = await cli.ok("runs", "list", "--limit", "1", "--json", token=alice)
    assert len(one.json()["runs"]) == 1

    r = await cli.ok("runs", "cancel", run_id, "--reason", "changed my mind", token=alice)
    assert r.out.strip() == f"{run_id}: CANCELLED"
    result = (await cli.ok("runs", "result", run_id, token=alice)).out
    assert f"run {run_id}: CANCELLED (cancelled by alice: changed my mind)" in result

    lines = (await cli.ok("runs", "watch", run_id, token=alice)).out.splitlines()
    assert [line.split()[3] for line in lines] == ["QUEUED", "CANCELLED"]
    events = (await cli.ok("runs", "watch", run_id, "--from", "2", "--json", token=alice)).out
    assert [json.loads(e)["state"] for e in events.splitlines()] == ["RUN_STATE_CANCELLED"]
    cancelled = await cli.ok("runs", "list", "--state", "CANCELLED", token=alice)
    assert cancelled.out.count("run_") == 1

    bad = await cli("runs", "submit", "echo", "echo", "--input", "{nope", token=alice)
    assert bad.rc == 1 and bad.err.startswith("error: --input: not valid JSON")
    bad = await cli("runs", "submit", "echo", "echo", "--input", '{"text": 1}', token=alice)
    assert bad.rc == 1 and "INVALID_ARGUMENT: input_json" in bad.err


async def test_approvals_list_approve_reject(cli: Cli, plane: Plane) -> None:
    admin = admin_token(plane)
    await cli.ok("agents", "register", manifest_text(risk="high"), token=admin)
    alice = await new_token(cli, plane, "alice", "submitter")
    bob = await new_token(cli, plane, "bob", "approver")
    submit = ("runs", "submit", "echo", "echo", "--input", '{"text": "hi"}')
    r1 = (await cli.ok(*submit, token=alice)).out.strip()
    r2 = (await cli.ok(*submit, token=alice)).out.strip()

    r = await cli.ok("approvals", "list", token=admin)
    header, *rows = r.out.splitlines()
    assert header.split()[:7] == [
        "RUN", "AGENT", "VERSION", "CAPABILITY", "RISK", "STATUS", "VOTES"]
    assert sorted(row.split()[0] for row in rows) == sorted([r1, r2])
    assert all(row.split()[4:7] == ["high", "pending", "0/1"] for row in rows)
    # Alice's approver key: nobody decides their own runs.
    alice_approver = await new_token(cli, plane, "alice", "approver")
    own = await cli.ok("approvals", "list", "--actionable", token=alice_approver)
    assert own.out.strip() == "no pending approvals"
    assert len((await cli.ok("approvals", "list", "--actionable", token=bob)).out.splitlines()) == 3
    refused = await cli("approvals", "approve", r1, token=alice_approver)
    assert refused.rc == 1 and refused.err.startswith("error: PERMISSION_DENIED: ")
    r = await cli.ok("approvals", "approve", r1, "--reason", "looks fine", token=bob)
    assert r.out.strip().startswith(
        f"approved {r1}: approval approved (1/1 approvals); run QUEUED; action sha256:")
    assert (await cli("approvals", "reject", r2, token=bob)).rc == 2  # --reason is required
    r = await cli.ok("approvals", "reject", r2, "--reason", "not today", token=bob)
    assert f"rejected {r2}: approval rejected" in r.out and "run REJECTED" in r.out

    assert (await cli.ok("approvals", "list", token=admin)).out.strip() == "no pending approvals"
    every = (await cli.ok("approvals", "list", "--all", "--json", token=admin)).json()["approvals"]
    assert {a["run_id"]: a["status"] for a in every} == {
        r1: "APPROVAL_STATUS_APPROVED", r2: "APPROVAL_STATUS_REJECTED"}


async def test_submit_wait_follows_the_run_to_its_end(cli: Cli, plane: Plane) -> None:
    admin = admin_token(plane)
    await cli.ok("agents", "register", manifest_text(risk="high"), token=admin)
    alice = await new_token(cli, plane, "alice", "submitter")
    bob = await plane.key("bob", "approver")  # not the CLI: it would share the capture
    waiting = asyncio.create_task(cli("runs", "submit", "echo", "echo", "--input", '{"text": "x"}',
                                      "--wait", token=alice))
    viewer = plane.admin
    listed = await assert_eventually(
        lambda: viewer.runs.ListRuns(rs.ListRunsRequest(), metadata=viewer.md),
        lambda resp: len(resp.runs) == 1, what="the run to be submitted")
    run_id = listed.runs[0].id
    await bob.approvals.Reject(aps.RejectRequest(run_id=run_id, reason="no"), metadata=bob.md)
    r = await asyncio.wait_for(waiting, 30)
    assert r.rc == 4, r  # ended without succeeding
    assert [line.split()[3] for line in r.out.splitlines()[:2]] == ["PENDING_APPROVAL", "REJECTED"]
    assert f"run {run_id}: REJECTED (rejected by bob: no)" in r.out
    assert "waiting for approval" in r.err


async def test_executors_list(cli: Cli, plane: Plane) -> None:
    admin = admin_token(plane)
    assert (await cli.ok("executors", "list", token=admin)).out.strip() == "no executors registered"
    now = datetime.now(UTC)
    async with plane.cp.store.transaction() as tx:
        await tx.fleet.register(ExecutorInfo(id="ex-1", host="host-a", runtime="podman", slots=4,
                                              slots_in_use=1, started_at=now, heartbeat_at=now,
                                              stopped_at=None))
    header, row = (await cli.ok("executors", "list", token=admin)).out.splitlines()
    assert header.split() == ["ID", "HOST", "RUNTIME", "SLOTS", "STATE", "STARTED", "HEARTBEAT"]
    assert row.split()[:5] == ["ex-1", "host-a", "podman", "1/4", "active"]
    listed = (await cli.ok("executors", "list", "--json", token=admin)).json()["executors"]
    assert listed[0]["slots"] == 4


async def test_agent_validate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = Cli(capsys)
    good = tmp_path / "good"
    good.mkdir()
    (good / "agent.yaml").write_text(manifest_text(risk="medium", secrets=("API_KEY",)))
    r = await run.ok("agent", "validate", str(good))
    assert r.out.startswith("echo 1.0.0: valid")
    assert "risk          medium" in r.out and "secrets       API_KEY" in r.out
    assert (await run.ok("agent", "validate", str(good), "--json")).json()["risk"] == "medium"

    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest_text().replace("  - name: echo", "  - name: Echo!"))
    r = await run("agent", "validate", str(bad))
    assert r.rc == 1 and "capabilities.0.name" in r.err and r.out == ""
    bad.write_text(manifest_text(risk="extreme"))
    r = await run("agent", "validate", str(bad))
    assert r.rc == 1 and "risk: unknown risk 'extreme'" in r.err
    r = await run("agent", "validate", str(tmp_path / "missing"))
    assert r.rc == 1 and "not found" in r.err


async def test_errors_are_one_line_with_the_code(cli: Cli, plane: Plane,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    r = await cli("runs", "list", token="key_000000000000.not-a-real-token")
    assert r.rc == 1
    assert r.err.splitlines()[0].startswith("error: UNAUTHENTICATED: ")
    monkeypatch.delenv("AIRLOCK_TOKEN", raising=False)
    r = await cli("runs", "list")
    assert r.rc == 1 and "AIRLOCK_TOKEN" in r.err
    r = await cli("runs", "get", "run_" + "0" * 26, token=admin_token(plane))
    assert r.rc == 1 and r.err.startswith("error: NOT_FOUND: ")
    assert (await cli("runs")).rc == 2  # a group alone prints its help
    assert (await cli("runs", "list", "--state", "NOPE", token="x")).rc == 2


def test_help_and_startup_failure_in_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "airlock.cli", "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for command in ("serve", "migrate", "keys", "agents", "runs", "approvals", "executors",
                    "agent", "base-image"):
        assert f"    {command} " in r.stdout

    env |= {"AIRLOCK_GRPC_LISTEN": "nonsense",
            "AIRLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/never.db"}
    r = subprocess.run([sys.executable, "-m", "airlock.cli", "serve"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == "configuration error: AIRLOCK_GRPC_LISTEN: must be host:port"
    assert not (tmp_path / "never.db").exists()


@pytest.mark.podman
@pytest.mark.slow
async def test_agent_run_local_runs_one_capability_in_a_sandbox(
        capsys: pytest.CaptureFixture[str]) -> None:
    require("podman", None if shutil.which("podman") else "not on PATH (scripts/setup.sh installs it)")
    require("root", None if os.geteuid() == 0 else "agent run-local with podman runs as root")
    from executor.base_image import make_base_image

    base = await asyncio.to_thread(make_base_image)
    run = Cli(capsys)
    agent = str(REPO / "sample_agents" / "text-stats")
    r = await run("agent", "run-local", agent, "stats", "--input", '{"text": "a b a"}',
                  "--runtime", "podman", "--base-image", base, "--json")
    if r.rc == 1 and "no sandbox" in r.err:
        require("a working podman sandbox", r.err)
    assert r.rc == 0, r
    outcome = r.json()
    assert outcome["state"] == "SUCCEEDED"
    assert outcome["output"]["words"] == 3
    r = await run("agent", "run-local", agent, "stats", "--input", '{"text": "x"}',
                  "--runtime", "podman", "--timeout-seconds", "999")
    assert r.rc == 1 and "limits.timeout_seconds: 999.0 exceeds" in r.err
    r = await run("agent", "run-local", agent, "nope", "--input", "{}")
    assert r.rc == 1 and "has no capability 'nope'" in r.err

