import {
  BarController, BarElement, CategoryScale, Chart, type ChartConfiguration, type ChartDataset, Legend,
  LinearScale, Tooltip,
} from "chart.js";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, handleAuthError, usage } from "../api";
import { h, replace, table } from "../dom";
import { bytes, date, duration, stateName } from "../format";
import { RunState } from "../gen/airlock/v1/run_pb";
import type { GetAnalyticsResponse, GetUsageResponse, OwnerUsage } from "../gen/airlock/v1/usage_service_pb";
import { errorBox, every, pageHeading, section, showError, statusLine, type View } from "../view";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

const RANGES: [string, number][] = [["Last hour", 3600], ["Last 24 hours", 86400], ["Last 7 days", 7 * 86400]];
const REFRESH_MS = 3000;
// One colour per state, the same in every chart (outcomes first, then runs not yet ended).
const STATE_COLOURS: [RunState, string][] = [
  [RunState.SUCCEEDED, "#2da44e"], [RunState.FAILED, "#cf222e"], [RunState.TIMED_OUT, "#bc4c00"],
  [RunState.OOM_KILLED, "#8250df"], [RunState.CANCELLED, "#6e7781"], [RunState.REJECTED, "#953800"],
  [RunState.EXPIRED, "#a0a8b0"], [RunState.RUNNING, "#0969da"], [RunState.QUEUED, "#54aeff"],
  [RunState.PENDING_APPROVAL, "#d4a72c"],
];
const SERIES_COLOURS = ["#1f4e79", "#54aeff", "#d4a72c", "#cf222e"];

/** A chart in a figure whose `data-chart` holds what it draws, as JSON (for tests and
 * assistive tech the same numbers are in the table below each chart). */
function chartBox(name: string, label: string): { fig: HTMLElement; canvas: HTMLCanvasElement; detail: HTMLElement } {
  const canvas = h("canvas", { role: "img", "aria-label": label });
  const detail = h("div", { class: "chart-detail" });
  const fig = h("figure", { class: "chart", "data-chart-name": name },
    h("div", { class: "chart-canvas" }, canvas), detail);
  return { fig, canvas, detail };
}

/** Creates the chart on first data, then updates it in place (no re-animation from zero). */
class LiveChart {
  private chart: Chart<"bar"> | null = null;
  constructor(private readonly canvas: HTMLCanvasElement, private readonly fig: HTMLElement,
    private readonly options: ChartConfiguration<"bar">["options"]) {}

  show(labels: string[], datasets: ChartDataset<"bar">[], summary: unknown): void {
    this.fig.dataset.chart = JSON.stringify(summary);
    if (!this.chart) {
      this.chart = new Chart(this.canvas, { type: "bar", data: { labels, datasets }, options: this.options });
      return;
    }
    this.chart.data.labels = labels;
    this.chart.data.datasets = datasets;
    this.chart.update();
  }

  destroy(): void {
    this.chart?.destroy();
  }
}

const base = (stacked: boolean, axis: "x" | "y" = "x", unit = ""): ChartConfiguration<"bar">["options"] => ({
  responsive: true, maintainAspectRatio: false, indexAxis: axis, animation: { duration: 250 },
  plugins: { legend: { position: "bottom" } },
  scales: {
    x: { stacked, title: { display: axis === "y" && !!unit, text: unit } },
    y: { stacked, beginAtZero: true, title: { display: axis === "x" && !!unit, text: unit } },
  },
});

