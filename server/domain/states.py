"""The run state machine: one table of legal transitions, checked in one place."""

from __future__ import annotations

import enum

from server.domain.errors import IllegalTransition


class RunState(enum.StrEnum):
    PENDING_APPROVAL = "PENDING_APPROVAL"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    OOM_KILLED = "OOM_KILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def terminal(self) -> bool:
        return not TRANSITIONS[self]


S = RunState
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    S.PENDING_APPROVAL: frozenset({S.QUEUED, S.REJECTED, S.EXPIRED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    # RUNNING -> QUEUED: the lease was lost and the run is retried (bounded attempts).
    S.RUNNING: frozenset(
        {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.OOM_KILLED, S.CANCELLED, S.QUEUED}
    ),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.TIMED_OUT: frozenset(),
    S.OOM_KILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}
TERMINAL_STATES = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
# Outcomes an executor may report for a RUNNING run.
OUTCOME_STATES = frozenset({S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.OOM_KILLED, S.CANCELLED})


def check_transition(run_id: str, current: RunState, target: RunState) -> None:
    """Raise ``IllegalTransition`` unless ``current -> target`` is in the table."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(run_id, current.value, target.value)
