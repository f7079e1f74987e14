// Tiny DOM helpers. Text is only ever inserted as text nodes (textContent); attributes only
// through setAttribute with names that cannot carry script. Nothing here parses HTML.

export type Child = Node | string | number | null | undefined | false | Child[];
type AttrValue = string | number | boolean | null | undefined;
export type Props = {
  [name: string]: AttrValue | ((e: Event) => void) | Record<string, (e: Event) => void> | undefined;
  on?: Record<string, (e: Event) => void>;
};

const FORBIDDEN_ATTR = /^(on|srcdoc$|style$)/i;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props?: Props | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props) {
    for (const [name, value] of Object.entries(props)) {
      if (name === "on") {
        for (const [ev, fn] of Object.entries(value as Record<string, (e: Event) => void>)) {
          el.addEventListener(ev, fn);
        }
        continue;
      }
      if (FORBIDDEN_ATTR.test(name)) throw new Error(`attribute ${name} is not allowed`);
      if (value === false || value === null || value === undefined) continue;
      if (name === "href" && typeof value === "string" && !value.startsWith("/")) {
        throw new Error("only same-origin links are built");
      }
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(parent: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(parent, c);
    else if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(String(c)));
  }
}

/** Replace the children of `el` (text is text). */
export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

let ids = 0;
export function uid(prefix: string): string {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A <dl> of label/value pairs. */
export function facts(rows: [string, Child][], cls = "facts"): HTMLDListElement {
  return h("dl", { class: cls }, rows.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

export function table(caption: string, headers: string[], rows: Child[][], cls = ""):
  HTMLTableElement {
  return h(
    "table",
    { class: `grid ${cls}` },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", null, h("tr", null, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", null, rows.map((r) => h("tr", null, r.map((c) => h("td", null, c))))),
  );
}
