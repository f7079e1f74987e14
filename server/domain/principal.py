"""Who is calling, and what each role may do (one table for every transport)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from server.domain.errors import PermissionDenied


class Role(enum.StrEnum):
    ADMIN = "admin"
    SUBMITTER = "submitter"
    APPROVER = "approver"
    VIEWER = "viewer"
    EXECUTOR = "executor"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    owner: str  # the person or service; self-approval compares owners, not keys
    role: Role

    def __str__(self) -> str:
        return f"{self.owner} ({self.role.value})"


class Scope(enum.StrEnum):
    """Which runs an allowed caller may see (and act on) through an operation.

    Runs belong to the **owner** of the key that submitted them, not to the key: every key of
    one owner sees the same runs (a service rotating its key keeps its history; a person's
    submitter and approver keys see the same runs). A run outside the caller's scope is
    answered exactly like a run that does not exist (NOT_FOUND, the same message), so a scope
    never reveals that another owner's run exists.
    """

    ALL = "all"  # every run
    DECIDE = "decide"  # runs that asked for approval (any status), and its owner's runs
    OWN = "own"  # runs its owner submitted


A, SU, AP, V, EX = Role.ADMIN, Role.SUBMITTER, Role.APPROVER, Role.VIEWER, Role.EXECUTOR
ALL, DECIDE, OWN = Scope.ALL, Scope.DECIDE, Scope.OWN


def _all(*roles: Role) -> dict[Role, Scope]:
    return dict.fromkeys(roles, ALL)


_EVERYONE = _all(A, SU, AP, V, EX)
# Reading runs (their input, output, logs and events): auditors (admin, viewer) see every run;
# an approver what it may have to decide on (and, like everyone, its owner's runs); a submitter
# its owner's runs; an executor's key its owner's runs (executors read runs from the database,
# not through the API, so their key needs no more).
_RUN_READ: dict[Role, Scope] = {A: ALL, V: ALL, AP: DECIDE, SU: OWN, EX: OWN}

# The one role table: operation (service.method, transport-independent) -> role -> scope.
# A role absent from an operation may not call it (PERMISSION_DENIED). The scope limits the
# runs that role sees or acts on through it; operations that touch no run use ALL. Admin may
# do everything, everywhere.
PERMISSIONS: dict[str, dict[Role, Scope]] = {
    "RegistryService.RegisterAgentVersion": _all(A),
    "RegistryService.DeprecateAgentVersion": _all(A),
    "RegistryService.GetAgent": _EVERYONE,
    "RegistryService.GetAgentVersion": _EVERYONE,
    "RegistryService.ListAgents": _EVERYONE,
    # A submit answered from its idempotency key returns that owner's earlier run only.
    "RunService.SubmitRun": {A: OWN, SU: OWN},
    "RunService.CancelRun": {A: ALL, SU: OWN},
    "RunService.GetRun": _RUN_READ,
    "RunService.ListRuns": _RUN_READ,
    "RunService.WatchRun": _RUN_READ,
    "RunService.GetRunResult": _RUN_READ,
    # Every approval is of a run that asked for approval: DECIDE sees them all.
    "ApprovalService.ListApprovals": {A: ALL, AP: DECIDE, V: ALL},
    "ApprovalService.GetApproval": {A: ALL, AP: DECIDE, V: ALL, SU: OWN},
    "ApprovalService.WatchApprovals": {A: ALL, AP: DECIDE, V: ALL},
    "ApprovalService.Approve": {A: ALL, AP: DECIDE},
    "ApprovalService.Reject": {A: ALL, AP: DECIDE},
    # Workflows: as runs (a workflow belongs to its submitter's owner; an approver sees those
    # that asked for approval, of the plan or of a gate).
    "WorkflowService.SubmitWorkflow": {A: OWN, SU: OWN},
    "WorkflowService.CancelWorkflow": {A: ALL, SU: OWN},
    "WorkflowService.GetWorkflow": _RUN_READ,
    "WorkflowService.ListWorkflows": _RUN_READ,
    "WorkflowService.WatchWorkflow": _RUN_READ,
    "WorkflowService.ApproveWorkflow": {A: ALL, AP: DECIDE},
    "WorkflowService.RejectWorkflow": {A: ALL, AP: DECIDE},
    "AdminService.CreateApiKey": _all(A),
    "AdminService.ListApiKeys": _all(A),
    "AdminService.RevokeApiKey": _all(A),
    "AdminService.ListExecutors": _EVERYONE,
    "AdminService.WhoAmI": _EVERYONE,
    # Owners' usage against quotas: auditors see every owner, a submitter its own.
    "UsageService.GetUsage": {A: ALL, V: ALL, SU: OWN},
    "UsageService.GetAnalytics": _all(A, V),
    # The audit trail is every run's history: the auditors' (admin, viewer), like every run.
    "AuditService.ListAuditRecords": _all(A, V),
    "AuditService.VerifyAuditTrail": _all(A, V),
}


def allowed(operation: str, role: Role) -> bool:
    return role in PERMISSIONS.get(operation, {})


def scope_of(operation: str, who: Principal) -> Scope:
    """The caller's scope for ``operation`` (which the transport already allowed it to call)."""
    scope = PERMISSIONS.get(operation, {}).get(who.role)
    if scope is None:  # the transports refuse this earlier; a service called directly
        raise PermissionDenied(f"role {who.role.value} may not call {operation}")
    return scope


def sees_run(operation: str, who: Principal, *, submitter: str, asked_approval: bool) -> bool:
    """Whether ``who`` sees, through ``operation``, a run of ``submitter`` (the owner)
    that did (or did not) ask for approval."""
    scope = scope_of(operation, who)
    if scope is ALL or submitter == who.owner:
        return True
    return scope is DECIDE and asked_approval
