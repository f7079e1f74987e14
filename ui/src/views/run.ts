import { approvals, runs as api, Code, code, describe, handleAuthError } from "../api";
import { facts, h, replace, setText } from "../dom";
import {
  bytes, duration, limits, preview, riskClass, riskName, stateClass, stateName, statusName, tail,
  TERMINAL, verdictName, when,
} from "../format";
import type { Run, RunEvent } from "../gen/airlock/v1/run_pb";
import { backoffLoop, errorBox, pageHeading, section, showError, statusLine, type View } from "../view";

const OUTPUT_CHARS = 64 * 1024;
const LOG_CHARS = 32 * 1024;

/** One run: summary, live event timeline (WatchRun), outcome, resources, output and logs. */
export function runView(runId: string): View {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const stateBadge = h("span", { class: "state" }, "…");
  const err = errorBox();
  const summary = h("div", { class: "summary" }, h("p", { class: "muted" }, "Loading…"));
  const outcome = h("div", null, h("p", { class: "muted" }, "—"));
  const resources = h("div", null, h("p", { class: "muted" }, "—"));
  const approval = h("div", null, h("p", { class: "muted" }, "—"));
  const integrity = h("div", { id: "integrity" }, h("p", { class: "muted" }, "—"));
  const timelineStatus = statusLine("Connecting…");
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const output = h("pre", { class: "code output", tabindex: "0", id: "output" }, "—");
  const outputNote = h("p", { class: "muted" });
  const logs = h("pre", { class: "code logs", tabindex: "0", id: "logs" }, "—");
  const logsNote = h("p", { class: "muted" });
  const el = h("div", { class: "page run", "data-run": runId },
    h("div", { class: "title-row" }, pageHeading(`Run ${runId}`), stateBadge),
    err,
    h("div", { class: "two-col" },
      h("div", { class: "col-main" },
        section("Summary", summary),
        section("Outcome", outcome),
        section("Output", outputNote, output),
        section("Logs (tail)", logsNote, logs)),
      h("div", { class: "col-side" },
        section("Timeline", timelineStatus, timeline),
        section("Resources", resources),
        section("Integrity", integrity),
        section("Approval", approval))));

  const showRun = (r: Run) => {
    replace(stateBadge, stateName(r.state));
    stateBadge.className = stateClass(r.state);
    el.dataset.state = stateName(r.state);
    replace(summary, facts([
      ["Agent", `${r.agent} ${r.version}`],
      ["Capability", r.capability],
      ["Submitter", r.submitter],
      ["Risk", h("span", { class: riskClass(r.effectiveRisk) }, riskName(r.effectiveRisk))],
      ["Why", r.riskReasons.length ? r.riskReasons.join("; ") : "—"],
      ["Network", r.network ? "egress requested" : "none"],
      ["Secrets", r.secrets.length ? r.secrets.join(", ") : "none"],
      ["Created", when(r.createTime)],
      ["Idempotency key", r.idempotencyKey || "—"],
    ]));
    replace(resources, facts([
      ["Peak memory", bytes(r.peakMemoryBytes)],
      ["Duration", r.durationSeconds ? duration(r.durationSeconds) : "—"],
      ["CPU time", r.cpuSeconds ? `${r.cpuSeconds.toFixed(2)} s` : "—"],
      ["Output", bytes(r.outputBytes)],
      ["Logs", bytes(r.logBytes)],
      ["Attempt", String(r.attempt || "—")],
      ["Executor", r.executorId || "—"],
      ["Started", when(r.startTime)],
      ["Finished", when(r.finishTime)],
      ["Limits", limits(r.limits)],
    ]));
    const digest = (d: string) => d ? h("code", { class: "digest" }, d) : "—";
    replace(integrity, facts([
      ["Action digest", r.actionDigest ? h("code", { class: "digest" }, `sha256:${r.actionDigest}`) : "—"],
      ["Input SHA-256", digest(r.inputSha256)],
      ["Output SHA-256", digest(r.outputSha256)],
      ["Logs SHA-256", digest(r.logsSha256)],
      ["Chain head", r.chainHead ? h("span", null, digest(r.chainHead), ` (record ${r.chainSequence})`) : "—"],
    ]));
  };

  const showResult = async () => {
    const res = await api.getRunResult({ runId }, { signal });
    if (res.run) showRun(res.run);
    const r = res.run;
    replace(outcome, facts([
      ["State", r ? h("span", { class: stateClass(r.state) }, stateName(r.state)) : "—"],
      ["Reason", r?.reason || "—"],
      ["Exit code", r && TERMINAL.has(r.state) && r.startTime ? String(r.exitCode) : "—"],
      ["Error", res.errorCode ? `${res.errorCode}: ${res.errorMessage}` : "—"],
    ]));
    const out = preview(res.outputJson, OUTPUT_CHARS);
    output.textContent = out.text || "—";
    setText(outputNote, out.cut ? `Showing the first ${OUTPUT_CHARS / 1024} KiB.` :
      res.outputJson ? "" : r && TERMINAL.has(r.state) ? "No output." : "Available when the run finishes.");
    const lg = tail(res.logs, LOG_CHARS);
    logs.textContent = lg.text || "—";
    setText(logsNote, lg.cut || res.logsTruncated ? "Older lines were cut; this is the tail." : "");
  };

  const addEvent = (e: RunEvent) => {
    const from = e.previousState ? `${stateName(e.previousState)} → ` : "";
    timeline.append(h("li", { "data-seq": String(e.sequence), "data-state": stateName(e.state) },
      h("span", { class: stateClass(e.state) }, `${from}${stateName(e.state)}`),
      h("span", { class: "muted" }, ` ${when(e.createTime)}`),
      e.actor ? h("span", null, ` by ${e.actor}`) : null,
      e.reason ? h("div", { class: "reason" }, e.reason) : null));
    replace(stateBadge, stateName(e.state));
    stateBadge.className = stateClass(e.state);
    el.dataset.state = stateName(e.state);
  };

  const loadApproval = async () => {
    try {
      const res = await approvals.getApproval({ runId }, { signal });
      const a = res.approval;
      if (!a) return;
      replace(approval, facts([
        ["Status", statusName(a.status)],
        ["Approvals", `${a.approvals} of ${a.required}`],
        ["Expires", when(a.expireTime)],
      ]), a.decisions.length ? h("ul", { class: "decisions" }, a.decisions.map((d) =>
        h("li", null, `${d.approver} ${verdictName(d.verdict)}`, d.reason ? ` — “${d.reason}”` : "",
          h("span", { class: "muted" }, ` (${when(d.decideTime)})`),
          d.actionDigest ? h("div", { class: "muted" }, "for ", h("code", { class: "digest" },
            `sha256:${d.actionDigest}`)) : null))) : null);
    } catch (e) {
      if (signal.aborted || handleAuthError(e)) return;
      replace(approval, h("p", { class: "muted" },
        code(e) === Code.NotFound ? "No approval was needed." : describe(e)));
    }
  };

  let next = 1;
  const follow = async (): Promise<"again" | "stop"> => {
    setText(timelineStatus, "Following live");
    el.dataset.stream = "live";
    for await (const msg of api.watchRun({ runId, fromSequence: BigInt(next) }, { signal })) {
      const e = msg.event;
      if (!e || Number(e.sequence) < next) continue;
      next = Number(e.sequence) + 1;
      addEvent(e);
      if (TERMINAL.has(e.state)) break;
      if (e.sequence > 1n) void loadApproval();
    }
    // The stream ends after the terminal event.
    setText(timelineStatus, "Complete");
    el.dataset.stream = "done";
    await showResult();
    void loadApproval();
    return "stop";
  };

  void (async () => {
    try {
      await showResult();
    } catch (e) {
      if (signal.aborted || handleAuthError(e)) return;
      showError(err, describe(e));
      setText(timelineStatus, "");
      return;
    }
    void loadApproval();
    await backoffLoop(signal, follow, (e, seconds) => {
      if (handleAuthError(e)) return false;
      if (code(e) === Code.NotFound || code(e) === Code.PermissionDenied) {
        showError(err, describe(e));
        return false;
      }
      el.dataset.stream = "reconnecting";
      setText(timelineStatus, `Disconnected (${describe(e)}). Reconnecting in ${seconds} s…`);
      return true;
    });
  })();

  return { title: `Run ${runId}`, el, dispose: () => ctrl.abort() };
}
