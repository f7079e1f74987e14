import { approvals as api, Code, code, describe, handleAuthError } from "../api";
import { facts, h, replace, setText, uid } from "../dom";
import {
  countdown, date, limits, preview, riskClass, riskName, roleName, statusName, verdictName, when,
} from "../format";
import { ApprovalStatus, type Approval } from "../gen/airlock/v1/approval_pb";
import { session } from "../session";
import { backoffLoop, every, pageHeading, showError, statusLine, type View } from "../view";

const INPUT_PREVIEW_CHARS = 2000;
const CLOSED_KEPT = 20;

/** Pending approvals, live over WatchApprovals; approve (optional note) or reject (reason). */
export function approvalsView(): View {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const title = pageHeading("Pending approvals");
  const status = statusLine("Connecting…");
  const feedback = h("p", { class: "feedback", role: "status", "aria-live": "polite" });
  const me = session.me();
  const roleNote = session.canDecide()
    ? null
    : h("p", { class: "note", id: "role-note" },
        `You are signed in as ${me?.owner ?? "?"} (${roleName(me?.role ?? 0)}): ` +
        "you can follow approvals but only approvers can approve or reject.");
  const list = h("div", { class: "cards", id: "pending-list", "aria-label": "Pending approvals" });
  const empty = h("p", { class: "empty" }, "Nothing is waiting for a decision.");
  const closedList = h("ol", { class: "closed-list", id: "closed-list" });
  const closedEmpty = h("p", { class: "empty" }, "Nothing closed yet in this session.");
  const closedId = uid("closed");
  const el = h("div", { class: "page approvals", "data-stream": "connecting" },
    title, status, roleNote, feedback,
    h("div", { class: "two-col" },
      h("div", { class: "col-main" }, list, empty),
      h("aside", { class: "col-side", "aria-labelledby": closedId },
        h("h2", { id: closedId }, "Recently closed"), closedEmpty, closedList)));

  const cards = new Map<string, Card>();
  const stopTick = every(1000, () => cards.forEach((c) => c.tick()));
  let readyMarked = false;

  const refreshCount = () => {
    empty.hidden = cards.size > 0;
    if (el.dataset.stream === "live") {
      setText(status, `Live — ${cards.size} pending ${cards.size === 1 ? "approval" : "approvals"}`);
    }
  };

  const closeCard = (a: Approval) => {
    const card = cards.get(a.runId);
    if (card) {
      if (card.errorText) setText(feedback, card.errorText); // keep a refusal visible
      const hadFocus = card.el.contains(document.activeElement);
      card.el.remove();
      cards.delete(a.runId);
      if (hadFocus) title.focus();
    }
    if (closedList.querySelector(`[data-run="${CSS.escape(a.runId)}"]`)) return;
    const run = a.run;
    const last = a.decisions[a.decisions.length - 1];
    const who = last ? ` by ${last.approver}${last.reason ? ` — “${last.reason}”` : ""}` : "";
    closedList.prepend(h("li", { "data-run": a.runId },
      h("a", { href: `/runs/${encodeURIComponent(a.runId)}` }, run ? `${run.agent} · ${run.capability}` : a.runId),
      " ",
      h("span", { class: `status status-${statusName(a.status).toLowerCase()}` }, statusName(a.status)),
      h("span", { class: "muted" }, who)));
    while (closedList.children.length > CLOSED_KEPT) closedList.lastElementChild?.remove();
    closedEmpty.hidden = true;
  };

  const upsert = (a: Approval) => {
    if (a.status !== ApprovalStatus.PENDING) {
      closeCard(a);
    } else {
      const card = cards.get(a.runId);
      if (card) card.update(a);
      else {
        const c = new Card(a, feedback, (done) => upsert(done));
        cards.set(a.runId, c);
        list.append(c.el);
      }
    }
    refreshCount();
  };

  const setStream = (state: string, text: string) => {
    el.dataset.stream = state;
    setText(status, text);
    refreshCount();
  };

  const connect = async (): Promise<"again" | "stop"> => {
    setStream("connecting", "Connecting…");
    // A snapshot first (it also confirms access at once), then the live stream.
    const pending: Approval[] = [];
    let token = "";
    do {
      const page = await api.listApprovals({ pageSize: 200, pageToken: token }, { signal });
      pending.push(...page.approvals);
      token = page.nextPageToken;
    } while (token && pending.length < 2000);
    const present = new Set(pending.map((a) => a.runId));
    for (const id of [...cards.keys()]) {
      if (!present.has(id)) {
        // Closed while we were disconnected: show how it ended.
        try {
          const got = await api.getApproval({ runId: id }, { signal });
          if (got.approval) closeCard(got.approval);
        } catch {
          cards.get(id)?.el.remove();
          cards.delete(id);
        }
      }
    }
    pending.forEach(upsert);
    setStream("live", "Live");
    if (!readyMarked) {
      readyMarked = true;
      performance.mark("airlock:approvals-ready");
    }
    for await (const msg of api.watchApprovals({}, { signal })) {
      if (msg.approval) upsert(msg.approval);
    }
    return "again"; // the server ended the stream (for example a restart): reconnect
  };

  if (session.canWatchApprovals()) {
    void backoffLoop(signal, connect, (err, seconds) => {
      if (handleAuthError(err)) return false;
      if (code(err) === Code.PermissionDenied) {
        setStream("denied", describe(err));
        return false;
      }
      setStream("reconnecting", `Disconnected (${describe(err)}). Reconnecting in ${seconds} s…`);
      return true;
    });
  } else {
    setStream("denied", `Your role (${roleName(me?.role ?? 0)}) cannot view approvals.`);
  }

  return {
    title: "Approvals",
    el,
    dispose() {
      ctrl.abort();
      stopTick();
    },
  };
}

