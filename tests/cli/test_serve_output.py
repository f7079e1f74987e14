"""What ``airlock serve`` prints and logs at start-up: the admin token only when it is not saved
to a file, the risk policy it loaded, the start-up approval sweep; and ``runs result``'s error
line. The risk policy example in the docs is a valid policy file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from agents.manifest import Risk
from airlock.cli.runs import print_result
from airlock.v1 import run_pb2
from airlock.v1 import run_service_pb2 as rs
from server.domain.policy import Policy
from tests.conftest import REPO

EXAMPLE = REPO / "docs" / "policy.example.yaml"


def serve(tmp_path: Path, **env: str) -> tuple[str, list[dict]]:
    """Start the real ``airlock serve`` until it is serving, stop it; (stdout, log records)."""
    full = {**os.environ, "AIRLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/airlock.db",
            "AIRLOCK_GRPC_LISTEN": "127.0.0.1:0", "AIRLOCK_HTTP_ENABLED": "false",
            "AIRLOCK_LOG_FORMAT": "json", **env}
    for key in ("AIRLOCK_ADMIN_TOKEN_FILE", "AIRLOCK_POLICY_FILE"):
        if key not in env:
            full.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-m", "airlock.cli", "serve"], cwd=REPO, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = []
    try:
        for line in proc.stdout:  # returns when serve exits (and closes stdout)
            out.append(line)
            if "serving gRPC on" in line:
                proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    records = [json.loads(ln) for ln in err.splitlines() if ln.startswith("{")]
    return "".join(out), records


def messages(records: list[dict]) -> list[str]:
    return [r["message"] for r in records]


def test_serve_with_a_token_file_prints_only_where_the_token_is(tmp_path: Path) -> None:
    token_file = tmp_path / "secret" / "admin.token"
    out, records = serve(tmp_path, AIRLOCK_ADMIN_TOKEN_FILE=str(token_file))
    token = token_file.read_text().strip()
    assert token.startswith("key_")
    assert token not in out and token.split(".", 1)[1] not in out, out
    assert not any(token.split(".", 1)[1] in m for m in messages(records))
    assert f"token was written to {token_file}" in out, out
    # The policy it loaded, and the start-up sweep of overdue approvals, are in the log.
    policy = [m for m in messages(records) if m.startswith("risk policy:")]
    assert policy == ["risk policy: built-in (AIRLOCK_POLICY_FILE unset): low: auto-approve, "
                      "expires after 3600s; medium: auto-approve, expires after 3600s; high: 1 "
                      "approval(s), expires after 3600s; critical: 2 approval(s), expires after "
                      "3600s"], messages(records)
    assert "start-up sweep: 0 overdue approval(s) expired" in messages(records)


def test_serve_without_a_token_file_shows_the_token_once(tmp_path: Path) -> None:
    out, _ = serve(tmp_path)
    lines = [ln.strip() for ln in out.splitlines()]
    tokens = [ln for ln in lines if ln.startswith("key_")]
    assert len(tokens) == 1, out
    assert "store it now" in out


def test_serve_logs_the_policy_file_it_loaded(tmp_path: Path) -> None:
    _, records = serve(tmp_path, AIRLOCK_POLICY_FILE=str(EXAMPLE))
    (policy,) = [m for m in messages(records) if m.startswith("risk policy:")]
    assert policy == (f"risk policy: file {EXAMPLE}: low: auto-approve, expires after 3600s; "
                      f"medium: 1 approval(s), expires after 86400s; high: 1 approval(s), expires "
                      f"after 3600s; critical: 2 approval(s), expires after 900s")


def test_documented_policy_example_loads_as_documented() -> None:
    policy = Policy.load(EXAMPLE)
    assert {r: (policy.rule_for(r).approvals, policy.rule_for(r).expires_after) for r in Risk} == {
        Risk.LOW: (0, timedelta(hours=1)), Risk.MEDIUM: (1, timedelta(days=1)),
        Risk.HIGH: (1, timedelta(hours=1)), Risk.CRITICAL: (2, timedelta(seconds=900))}
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert EXAMPLE.read_text() in doc  # the page shows the file itself, not a copy that drifts
    for field in ("`approvals`", "`expires_after_seconds`"):
        assert field in doc


@pytest.mark.parametrize(("code", "message", "line"), [
    ("", "timed out after 5s", "error: timed out after 5s"),
    ("E_BAD", "agent error E_BAD: nope", "error: E_BAD: agent error E_BAD: nope"),
    ("LOST", "", "error: LOST"),
])
def test_result_error_line_has_no_placeholder_dash(code: str, message: str, line: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    res = rs.GetRunResultResponse(run=run_pb2.Run(id="run_x", state=run_pb2.RUN_STATE_FAILED),
                                  error_code=code, error_message=message)
    print_result(res, tail=0)
    out = capsys.readouterr().out.splitlines()
    assert line in out, out
    assert not any(": -" in ln or "error: -" in ln for ln in out), out
