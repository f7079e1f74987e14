"""Workflow rules without I/O: the spec's checks (each refusal names its field), references,
and what a workflow does next."""

from __future__ import annotations

import pytest

from server.domain.errors import InvalidArgument
from server.domain.workflows import (
    MAX_STEPS,
    FailurePolicy,
    StepSpec,
    StepStatus,
    UnresolvedReference,
    WorkflowSpec,
    WorkflowState,
    check_spec,
    next_moves,
    resolve,
)


def agent(name: str, *after: str, input: object = None, **kw: object) -> StepSpec:
    return StepSpec(name=name, agent="echo", capability="echo",
                    input=input if input is not None else {"text": "x"}, depends_on=after,
                    **kw)  # type: ignore[arg-type]


def refused(*steps: StepSpec, **kw: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        check_spec(WorkflowSpec("flow", steps, **kw))  # type: ignore[arg-type]
    return info.value


def test_diamond_is_ordered_dependencies_first() -> None:
    order = check_spec(WorkflowSpec("flow", (agent("d", "b", "c"), agent("b", "a"),
                                             agent("c", "a"), agent("a"))))
    assert order.index("a") < order.index("b") < order.index("d")
    assert order.index("c") < order.index("d")


def test_a_cycle_is_refused_naming_it() -> None:
    e = refused(agent("a", "c"), agent("b", "a"), agent("c", "b"), agent("x"))
    assert e.field == "spec.steps"
    assert "cycle" in e.problem
    named = e.problem.split(": ", 1)[1].split(" -> ")
    assert named[0] == named[-1] and set(named) == {"a", "b", "c"}


def test_a_step_depending_on_itself_is_a_cycle() -> None:
    assert "a -> a" in refused(agent("a", "a")).problem


def test_unknown_dependency_is_named_with_its_field() -> None:
    e = refused(agent("a"), agent("b", "a", "nope"))
    assert (e.field, e.problem) == ("spec.steps[1].depends_on[1]", "unknown step 'nope'")


def test_references_must_name_known_ancestor_non_gate_steps() -> None:
    e = refused(agent("a"), agent("b", "a", input={"text": {"$from": "steps.zz.output.t"}}))
    assert e.field == "spec.steps[1].input_json" and "unknown step 'zz'" in e.problem
    e = refused(agent("a"), agent("c"), agent("b", "a", input={"text": {"$from": "steps.c.output"}}))
    assert "'c' is not among the steps 'b' depends on" in e.problem
    e = refused(StepSpec("g", gate=True), agent("b", "g", input={"t": {"$from": "steps.g.output"}}))
    assert "is a gate and has no output" in e.problem
    e = refused(agent("a"), agent("b", "a", input={"text": {"$from": "output.a"}}))
    assert "must look like steps.<name>.output" in e.problem


def test_transitive_ancestors_may_be_referenced() -> None:
    check_spec(WorkflowSpec("flow", (agent("a"), agent("b", "a"),
                                     agent("c", "b", input={"t": {"$from": "steps.a.output.x"}}))))


def test_shape_checks_name_their_field() -> None:
    assert refused(agent("a"), agent("a")).field == "spec.steps[1].name"
    assert refused(StepSpec("g", gate=True, agent="echo")).field == "spec.steps[0].agent"
    assert refused(StepSpec("a", agent="echo")).field == "spec.steps[0].capability"
    e = refused(*[agent(f"s{i}") for i in range(MAX_STEPS + 1)])
    assert e.field == "spec.steps" and f"at most {MAX_STEPS}" in e.problem
    assert refused(agent("a"), deadline_seconds=-1).field == "spec.deadline_seconds"
    assert refused().field == "spec.steps"
    assert refused(agent("Bad Name")).field == "spec.steps[0].name"


def test_resolve_replaces_references_deep_inside_the_input() -> None:
    value = {"text": {"$from": "steps.a.output.title"}, "list": [{"$from": "steps.b.output.n.0"}],
             "whole": {"$from": "steps.b.output"}, "plain": 3}
    out = resolve(value, {"a": {"title": "T"}, "b": {"n": [7, 8]}})
    assert out == {"text": "T", "list": [7], "whole": {"n": [7, 8]}, "plain": 3}


def test_resolve_names_what_is_missing() -> None:
    with pytest.raises(UnresolvedReference) as info:
        resolve({"t": {"$from": "steps.a.output.nope"}}, {"a": {"title": "T"}})
    assert "has no 'nope'" in str(info.value) and "$.t" in str(info.value)
    with pytest.raises(UnresolvedReference, match="did not succeed"):
        resolve({"t": {"$from": "steps.a.output"}}, {})


def _st(state: str, *deps: str, policy: FailurePolicy = FailurePolicy.FAIL_WORKFLOW) -> StepStatus:
    return StepStatus(state, deps, policy)


ORDER = ["a", "b", "c", "d"]


def test_next_moves_diamond() -> None:
    def moves(a: str, b: str, c: str, d: str = "WAITING") -> tuple[tuple[str, ...], object]:
        m = next_moves({"a": _st(a), "b": _st(b, "a"), "c": _st(c, "a"), "d": _st(d, "b", "c")},
                       ORDER)
        return m.ready, m.end

    assert moves("WAITING", "WAITING", "WAITING") == (("a",), None)
    assert moves("RUNNING", "WAITING", "WAITING") == ((), None)
    assert moves("SUCCEEDED", "WAITING", "WAITING") == (("b", "c"), None)
    assert moves("SUCCEEDED", "SUCCEEDED", "RUNNING") == ((), None)  # D waits for both
    assert moves("SUCCEEDED", "SUCCEEDED", "SUCCEEDED") == (("d",), None)
    assert moves("SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "SUCCEEDED")[1] is WorkflowState.SUCCEEDED


def test_failure_policies() -> None:
    fail = next_moves({"a": _st("FAILED"), "b": _st("WAITING", "a")}, ["a", "b"])
    assert fail.end is WorkflowState.FAILED and "step a failed" in fail.reason
    go_on = next_moves({"a": _st("TIMED_OUT", policy=FailurePolicy.CONTINUE),
                        "b": _st("WAITING", "a")}, ["a", "b"])
    assert go_on.end is None and go_on.ready == ("b",)
    done = next_moves({"a": _st("FAILED", policy=FailurePolicy.CONTINUE),
                       "b": _st("SUCCEEDED", "a")}, ["a", "b"])
    assert done.end is WorkflowState.SUCCEEDED and "failed and continued: a" in done.reason


def test_a_rejected_or_expired_gate_ends_the_workflow_so() -> None:
    for state in ("REJECTED", "EXPIRED"):
        m = next_moves({"g": _st(state), "b": _st("WAITING", "g")}, ["g", "b"])
        assert m.end is WorkflowState(state)