function bucketLabel(d: Date, bucketSeconds: number): string {
  return bucketSeconds >= 86400
    ? d.toLocaleDateString(undefined, { month: "short", day: "numeric" })
    : d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

const pct = (used: number, quota: number | undefined): number | null =>
  quota === undefined ? null : quota === 0 ? 100 : Math.round((1000 * used) / quota) / 10;

function quotaText(used: number | bigint, quota: number | bigint | undefined, fmt = (v: number) => String(v)): string {
  return quota === undefined ? `${fmt(Number(used))} (no quota)` : `${fmt(Number(used))} / ${fmt(Number(quota))}`;
}

/** Overview for admins and viewers: runs over time by outcome, duration percentiles per agent,
 * usage by owner against quota, the busiest agents; refreshed every few seconds. */
export function overviewView(): View {
  const ctrl = new AbortController();
  const status = statusLine("Loading…");
  const err = errorBox();
  let range = RANGES[1][1];
  const picker = h("select", { id: "overview-range", "aria-label": "Time range" },
    RANGES.map(([text, secs]) => h("option", { value: String(secs), selected: secs === range }, text)));
  picker.addEventListener("change", () => { range = Number(picker.value); void load(); });
  const totals = h("dl", { class: "facts overview-totals" });

  const timeline = chartBox("timeline", "Runs submitted over time, stacked by state");
  const perAgent = chartBox("durations", "Duration percentiles per agent");
  const owners = chartBox("owners", "Usage by owner as a share of each quota");
  const busiest = chartBox("busiest", "Busiest agents by runs");
  const charts = {
    timeline: new LiveChart(timeline.canvas, timeline.fig, base(true)),
    perAgent: new LiveChart(perAgent.canvas, perAgent.fig, base(false, "x", "seconds")),
    owners: new LiveChart(owners.canvas, owners.fig, base(false, "y", "% of quota")),
    busiest: new LiveChart(busiest.canvas, busiest.fig, base(false, "y", "runs")),
  };

  const el = h("div", { class: "page overview" },
    h("div", { class: "title-row" }, pageHeading("Overview"), h("label", { class: "range" }, "Range ", picker)),
    status, err, totals,
    h("div", { class: "chart-grid" },
      section("Runs over time by outcome", timeline.fig),
      section("Duration percentiles per agent", perAgent.fig),
      section("Usage by owner against quota", owners.fig),
      section("Busiest agents", busiest.fig)));

  const showAnalytics = (a: GetAnalyticsResponse) => {
    const count = (s: RunState) => Number(a.byState.find((x) => x.state === s)?.runs ?? 0n);
    replace(totals,
      h("dt", null, "Runs"), h("dd", { "data-total": String(a.totalRuns) }, String(a.totalRuns)),
      h("dt", null, "Succeeded"), h("dd", null, String(count(RunState.SUCCEEDED))),
      h("dt", null, "Failed"), h("dd", null, String(count(RunState.FAILED) + count(RunState.TIMED_OUT)
        + count(RunState.OOM_KILLED))),
      h("dt", null, "In flight"), h("dd", null, String(count(RunState.QUEUED) + count(RunState.RUNNING)
        + count(RunState.PENDING_APPROVAL))),
      h("dt", null, "p95 duration"), h("dd", null, a.duration?.p95 !== undefined ? duration(a.duration.p95) : "—"),
      h("dt", null, "p95 queue wait"), h("dd", null, a.queueWait?.p95 !== undefined ? duration(a.queueWait.p95) : "—"));

    // Runs over time: one stacked bar per bucket, one dataset per state present.
    const starts = [...new Set(a.series.map((p) => Number(p.startTime?.seconds ?? 0n)))].sort((x, y) => x - y);
    const present = STATE_COLOURS.filter(([s]) => a.series.some((p) => p.state === s));
    const byState: Record<string, number> = {};
    charts.timeline.show(
      starts.map((s) => bucketLabel(new Date(s * 1000), a.bucketSeconds)),
      present.map(([s, colour]) => {
        const data = starts.map((t) => Number(a.series.find((p) => p.state === s
          && Number(p.startTime?.seconds ?? 0n) === t)?.runs ?? 0n));
        byState[stateName(s)] = data.reduce((x, y) => x + y, 0);
        return { label: stateName(s), data, backgroundColor: colour };
      }),
      byState);
    replace(timeline.detail, a.series.length ? null : h("p", { class: "empty" }, "No runs in this range."));

    const agents = a.byAgent.slice(0, 12);
    const pcts: ["p50" | "p90" | "p99", string][] = [["p50", "p50"], ["p90", "p90"], ["p99", "p99"]];
    charts.perAgent.show(agents.map((g) => g.key), pcts.map(([k, label], i) => ({
      label, backgroundColor: SERIES_COLOURS[i],
      data: agents.map((g) => g.duration?.[k] ?? 0),
    })), Object.fromEntries(agents.map((g) => [g.key, g.duration?.p50 ?? null])));
    replace(perAgent.detail, table("Duration per agent", ["Agent", "Runs", "p50", "p90", "p99", "CPU", "Peak memory (max)"],
      agents.map((g) => [g.key, String(g.runs),
        ...(["p50", "p90", "p99"] as const).map((k) => (g.duration?.[k] !== undefined ? duration(g.duration[k]) : "—")),
        `${g.cpuSeconds.toFixed(1)} s`, bytes(g.peakMemoryMaxBytes)])));

    const busy = a.byAgent.slice(0, 10);
    charts.busiest.show(busy.map((g) => g.key), [
      { label: "runs", data: busy.map((g) => Number(g.runs)), backgroundColor: SERIES_COLOURS[0] },
      { label: "CPU-seconds", data: busy.map((g) => Math.round(g.cpuSeconds * 10) / 10), backgroundColor: SERIES_COLOURS[1] },
    ], Object.fromEntries(busy.map((g) => [g.key, Number(g.runs)])));
  };

  const showUsage = (u: GetUsageResponse) => {
    const rows = u.owners;
    const share = (o: OwnerUsage): [number | null, number | null, number | null] => [
      pct(Number(o.runsInFlight), o.quota?.runsInFlight !== undefined ? Number(o.quota.runsInFlight) : undefined),
      pct(Number(o.runsToday), o.quota?.runsPerDay !== undefined ? Number(o.quota.runsPerDay) : undefined),
      pct(o.cpuSecondsToday, o.quota?.cpuSecondsPerDay),
    ];
    const labels = ["runs in flight", "runs today", "CPU-seconds today"];
    charts.owners.show(rows.map((o) => o.owner), labels.map((label, i) => ({
      label, backgroundColor: SERIES_COLOURS[i], data: rows.map((o) => share(o)[i] ?? 0),
    })), Object.fromEntries(rows.map((o) => [o.owner, { inFlight: Number(o.runsInFlight), today: Number(o.runsToday) }])));
    replace(owners.detail, rows.length
      ? table("Usage by owner", ["Owner", "In flight", "Runs today", "CPU-seconds today"], rows.map((o) => [
        o.owner, quotaText(o.runsInFlight, o.quota?.runsInFlight),
        quotaText(o.runsToday, o.quota?.runsPerDay),
        quotaText(o.cpuSecondsToday, o.quota?.cpuSecondsPerDay, (v) => v.toFixed(1))]))
      : h("p", { class: "empty" }, "No owner used anything today."));
  };

  let inFlight = false;
  const load = async () => {
    if (inFlight) return;
    inFlight = true;
    try {
      const end = new Date();
      const [a, u] = await Promise.all([
        usage.getAnalytics({ startTime: timestampFromDate(new Date(end.getTime() - range * 1000)),
          endTime: timestampFromDate(end) }, { signal: ctrl.signal }),
        usage.getUsage({}, { signal: ctrl.signal }),
      ]);
      showAnalytics(a);
      showUsage(u);
      el.dataset.updated = String(Date.now());
      status.textContent = `Updated ${end.toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s · `
        + `day (UTC) ends ${date(u.dayEndTime)?.toLocaleString() ?? "—"}`;
      showError(err, null);
    } catch (e) {
      if (ctrl.signal.aborted || handleAuthError(e)) return;
      showError(err, describe(e));
    } finally {
      inFlight = false;
    }
  };
  void load();
  const stop = every(REFRESH_MS, () => void load());
  return {
    title: "Overview", el,
    dispose: () => { ctrl.abort(); stop(); for (const c of Object.values(charts)) c.destroy(); },
  };
}
