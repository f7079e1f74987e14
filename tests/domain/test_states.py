"""The run state table: the lifecycle of DESIGN.md, enforced in one place."""

from __future__ import annotations

import itertools

import pytest

from airlock.v1 import run_pb2
from server.domain.errors import FailedPrecondition, IllegalTransition
from server.domain.states import (
    OUTCOME_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    RunState,
    check_transition,
)

S = RunState
EXPECTED = {
    S.PENDING_APPROVAL: {S.QUEUED, S.REJECTED, S.EXPIRED, S.CANCELLED},
    S.QUEUED: {S.RUNNING, S.CANCELLED},
    # RUNNING -> QUEUED is a lost lease retried; the other exits are outcomes.
    S.RUNNING: {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.OOM_KILLED, S.CANCELLED, S.QUEUED},
}
TERMINAL = {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.OOM_KILLED, S.CANCELLED, S.REJECTED, S.EXPIRED}
ALL_PAIRS = list(itertools.product(RunState, RunState))


def test_table_is_exactly_the_designed_lifecycle() -> None:
    assert set(TRANSITIONS) == set(RunState)
    assert {s: set(t) for s, t in TRANSITIONS.items() if t} == EXPECTED


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_have_no_exit(state: RunState) -> None:
    assert state.terminal and state in TERMINAL_STATES
    assert TRANSITIONS[state] == frozenset()
    for target in RunState:
        with pytest.raises(IllegalTransition):
            check_transition("run_x", state, target)


def test_terminal_set() -> None:
    assert TERMINAL_STATES == TERMINAL
    assert {s for s in RunState if s.terminal} == TERMINAL
    assert OUTCOME_STATES <= TRANSITIONS[S.RUNNING] and OUTCOME_STATES <= TERMINAL_STATES


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=lambda s: s.value)
def test_check_transition(current: RunState, target: RunState) -> None:
    if target in EXPECTED.get(current, set()):
        check_transition("run_1", current, target)
        return
    with pytest.raises(IllegalTransition) as info:
        check_transition("run_1", current, target)
    err = info.value
    assert isinstance(err, FailedPrecondition)  # answered FAILED_PRECONDITION
    assert (err.run_id, err.current, err.target) == ("run_1", current.value, target.value)
    assert "run_1" in err.message and current.value in err.message and target.value in err.message


def test_no_state_stays_put_and_every_state_can_finish() -> None:
    for s in RunState:
        assert s not in TRANSITIONS[s]
        seen, todo = {s}, [s]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & TERMINAL_STATES, f"{s} cannot reach a terminal state"


def test_proto_enum_matches_domain_states() -> None:
    proto = {v.name.removeprefix("RUN_STATE_") for v in run_pb2.RunState.DESCRIPTOR.values}
    assert proto - {"UNSPECIFIED"} == {s.value for s in RunState}
