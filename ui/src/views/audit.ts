import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { audit as api, describe, handleAuthError } from "../api";
import { h, replace, setText, table } from "../dom";
import { when } from "../format";
import type { AuditRecord } from "../gen/airlock/v1/audit_service_pb";
import { errorBox, pageHeading, section, showError, statusLine, type View } from "../view";

const PAGE = 100;

/** "2026-12-03T20:15" from a datetime-local field, read as UTC; undefined when empty or bad. */
function utc(value: string): Date | undefined {
  if (!value) return undefined;
  const d = new Date(`${value}Z`);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

function details(json: string): string {
  try {
    const doc = JSON.parse(json) as Record<string, unknown>;
    return Object.entries(doc).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join("; ");
  } catch {
    return json;
  }
}

/** The audit trail (admins, viewers): who did what to which run, filtered by run, actor and
 *  time (kept in the query string), with the result of verifying every chain and digest. */
export function auditView(query: URLSearchParams, go: (url: string) => void): View {
  const ctrl = new AbortController();
  const input = (id: string, name: string, type = "text") =>
    h("input", { id, type, value: query.get(name) ?? "", autocomplete: "off", spellcheck: "false",
      maxlength: 200 });
  const run = input("f-run", "run");
  const actor = input("f-actor", "actor");
  const since = input("f-since", "since", "datetime-local");
  const until = input("f-until", "until", "datetime-local");
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter audit records",
    on: { submit: (e: Event) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const [name, el] of [["run", run], ["actor", actor], ["since", since], ["until", until]] as const) {
        if (el.value.trim()) q.set(name, el.value.trim());
      }
      const qs = q.toString();
      go(`/audit${qs ? `?${qs}` : ""}`);
    } } },
    h("div", { class: "field" }, h("label", { for: "f-run" }, "Run (or other target)"), run),
    h("div", { class: "field" }, h("label", { for: "f-actor" }, "Actor"), actor),
    h("div", { class: "field" }, h("label", { for: "f-since" }, "From (UTC)"), since),
    h("div", { class: "field" }, h("label", { for: "f-until" }, "Until (UTC)"), until),
    h("button", { type: "submit", class: "btn" }, "Apply"));

  const verifyStatus = h("p", { id: "verify-status", role: "status", "aria-live": "polite",
    class: "muted" }, "Not verified yet.");
  const verifyBtn = h("button", { type: "button", class: "btn secondary", id: "verify" }, "Verify now");
  const verifyPanel = section("Verification", verifyStatus, verifyBtn);
  const status = statusLine("Loading…");
  const err = errorBox();
  const body = h("div", { class: "table-wrap" });
  const more = h("button", { type: "button", class: "btn secondary", hidden: true }, "Load more");
  const el = h("div", { class: "page audit" }, pageHeading("Audit trail"), verifyPanel, form,
    status, err, body, more);

  const verify = async () => {
    verifyBtn.disabled = true;
    verifyStatus.className = "muted";
    el.dataset.verified = "running";
    setText(verifyStatus, "Verifying every hash chain and digest…");
    try {
      const v = await api.verifyAuditTrail({ runId: "" }, { signal: ctrl.signal });
      if (v.ok) {
        verifyStatus.className = "health ok";
        el.dataset.verified = "ok";
        setText(verifyStatus, `Verified ${when(v.verifyTime)}: ${v.runsChecked} runs and `
          + `${v.recordsChecked} chained records match. Chain digest ${v.chainDigest}.`);
      } else {
        verifyStatus.className = "health bad";
        el.dataset.verified = "mismatch";
        setText(verifyStatus, `Mismatch at ${v.problem?.record ?? "?"}: ${v.problem?.problem ?? ""}`);
      }
    } catch (e) {
      if (ctrl.signal.aborted || handleAuthError(e)) return;
      el.dataset.verified = "error";
      setText(verifyStatus, describe(e));
    } finally {
      verifyBtn.disabled = false;
    }
  };
  verifyBtn.addEventListener("click", () => void verify());

  const rows: AuditRecord[] = [];
  let token = "";
  const render = () => {
    replace(body, rows.length ? table("Audit records", ["Time", "Actor", "Action", "Target", "Details"],
      rows.map((r) => [
        when(r.time), r.actor, r.action,
        r.target.startsWith("run_") ? h("a", { href: `/runs/${encodeURIComponent(r.target)}` }, r.target)
          : r.target,
        details(r.detailsJson),
      ])) : h("p", { class: "empty" }, "No audit records match."));
  };
  const load = async () => {
    more.disabled = true;
    try {
      const from = utc(query.get("since") ?? "");
      const to = utc(query.get("until") ?? "");
      const res = await api.listAuditRecords({
        pageSize: PAGE, pageToken: token, target: query.get("run") ?? "",
        actor: query.get("actor") ?? "",
        since: from ? timestampFromDate(from) : undefined,
        until: to ? timestampFromDate(to) : undefined,
      }, { signal: ctrl.signal });
      rows.push(...res.records);
      token = res.nextPageToken;
      render();
      status.textContent = `${rows.length} record${rows.length === 1 ? "" : "s"} shown, oldest first`;
      showError(err, null);
    } catch (e) {
      if (ctrl.signal.aborted || handleAuthError(e)) return;
      status.textContent = "";
      showError(err, describe(e));
    } finally {
      more.hidden = !token;
      more.disabled = false;
    }
  };
  more.addEventListener("click", () => void load());
  void load();
  void verify();
  return { title: "Audit", el, dispose: () => ctrl.abort() };
}
