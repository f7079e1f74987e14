"""The run state machine: one table of legal transitions, checked in one place.

``RunState`` and the table are defined in ``agents.states`` (shared by every process) and
re-exported here; ``check_transition`` is the control plane's one check against it.
"""

from __future__ import annotations

from agents.states import OUTCOME_STATES, TERMINAL_STATES, TRANSITIONS, RunState
from server.domain.errors import IllegalTransition

__all__ = ["OUTCOME_STATES", "TERMINAL_STATES", "TRANSITIONS", "RunState", "check_transition"]


def check_transition(run_id: str, current: RunState, target: RunState) -> None:
    """Raise ``IllegalTransition`` unless ``current -> target`` is in the table."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(run_id, current.value, target.value)
