"""``airlock workflows``: submit a workflow file (YAML or JSON), inspect, watch, cancel, decide."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from airlock.cli._args import positive_int
from airlock.cli._client import ApiClient, call, connect
from airlock.cli._framework import EXIT_OK, EXIT_RUN_NOT_SUCCEEDED, CliError, Commands
from airlock.cli._output import (
    clip,
    err,
    key_values,
    limits_text,
    print_json,
    print_table,
    risk_name,
    status_name,
    table,
    to_dict,
    when,
)
from airlock.v1 import agent_pb2, workflow_pb2
from airlock.v1 import workflow_service_pb2 as wfs

_STEP_KEYS = {"name", "agent", "version", "capability", "input", "limits", "network", "secrets",
              "depends_on", "gate", "approvals", "description", "on_failure"}
_POLICIES = {"fail_workflow": workflow_pb2.FAILURE_POLICY_FAIL_WORKFLOW,
             "continue": workflow_pb2.FAILURE_POLICY_CONTINUE}
WF_STATES = tuple(workflow_pb2.WorkflowState.Name(v).removeprefix("WORKFLOW_STATE_")
                  for v in workflow_pb2.WorkflowState.values() if v)


def spec_from_doc(doc: Any) -> workflow_pb2.WorkflowSpec:
    """The protobuf spec of a workflow document; each problem names its place (``steps[1].gate``)."""
    if not isinstance(doc, dict):
        raise CliError("workflow: must be a mapping with name and steps")
    unknown = set(doc) - {"name", "steps", "deadline_seconds"}
    if unknown:
        raise CliError(f"workflow: unknown key(s) {', '.join(sorted(unknown))}")
    steps = doc.get("steps")
    if not isinstance(steps, list):
        raise CliError("workflow.steps: must be a list of steps")
    out = workflow_pb2.WorkflowSpec(name=str(doc.get("name", "")),
                                    deadline_seconds=float(doc.get("deadline_seconds") or 0))
    for i, s in enumerate(steps):
        where = f"workflow.steps[{i}]"
        if not isinstance(s, dict):
            raise CliError(f"{where}: must be a mapping")
        bad = set(s) - _STEP_KEYS
        if bad:
            raise CliError(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
        policy = str(s.get("on_failure", "fail_workflow"))
        if policy not in _POLICIES:
            raise CliError(f"{where}.on_failure: one of {', '.join(_POLICIES)}")
        limits = s.get("limits") or {}
        if not isinstance(limits, dict):
            raise CliError(f"{where}.limits: must be a mapping")
        try:
            lim = agent_pb2.Limits(**limits)
        except (ValueError, TypeError) as e:
            raise CliError(f"{where}.limits: {e}") from None
        depends = s.get("depends_on") or []
        if isinstance(depends, str):
            depends = [depends]
        out.steps.append(workflow_pb2.StepSpec(
            name=str(s.get("name", "")), agent=str(s.get("agent", "")),
            version=str(s.get("version", "")), capability=str(s.get("capability", "")),
            input_json=json.dumps(s["input"], ensure_ascii=False) if "input" in s else "",
            limits=lim, network=bool(s.get("network", False)),
            secrets=[str(x) for x in s.get("secrets") or []],
            depends_on=[str(x) for x in depends], gate=bool(s.get("gate", False)),
            gate_approvals=int(s.get("approvals", 0)), description=str(s.get("description", "")),
            on_failure=_POLICIES[policy]))
    return out


def load_spec(path: str) -> workflow_pb2.WorkflowSpec:
    """Read a workflow file: YAML (JSON is YAML too)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CliError(f"{path}: not valid YAML or JSON: {e}") from None
    return spec_from_doc(doc)


def wf_state(value: int) -> str:
    return workflow_pb2.WorkflowState.Name(value).removeprefix("WORKFLOW_STATE_")


def _detail(w: workflow_pb2.Workflow) -> str:
    pairs: list[tuple[str, object]] = [
        ("id", w.id), ("name", w.name), ("state", wf_state(w.state)), ("reason", w.reason or "-"),
        ("risk", risk_name(w.risk)), ("submitter", w.submitter), ("plan digest", w.plan_digest),
        ("created", when(w, "create_time")), ("deadline", when(w, "deadline_time")),
        ("finished", when(w, "finish_time"))]
    for a in w.approvals:
        what = f"gate {a.step}" if a.step else "plan"
        pairs.append((f"approval ({what})", f"{status_name(a.status)}, {a.approvals} of "
                      f"{a.required}" + "".join(f"; {d.approver}: {d.reason}" for d in a.decisions
                                                if d.reason)))
    rows = [(s.name, "gate" if s.gate else f"{s.agent} {s.version} {s.capability}", s.state,
             risk_name(s.effective_risk) if not s.gate else "-",
             ",".join(s.depends_on) or "-", limits_text(s.limits) if not s.gate else "-",
             s.run_id or "-", clip(s.reason, 50)) for s in w.steps]
    return key_values(pairs) + "\n\n" + table(
        ("STEP", "RUNS", "STATE", "RISK", "AFTER", "LIMITS", "RUN", "REASON"), rows)


def _line(w: workflow_pb2.Workflow) -> str:
    steps = " ".join(f"{s.name}={s.state}" for s in w.steps)
    return f"{wf_state(w.state):<16} {steps}"


async def _watch(api: ApiClient, workflow_id: str, *, as_json: bool) -> workflow_pb2.Workflow | None:
    last = None
    async for msg in api.workflows.WatchWorkflow(wfs.WatchWorkflowRequest(workflow_id=workflow_id),
                                                 metadata=api.metadata):
        last = msg.workflow
        print(json.dumps(to_dict(last), ensure_ascii=False) if as_json else _line(last), flush=True)
    return last


