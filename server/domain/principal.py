"""Who is calling, and what each role may do (one table for every transport)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


A, SU, AP, V, EX = Role.ADMIN, Role.SUBMITTER, Role.APPROVER, Role.VIEWER, Role.EXECUTOR
_READ = frozenset({A, SU, AP, V, EX})

# Operation (service.method, transport-independent) -> roles allowed. Admin may do everything.
PERMISSIONS: dict[str, frozenset[Role]] = {
    "RegistryService.RegisterAgentVersion": frozenset({A}),
    "RegistryService.DeprecateAgentVersion": frozenset({A}),
    "RegistryService.GetAgent": _READ,
    "RegistryService.GetAgentVersion": _READ,
    "RegistryService.ListAgents": _READ,
    "RunService.SubmitRun": frozenset({A, SU}),
    "RunService.CancelRun": frozenset({A, SU}),
    "RunService.GetRun": _READ,
    "RunService.ListRuns": _READ,
    "RunService.WatchRun": _READ,
    "RunService.GetRunResult": _READ,
    "ApprovalService.ListApprovals": frozenset({A, AP, V}),
    "ApprovalService.GetApproval": frozenset({A, AP, V, SU}),
    "ApprovalService.WatchApprovals": frozenset({A, AP, V}),
    "ApprovalService.Approve": frozenset({A, AP}),
    "ApprovalService.Reject": frozenset({A, AP}),
    "AdminService.CreateApiKey": frozenset({A}),
    "AdminService.ListApiKeys": frozenset({A}),
    "AdminService.RevokeApiKey": frozenset({A}),
    "AdminService.ListExecutors": _READ,
    "AdminService.WhoAmI": _READ,
}


def allowed(operation: str, role: Role) -> bool:
    return role in PERMISSIONS.get(operation, frozenset())
