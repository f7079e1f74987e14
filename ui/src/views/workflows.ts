// Workflows: the list (refreshed every 2 s, so a new plan appears by itself) and one workflow:
// its steps as a graph with their risk and limits, live over WatchWorkflow, and the plan's or
// an open gate's approval decided here.
import "./workflows.css";
import { describe, handleAuthError, workflows as api } from "../api";
import { facts, h, replace, setText, table } from "../dom";
import { riskClass, riskName, statusName, when } from "../format";
import { ApprovalStatus } from "../gen/airlock/v1/approval_pb";
import { WorkflowState, type Workflow, type WorkflowApproval } from "../gen/airlock/v1/workflow_pb";
import { session } from "../session";
import { backoffLoop, every, pageHeading, section, showError, statusLine, type View } from "../view";
import { stepStateClass, workflowGraph } from "./workflow_graph";

export function wfStateName(s: WorkflowState): string {
  return WorkflowState[s] ?? "UNSPECIFIED";
}

function stateBadge(s: WorkflowState): HTMLSpanElement {
  return h("span", { class: `state ${stepStateClass(wfStateName(s))}` }, wfStateName(s));
}

/** Workflows, newest first; pending plans first so approvers see them. */
export function workflowsView(): View {
  const ctrl = new AbortController();
  const status = statusLine("Loading…");
  const err = errorBoxLocal();
  const body = h("div", { class: "table-wrap", id: "workflow-list" });
  const el = h("div", { class: "page workflows" }, pageHeading("Workflows"), status, err, body);
  const load = async () => {
    try {
      const res = await api.listWorkflows({ pageSize: 100 }, { signal: ctrl.signal });
      const items = [...res.workflows].sort((a, b) =>
        Number(b.state === WorkflowState.PENDING_APPROVAL) - Number(a.state === WorkflowState.PENDING_APPROVAL));
      replace(body, items.length ? table("Workflows", ["Workflow", "Name", "State", "Risk", "Steps", "Submitter", "Created"],
        items.map((w) => [
          h("a", { href: `/workflows/${encodeURIComponent(w.id)}` }, w.id), w.name, stateBadge(w.state),
          h("span", { class: riskClass(w.risk) }, riskName(w.risk)), String(w.steps.length), w.submitter,
          when(w.createTime)])) : h("p", { class: "empty" }, "No workflows yet."));
      setText(status, `${items.length} workflow${items.length === 1 ? "" : "s"}`);
      showError(err, null);
    } catch (e) {
      if (ctrl.signal.aborted || handleAuthError(e)) return;
      showError(err, describe(e));
    }
  };
  void load();
  const stop = every(2000, () => void load());
  return { title: "Workflows", el, dispose: () => { stop(); ctrl.abort(); } };
}

function errorBoxLocal(): HTMLParagraphElement {
  return h("p", { class: "error-box", role: "alert", hidden: true });
}

/** One workflow: the graph of its steps (live), its approvals, and the decision buttons. */
export function workflowView(id: string): View {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const status = statusLine("Connecting…");
  const err = errorBoxLocal();
  const feedback = h("p", { class: "feedback", role: "status", "aria-live": "polite" });
  const summary = h("div", { id: "wf-summary" });
  const graph = h("div", { class: "wf-graph-wrap", id: "wf-graph" });
  const decide = h("div", { id: "wf-decide" });
  const outputs = h("div", { id: "wf-outputs" });
  const el = h("div", { class: "page workflow", "data-stream": "connecting" },
    pageHeading(`Workflow ${id}`), status, err, feedback, summary,
    section("Plan", graph), decide, section("Outputs so far", outputs));
  let shown: Workflow | null = null;

  const render = (w: Workflow) => {
    shown = w;
    replace(summary, facts([
      ["State", stateBadge(w.state)], ["Reason", w.reason || "—"], ["Name", w.name],
      ["Risk", h("span", { class: riskClass(w.risk) }, riskName(w.risk))],
      ["Submitter", w.submitter], ["Plan digest", h("code", null, w.planDigest)],
      ["Created", when(w.createTime)], ["Deadline", when(w.deadlineTime)]]));
    replace(graph, workflowGraph(w.steps));
    const done = w.steps.filter((s) => s.outputJson);
    replace(outputs, done.length ? facts(done.map((s) => [s.name, h("code", null, s.outputJson)]))
      : h("p", { class: "empty" }, "No step has succeeded yet."));
    const open = w.approvals.filter((a) => a.status === ApprovalStatus.PENDING);
    replace(decide, open.map((a) => decisionPanel(w, a)));
  };

  const decisionPanel = (w: Workflow, a: WorkflowApproval): HTMLElement => {
    const what = a.step ? `Gate “${a.step}”` : "The plan";
    const gateStep = w.steps.find((s) => s.name === a.step);
    const reason = h("input", { type: "text", id: `reason-${a.step || "plan"}`, maxlength: 2000,
      "aria-label": `Reason for ${what}`, placeholder: "reason (required to reject)" });
    const can = session.canDecide() && session.me()?.owner !== w.submitter;
    const go = async (verdict: "approve" | "reject") => {
      try {
        const req = { workflowId: w.id, step: a.step, reason: reason.value.trim() };
        if (verdict === "approve") await api.approveWorkflow({ ...req, planDigest: w.planDigest });
        else await api.rejectWorkflow(req);
        setText(feedback, `${what} ${verdict === "approve" ? "approved" : "rejected"}.`);
        showError(err, null);
      } catch (e) {
        if (!handleAuthError(e)) showError(err, describe(e));
      }
    };
    return section(`${what}: ${statusName(a.status)} (${a.approvals} of ${a.required})`,
      gateStep?.description ? h("p", null, gateStep.description) : null,
      h("p", { class: "muted" }, a.step ? "The outputs so far are shown below."
        : "Approving the plan lets every step run as drawn above (versions and images pinned)."),
      h("div", { class: "wf-decide" }, reason,
        h("button", { type: "button", class: "btn approve", disabled: !can, "data-decide": `approve-${a.step || "plan"}`,
          on: { click: () => void go("approve") } }, "Approve"),
        h("button", { type: "button", class: "btn reject", disabled: !can, "data-decide": `reject-${a.step || "plan"}`,
          on: { click: () => void go("reject") } }, "Reject")));
  };

  void backoffLoop(signal, async () => {
    for await (const msg of api.watchWorkflow({ workflowId: id }, { signal })) {
      if (!msg.workflow) continue;
      el.dataset.stream = "live";
      setText(status, "Live");
      render(msg.workflow);
    }
    el.dataset.stream = "ended";
    setText(status, shown ? `Ended: ${wfStateName(shown.state)}` : "Ended");
    return "stop";
  }, (e, seconds) => {
    if (handleAuthError(e)) return false;
    el.dataset.stream = "reconnecting";
    showError(err, describe(e));
    setText(status, `Reconnecting in ${seconds}s…`);
    return true;
  });
  return { title: `Workflow ${id}`, el, dispose: () => ctrl.abort() };
}
