"""Every RPC × every kind of caller gives the code the role table says (PostgreSQL plane),
and every run-reading RPC × role sees exactly the runs its scope says (own vs another owner's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import approval_pb2 as aps_pb
from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import run_service_pb2 as rs
from airlock.v1 import workflow_service_pb2 as wfs
from server.domain.principal import PERMISSIONS, Role, Scope
from tests.conftest import Plane, manifest_text, start_plane
from tests.helpers.api import cancel, register, submit
from tests.helpers.db import PgTemplates
from tests.helpers.rpcs import Rpc, all_rpcs, call
from tests.helpers.workflows import spec, step, submit_workflow

Code = grpc.StatusCode
RPCS = all_rpcs()
REFUSED = {Code.UNAUTHENTICATED, Code.PERMISSION_DENIED, Code.INTERNAL, Code.UNKNOWN}


@dataclass
class Matrix:
    plane: Plane
    channel: grpc.aio.Channel
    # caller name -> (metadata, role or None when the caller must be refused as unauthenticated)
    callers: dict[str, tuple[tuple[tuple[str, str], ...], Role | None]]
    # operation -> a valid request for the read-only RPCs (answered OK when allowed and in scope)
    valid: dict[str, dict[str, Any]]
    # role -> run kind ("own", "own_asked", "other", "other_asked") -> a terminal run's id
    runs: dict[Role, dict[str, str]]
    # role -> the same kinds -> a terminal workflow's id ("asked": its plan asked for approval)
    workflows: dict[Role, dict[str, str]]


@pytest.fixture(scope="module")
async def matrix(pg_templates: PgTemplates) -> AsyncIterator[Matrix]:
    url = pg_templates.fresh()
    plane = await start_plane(url)
    try:
        admin = plane.admin
        await register(admin, manifest_text("echo"))
        await register(admin, manifest_text("risky", risk="high"))
        alice = await plane.key("alice", "submitter")
        pending = (await submit(alice, "risky")).run.id  # WatchApprovals has something to send

        # Terminal runs of another owner (alice): one auto-approved, one that asked for approval.
        other = (await submit(alice)).run.id
        await cancel(alice, other)
        other_asked = (await submit(alice, "risky")).run.id
        await cancel(alice, other_asked)
        wf_other = await _cancelled_workflow(alice, "echo")
        wf_other_asked = await _cancelled_workflow(alice, "risky")
        workflows: dict[Role, dict[str, str]] = {}

        callers: dict[str, tuple[tuple[tuple[str, str], ...], Role | None]] = {}
        runs: dict[Role, dict[str, str]] = {}
        for role in Role:
            c = await plane.key(f"who-{role.value}", role.value)
            callers[role.value] = (c.md, role)
            # The caller's own runs, submitted by a submitter key of the same owner (keys of
            # one owner share runs), then cancelled so that every stream ends by itself.
            sibling = c if role is Role.SUBMITTER else await plane.key(f"who-{role.value}", "submitter")
            own = (await submit(sibling)).run.id
            own_asked = (await submit(sibling, "risky")).run.id
            for rid in (own, own_asked):
                await cancel(sibling, rid)
            runs[role] = {"own": own, "own_asked": own_asked, "other": other,
                          "other_asked": other_asked}
            workflows[role] = {"own": await _cancelled_workflow(sibling, "echo"),
                               "own_asked": await _cancelled_workflow(sibling, "risky"),
                               "other": wf_other, "other_asked": wf_other_asked}
        revoked = await admin.admin.CreateApiKey(
            adm.CreateApiKeyRequest(owner="gone", role=adm.ROLE_ADMIN), metadata=admin.md
        )
        await admin.admin.RevokeApiKey(
            adm.RevokeApiKeyRequest(id=revoked.key.id), metadata=admin.md
        )
        key_id = revoked.key.id
        callers.update(
            {
                "no token": ((), None),
                "empty bearer": ((("authorization", "Bearer "),), None),
                "garbage": ((("authorization", "Bearer not-a-key"),), None),
                "unknown key": ((("authorization", "Bearer key_000000000000.c2VjcmV0"),), None),
                "wrong secret": ((("authorization", f"Bearer {key_id}.wrong"),), None),
                "not bearer": ((("authorization", f"Basic {revoked.token}"),), None),
                "revoked": ((("authorization", f"Bearer {revoked.token}"),), None),
            }
        )
        # Requests naming one run are answered by scope (test_run_scopes), not here.
        valid: dict[str, dict[str, Any]] = {
            "RegistryService.GetAgent": {"name": "echo"},
            "RegistryService.GetAgentVersion": {"name": "echo"},
            "RegistryService.ListAgents": {},
            "RunService.ListRuns": {},
            "WorkflowService.ListWorkflows": {},
            "ApprovalService.ListApprovals": {},
            "ApprovalService.WatchApprovals": {},
            "AdminService.ListApiKeys": {},
            "AdminService.ListExecutors": {},
            "AdminService.WhoAmI": {},
            "UsageService.GetUsage": {},
            "UsageService.GetAnalytics": {},
            "AuditService.ListAuditRecords": {},
            "AuditService.VerifyAuditTrail": {},
        }
        channel = grpc.aio.insecure_channel(plane.address)
        plane.channels.append(channel)
        assert pending
        yield Matrix(plane, channel, callers, valid, runs, workflows)
    finally:
        await plane.close()
        pg_templates.drop(url)


async def _cancelled_workflow(client: Any, agent: str) -> str:
    """A one-step workflow of ``agent`` (``risky``: its plan asks for approval), cancelled."""
    w = (await submit_workflow(client, spec(step("a", agent, "echo", {"text": "x"}))))
    await client.workflows.CancelWorkflow(wfs.CancelWorkflowRequest(workflow_id=w.workflow.id),
                                          metadata=client.md)
    return str(w.workflow.id)


def test_permission_table_covers_every_rpc() -> None:
    ops = {r.operation for r in RPCS}
    assert set(PERMISSIONS) == ops, {
        "missing": ops - set(PERMISSIONS),
        "stale": set(PERMISSIONS) - ops,
    }
    for op, roles in PERMISSIONS.items():
        assert Role.ADMIN in roles, f"admin may do everything, but not {op}"


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.operation)
async def test_rpc_for_every_caller(matrix: Matrix, rpc: Rpc) -> None:
    valid = matrix.valid.get(rpc.operation)
    request = rpc.request_class(**(valid or {}))
    wrong: list[str] = []
    for name, (md, role) in matrix.callers.items():
        code, details = await call(rpc, matrix.channel, request, metadata=md, deadline=3)
        if role is None:
            ok = code == Code.UNAUTHENTICATED
            want = "UNAUTHENTICATED"
        elif role not in PERMISSIONS[rpc.operation]:
            ok = code == Code.PERMISSION_DENIED
            want = "PERMISSION_DENIED"
        elif valid is not None:
            ok = code == Code.OK
            want = "OK"
        else:
            ok = code not in REFUSED
            want = "not " + "/".join(sorted(c.name for c in REFUSED))
        if not ok:
            wrong.append(f"{name}: want {want}, got {code.name} ({details})")
    assert not wrong, f"{rpc.operation}:\n" + "\n".join(wrong)


# Run-reading operations that name one run: run kinds they are asked about, and the code a
# caller who sees the run gets (the runs are terminal: CancelRun and the decisions refuse them).
UNKNOWN_RUN = "run_00000000000000000000000000"
SCOPED: dict[str, tuple[tuple[str, ...], Code]] = {
    "RunService.GetRun": (("own", "own_asked", "other", "other_asked"), Code.OK),
    "RunService.GetRunResult": (("own", "own_asked", "other", "other_asked"), Code.OK),
    "RunService.WatchRun": (("own", "own_asked", "other", "other_asked"), Code.OK),
    "RunService.CancelRun": (("own", "own_asked", "other", "other_asked"), Code.FAILED_PRECONDITION),
    "ApprovalService.GetApproval": (("own_asked", "other_asked"), Code.OK),
    "ApprovalService.Approve": (("own_asked", "other_asked"), Code.FAILED_PRECONDITION),
    "ApprovalService.Reject": (("own_asked", "other_asked"), Code.FAILED_PRECONDITION),
    "WorkflowService.GetWorkflow": (("own", "own_asked", "other", "other_asked"), Code.OK),
    "WorkflowService.WatchWorkflow": (("own", "own_asked", "other", "other_asked"), Code.OK),
    "WorkflowService.CancelWorkflow": (("own", "own_asked", "other", "other_asked"),
                                       Code.FAILED_PRECONDITION),
    "WorkflowService.ApproveWorkflow": (("own_asked", "other_asked"), Code.FAILED_PRECONDITION),
    "WorkflowService.RejectWorkflow": (("own_asked", "other_asked"), Code.FAILED_PRECONDITION),
}
UNKNOWN_WORKFLOW = "wf_00000000000000000000000000"
# What each scope sees, written out independently of the server's code.
SEES: dict[Scope, frozenset[str]] = {
    Scope.ALL: frozenset({"own", "own_asked", "other", "other_asked"}),
    Scope.DECIDE: frozenset({"own", "own_asked", "other_asked"}),
    Scope.OWN: frozenset({"own", "own_asked"}),
}


def test_scope_decisions() -> None:
    """The decisions docs/design.md states, pinned: who sees which runs."""
    for op in ("RunService.GetRun", "RunService.ListRuns", "RunService.WatchRun",
               "RunService.GetRunResult"):
        assert PERMISSIONS[op] == {Role.ADMIN: Scope.ALL, Role.VIEWER: Scope.ALL,
                                   Role.APPROVER: Scope.DECIDE, Role.SUBMITTER: Scope.OWN,
                                   Role.EXECUTOR: Scope.OWN}, op
    assert PERMISSIONS["ApprovalService.GetApproval"][Role.SUBMITTER] is Scope.OWN
    assert PERMISSIONS["RunService.CancelRun"] == {Role.ADMIN: Scope.ALL, Role.SUBMITTER: Scope.OWN}
    assert set(SCOPED) | {"RunService.ListRuns"} <= set(PERMISSIONS)
    # The audit trail holds every run's history: only the auditors read or verify it.
    for op in ("AuditService.ListAuditRecords", "AuditService.VerifyAuditTrail"):
        assert PERMISSIONS[op] == {Role.ADMIN: Scope.ALL, Role.VIEWER: Scope.ALL}


def _request(op: str, run_id: str) -> Any:
    rpc = next(r for r in RPCS if r.operation == op)
    fields: dict[str, Any] = ({"workflow_id": run_id} if op.startswith("WorkflowService.")
                              else {"run_id": run_id})
    if op in ("ApprovalService.Reject", "WorkflowService.RejectWorkflow"):
        fields["reason"] = "no"
    return rpc, rpc.request_class(**fields)


@pytest.mark.parametrize("op", sorted(SCOPED))
async def test_run_scopes(matrix: Matrix, op: str) -> None:
    """Each allowed role × own and another owner's run: seen as its scope says; a run not
    seen is answered exactly as a run that does not exist (same code, same message)."""
    kinds, seen_code = SCOPED[op]
    wrong: list[str] = []
    for role, scope in PERMISSIONS[op].items():
        md, _ = matrix.callers[role.value]
        wf = op.startswith("WorkflowService.")
        for kind in kinds:
            run_id = (matrix.workflows if wf else matrix.runs)[role][kind]
            rpc, request = _request(op, run_id)
            code, details = await call(rpc, matrix.channel, request, metadata=md, deadline=5)
            if kind in SEES[scope]:
                if code != seen_code:
                    wrong.append(f"{role.value} {kind}: want {seen_code.name}, got {code.name} ({details})")
                continue
            unknown_id = UNKNOWN_WORKFLOW if wf else UNKNOWN_RUN
            rpc, unknown = _request(op, unknown_id)
            ucode, udetails = await call(rpc, matrix.channel, unknown, metadata=md, deadline=5)
            if (code, details) != (ucode, udetails.replace(unknown_id, run_id)) or code != Code.NOT_FOUND:
                wrong.append(f"{role.value} {kind}: want as unknown ({ucode.name}: {udetails}), "
                             f"got {code.name} ({details})")
    assert not wrong, f"{op}:\n" + "\n".join(wrong)


async def test_list_runs_scopes(matrix: Matrix) -> None:
    """ListRuns lists exactly the runs in the caller's scope, also when filtered by submitter."""
    stub = rs.DESCRIPTOR.services_by_name["RunService"]
    rpc = Rpc(stub, stub.methods_by_name["ListRuns"])
    for role, scope in PERMISSIONS["RunService.ListRuns"].items():
        md, _ = matrix.callers[role.value]
        resp = await rpc.callable(matrix.channel)(rs.ListRunsRequest(page_size=1000), metadata=md)
        listed = {r.id for r in resp.runs}
        kinds = matrix.runs[role]
        got = {k for k, rid in kinds.items() if rid in listed}
        assert got == SEES[scope], (role, got)
        if scope is Scope.OWN:
            assert {r.submitter for r in resp.runs} == {f"who-{role.value}"}, role
        # Asking for another owner's runs by name does not widen the scope.
        resp = await rpc.callable(matrix.channel)(
            rs.ListRunsRequest(page_size=1000, submitter="alice"), metadata=md)
        alice = {r.id for r in resp.runs}
        assert (kinds["other"] in alice) == (scope is Scope.ALL), role
        assert (kinds["other_asked"] in alice) == (scope is not Scope.OWN), role


