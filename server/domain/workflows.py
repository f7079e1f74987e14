"""Workflows: a DAG of steps (agent runs and gates), checked at submit and advanced as steps end.

Pure rules, no I/O: the spec's shape and graph (cycles named through ``graphlib``), output
references (``{"$from": "steps.<name>.output.<path>"}``) and their resolution, and what a
workflow does next given its steps' states (``next_moves``). The store applies the moves in
the transaction that ended a step's run, so a step never starts twice or never.
"""

from __future__ import annotations

import enum
import graphlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.domain.errors import FailedPrecondition, InvalidArgument, NotFound

MAX_STEPS = 50
DEFAULT_DEADLINE_SECONDS = 24 * 3600.0
MAX_DEADLINE_SECONDS = 30 * 24 * 3600.0
STEP_NAME_RE = r"^[a-z][a-z0-9_-]{0,62}$"
WORKFLOW_NAME_RE = STEP_NAME_RE
WORKFLOW_ID_RE = r"^wf_[0-9a-z]{26}$"
REF_KEY = "$from"
_REF_RE = re.compile(r"^steps\.([a-z][a-z0-9_-]{0,62})\.output((?:\.[^.\s]+)*)$")
MAX_GATE_APPROVALS = 10


class WorkflowState(enum.StrEnum):
    PENDING_APPROVAL = "PENDING_APPROVAL"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def terminal(self) -> bool:
        return self not in (WorkflowState.PENDING_APPROVAL, WorkflowState.RUNNING)


class FailurePolicy(enum.StrEnum):
    FAIL_WORKFLOW = "fail_workflow"  # the workflow ends FAILED, the rest is cancelled
    CONTINUE = "continue"  # recorded; dependants still become ready


# A step's own states besides its run's: before it is ready, an open gate, never run.
WAITING, PENDING_APPROVAL, QUEUED, SUCCEEDED, SKIPPED = (
    "WAITING", "PENDING_APPROVAL", "QUEUED", "SUCCEEDED", "SKIPPED")
