import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Risk, type Limits } from "./gen/airlock/v1/agent_pb";
import { RunState } from "./gen/airlock/v1/run_pb";
import { ApprovalStatus, Verdict } from "./gen/airlock/v1/approval_pb";
import { Role } from "./gen/airlock/v1/admin_service_pb";

const cap = (s: string) => s.charAt(0) + s.slice(1).toLowerCase().replaceAll("_", " ");

export const riskName = (r: Risk): string => (r ? cap(Risk[r].replace("RISK_", "")) : "—");
export const riskClass = (r: Risk): string => `risk risk-${(Risk[r] ?? "").replace("RISK_", "").toLowerCase()}`;
export const stateName = (s: RunState): string => (s ? RunState[s].replace("RUN_STATE_", "") : "—");
export const stateClass = (s: RunState): string => `state state-${stateName(s).toLowerCase()}`;
export const statusName = (s: ApprovalStatus): string =>
  s ? ApprovalStatus[s].replace("APPROVAL_STATUS_", "") : "—";
export const verdictName = (v: Verdict): string =>
  v === Verdict.APPROVE ? "approved" : v === Verdict.REJECT ? "rejected" : "—";
export const roleName = (r: Role): string => (r ? Role[r].replace("ROLE_", "").toLowerCase() : "none");

export const TERMINAL = new Set<RunState>([
  RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.OOM_KILLED,
  RunState.CANCELLED, RunState.REJECTED, RunState.EXPIRED,
]);

export function date(ts: Timestamp | undefined): Date | undefined {
  return ts && (ts.seconds !== 0n || ts.nanos !== 0) ? timestampDate(ts) : undefined;
}

export function when(ts: Timestamp | undefined): string {
  const d = date(ts);
  return d ? d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }) : "—";
}

export function duration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${m}m ${r}s` : `${m}m ${r}s`;
}

/** "4m 05s" until `target`, or "expired". */
export function countdown(target: Date, now = Date.now()): string {
  const left = Math.floor((target.getTime() - now) / 1000);
  if (left <= 0) return "expired";
  const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
  const ss = String(s).padStart(2, "0");
  return h ? `${h}h ${String(m).padStart(2, "0")}m ${ss}s` : `${m}m ${ss}s`;
}

export function ago(d: Date | undefined, now = Date.now()): string {
  if (!d) return "never";
  const s = Math.max(0, Math.round((now - d.getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

export function bytes(n: bigint | number): string {
  const v = Number(n);
  if (!v) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0, x = v;
  while (x >= 1024 && i < units.length - 1) { x /= 1024; i += 1; }
  return `${x.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function limits(l: Limits | undefined): string {
  if (!l) return "defaults";
  const parts: string[] = [];
  if (l.memoryMib) parts.push(`${l.memoryMib} MiB memory`);
  if (l.timeoutSeconds) parts.push(`${l.timeoutSeconds} s timeout`);
  if (l.cpus) parts.push(`${l.cpus} CPU`);
  if (l.pids) parts.push(`${l.pids} processes`);
  if (l.outputKib) parts.push(`${l.outputKib} KiB output`);
  if (l.logKib) parts.push(`${l.logKib} KiB logs`);
  return parts.length ? parts.join(", ") : "defaults";
}

/** Pretty JSON when it parses, else the text; at most `max` characters. */
export function preview(json: string, max: number): { text: string; cut: boolean } {
  let text = json;
  if (json.length <= max * 4) {
    try { text = JSON.stringify(JSON.parse(json), null, 2); } catch { /* show as is */ }
  }
  return text.length > max ? { text: text.slice(0, max), cut: true } : { text, cut: false };
}

/** The last `max` characters. */
export function tail(text: string, max: number): { text: string; cut: boolean } {
  return text.length > max ? { text: text.slice(text.length - max), cut: true } : { text, cut: false };
}