class Card {
  readonly el: HTMLElement;
  private approval: Approval;
  private readonly countdownEl: HTMLElement;
  private readonly countEl: HTMLElement;
  private readonly decisionsEl: HTMLElement;
  private readonly note: HTMLTextAreaElement;
  private readonly approveBtn: HTMLButtonElement;
  private readonly rejectBtn: HTMLButtonElement;
  private readonly error: HTMLElement;
  private readonly hint: HTMLElement;
  private readonly expires: Date | undefined;
  private busy = false;

  constructor(a: Approval, private readonly feedback: HTMLElement,
              private readonly onResult: (a: Approval) => void) {
    this.approval = a;
    const run = a.run;
    const me = session.me();
    const titleId = uid("appr");
    const noteId = uid("note");
    const errId = uid("err");
    const hintId = uid("hint");
    this.expires = date(a.expireTime);
    this.countdownEl = h("time", { class: "countdown", datetime: this.expires?.toISOString() });
    this.countEl = h("span", { class: "count" });
    this.decisionsEl = h("ul", { class: "decisions" });
    this.note = h("textarea", {
      id: noteId, rows: 2, maxlength: 2000, "aria-describedby": `${hintId} ${errId}`,
      disabled: !session.canDecide(),
    });
    this.approveBtn = h("button", { type: "button", class: "btn approve", disabled: !session.canDecide(),
      on: { click: () => void this.decide("approve") } }, "Approve");
    this.rejectBtn = h("button", { type: "button", class: "btn reject", disabled: !session.canDecide(),
      on: { click: () => void this.decide("reject") } }, "Reject");
    this.error = h("p", { class: "card-error", id: errId, role: "alert" });
    this.hint = h("span", { class: "hint", id: hintId }, "optional to approve, required to reject");
    this.note.addEventListener("input", () => {
      if (this.note.value.trim()) { this.note.removeAttribute("aria-invalid"); }
    });

    const input = preview(run?.inputJson ?? "", INPUT_PREVIEW_CHARS);
    const cut = input.cut || a.inputTruncated;
    const mine = run && me && run.submitter === me.owner;
    this.el = h("article", { class: "card", "aria-labelledby": titleId, "data-run": a.runId },
      h("header", { class: "card-head" },
        h("h3", { id: titleId },
          run ? `${run.agent} ${run.version} · ${run.capability}` : a.runId),
        h("span", { class: riskClass(a.risk) }, `${riskName(a.risk)} risk`),
        h("span", { class: "expiry" }, "Expires in ", this.countdownEl)),
      mine ? h("p", { class: "note warn" },
        "You submitted this run: another approver has to decide on it.") : null,
      h("div", { class: "card-body" },
        facts([
          ["Run", h("a", { href: `/runs/${encodeURIComponent(a.runId)}` }, a.runId)],
          ["Submitter", run?.submitter ?? "—"],
          ["Submitted", when(a.createTime)],
          ["Approvals", this.countEl],
          ["Network", run?.network ? "egress requested" : "none"],
          ["Secrets", run && run.secrets.length ? run.secrets.join(", ") : "none"],
          ["Limits", limits(run?.limits)],
          ["Action digest", h("code", { class: "digest", title: "SHA-256 of agent, version, image, "
            + "capability, input, limits, network and secret names: what you approve" },
            a.actionDigest ? `sha256:${a.actionDigest}` : "—")],
        ]),
        h("div", { class: "why" },
          h("h4", null, "Why this risk"),
          h("ul", { class: "reasons" },
            (a.riskReasons.length ? a.riskReasons : ["declared by the agent"]).map((r) => h("li", null, r)))),
        h("div", { class: "input" },
          h("h4", null, "Input", cut ? h("span", { class: "muted" }, " (preview, truncated)") : null),
          h("pre", { class: "code", tabindex: "0" }, input.text || "(empty)"))),
      this.decisionsEl,
      h("div", { class: "decide" },
        h("label", { for: noteId }, "Note ", this.hint),
        this.note,
        h("div", { class: "actions" }, this.approveBtn, this.rejectBtn),
        this.error));
    this.update(a);
    this.tick();
  }

