"""``airlock workflows`` against a real control plane: a YAML file submitted, shown, listed,
decided, watched and cancelled; a bad file is refused naming the place."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from airlock.v1 import workflow_service_pb2 as wfs
from tests.cli.test_cli import Cli, admin_token, new_token
from tests.conftest import Plane, manifest_text

FLOW = """\
name: nightly
deadline_seconds: 600
steps:
  - name: first
    agent: echo
    capability: echo
    input: {text: hello}
  - name: check
    gate: true
    approvals: 1
    description: look at first's output
    depends_on: [first]
  - name: second
    agent: echo
    capability: echo
    depends_on: [check]
    on_failure: continue
    input: {text: {$from: steps.first.output.text}}
"""


@pytest.fixture
def cli(plane: Plane, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys, plane)


async def test_workflows_submit_get_list_approve_watch_cancel(cli: Cli, plane: Plane,
                                                              tmp_path: Path) -> None:
    admin = admin_token(plane)
    await cli.ok("agents", "register", manifest_text(risk="high"), token=admin)
    alice = await new_token(cli, plane, "alice", "submitter")
    bob = await new_token(cli, plane, "bob", "approver")
    f = tmp_path / "flow.yaml"
    f.write_text(FLOW)
    r = await cli.ok("workflows", "submit", str(f), "--idempotency-key", "n1", token=alice)
    wid = r.out.strip()
    assert wid.startswith("wf_")
    assert r.err.strip() == "PENDING_APPROVAL: plan of 2 run(s) needs 1 approval (highest risk high)"
    again = await cli.ok("workflows", "submit", str(f), "--idempotency-key", "n1", token=alice)
    assert again.out.strip() == wid and "existing workflow" in again.err
    detail = (await cli.ok("workflows", "get", wid, token=alice)).out
    assert "PENDING_APPROVAL" in detail and "approval (plan)" in detail
    rows = [line.split()[:3] for line in detail.splitlines() if line.split()[:1] in
            (["first"], ["check"], ["second"])]
    assert rows == [["first", "echo", "1.0.0"], ["check", "gate", "WAITING"],
                    ["second", "echo", "1.0.0"]]
    listed = (await cli.ok("workflows", "list", "--state", "pending_approval", token=alice)).out
    assert wid in listed and "nightly" in listed
    r = await cli.ok("workflows", "approve", wid, "--reason", "fine", token=bob)
    assert r.out.strip() == f"{wid}: approved (1 of 1); workflow RUNNING"
    # The watch prints on every change until the workflow ends (whenever it opened, its last
    # line is the end); the cancel goes through the API (not the CLI: it would share the
    # capture).
    watching = asyncio.create_task(cli("workflows", "watch", wid, token=alice))
    carl = await plane.key("alice", "submitter")
    await carl.workflows.CancelWorkflow(wfs.CancelWorkflowRequest(workflow_id=wid,
                                                                  reason="enough"),
                                        metadata=carl.md)
    w = await asyncio.wait_for(watching, 30)
    assert w.rc == 0 and w.out.splitlines()[-1].split() == [
        "CANCELLED", "first=CANCELLED", "check=SKIPPED", "second=SKIPPED"]
    r = await cli("workflows", "cancel", wid, token=alice)
    assert r.rc == 1 and "FAILED_PRECONDITION" in r.err
    shown = (await cli.ok("workflows", "get", wid, "--json", token=alice)).json()["workflow"]
    assert shown["reason"] == "cancelled by alice: enough"
    assert {s["name"]: s["state"] for s in shown["steps"]} == {
        "first": "CANCELLED", "check": "SKIPPED", "second": "SKIPPED"}


async def test_a_bad_file_is_refused_naming_the_place(cli: Cli, plane: Plane,
                                                      tmp_path: Path) -> None:
    alice = await new_token(cli, plane, "alice", "submitter")
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\nsteps:\n  - name: a\n    agnet: echo\n")
    r = await cli("workflows", "submit", str(f), token=alice)
    assert r.rc == 1 and "workflow.steps[0]: unknown key(s) agnet" in r.err
    await cli.ok("agents", "register", manifest_text(), token=admin_token(plane))
    f.write_text("name: x\nsteps:\n  - {name: a, agent: echo, capability: echo, input: {text: 1}}\n")
    r = await cli("workflows", "submit", str(f), token=alice)
    assert r.rc == 1 and r.err.startswith("error: INVALID_ARGUMENT: spec.steps[0].input_json: ")
