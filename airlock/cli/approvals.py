"""``airlock approvals``: list, approve and reject risky runs (approver role)."""

from __future__ import annotations

import argparse

from airlock.cli._args import positive_int
from airlock.cli._client import call, connect
from airlock.cli._framework import EXIT_OK, Commands
from airlock.cli._output import (
    clip,
    digest_text,
    key_values,
    limits_text,
    print_json,
    print_table,
    risk_name,
    risk_text,
    state_name,
    status_name,
    to_dict,
    when,
)
from airlock.v1 import approval_pb2
from airlock.v1 import approval_service_pb2 as aps


async def cmd_approvals_list(ns: argparse.Namespace) -> int:
    statuses = [v for v in approval_pb2.ApprovalStatus.values() if v] if ns.all else []
    items: list[approval_pb2.Approval] = []
    async with connect(ns) as api:
        token = ""
        while True:
            resp = await call(api, api.approvals.ListApprovals, aps.ListApprovalsRequest(
                page_size=100, page_token=token, statuses=statuses,
                actionable_only=ns.actionable))
            items.extend(resp.approvals)
            token = resp.next_page_token
            if not token or len(items) >= ns.limit:
                break
    items = items[: ns.limit]
    if ns.json:
        print_json({"approvals": [to_dict(a) for a in items]})
        return EXIT_OK
    rows = [(a.run_id, a.run.agent, a.run.version, a.run.capability,
             risk_name(a.risk), status_name(a.status),
             f"{a.approvals}/{a.required}", a.run.submitter, when(a, "expire_time"),
             digest_text(a.action_digest)[:19])
            for a in items]
    print_table(("RUN", "AGENT", "VERSION", "CAPABILITY", "RISK", "STATUS", "VOTES", "SUBMITTER",
                 "EXPIRES", "ACTION"), rows, "no approvals" if ns.all else "no pending approvals")
    return EXIT_OK


def _print_approval(verb: str, a: approval_pb2.Approval) -> None:
    print(f"{verb} {a.run_id}: approval {status_name(a.status)} ({a.approvals}/{a.required} "
          f"approvals); run {state_name(a.run.state)}; action {digest_text(a.action_digest)}")


async def cmd_approvals_get(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.approvals.GetApproval, aps.GetApprovalRequest(run_id=ns.run_id))
    a = resp.approval
    if ns.json:
        print_json(resp)
        return EXIT_OK
    r = a.run
    pairs: list[tuple[str, object]] = [
        ("run", a.run_id), ("status", f"{status_name(a.status)} ({a.approvals}/{a.required})"),
        ("agent", f"{r.agent} {r.version}"), ("capability", r.capability),
        ("risk", risk_text(a.risk, a.risk_reasons)), ("submitter", r.submitter),
        ("network", "yes" if r.network else "no"), ("secrets", ", ".join(r.secrets) or "-"),
        ("limits", limits_text(r.limits)), ("expires", when(a, "expire_time")),
        ("action digest", digest_text(a.action_digest)),
        ("input", clip(r.input_json, 400) + (" (truncated)" if a.input_truncated else "")),
    ]
    for d in a.decisions:
        verdict = "approved" if d.verdict == approval_pb2.VERDICT_APPROVE else "rejected"
        pairs.append(("decision", f"{verdict} by {d.approver} at {when(d, 'decide_time')} for "
                                  f"{digest_text(d.action_digest)}"
                                  + (f": {d.reason}" if d.reason else "")))
    print(key_values(pairs))
    return EXIT_OK


async def cmd_approvals_approve(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.approvals.Approve,
                          aps.ApproveRequest(run_id=ns.run_id, reason=ns.reason,
                                             action_digest=ns.digest))
    if ns.json:
        print_json(resp)
    else:
        _print_approval("approved", resp.approval)
    return EXIT_OK


async def cmd_approvals_reject(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.approvals.Reject,
                          aps.RejectRequest(run_id=ns.run_id, reason=ns.reason))
    if ns.json:
        print_json(resp)
    else:
        _print_approval("rejected", resp.approval)
    return EXIT_OK


def register(cli: Commands) -> None:
    ap = cli.group("approvals", help="list, approve and reject risky runs (approver role)")
    p = ap.add("list", cmd_approvals_list, remote=True, help="list approval requests",
               description="List approval requests; pending ones unless --all.")
    p.add_argument("--all", action="store_true", help="every status, not only pending")
    p.add_argument("--actionable", action="store_true",
                   help="only those you may still decide (not your own runs, not yet voted)")
    p.add_argument("--limit", type=positive_int, default=100,
                   help="at most this many (default 100)")
    p = ap.add("get", cmd_approvals_get, remote=True,
               help="show one approval: the run, its action digest and the decisions")
    p.add_argument("run_id", metavar="RUN_ID")
    p = ap.add("approve", cmd_approvals_approve, remote=True, help="approve a run",
               description="Approve a run. You cannot approve your own runs; some risks need "
                           "several distinct approvers. With --digest, the approval is refused "
                           "unless the run's action digest is the one you reviewed.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--reason", default="", help="why (recorded and audited)")
    p.add_argument("--digest", default="", metavar="SHA256",
                   help="the action digest you reviewed (from `approvals get`)")
    p = ap.add("reject", cmd_approvals_reject, remote=True,
               help="reject a run (a reason is required)")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--reason", required=True, help="why (shown to the submitter)")