STEP_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "OOM_KILLED", "CANCELLED",
                           "REJECTED", "EXPIRED", "SKIPPED"})


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step as submitted. A gate has no agent, capability or input."""

    name: str
    agent: str = ""
    version: str = ""
    capability: str = ""
    input: Any = None
    limits: dict[str, float] | None = None
    network: bool = False
    secrets: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    gate: bool = False
    gate_approvals: int = 0
    description: str = ""
    on_failure: FailurePolicy = FailurePolicy.FAIL_WORKFLOW


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    steps: tuple[StepSpec, ...]
    deadline_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Reference:
    """``{"$from": "steps.<step>.output.<path>"}`` found at ``at`` (a JSON path) of an input."""

    at: str
    text: str
    step: str
    path: tuple[str, ...]


class UnresolvedReference(Exception):
    """A reference whose step has no such output (or did not succeed)."""

    def __init__(self, ref: Reference, problem: str) -> None:
        super().__init__(f"{ref.text} (at {ref.at}): {problem}")
        self.ref, self.problem = ref, problem


def _field(i: int, name: str) -> str:
    return f"spec.steps[{i}].{name}"


def references(value: Any, at: str = "$") -> Iterator[Reference]:
    """Every reference in an input, depth first. A malformed one raises ``ValueError``."""
    if isinstance(value, dict):
        if REF_KEY in value:
            text = value[REF_KEY]
            if len(value) != 1 or not isinstance(text, str):
                raise ValueError(f"at {at}: a reference is an object with one key, "
                                 f'"{REF_KEY}", whose value is a string')
            m = _REF_RE.match(text)
            if m is None:
                raise ValueError(f"at {at}: reference {text!r} must look like "
                                 "steps.<name>.output[.<key or index>...]")
            yield Reference(at, text, m.group(1), tuple(p for p in m.group(2).split(".") if p))
            return
        for k, v in value.items():
            yield from references(v, f"{at}.{k}")
    elif isinstance(value, list):
        for n, v in enumerate(value):
            yield from references(v, f"{at}[{n}]")


def has_references(value: Any) -> bool:
    return next(references(value), None) is not None


def _ancestors(deps: Mapping[str, Sequence[str]], name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(deps[name])
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.add(d)
            todo.extend(deps.get(d, ()))
    return seen


def check_spec(spec: WorkflowSpec) -> list[str]:
    """Check the spec's shape and graph; returns the step names in a topological order.

    Every refusal is ``InvalidArgument`` naming the field (``spec.steps[2].depends_on[0]``)
    and what is wrong (the unknown step, the cycle as ``a -> b -> a``).
    """
    if not re.fullmatch(WORKFLOW_NAME_RE, spec.name or ""):
        raise InvalidArgument("spec.name", f"is required and must match {WORKFLOW_NAME_RE}")
    if not spec.steps:
        raise InvalidArgument("spec.steps", "at least one step is required")
    if len(spec.steps) > MAX_STEPS:
        raise InvalidArgument("spec.steps", f"{len(spec.steps)} steps; at most {MAX_STEPS}")
    if spec.deadline_seconds < 0 or spec.deadline_seconds > MAX_DEADLINE_SECONDS:
        raise InvalidArgument("spec.deadline_seconds",
                              f"must be between 0 and {MAX_DEADLINE_SECONDS:g}")
    index: dict[str, int] = {}
    for i, s in enumerate(spec.steps):
        if not re.fullmatch(STEP_NAME_RE, s.name or ""):
            raise InvalidArgument(_field(i, "name"), f"is required and must match {STEP_NAME_RE}")
        if s.name in index:
            raise InvalidArgument(_field(i, "name"), f"step {s.name!r} is named twice")
        index[s.name] = i
        if s.gate:
            for what, v in (("agent", s.agent), ("capability", s.capability),
                            ("version", s.version)):
                if v:
                    raise InvalidArgument(_field(i, what), "a gate runs no agent")
            if s.input not in (None, {}) or s.network or s.secrets or s.limits:
                raise InvalidArgument(_field(i, "input_json"), "a gate takes no input, "
                                      "network, secrets or limits")
            if not 0 <= s.gate_approvals <= MAX_GATE_APPROVALS:
                raise InvalidArgument(_field(i, "gate_approvals"),
                                      f"must be between 0 and {MAX_GATE_APPROVALS}")
        else:
            if not s.agent:
                raise InvalidArgument(_field(i, "agent"), "is required (or make the step a gate)")
            if not s.capability:
                raise InvalidArgument(_field(i, "capability"), "is required")
            if s.gate_approvals:
                raise InvalidArgument(_field(i, "gate_approvals"), "only a gate has approvals")
        if len(s.description) > 2000:
            raise InvalidArgument(_field(i, "description"), "is longer than 2000 characters")
    deps: dict[str, tuple[str, ...]] = {}
    for i, s in enumerate(spec.steps):
        for j, d in enumerate(s.depends_on):
            if d not in index:
                raise InvalidArgument(_field(i, f"depends_on[{j}]"), f"unknown step {d!r}")
        if len(set(s.depends_on)) != len(s.depends_on):
            raise InvalidArgument(_field(i, "depends_on"), "names a step twice")
        deps[s.name] = tuple(s.depends_on)
    try:
        order = list(graphlib.TopologicalSorter(deps).static_order())
    except graphlib.CycleError as e:
        cycle = list(e.args[1])
        # graphlib lists the cycle in flow order: each step is one the next depends on.
        raise InvalidArgument("spec.steps", "the steps form a cycle: "
                              + " -> ".join(cycle)) from None
    for i, s in enumerate(spec.steps):
        try:
            refs = list(references(s.input))
        except ValueError as e:
            raise InvalidArgument(_field(i, "input_json"), str(e)) from None
        ancestors = _ancestors(deps, s.name) if refs else set()
        for r in refs:
            where = f"reference {r.text!r} at {r.at}"
            if r.step not in index:
                raise InvalidArgument(_field(i, "input_json"), f"{where}: unknown step {r.step!r}")
            if r.step not in ancestors:
                raise InvalidArgument(_field(i, "input_json"), f"{where}: step {r.step!r} is not "
                                      f"among the steps {s.name!r} depends on")
            if spec.steps[index[r.step]].gate:
                raise InvalidArgument(_field(i, "input_json"),
                                      f"{where}: step {r.step!r} is a gate and has no output")
    return order


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Step names, each after the steps it depends on (the graph was checked at submit)."""
    return list(graphlib.TopologicalSorter(deps).static_order())