  update(a: Approval): void {
    this.approval = a;
    setText(this.countEl, `${a.approvals} of ${a.required}`);
    replace(this.decisionsEl, a.decisions.map((d) =>
      h("li", null, `${d.approver} ${verdictName(d.verdict)}`, d.reason ? ` — “${d.reason}”` : "",
        h("span", { class: "muted" }, ` (${when(d.decideTime)})`))));
    const me = session.me();
    const decided = me && a.decisions.some((d) => d.approver === me.owner);
    if (decided && session.canDecide()) {
      this.approveBtn.disabled = true;
      this.rejectBtn.disabled = true;
      this.note.disabled = true;
      setText(this.hint, "you have decided; waiting for other approvers");
    }
  }

  get errorText(): string {
    return this.error.hidden ? "" : (this.error.textContent ?? "");
  }

  tick(): void {
    if (!this.expires) return;
    const text = countdown(this.expires);
    setText(this.countdownEl, text);
    const left = this.expires.getTime() - Date.now();
    this.countdownEl.classList.toggle("urgent", left < 60_000);
  }

  private async decide(verdict: "approve" | "reject"): Promise<void> {
    if (this.busy) return;
    const reason = this.note.value.trim();
    if (verdict === "reject" && !reason) {
      showError(this.error, "A reason is required to reject: write it in the note.");
      this.note.setAttribute("aria-invalid", "true");
      this.note.focus();
      return;
    }
    showError(this.error, null);
    this.busy = true;
    this.approveBtn.disabled = this.rejectBtn.disabled = true;
    this.el.setAttribute("aria-busy", "true");
    const runId = this.approval.runId;
    try {
      const res = verdict === "approve"
        // Bound to the digest shown: a run changed since is refused, not approved.
        ? await api.approve({ runId, reason, actionDigest: this.approval.actionDigest })
        : await api.reject({ runId, reason });
      const a = res.approval;
      if (a) {
        const what = verdict === "approve" ? "approved" : "rejected";
        const outcome = a.status === ApprovalStatus.PENDING
          ? `${a.approvals} of ${a.required} approvals; waiting for more.`
          : a.status === ApprovalStatus.APPROVED ? "The run is queued."
          : `The approval is ${statusName(a.status).toLowerCase()}.`;
        setText(this.feedback, `You ${what} ${runId}. ${outcome}`);
        this.onResult(a);
      }
    } catch (err) {
      if (handleAuthError(err)) return;
      showError(this.error, describe(err));
      this.approveBtn.disabled = this.rejectBtn.disabled = !session.canDecide();
    } finally {
      this.busy = false;
      this.el.removeAttribute("aria-busy");
    }
  }
}
