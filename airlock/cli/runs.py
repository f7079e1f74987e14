"""``airlock runs``: submit, inspect, watch and cancel runs."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator

from airlock.cli._args import json_arg, positive_float, positive_int
from airlock.cli._client import ApiClient, call, connect
from airlock.cli._framework import EXIT_OK, EXIT_RUN_NOT_SUCCEEDED, Commands
from airlock.cli._output import (
    STATES,
    clip,
    digest_text,
    err,
    key_values,
    limits_text,
    print_json,
    print_table,
    risk_name,
    risk_text,
    state_name,
    to_dict,
    when,
)
from airlock.v1 import agent_pb2, run_pb2
from airlock.v1 import run_service_pb2 as rs


def _run_detail(r: run_pb2.Run) -> str:
    pairs: list[tuple[str, object]] = [
        ("id", r.id),
        ("agent", f"{r.agent} {r.version}"),
        ("capability", r.capability),
        ("state", state_name(r.state)),
        ("reason", r.reason or "-"),
        ("risk", risk_text(r.effective_risk, r.risk_reasons)),
        ("submitter", r.submitter),
        ("idempotency key", r.idempotency_key or "-"),
        ("network", "yes" if r.network else "no"),
        ("secrets", ", ".join(r.secrets) or "-"),
        ("limits", limits_text(r.limits)),
        ("attempt", r.attempt),
        ("created", when(r, "create_time")),
        ("started", when(r, "start_time")),
        ("finished", when(r, "finish_time")),
    ]
    if r.executor_id:
        pairs.append(("executor", r.executor_id))
    if r.finish_time.seconds:
        pairs += [("duration", f"{r.duration_seconds:.2f}s"),
                  ("exit code", r.exit_code),
                  ("peak memory", f"{r.peak_memory_bytes / 2**20:.1f} MiB"
                   if r.peak_memory_bytes else "-"),
                  ("cpu time", f"{r.cpu_seconds:.2f}s" if r.cpu_seconds else "-"),
                  ("output", f"{r.output_bytes} bytes" if r.output_bytes else "-"),
                  ("logs", f"{r.log_bytes} bytes" if r.log_bytes else "-")]
    if r.cancel_requested:
        pairs.append(("cancel", "requested"))
    pairs += [("action digest", digest_text(r.action_digest)),
              ("input sha256", r.input_sha256 or "-"),
              ("output sha256", r.output_sha256 or "-"),
              ("logs sha256", r.logs_sha256 or "-"),
              ("chain head", f"{r.chain_head or '-'} (position {r.chain_sequence})")]
    pairs.append(("input", clip(r.input_json, 200)))
    return key_values(pairs)


def _event_line(e: run_pb2.RunEvent) -> str:
    actor = f" [{e.actor}]" if e.actor else ""
    reason = f"  {e.reason}" if e.reason else ""
    return f"{e.sequence:>3}  {when(e, 'create_time')}  {state_name(e.state):<16}{actor}{reason}"


async def _watch(api: ApiClient, run_id: str, from_sequence: int, *, as_json: bool,
                 ) -> run_pb2.RunEvent | None:
    """Print events until the stream ends (after the terminal event); return the last one."""
    last = None
    stream: AsyncIterator[rs.WatchRunResponse] = api.runs.WatchRun(
        rs.WatchRunRequest(run_id=run_id, from_sequence=from_sequence), metadata=api.metadata)
    async for msg in stream:
        last = msg.event
        if as_json:
            print(json.dumps(to_dict(msg.event), ensure_ascii=False), flush=True)
        else:
            print(_event_line(msg.event), flush=True)
    return last


def print_result(res: rs.GetRunResultResponse, tail: int) -> None:
    r = res.run
    head = f"run {r.id}: {state_name(r.state)}"
    if r.reason and r.reason.lower() != state_name(r.state).lower():
        head += f" ({r.reason})"
    print(head)
    if res.output_json:
        try:
            print(json.dumps(json.loads(res.output_json), indent=2, ensure_ascii=False))
        except json.JSONDecodeError:
            print(res.output_json)
    if res.error_code or res.error_message:
        # "error: CODE: message" when the agent gave a code, else just "error: message".
        parts = [p for p in (res.error_code, res.error_message) if p]
        print("error: " + ": ".join(parts))
    if res.logs:
        lines = res.logs.splitlines()
        shown = lines[-tail:] if tail > 0 else lines
        cut = len(lines) - len(shown)
        note = f", last {len(shown)} of {len(lines)} lines" if cut else ""
        note += ", truncated by the executor" if res.logs_truncated else ""
        print(f"--- logs{note} ---")
        print("\n".join(shown))


async def cmd_runs_submit(ns: argparse.Namespace) -> int:
    limits = agent_pb2.Limits(memory_mib=ns.memory_mib or 0,
                              timeout_seconds=ns.timeout_seconds or 0)
    req = rs.SubmitRunRequest(
        agent=ns.agent, version=ns.version, capability=ns.capability,
        input_json=json_arg(ns.input, "--input"), idempotency_key=ns.idempotency_key,
        network=ns.network, secrets=ns.secret, limits=limits,
    )
    async with connect(ns) as api:
        resp = await call(api, api.runs.SubmitRun, req)
        r = resp.run
        if not ns.wait:
            if ns.json:
                print_json(resp)
            else:
                print(r.id)
                err(f"{state_name(r.state)}: {r.agent} {r.version} {r.capability}, risk "
                     f"{risk_text(r.effective_risk, r.risk_reasons)}"
                     + (" (existing run for this idempotency key)" if resp.deduplicated else ""))
            return EXIT_OK
        if not ns.json:
            err(f"{r.id}: {r.agent} {r.version} {r.capability}, risk "
                 f"{risk_text(r.effective_risk, r.risk_reasons)}"
                 + (" (existing run for this idempotency key)" if resp.deduplicated else ""))
            if r.state == run_pb2.RUN_STATE_PENDING_APPROVAL:
                err("waiting for approval (`airlock approvals approve " + r.id + "`)")
        if ns.json:
            await _drain(api, r.id)
        else:
            await _watch(api, r.id, 0, as_json=False)
        res = await call(api, api.runs.GetRunResult, rs.GetRunResultRequest(run_id=r.id))
    if ns.json:
        print_json(res)
    else:
        print_result(res, ns.tail)
    return EXIT_OK if res.run.state == run_pb2.RUN_STATE_SUCCEEDED else EXIT_RUN_NOT_SUCCEEDED


async def _drain(api: ApiClient, run_id: str) -> None:
    stream = api.runs.WatchRun(rs.WatchRunRequest(run_id=run_id), metadata=api.metadata)
    async for _ in stream:
        pass


async def cmd_runs_get(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.runs.GetRun, rs.GetRunRequest(run_id=ns.run_id))
    if ns.json:
        print_json(resp)
    else:
        print(_run_detail(resp.run))
    return EXIT_OK


async def cmd_runs_list(ns: argparse.Namespace) -> int:
    states = [getattr(run_pb2, f"RUN_STATE_{s}") for s in ns.state]
    runs: list[run_pb2.Run] = []
    async with connect(ns) as api:
        token = ""
        while len(runs) < ns.limit:
            resp = await call(api, api.runs.ListRuns, rs.ListRunsRequest(
                page_size=min(ns.limit - len(runs), 100), page_token=token, agent=ns.agent,
                states=states, submitter=ns.submitter))
            runs.extend(resp.runs)
            token = resp.next_page_token
            if not token:
                break
    runs = runs[: ns.limit]
    if ns.json:
        print_json({"runs": [to_dict(r) for r in runs]})
        return EXIT_OK
    rows = [(r.id, r.agent, r.version, r.capability, state_name(r.state),
             risk_name(r.effective_risk), r.submitter, when(r, "create_time")) for r in runs]
    print_table(("ID", "AGENT", "VERSION", "CAPABILITY", "STATE", "RISK", "SUBMITTER", "CREATED"),
                rows, "no runs")
    return EXIT_OK


async def cmd_runs_watch(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        await _watch(api, ns.run_id, ns.from_sequence, as_json=ns.json)
    return EXIT_OK


async def cmd_runs_cancel(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.runs.CancelRun,
                          rs.CancelRunRequest(run_id=ns.run_id, reason=ns.reason))
    r = resp.run
    if ns.json:
        print_json(resp)
    elif r.cancel_requested and r.state == run_pb2.RUN_STATE_RUNNING:
        print(f"{r.id}: cancel requested; the executor stops the sandbox")
    else:
        print(f"{r.id}: {state_name(r.state)}")
    return EXIT_OK


async def cmd_runs_result(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        res = await call(api, api.runs.GetRunResult, rs.GetRunResultRequest(run_id=ns.run_id))
    if ns.json:
        print_json(res)
    else:
        print_result(res, ns.tail)
    return EXIT_OK


def _state(text: str) -> str:
    name = text.upper().removeprefix("RUN_STATE_")
    if name not in STATES:
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; one of {', '.join(STATES)}")
    return name


def register(cli: Commands) -> None:
    runs = cli.group("runs", help="submit, inspect, watch and cancel runs")
    p = runs.add(
        "submit", cmd_runs_submit, remote=True, help="submit a run of an agent capability",
        description=(
            "Submit a run. Prints the run id on stdout (details on stderr). Asking for network\n"
            "egress, secrets or limits above the version's defaults raises the run's risk,\n"
            "which may require approval. With --wait, follows the run to its end and prints the\n"
            "result; the exit status is then 0 if it SUCCEEDED and 4 otherwise."
        ))
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("capability", metavar="CAPABILITY")
    p.add_argument("--input", required=True, metavar="JSON|@FILE",
                   help="the capability's input: JSON text, @file, or @- for stdin")
    p.add_argument("--version", default="", help="agent version (default: latest not deprecated)")
    p.add_argument("--idempotency-key", default="", metavar="KEY",
                   help="resubmitting with the same key returns the same run")
    p.add_argument("--network", action="store_true", help="ask for network egress (risk >= high)")
    p.add_argument("--secret", action="append", default=[], metavar="NAME",
                   help="name of a secret the run needs (repeatable); values stay with executors")
    p.add_argument("--memory-mib", type=positive_int, metavar="MIB",
                   help="memory limit (default: the version's)")
    p.add_argument("--timeout-seconds", type=positive_float, metavar="SECONDS",
                   help="wall-clock limit (default: the version's)")
    p.add_argument("--wait", action="store_true", help="watch until the run ends, print its result")
    p.add_argument("--tail", type=int, default=50, metavar="N",
                   help="with --wait: log lines to show (0: all; default 50)")

    p = runs.add("get", cmd_runs_get, remote=True, help="show one run")
    p.add_argument("run_id", metavar="RUN_ID")

    p = runs.add("list", cmd_runs_list, remote=True, help="list runs, newest first")
    p.add_argument("--agent", default="", help="only runs of this agent")
    p.add_argument("--state", action="append", default=[], type=_state, metavar="STATE",
                   help=f"only runs in this state (repeatable): {', '.join(STATES)}")
    p.add_argument("--submitter", default="", help="only runs submitted by this key owner")
    p.add_argument("--limit", type=positive_int, default=50, help="at most this many (default 50)")

    p = runs.add("watch", cmd_runs_watch, remote=True,
                 help="stream a run's events until it ends",
                 description="Stream a run's state changes until its terminal event. "
                             "With --json, one JSON object per line.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--from", dest="from_sequence", type=int, default=0, metavar="N",
                   help="first event sequence to show (default: from the beginning)")

    p = runs.add("cancel", cmd_runs_cancel, remote=True, help="cancel a run",
                 description="Cancel a run. A RUNNING run is stopped by its executor "
                             "shortly after.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--reason", default="", help="why (recorded in the run's history)")

    p = runs.add("result", cmd_runs_result, remote=True,
                 help="print a run's output (or error) and the tail of its logs")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--tail", type=int, default=50, metavar="N",
                   help="log lines to show (0: all; default 50)")
