import "./style.css";
import { admin, describe, code, Code, setUnauthenticatedHandler } from "./api";
import { h, replace } from "./dom";
import { roleName } from "./format";
import { Role } from "./gen/airlock/v1/admin_service_pb";
import { session } from "./session";
import type { View } from "./view";
import { agentsView, agentView } from "./views/agents";
import { approvalsView } from "./views/approvals";
import { auditView } from "./views/audit";
import { fleetView } from "./views/fleet";
import { runView } from "./views/run";
import { runsView } from "./views/runs";
import { signInView } from "./views/signin";
import { workflowsView, workflowView } from "./views/workflows";

const main = document.getElementById("main") as HTMLElement;
const nav = document.getElementById("nav") as HTMLElement;
const identity = document.getElementById("identity") as HTMLElement;
const LINKS: [string, string][] = [
  ["/approvals", "Approvals"], ["/workflows", "Workflows"], ["/runs", "Runs"], ["/agents", "Agents"],
  ["/fleet", "Fleet"], ["/overview", "Overview"], ["/audit", "Audit"],
];
// Screens only some roles may use (the server refuses the others anyway).
const ROLES_OF: Record<string, Role[]> = {
  "/overview": [Role.ADMIN, Role.VIEWER], "/audit": [Role.ADMIN, Role.VIEWER],
};
let current: View | null = null;

function mount(view: View, focus: boolean): void {
  current?.dispose();
  current = view;
  replace(main, view.el);
  document.title = `${view.title} · Airlock`;
  if (focus) (main.querySelector("h1") as HTMLElement | null)?.focus();
}

function route(focus = false): void {
  const { pathname, search } = window.location;
  const parts = pathname.split("/").filter(Boolean).map(decodeURIComponent);
  let view: View;
  if (parts.length === 0 || (parts[0] === "approvals" && parts.length === 1)) {
    if (parts.length === 0) history.replaceState(null, "", "/approvals");
    view = approvalsView();
  } else if (parts[0] === "runs" && parts.length === 1) {
    view = runsView(new URLSearchParams(search), navigate);
  } else if (parts[0] === "runs" && parts.length === 2) {
    view = runView(parts[1]);
  } else if (parts[0] === "agents" && parts.length === 1) {
    view = agentsView();
  } else if (parts[0] === "agents" && parts.length === 2) {
    view = agentView(parts[1]);
  } else if (parts[0] === "workflows" && parts.length <= 2) {
    view = parts.length === 1 ? workflowsView() : workflowView(parts[1]);
  } else if (parts[0] === "fleet" && parts.length === 1) {
    view = fleetView();
  } else if (parts[0] === "overview" && parts.length === 1) {
    view = lazyView("Overview", () => import("./views/overview").then((m) => m.overviewView()));
  } else if (parts[0] === "audit" && parts.length === 1) {
    view = auditView(new URLSearchParams(search), navigate);
  } else {
    view = {
      title: "Not found", dispose() {},
      el: h("div", { class: "page" }, h("h1", { class: "page-title", tabindex: "-1" }, "Page not found"),
        h("p", null, h("a", { href: "/approvals" }, "Go to approvals"))),
    };
  }
  const section = `/${parts[0] ?? "approvals"}`;
  for (const a of nav.querySelectorAll("a")) {
    if (a.getAttribute("href") === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  mount(view, focus);
}

/** A view whose code (and its libraries: the charts) loads when it is first opened. */
function lazyView(title: string, load: () => Promise<View>): View {
  const el = h("div", { class: "page" }, h("p", { class: "muted", role: "status" }, "Loading…"));
  let inner: View | null = null;
  let gone = false;
  void load().then((v) => {
    if (gone) { v.dispose(); return; }
    inner = v;
    replace(el, v.el);
  });
  return { title, el, dispose: () => { gone = true; inner?.dispose(); } };
}

function navigate(url: string): void {
  history.pushState(null, "", url);
  route(true);
}

document.addEventListener("click", (e) => {
  const a = (e.target as Element | null)?.closest?.("a");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const href = a.getAttribute("href");
  if (!href || !href.startsWith("/") || href.startsWith("//") || a.target) return;
  e.preventDefault();
  navigate(href);
});
window.addEventListener("popstate", () => route(true));

function showChrome(signedIn: boolean): void {
  nav.hidden = !signedIn;
  const me = session.me();
  if (!signedIn || !me) {
    replace(identity);
    return;
  }
  if (!nav.childElementCount) {
    const mine = LINKS.filter(([href]) => !ROLES_OF[href] || ROLES_OF[href].includes(me.role));
    replace(nav, h("ul", null, mine.map(([href, text]) => h("li", null, h("a", { href }, text)))));
  }
  replace(identity,
    h("span", { id: "whoami" }, `${me.owner} · ${roleName(me.role)}`),
    h("button", { type: "button", class: "btn secondary small", on: { click: () => signOut() } }, "Sign out"));
}

function signOut(message?: string): void {
  session.clear();
  showChrome(false);
  mount(signInView(signIn, message), false);
}

/** Verifies a key with WhoAmI; returns a message to show when it is refused. */
async function signIn(key: string): Promise<string | null> {
  session.save(key);
  try {
    const res = await admin.whoAmI({});
    if (!res.key) throw new Error("no identity returned");
    session.setMe(res.key);
  } catch (e) {
    session.clear();
    return code(e) === Code.Unauthenticated ? "That key was not accepted." : describe(e);
  }
  showChrome(true);
  route(true);
  return null;
}

setUnauthenticatedHandler((message) => signOut(`Your session ended. ${message}`));

async function start(): Promise<void> {
  const key = session.key();
  if (!key) {
    signOut();
    return;
  }
  replace(main, h("p", { class: "muted", role: "status" }, "Signing in…"));
  try {
    const res = await admin.whoAmI({});
    if (res.key) session.setMe(res.key);
    showChrome(true);
    route(false);
  } catch (e) {
    if (code(e) === Code.Unauthenticated) {
      signOut("Your key is no longer valid. Sign in again.");
      return;
    }
    replace(main, h("div", { class: "page" }, h("h1", { class: "page-title" }, "Airlock is unreachable"),
      h("p", { role: "alert" }, describe(e)),
      h("button", { type: "button", class: "btn", on: { click: () => void start() } }, "Try again")));
  }
}

void start();
