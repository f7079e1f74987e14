"""Domain errors. They know nothing of gRPC: ``server.transport.errors`` maps groups to codes.

The root ``AirlockError`` and the meaning groups are defined in ``agents.errors`` (the bottom
layer, so the executor's errors share the root) and re-exported here. Each concrete error
says in its docstring when it is raised and builds its own message.
"""

from __future__ import annotations

from agents.errors import (
    AirlockError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [  # noqa: RUF022  (the root and meaning groups, from agents.errors, then concrete errors)
    "AirlockError", "AlreadyExists", "FailedPrecondition", "InvalidArgument", "NotFound",
    "PermissionDenied", "ResourceExhausted", "Unauthenticated", "Unavailable",
    "AgentNotFound", "AlreadyDecided", "ApprovalClosed", "ApprovalNotFound", "IdempotencyConflict",
    "IllegalTransition", "KeyNotFound", "NoLiveVersion", "RunNotFound", "SelfApprovalRefused",
    "VersionDeprecated", "VersionExists", "DatabaseUnavailable",
]


# --- concrete errors --------------------------------------------------------------------------


class AgentNotFound(NotFound):
    """Raised when an agent (or a version of it) is not registered."""

    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"agent {name!r}" if version is None else f"agent {name!r} version {version!r}"
        super().__init__(f"{what} not found")
        self.name, self.version = name, version


class VersionExists(AlreadyExists):
    """Raised when registering a version that exists with a different manifest (immutable)."""

    def __init__(self, name: str, version: str) -> None:
        super().__init__(
            f"agent {name!r} version {version!r} is already registered with a different "
            "manifest; versions are immutable, register a new version"
        )


class VersionDeprecated(FailedPrecondition):
    """Raised when submitting a run to a deprecated version."""

    def __init__(self, name: str, version: str) -> None:
        super().__init__(f"agent {name!r} version {version!r} is deprecated; it takes no new runs")


class NoLiveVersion(FailedPrecondition):
    """Raised when submitting a run without a version and every version is deprecated."""

    def __init__(self, name: str) -> None:
        super().__init__(f"every version of agent {name!r} is deprecated; it takes no new runs")


class RunNotFound(NotFound):
    """Raised when a run id is unknown."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found")
        self.run_id = run_id


class ApprovalNotFound(NotFound):
    """Raised when a run has no approval request."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} has no approval request")
        self.run_id = run_id


class IdempotencyConflict(AlreadyExists):
    """Raised when an idempotency key is reused with a different request."""

    def __init__(self, key: str, run_id: str) -> None:
        super().__init__(
            f"idempotency_key {key!r} was already used for a different request (run {run_id})"
        )
        self.run_id = run_id


class IllegalTransition(FailedPrecondition):
    """Raised when a run cannot move from its state to the requested one."""

    def __init__(self, run_id: str, current: str, target: str) -> None:
        super().__init__(f"run {run_id} is {current}; it cannot become {target}")
        self.run_id, self.current, self.target = run_id, current, target


class SelfApprovalRefused(PermissionDenied):
    """Raised when a submitter tries to decide on its own run."""

    def __init__(self, run_id: str, principal: str) -> None:
        super().__init__(f"{principal} submitted run {run_id} and cannot decide on it")
        self.run_id, self.principal = run_id, principal


class AlreadyDecided(FailedPrecondition):
    """Raised when an approver decides twice on the same run."""

    def __init__(self, run_id: str, principal: str) -> None:
        super().__init__(f"{principal} has already decided on run {run_id}")


class ApprovalClosed(FailedPrecondition):
    """Raised when deciding on an approval that is no longer pending (decided or expired)."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"the approval of run {run_id} is {status}; it takes no more decisions")
        self.status = status


class ActionDigestMismatch(FailedPrecondition):
    """Raised when a decision names an action digest other than the run's."""

    def __init__(self, run_id: str, given: str, actual: str) -> None:
        super().__init__(f"run {run_id!r} has action digest sha256:{actual}, not the "
                         f"sha256:{given} this decision was given for")


class KeyNotFound(NotFound):
    """Raised when an API key id is unknown."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id!r} not found")


class DatabaseUnavailable(Unavailable):
    """Raised by the store when the database cannot be reached (refused, timed out, or the
    connection dropped). The driver's text stays in the server log, never in the message."""

    MESSAGE = "database unavailable; retry later"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)