async def cmd_submit(ns: argparse.Namespace) -> int:
    spec = load_spec(ns.file)
    async with connect(ns) as api:
        resp = await call(api, api.workflows.SubmitWorkflow, wfs.SubmitWorkflowRequest(
            spec=spec, idempotency_key=ns.idempotency_key))
        w = resp.workflow
        if ns.json and not ns.wait:
            print_json(resp)
            return EXIT_OK
        if not ns.wait:
            print(w.id)
        err(f"{wf_state(w.state)}: {w.reason}"
            + (" (existing workflow for this idempotency key)" if resp.deduplicated else ""))
        if not ns.wait:
            return EXIT_OK
        last = await _watch(api, w.id, as_json=ns.json)
    ok = last is not None and last.state == workflow_pb2.WORKFLOW_STATE_SUCCEEDED
    return EXIT_OK if ok else EXIT_RUN_NOT_SUCCEEDED


async def cmd_get(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.workflows.GetWorkflow,
                          wfs.GetWorkflowRequest(workflow_id=ns.workflow_id))
    if ns.json:
        print_json(resp)
    else:
        print(_detail(resp.workflow))
    return EXIT_OK


async def cmd_list(ns: argparse.Namespace) -> int:
    states = [getattr(workflow_pb2, f"WORKFLOW_STATE_{s}") for s in ns.state]
    async with connect(ns) as api:
        resp = await call(api, api.workflows.ListWorkflows, wfs.ListWorkflowsRequest(
            page_size=ns.limit, states=states))
    if ns.json:
        print_json(resp)
        return EXIT_OK
    rows = [(w.id, w.name, wf_state(w.state), risk_name(w.risk), len(w.steps), w.submitter,
             when(w, "create_time")) for w in resp.workflows]
    print_table(("ID", "NAME", "STATE", "RISK", "STEPS", "SUBMITTER", "CREATED"), rows,
                "no workflows")
    return EXIT_OK


async def cmd_watch(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        await _watch(api, ns.workflow_id, as_json=ns.json)
    return EXIT_OK


async def cmd_cancel(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.workflows.CancelWorkflow, wfs.CancelWorkflowRequest(
            workflow_id=ns.workflow_id, reason=ns.reason))
    if ns.json:
        print_json(resp)
    else:
        print(f"{resp.workflow.id}: {wf_state(resp.workflow.state)}")
    return EXIT_OK


async def cmd_approve(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.workflows.ApproveWorkflow, wfs.ApproveWorkflowRequest(
            workflow_id=ns.workflow_id, step=ns.step, reason=ns.reason,
            plan_digest=ns.plan_digest))
    if ns.json:
        print_json(resp)
    else:
        a = resp.approval
        print(f"{resp.workflow.id}: {status_name(a.status)} ({a.approvals} of {a.required}); "
              f"workflow {wf_state(resp.workflow.state)}")
    return EXIT_OK


async def cmd_reject(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.workflows.RejectWorkflow, wfs.RejectWorkflowRequest(
            workflow_id=ns.workflow_id, step=ns.step, reason=ns.reason))
    if ns.json:
        print_json(resp)
    else:
        print(f"{resp.workflow.id}: {wf_state(resp.workflow.state)}")
    return EXIT_OK


def _state(text: str) -> str:
    name = text.upper().removeprefix("WORKFLOW_STATE_")
    if name not in WF_STATES:
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; one of {', '.join(WF_STATES)}")
    return name


def register(cli: Commands) -> None:
    g = cli.group("workflows", help="submit, inspect, watch, cancel and decide workflows")
    p = g.add("submit", cmd_submit, remote=True, help="submit a workflow file (YAML or JSON)",
              description=(
                  "Submit a workflow: name, steps (agent, capability, input with\n"
                  '{"$from": "steps.<name>.output.<path>"} references, depends_on, limits,\n'
                  "network, secrets, on_failure: fail_workflow|continue; or gate: true with\n"
                  "approvals and description) and deadline_seconds. Prints the workflow id.\n"
                  "With --wait, follows it to its end; exit status 0 if it SUCCEEDED, else 4."))
    p.add_argument("file", metavar="FILE")
    p.add_argument("--idempotency-key", default="", metavar="KEY")
    p.add_argument("--wait", action="store_true", help="watch until the workflow ends")
    p = g.add("get", cmd_get, remote=True, help="show a workflow and its steps")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p = g.add("list", cmd_list, remote=True, help="list workflows, newest first")
    p.add_argument("--state", action="append", default=[], type=_state, metavar="STATE",
                   help=f"only workflows in this state (repeatable): {', '.join(WF_STATES)}")
    p.add_argument("--limit", type=positive_int, default=50, help="at most this many (default 50)")
    p = g.add("watch", cmd_watch, remote=True, help="print the workflow on every change until it ends")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p = g.add("cancel", cmd_cancel, remote=True, help="cancel a workflow and its active steps")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("--reason", default="")
    p = g.add("approve", cmd_approve, remote=True, help="approve a workflow's plan or a gate")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("--step", default="", help="the gate (default: the plan)")
    p.add_argument("--reason", default="")
    p.add_argument("--plan-digest", default="", help="refuse if the plan is not this one")
    p = g.add("reject", cmd_reject, remote=True, help="reject a workflow's plan or a gate")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("--step", default="", help="the gate (default: the plan)")
    p.add_argument("--reason", required=True)
