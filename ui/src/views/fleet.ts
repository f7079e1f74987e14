import { admin as api, describe, handleAuthError } from "../api";
import { h, replace, table } from "../dom";
import { ago, date } from "../format";
import { type Executor, ExecutorState } from "../gen/airlock/v1/admin_service_pb";
import { errorBox, every, pageHeading, showError, statusLine, type View } from "../view";

const STATE: Record<ExecutorState, [string, string]> = {
  [ExecutorState.UNSPECIFIED]: ["unknown", "health bad"],
  [ExecutorState.ACTIVE]: ["active", "health ok"],
  [ExecutorState.LOST]: ["lost", "health bad"],
  [ExecutorState.STOPPED]: ["stopped", "health idle"],
};

/** Executors: runtime, slots in use, last heartbeat, state (refreshed every 5 s). */
export function fleetView(): View {
  const ctrl = new AbortController();
  const status = statusLine("Loading…");
  const err = errorBox();
  const body = h("div", { class: "table-wrap" });
  const el = h("div", { class: "page fleet" }, pageHeading("Fleet"), status, err, body);
  let last: Executor[] = [];
  const render = () => {
    replace(body, last.length ? table("Executors", ["Executor", "Host", "Runtime", "Slots in use", "Last heartbeat", "State"],
      last.map((x) => [
        x.id, x.host, x.runtime, `${x.slotsInUse} / ${x.slots}`, ago(date(x.heartbeatTime)),
        h("span", { class: STATE[x.state][1] }, STATE[x.state][0]),
      ])) : h("p", { class: "empty" }, "No executor has registered."));
  };
  const load = async () => {
    try {
      last = (await api.listExecutors({}, { signal: ctrl.signal })).executors;
      const count = (st: ExecutorState) => last.filter((x) => x.state === st).length;
      status.textContent = `${last.length} executor${last.length === 1 ? "" : "s"}: ${count(ExecutorState.ACTIVE)} active, `
        + `${count(ExecutorState.LOST)} lost, ${count(ExecutorState.STOPPED)} stopped`;
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