async def test_watch_approvals_and_list_approvals_scopes(matrix: Matrix) -> None:
    """Approvals: every allowed role (admin, approver, viewer) sees another owner's approvals
    (an approver must see what it may decide on); a submitter may not list them at all."""
    stub = aps.DESCRIPTOR.services_by_name["ApprovalService"]
    lister = Rpc(stub, stub.methods_by_name["ListApprovals"])
    for role in PERMISSIONS["ApprovalService.ListApprovals"]:
        md, _ = matrix.callers[role.value]
        resp = await lister.callable(matrix.channel)(
            aps.ListApprovalsRequest(statuses=[aps_pb.APPROVAL_STATUS_CANCELLED], page_size=1000),
            metadata=md)
        assert matrix.runs[role]["other_asked"] in {a.run_id for a in resp.approvals}, role
    assert Role.SUBMITTER not in PERMISSIONS["ApprovalService.ListApprovals"]
    assert Role.SUBMITTER not in PERMISSIONS["ApprovalService.WatchApprovals"]


async def test_who_am_i_names_the_caller(matrix: Matrix) -> None:
    md, _ = matrix.callers["approver"]
    stub = adm.DESCRIPTOR.services_by_name["AdminService"]
    rpc = Rpc(stub, stub.methods_by_name["WhoAmI"])
    resp = await rpc.callable(matrix.channel)(adm.WhoAmIRequest(), metadata=md)
    assert resp.key.owner == "who-approver" and resp.key.role == adm.ROLE_APPROVER


