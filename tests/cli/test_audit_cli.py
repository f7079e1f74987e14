"""``airlock audit verify|list|export``, digests in ``runs get``, and approving a digest."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import sqlalchemy as sa

from server.store.engine import sync_url
from tests.cli.test_cli import Cli, admin_token, cli, new_token  # noqa: F401  (fixture)
from tests.conftest import Plane, manifest_text


def _tamper(url: str) -> None:
    engine = sa.create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE approval_decisions SET approver = 'mallory'"))
    finally:
        engine.dispose()


async def test_digests_approve_digest_verify_and_export(cli: Cli, plane: Plane,  # noqa: F811
                                                        tmp_path: Path) -> None:
    admin = admin_token(plane)
    await cli.ok("agents", "register", manifest_text(risk="high"), token=admin)
    alice = await new_token(cli, plane, "alice", "submitter")
    bob = await new_token(cli, plane, "bob", "approver")
    viewer = await new_token(cli, plane, "vera", "viewer")
    run_id = (await cli.ok("runs", "submit", "echo", "echo", "--input", '{"text": "hi"}',
                           token=alice)).out.strip()
    run = (await cli.ok("--json", "runs", "get", run_id, token=alice)).json()["run"]
    shown = (await cli.ok("runs", "get", run_id, token=alice)).out
    assert f"action digest    sha256:{run['action_digest']}" in shown
    assert f"input sha256     {run['input_sha256']}" in shown

    # Approvers see the digest, and may bind their approval to it.
    got = (await cli.ok("approvals", "get", run_id, token=bob)).out
    assert f"sha256:{run['action_digest']}" in got
    wrong = await cli("approvals", "approve", run_id, "--digest", "ab" * 32, token=bob)
    assert wrong.rc == 1 and "FAILED_PRECONDITION" in wrong.err
    r = await cli.ok("approvals", "approve", run_id, "--digest",
                     f"sha256:{run['action_digest']}", token=bob)
    assert f"action sha256:{run['action_digest']}" in r.out
    decided = (await cli.ok("approvals", "get", run_id, token=bob)).out
    assert "approved by bob at" in decided and f"for sha256:{run['action_digest']}" in decided

    ok = await cli.ok("audit", "verify", token=viewer)
    assert ok.out.startswith("OK: 1 runs,") and "chain digest" in ok.out
    denied = await cli("audit", "verify", token=bob)
    assert denied.rc == 1 and "PERMISSION_DENIED" in denied.err

    listed = (await cli.ok("audit", "list", "--target", run_id, token=viewer)).out
    assert [line.split()[4] for line in listed.splitlines()[1:]] == ["run.submit",
                                                                      "approval.approve"]
    out = tmp_path / "audit.jsonl"
    await cli.ok("audit", "export", "--since", "2000-01-01", "--until", "2999-01-01",
                 "-o", str(out), token=admin)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {d["action"] for d in lines} >= {"key.create", "run.submit", "approval.approve"}
    approval = next(d for d in lines if d["action"] == "approval.approve")
    assert approval["details"]["action_digest"] == run["action_digest"]
    assert approval["chain"] == f"run:{run_id}" and len(approval["hash"]) == 64
    none = await cli.ok("audit", "export", "--since", "2999-01-01", token=admin)
    assert none.out == ""

    # Behind the API: the approver's name changed. verify names the decision, exit 1.
    await asyncio.to_thread(_tamper, plane.url)  # a thread: the plane's loop keeps serving
    bad = await cli("audit", "verify", token=admin)
    assert bad.rc == 1
    assert bad.out.startswith("MISMATCH at approval_decisions #")
    assert "mallory" in bad.out and run_id in bad.out
