// A workflow's steps as a graph: laid out by dagre (layered, left to right), drawn as SVG.
// Text goes in through textContent only; nothing here parses markup.
import dagre from "@dagrejs/dagre";
import { limits, riskClass, riskName } from "../format";
import type { WorkflowStep } from "../gen/airlock/v1/workflow_pb";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 200;
const NODE_H = 72;

function s<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>,
  ...children: (SVGElement | string)[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(typeof c === "string" ? document.createTextNode(c) : c);
  return el;
}

/** "state-succeeded" etc.: the runs' colours; waiting and skipped steps have their own. */
export function stepStateClass(state: string): string {
  return `state-${state.toLowerCase()}`;
}

/** The SVG of `steps` (each node names the step, what it runs, its risk and limits, its state). */
export function workflowGraph(steps: WorkflowStep[]): SVGSVGElement {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 56, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const st of steps) g.setNode(st.name, { width: NODE_W, height: NODE_H });
  for (const st of steps) for (const d of st.dependsOn) g.setEdge(d, st.name);
  dagre.layout(g);
  const { width = 0, height = 0 } = g.graph();
  const svg = s("svg", { class: "wf-graph", role: "img", width, height,
    viewBox: `0 0 ${width} ${height}`, "aria-label": `Workflow graph of ${steps.length} steps` });
  svg.append(s("defs", {}, s("marker", { id: "wf-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
  s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "wf-arrow" }))));
  for (const e of g.edges()) {
    const pts = g.edge(e).points ?? [];
    const d = pts.map((p: { x: number; y: number }, i: number) => `${i ? "L" : "M"} ${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join(" ");
    svg.append(s("path", { d, class: "wf-edge", "marker-end": "url(#wf-arrow)" }));
  }
  for (const st of steps) {
    const n = g.node(st.name);
    const x = n.x - NODE_W / 2;
    const y = n.y - NODE_H / 2;
    const what = st.gate ? "gate: people approve" : `${st.agent} ${st.version} · ${st.capability}`;
    const risk = st.gate ? "" : `${riskName(st.effectiveRisk)} · ${limits(st.limits)}`;
    const node = s("g", { class: `wf-node ${stepStateClass(st.state)}`, "data-step": st.name,
      "data-state": st.state, transform: `translate(${x.toFixed(1)},${y.toFixed(1)})` },
    s("title", {}, `${st.name}: ${st.state}${st.reason ? ` — ${st.reason}` : ""}`),
    s("rect", { width: NODE_W, height: NODE_H, rx: 8, class: "wf-box" }),
    s("text", { x: 10, y: 18, class: "wf-name" }, st.name),
    s("text", { x: NODE_W - 10, y: 18, class: "wf-state", "text-anchor": "end" }, st.state),
    s("text", { x: 10, y: 38, class: "wf-what" }, clip(what, 30)),
    s("text", { x: 10, y: 58, class: `wf-risk ${st.gate ? "" : riskClass(st.effectiveRisk)}` },
      clip(risk, 32)));
    svg.append(node);
  }
  return svg;
}

function clip(text: string, n: number): string {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}
