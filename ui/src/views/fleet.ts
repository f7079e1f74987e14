import { admin as api, describe, handleAuthError } from "../api";
import { h, replace, table } from "../dom";
import { ago, date } from "../format";
import type { Executor } from "../gen/airlock/v1/admin_service_pb";
import { errorBox, every, pageHeading, showError, statusLine, type View } from "../view";

/** Executors: runtime, slots in use, last heartbeat, health (refreshed every 5 s). */
export function fleetView(): View {
  const ctrl = new AbortController();
  const status = statusLine("Loading…");
  const err = errorBox();
  const body = h("div", { class: "table-wrap" });
  const el = h("div", { class: "page fleet" }, pageHeading("Fleet"), status, err, body);
  let last: Executor[] = [];
  const render = () => {
    replace(body, last.length ? table("Executors", ["Executor", "Host", "Runtime", "Slots in use", "Last heartbeat", "Health"],
      last.map((x) => [
        x.id, x.host, x.runtime, `${x.slotsInUse} / ${x.slots}`, ago(date(x.heartbeatTime)),
        h("span", { class: x.healthy ? "health ok" : "health bad" }, x.healthy ? "healthy" : "unhealthy"),
      ])) : h("p", { class: "empty" }, "No executor has registered."));
  };
  const load = async () => {
    try {
      last = (await api.listExecutors({}, { signal: ctrl.signal })).executors;
      const healthy = last.filter((x) => x.healthy).length;
      status.textContent = `${last.length} executor${last.length === 1 ? "" : "s"}, ${healthy} healthy`;
      showError(err, null);
      render();
    } catch (e) {
      if (ctrl.signal.aborted || handleAuthError(e)) return;
      showError(err, describe(e));
    }
  };
  void load();
  const stopPoll = every(5000, () => void load());
  const stopTick = every(1000, () => { if (last.length) render(); });
  return { title: "Fleet", el, dispose: () => { ctrl.abort(); stopPoll(); stopTick(); } };
}
