import { registry as api, describe, handleAuthError } from "../api";
import { facts, h, replace, table } from "../dom";
import { limits, riskClass, riskName, when } from "../format";
import type { AgentVersion } from "../gen/airlock/v1/agent_pb";
import { errorBox, pageHeading, showError, statusLine, type View } from "../view";

/** Runs at most `n` of the returned calls at once (a page of agents fetches its latest versions). */
function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    while (active >= n) await new Promise<void>((r) => waiting.push(r));
    active += 1;
    try {
      return await fn();
    } finally {
      active -= 1;
      waiting.shift()?.();
    }
  };
}

/** The agent registry: agents, their latest version's risk and capabilities. */
export function agentsView(): View {
  const ctrl = new AbortController();
  const status = statusLine("Loading…");
  const err = errorBox();
  const body = h("div", { class: "table-wrap" });
  const more = h("button", { type: "button", class: "btn secondary", hidden: true }, "Load more");
  const el = h("div", { class: "page agents" }, pageHeading("Agents"), status, err, body, more);
  const rows: HTMLElement[][] = [];
  const limit = limiter(6);
  let token = "";
  let count = 0;
  const load = async () => {
    try {
      const res = await api.listAgents({ pageSize: 100, pageToken: token }, { signal: ctrl.signal });
      for (const a of res.agents) {
        count += 1;
        const risk = h("span", { class: "muted" }, "…");
        const caps = h("span", { class: "muted" }, "…");
        rows.push([
          h("a", { href: `/agents/${encodeURIComponent(a.name)}` }, a.name),
          h("span", null, a.description || "—"),
          h("span", null, a.latestVersion || "(all deprecated)"),
          risk,
          caps,
          h("span", null, a.versions.join(", ")),
          h("span", null, when(a.createTime)),
        ]);
        if (a.latestVersion) {
          void limit(() => api.getAgentVersion({ name: a.name, version: a.latestVersion },
            { signal: ctrl.signal })).then((r) => {
            const v = r.version;
            if (!v) return;
            replace(risk, h("span", { class: riskClass(v.risk) }, riskName(v.risk)));
            caps.className = "";
            replace(caps, v.capabilities.map((c) => c.name).join(", ") || "—");
          }, () => { replace(risk, "?"); replace(caps, "?"); });
        } else {
          replace(risk, "—");
          replace(caps, "—");
        }
      }
      token = res.nextPageToken;
      replace(body, count ? table("Agents",
        ["Agent", "Description", "Latest", "Risk (latest)", "Capabilities", "Versions", "Registered"], rows)
        : h("p", { class: "empty" }, "No agents are registered."));
      status.textContent = `${count} agent${count === 1 ? "" : "s"}`;
    } catch (e) {
      if (ctrl.signal.aborted || handleAuthError(e)) return;
      status.textContent = "";
      showError(err, describe(e));
    } finally {
      more.hidden = !token;
    }
  };
  more.addEventListener("click", () => void load());
  void load();
  return { title: "Agents", el, dispose: () => ctrl.abort() };
}

/** One agent: every version with its risk, permissions, limits and capabilities. */
export function agentView(name: string): View {
  const ctrl = new AbortController();
  const err = errorBox();
  const body = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const el = h("div", { class: "page agent" }, pageHeading(`Agent ${name}`), err, body);
  void (async () => {
    try {
      const res = await api.getAgent({ name }, { signal: ctrl.signal });
      const versions = [...res.versions].reverse();
      replace(body,
        h("p", null, res.agent?.description || ""),
        versions.map((v) => versionCard(v)));
    } catch (e) {
      if (ctrl.signal.aborted || handleAuthError(e)) return;
      replace(body);
      showError(err, describe(e));
    }
  })();
  return { title: `Agent ${name}`, el, dispose: () => ctrl.abort() };
}

function versionCard(v: AgentVersion): HTMLElement {
  const id = `v-${v.version.replace(/[^A-Za-z0-9]/g, "-")}`;
  return h("section", { class: "panel version", "aria-labelledby": id },
    h("h2", { id }, `Version ${v.version}`, " ",
      h("span", { class: riskClass(v.risk) }, `${riskName(v.risk)} risk`),
      v.deprecated ? h("span", { class: "status status-expired" }, "deprecated") : null),
    facts([
      ["Description", v.description || "—"],
      ["Image", v.image],
      ["Digest", v.imageDigest || "—"],
      ["Network", v.network ? "may ask for egress" : "never"],
      ["Secrets", v.secrets.length ? v.secrets.join(", ") : "none"],
      ["Default limits", limits(v.defaultLimits)],
      ["Max limits", limits(v.maxLimits)],
      ["Registered", `${when(v.createTime)} by ${v.createdBy || "—"}`],
      ["Deprecation", v.deprecated ? v.deprecationReason || "deprecated" : "—"],
    ]),
    h("h3", null, "Capabilities"),
    h("ul", { class: "capabilities" }, v.capabilities.map((c) =>
      h("li", null, h("strong", null, c.name), c.description ? ` — ${c.description}` : ""))));
}