async def test_database_failure_leaks_nothing(pg_templates: PgTemplates) -> None:
    """With the database gone, authentication and handlers fail without internals in the text."""
    url = pg_templates.fresh()
    plane = await start_plane(url)
    try:
        admin = plane.admin
        await admin.admin.WhoAmI(adm.WhoAmIRequest(), metadata=admin.md)  # admin key now cached
        fresh = await plane.key("late", "viewer")  # never used: not in the auth cache
        pg_templates.drop(url)  # terminates the plane's connections, then the database is gone
        stub = adm.DESCRIPTOR.services_by_name["AdminService"]
        for client, method in ((fresh, "WhoAmI"), (admin, "ListApiKeys")):
            rpc = Rpc(stub, stub.methods_by_name[method])
            code, details = await call(rpc, client.channel, rpc.request_class(), metadata=client.md, deadline=10)
            assert code in (Code.INTERNAL, Code.UNAVAILABLE), (method, code, details)
            for leak in ("psycopg", "sqlalchemy", "OperationalError", "5432", url.rpartition("/")[2]):
                assert leak not in details, (method, details)
    finally:
        await plane.close()
        pg_templates.drop(url)


async def test_list_workflows_scopes(matrix: Matrix) -> None:
    """ListWorkflows lists exactly the workflows in the caller's scope."""
    stub = wfs.DESCRIPTOR.services_by_name["WorkflowService"]
    rpc = Rpc(stub, stub.methods_by_name["ListWorkflows"])
    for role, scope in PERMISSIONS["WorkflowService.ListWorkflows"].items():
        md, _ = matrix.callers[role.value]
        resp = await rpc.callable(matrix.channel)(wfs.ListWorkflowsRequest(page_size=200),
                                                  metadata=md)
        listed = {w.id for w in resp.workflows}
        got = {k for k, wid in matrix.workflows[role].items() if wid in listed}
        assert got == SEES[scope], (role, got)
