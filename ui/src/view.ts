import { h } from "./dom";

export interface View {
  title: string;
  el: HTMLElement;
  dispose(): void;
}

/** Calls `fn` every second until the returned function is called (one timer per view). */
export function every(ms: number, fn: () => void): () => void {
  const id = window.setInterval(fn, ms);
  return () => window.clearInterval(id);
}

/** A section with a heading; `level` 2 by default. */
export function section(title: string, ...children: (Node | null)[]): HTMLElement {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), children);
}

export function pageHeading(text: string): HTMLHeadingElement {
  return h("h1", { tabindex: "-1", class: "page-title" }, text);
}

/** A status line with reserved height (no layout jump when its text changes). */
export function statusLine(initial = ""): HTMLParagraphElement {
  return h("p", { class: "status-line", role: "status", "aria-live": "polite" }, initial);
}

export function errorBox(): HTMLParagraphElement {
  return h("p", { class: "error-box", role: "alert", hidden: true });
}

export function showError(el: HTMLElement, message: string | null): void {
  el.textContent = message ?? "";
  el.hidden = !message;
}

/** Retries a long-lived call with capped exponential backoff until `signal` aborts. */
export async function backoffLoop(
  signal: AbortSignal,
  attempt: () => Promise<"again" | "stop">,
  onRetry: (err: unknown, seconds: number) => boolean,
): Promise<void> {
  let delay = 1;
  while (!signal.aborted) {
    try {
      if ((await attempt()) === "stop") return;
      delay = 1;
    } catch (err) {
      if (signal.aborted) return;
      if (!onRetry(err, delay)) return;
      await sleep(delay * 1000, signal);
      delay = Math.min(delay * 2, 15);
    }
  }
}

export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = window.setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { window.clearTimeout(t); resolve(); }, { once: true });
  });
}
