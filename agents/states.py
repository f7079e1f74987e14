"""The run lifecycle's vocabulary: every state and the one table of legal transitions.

At the bottom layer because every process speaks it: the control plane enforces the table
(``server.domain.states.check_transition``), the executor reports outcomes in it
(``executor.results.Outcome.state``), and ``airlock agent run-local`` and the Dagger CI
module print it.
"""

from __future__ import annotations

import enum

__all__ = ["OUTCOME_STATES", "TERMINAL_STATES", "TRANSITIONS", "RunState"]


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