def _lookup(ref: Reference, output: Any) -> Any:
    value = output
    for part in ref.path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise UnresolvedReference(ref, f"the output of step {ref.step!r} has no {part!r} there")
    return value


def resolve(value: Any, outputs: Mapping[str, Any], at: str = "$") -> Any:
    """``value`` with every reference replaced by the part of its step's output it names.

    ``outputs``: step name -> parsed output, for the steps that succeeded.
    """
    if isinstance(value, dict):
        if REF_KEY in value:
            ref = next(references(value, at))
            if ref.step not in outputs:
                raise UnresolvedReference(ref, f"step {ref.step!r} did not succeed")
            return _lookup(ref, outputs[ref.step])
        return {k: resolve(v, outputs, f"{at}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, outputs, f"{at}[{n}]") for n, v in enumerate(value)]
    return value


@dataclass(frozen=True, slots=True)
class StepStatus:
    """What ``next_moves`` needs to know of a step."""

    state: str
    depends_on: tuple[str, ...] = ()
    on_failure: FailurePolicy = FailurePolicy.FAIL_WORKFLOW
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Moves:
    """What a running workflow does next: start ``ready`` steps, or end (``end`` set)."""

    ready: tuple[str, ...] = ()
    end: WorkflowState | None = None
    reason: str = ""
    continued: tuple[str, ...] = field(default=())  # failed steps whose policy let it go on


def next_moves(steps: Mapping[str, StepStatus], order: Sequence[str]) -> Moves:
    """Given every step's status (in topological ``order``), what the workflow does next.

    A step is ready when it is WAITING and every step it depends on has ended (whatever the
    outcome: a failure that did not end the workflow had the CONTINUE policy). A failure under
    FAIL_WORKFLOW ends the workflow FAILED; a rejected or expired gate ends it REJECTED or
    EXPIRED; when every step has ended it SUCCEEDED.
    """
    continued = []
    for name in order:
        s = steps[name]
        if s.state in STEP_TERMINAL and s.state not in (SUCCEEDED, SKIPPED):
            if s.state in ("REJECTED", "EXPIRED"):
                return Moves(end=WorkflowState(s.state),
                             reason=f"step {name} {s.state.lower()}: {s.reason}".rstrip(": "))
            if s.on_failure is FailurePolicy.FAIL_WORKFLOW:
                return Moves(end=WorkflowState.FAILED,
                             reason=f"step {name} {s.state.lower()}: {s.reason}".rstrip(": "))
            continued.append(name)
    if all(steps[n].state in STEP_TERMINAL for n in order):
        ok = len(order) - len(continued)
        reason = f"{ok} of {len(order)} steps succeeded"
        if continued:
            reason += f"; failed and continued: {', '.join(continued)}"
        return Moves(end=WorkflowState.SUCCEEDED, reason=reason, continued=tuple(continued))
    ready = tuple(n for n in order if steps[n].state == WAITING
                  and all(steps[d].state in STEP_TERMINAL for d in steps[n].depends_on))
    return Moves(ready=ready, continued=tuple(continued))


# --- errors -------------------------------------------------------------------------------------


class WorkflowNotFound(NotFound):
    """Raised when a workflow id is unknown (or outside the caller's scope)."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} not found")


class WorkflowApprovalNotFound(NotFound):
    """Raised when a workflow has no approval for its plan (or no open gate of that name)."""

    def __init__(self, workflow_id: str, step: str) -> None:
        what = f"gate {step!r}" if step else "its plan"
        super().__init__(f"workflow {workflow_id!r} has no approval request for {what}")


class WorkflowEnded(FailedPrecondition):
    """Raised when cancelling a workflow that has already ended."""

    def __init__(self, workflow_id: str, state: str) -> None:
        super().__init__(f"workflow {workflow_id} is {state}; it cannot be cancelled")


class PlanChanged(FailedPrecondition):
    """Raised when an approver's plan digest is not the workflow's."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"plan_digest does not match workflow {workflow_id}'s plan; "
                         "review the plan again")
