import { runs as api, describe, handleAuthError } from "../api";
import { h, replace, table } from "../dom";
import { duration, riskClass, riskName, stateClass, stateName, when } from "../format";
import { RunState, type Run } from "../gen/airlock/v1/run_pb";
import { errorBox, pageHeading, showError, statusLine, type View } from "../view";

const PAGE = 50;

/** Runs, newest first, filtered by agent, state and submitter (kept in the query string). */
export function runsView(query: URLSearchParams, go: (url: string) => void): View {
  const ctrl = new AbortController();
  const agent = h("input", { id: "f-agent", type: "text", value: query.get("agent") ?? "",
    autocomplete: "off", spellcheck: "false", maxlength: 100 });
  const submitter = h("input", { id: "f-submitter", type: "text", value: query.get("submitter") ?? "",
    autocomplete: "off", spellcheck: "false", maxlength: 200 });
  const state = h("select", { id: "f-state" }, h("option", { value: "" }, "any state"),
    Object.entries(RunState)
      .filter(([, v]) => typeof v === "number" && v !== RunState.UNSPECIFIED)
      .map(([k]) => h("option", { value: k, selected: query.get("state") === k }, k)));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter runs",
    on: { submit: (e: Event) => {
      e.preventDefault();
      const q = new URLSearchParams();
      if (agent.value.trim()) q.set("agent", agent.value.trim());
      if (state.value) q.set("state", state.value);
      if (submitter.value.trim()) q.set("submitter", submitter.value.trim());
      const qs = q.toString();
      go(`/runs${qs ? `?${qs}` : ""}`);
    } } },
    h("div", { class: "field" }, h("label", { for: "f-agent" }, "Agent"), agent),
    h("div", { class: "field" }, h("label", { for: "f-state" }, "State"), state),
    h("div", { class: "field" }, h("label", { for: "f-submitter" }, "Submitter"), submitter),
    h("button", { type: "submit", class: "btn" }, "Apply"));
  const status = statusLine("Loading…");
  const err = errorBox();
  const body = h("div", { class: "table-wrap" });
  const more = h("button", { type: "button", class: "btn secondary", hidden: true }, "Load more");
  const el = h("div", { class: "page runs" }, pageHeading("Runs"), form, status, err, body, more);

  const rows: Run[] = [];
  let token = "";
  const render = () => {
    replace(body, rows.length ? table("Runs", ["Run", "Agent", "Capability", "State", "Risk", "Submitter", "Created", "Duration"],
      rows.map((r) => [
        h("a", { href: `/runs/${encodeURIComponent(r.id)}` }, r.id),
        `${r.agent} ${r.version}`, r.capability,
        h("span", { class: stateClass(r.state) }, stateName(r.state)),
        h("span", { class: riskClass(r.effectiveRisk) }, riskName(r.effectiveRisk)),
        r.submitter, when(r.createTime),
        r.durationSeconds ? duration(r.durationSeconds) : "—",
      ])) : h("p", { class: "empty" }, "No runs match."));
  };
  const load = async () => {
    more.disabled = true;
    try {
      const st = query.get("state");
      const res = await api.listRuns({
        pageSize: PAGE, pageToken: token, agent: query.get("agent") ?? "",
        submitter: query.get("submitter") ?? "",
        states: st && st in RunState ? [RunState[st as keyof typeof RunState]] : [],
      }, { signal: ctrl.signal });
      rows.push(...res.runs);
      token = res.nextPageToken;
      render();
      status.textContent = `${rows.length} run${rows.length === 1 ? "" : "s"} shown`;
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
  return { title: "Runs", el, dispose: () => ctrl.abort() };
}
