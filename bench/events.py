"""Events benchmark: state-change commit to NATS subscriber, and backlog drain after an outage.

Real parts: a fresh PostgreSQL database, the shared NATS JetStream server, and the relay in
its own process (``airlock relay``) as deployed. This process changes run states
through the real services (submit a low-risk run, cancel it: two events per run); a child
process subscribes to the stream. Latency is from the moment the state-changing call returned
(its transaction committed) to the subscriber's receipt (wall clocks of one host). Also shown:
from the row's own timestamp, taken before its transaction began (an upper bound).

The same steady load is measured twice: with nothing else running (idle), and under run load:
an executor process (podman runtime) on the same machine with every slot busy with real
sandboxes (the misbehave fixture's ``ok`` capability, submitted back to back), so sandbox
starts, the executor's own state changes and the relay share the CPUs, as in a small
deployment. Under run load the executor's events (RUNNING, SUCCEEDED) are measured too, from
their row timestamps.

The baseline, measured in the same run against the same server: a bare JetStream publish
(awaiting the ack) to a stream of its own, to a subscriber in this process, at the same rate;
and the same with many publishes in flight, for throughput.

    python bench/events.py                 # 200 events/s for 10 s; a 5,000-event backlog
    python bench/events.py --quick         # 2 s; a 1,000-event backlog (smoke)
    python bench/events.py --load-slots 0  # no run-load phase (no podman needed)

Targets: commit-to-subscriber p99 <= 50 ms under steady load (idle); backlog drain >= 1,000
events/s. Under run load the figures are reported, not judged. Prints tables, then one JSON
line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, emit_json, fresh_pg_database, log, percentile, print_table

NATS_URL = os.environ.get("AIRLOCK_BENCH_NATS", os.environ.get("AIRLOCK_TEST_NATS",
                                                               "nats://127.0.0.1:4222"))
P99_TARGET_MS = 50.0
DRAIN_TARGET = 1000.0
AGENT = "bench-events"
MANIFEST = f"""
name: {AGENT}
version: 1.0.0
description: events benchmark agent
image: localhost/airlock/echo:1
risk: low
capabilities:
  - name: echo
    input_schema: {{type: object}}
    output_schema: {{type: object}}
"""


class Receiver:
    """The subscriber, in a child process of its own (so the load generator's event loop
    cannot delay its clock): records, per message id, the wall-clock arrival time and the
    latency from the source timestamp the message carries (``create_time`` of an event: set
    just before the state change's transaction commits; ``t`` of a baseline message: just
    before it was published). Events' latencies are therefore, if anything, overstated."""

    def __init__(self) -> None:
        self.got: dict[str, tuple[float, float]] = {}  # id -> (arrival wall time, latency ms)
        self.duplicates = 0

    async def cb(self, msg: Any) -> None:
        now = time.time()
        mid = (msg.headers or {}).get("Nats-Msg-Id", "")
        if mid in self.got:
            self.duplicates += 1
            return
        doc = json.loads(msg.data)
        if "t" in doc:
            source = float(doc["t"])
        else:
            source = datetime.fromisoformat(doc["create_time"]).timestamp()
        self.got[mid] = (now, (now - source) * 1000)


async def receive(url: str, subscriptions: list[list[str]]) -> None:
    """Child body: subscribe (ordered consumers), announce, then print one line per message
    (``<id> <arrival wall time> <latency ms>``) until stdin closes."""
    import nats

    from bench._common import announce, wait_stdin_closed

    rec = Receiver()
    nc = await nats.connect(url)
    js = nc.jetstream()
    for subject, stream in subscriptions:
        await js.subscribe(subject, stream=stream, cb=rec.cb, ordered_consumer=True)
    announce({"pid": os.getpid()})
    done = asyncio.Event()

    async def report() -> None:
        sent = 0
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)
            items = list(rec.got.items())[sent:]
            sent += len(items)
            sys.stdout.write("".join(f"{k} {t:.6f} {ms:.4f}\n" for k, (t, ms) in items))
            sys.stdout.flush()

    reporter = asyncio.create_task(report())
    await wait_stdin_closed()
    done.set()
    await reporter
    print(f"duplicates {rec.duplicates}", flush=True)
    await nc.close()


class Arrivals:
    """The parent's view of the receiver child (a thread reads its lines)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        import threading

        self.proc = proc
        self.got: dict[str, tuple[float, float]] = {}
        self.duplicates = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 3:
                self.got[parts[0]] = (float(parts[1]), float(parts[2]))
            elif len(parts) == 2 and parts[0] == "duplicates":
                self.duplicates = int(parts[1])

    async def wait_for(self, ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not ids.issubset(self.got.keys()):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def latencies_ms(self, ids: set[str]) -> list[float]:
        return [self.got[i][1] for i in ids if i in self.got]

    def close(self) -> None:
        self._thread.join(10)


# --- the relay process ------------------------------------------------------------------------


@contextlib.contextmanager
def executor_process(db_url: str, slots: int, tag: str) -> Iterator[subprocess.Popen[bytes]]:
    """An executor with the podman runtime in its own process, as deployed."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "AIRLOCK_DATABASE_URL": db_url,
           "AIRLOCK_RUNTIME": "podman", "AIRLOCK_SLOTS": str(slots),
           "AIRLOCK_EXECUTOR_ID": f"bench-events-{tag}", "AIRLOCK_HEARTBEAT_SECONDS": "1",
           "AIRLOCK_POLL_SECONDS": "0.5", "AIRLOCK_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "airlock.cli", "executor"], cwd=REPO, env=env,
                            stdout=sys.stderr, stderr=sys.stderr)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class RunLoad:
    """Keeps ``2 * slots`` sandbox runs submitted (so every executor slot stays busy) until
    stopped; counts the runs that finished while it was measuring."""

    def __init__(self, runs: Any, who: Any, slots: int) -> None:
        self.runs, self.who, self.slots = runs, who, slots
        self.outstanding: set[str] = set()
        self.finished: dict[str, str] = {}  # run id -> terminal state
        self.stop = asyncio.Event()
        self.errors = 0

    async def loop(self) -> None:
        from server.services.runs import SubmitRequest

        req = SubmitRequest(agent="misbehave", capability="ok", input_json="{}")
        while not self.stop.is_set():
            try:
                while len(self.outstanding) < 2 * self.slots:
                    self.outstanding.add((await self.runs.submit(self.who, req))[0].id)
                for run_id in list(self.outstanding):
                    run = await self.runs.get(self.who, run_id)
                    if run.state.terminal:
                        self.outstanding.discard(run_id)
                        self.finished[run_id] = run.state.value
            except Exception as e:
                self.errors += 1
                log(f"run load: {type(e).__name__}: {e}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.2)

    async def wait_finished(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.finished) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"run load: {len(self.finished)} of {n} sandbox runs "
                                   f"finished in {timeout:.0f} s; is the executor running?")
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def relay_process(db_url: str, stream: str, prefix: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AIRLOCK_DATABASE_URL": db_url,
           "AIRLOCK_NATS_URL": NATS_URL, "AIRLOCK_NATS_STREAM": stream,
           "AIRLOCK_NATS_SUBJECT_PREFIX": prefix, "AIRLOCK_NATS_STREAM_STORAGE": "file",
           "AIRLOCK_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "airlock.cli", "relay"], cwd=REPO, env=env,
                            stdout=sys.stderr, stderr=sys.stderr)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_stream(js: Any, stream: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await js.stream_info(stream)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# --- measurements -----------------------------------------------------------------------------


async def pace(n: int, rate: float, fn: Any) -> float:
    """Start ``fn(i)`` for i < n at ``rate`` per second (open loop); -> achieved start rate."""
    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fn(i)))
    await asyncio.gather(*tasks)
    return n / max(time.perf_counter() - t0, 1e-9)


async def baseline(js: Any, arrivals: Arrivals, subject: str, *, rate: float, seconds: float,
                   burst: int) -> dict[str, Any]:
    """Bare JetStream publish (ack awaited) -> the subscriber: paced latency, then throughput
    with 256 publishes in flight."""
    tag = uuid.uuid4().hex[:6]

    async def one(i: int) -> None:
        await js.publish(f"{subject}.x", json.dumps({"t": time.time()}).encode(),
                         headers={"Nats-Msg-Id": f"{tag}p{i}"})

    n = int(rate * seconds)
    await pace(n, rate, one)
    paced = {f"{tag}p{i}" for i in range(n)}
    await arrivals.wait_for(paced, 30)
    lat = arrivals.latencies_ms(paced)

    sem = asyncio.Semaphore(256)

    async def fire(i: int) -> None:
        async with sem:
            await js.publish(f"{subject}.y", json.dumps({"t": time.time()}).encode(),
                             headers={"Nats-Msg-Id": f"{tag}b{i}"})

    t1 = time.time()
    await asyncio.gather(*(fire(i) for i in range(burst)))
    ids = {f"{tag}b{i}" for i in range(burst)}
    await arrivals.wait_for(ids, 60)
    last = max((arrivals.got[i][0] for i in ids if i in arrivals.got), default=time.time())
    return {"n": len(lat), "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99), "max_ms": max(lat, default=float("nan")),
            "throughput": burst / max(last - t1, 1e-9)}


async def steady(runs: Any, who: Any, arrivals: Arrivals, *, rate: float, seconds: float,
                 workers: int = 2) -> dict[str, Any]:
    """State changes at ``rate`` per second through the services, by a few paced workers
    (each: submit a run, QUEUED; cancel it, CANCELLED; ...). Few workers, so that no state
    change waits behind the generator's own backlog between its timestamp and its commit."""
    from server.services.runs import CancelRequest, SubmitRequest

    committed: dict[str, float] = {}  # id -> wall time the committing call returned
    errors = 0
    req = SubmitRequest(agent=AGENT, capability="echo", input_json="{}")
    interval = workers / rate
    n = int(rate * seconds / workers)  # state changes per worker
    t0 = time.perf_counter()

    async def worker(w: int) -> None:
        nonlocal errors
        run_id = ""
        for i in range(n):
            delay = t0 + (w / workers + i) * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                if not run_id:
                    run_id = (await runs.submit(who, req))[0].id
                    committed[f"{run_id}.1"] = time.time()
                else:
                    await runs.cancel(who, CancelRequest(run_id))
                    committed[f"{run_id}.2"] = time.time()
                    run_id = ""
            except Exception as e:
                errors += 1
                run_id = ""
                log(f"state change failed: {type(e).__name__}: {e}")

    await asyncio.gather(*(worker(w) for w in range(workers)))
    achieved = len(committed) / (time.perf_counter() - t0)
    sent = set(committed)
    ok = await arrivals.wait_for(sent, 30)
    lat = [(arrivals.got[i][0] - t) * 1000 for i, t in committed.items() if i in arrivals.got]
    upper = arrivals.latencies_ms(sent)  # from the row's timestamp, taken before the transaction
    return {"n": len(lat), "sent": len(sent),
            "missing": 0 if ok else len(sent - set(arrivals.got)), "errors": errors,
            "rate": achieved, "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99), "max_ms": max(lat, default=float("nan")),
            "from_row_time_p50_ms": percentile(upper, 50),
            "from_row_time_p95_ms": percentile(upper, 95),
            "from_row_time_p99_ms": percentile(upper, 99)}


async def under_run_load(runs: Any, who: Any, arrivals: Arrivals, url: str, tag: str, *,
                         slots: int, rate: float, seconds: float) -> dict[str, Any]:
    """The steady measurement again, while an executor process keeps ``slots`` sandboxes
    running on this machine; plus the executor's own events (row timestamp -> subscriber)."""
    load = RunLoad(runs, who, slots)
    with executor_process(url, slots, tag) as proc:
        feeder = asyncio.create_task(load.loop())
        try:
            await load.wait_finished(slots, 180)  # warm: image cached, every slot has run
            if proc.poll() is not None:
                raise RuntimeError(f"executor exited with {proc.returncode}")
            before = set(load.finished)
            t0 = time.time()
            res = await steady(runs, who, arrivals, rate=rate, seconds=seconds)
            elapsed = time.time() - t0
            during = set(load.finished) - before
        finally:
            load.stop.set()
            await feeder
    states = [load.finished[i] for i in during]
    # The executor's events of the runs that finished meanwhile (auto-approved, so QUEUED is
    # sequence 1): RUNNING (2) and the outcome (3).
    mine = {f"{i}.{seq}" for i in during for seq in (2, 3)}
    await arrivals.wait_for(mine, 30)
    ex_lat = arrivals.latencies_ms(mine)
    res.update({"slots": slots, "sandbox_runs": len(during),
                "sandbox_runs_per_s": len(during) / max(elapsed, 1e-9),
                "sandbox_runs_succeeded": states.count("SUCCEEDED"),
                "load_errors": load.errors, "executor_events": len(ex_lat),
                "executor_events_p50_ms": percentile(ex_lat, 50),
                "executor_events_p95_ms": percentile(ex_lat, 95),
                "executor_events_p99_ms": percentile(ex_lat, 99)})
    return res


async def make_backlog(runs: Any, who: Any, events: int) -> set[str]:
    from server.services.runs import CancelRequest, SubmitRequest

    ids: set[str] = set()
    req = SubmitRequest(agent=AGENT, capability="echo", input_json="{}")
    sem = asyncio.Semaphore(8)

    async def one() -> None:
        async with sem:
            run, _ = await runs.submit(who, req)
            await runs.cancel(who, CancelRequest(run.id))
            ids.update({f"{run.id}.1", f"{run.id}.2"})

    await asyncio.gather(*(one() for _ in range(events // 2)))
    return ids


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import nats

    from bench._common import spawn_server
    from bench.sandbox import AGENT_DIR, ensure_image
    from server.app import build_services
    from server.domain.policy import Policy
    from server.domain.principal import Principal, Role
    from server.services.registry import RegisterRequest
    from server.settings import ServerSettings
    from server.store import Store, make_engine

    tag = uuid.uuid4().hex[:8]
    stream, prefix = f"BENCH_EVENTS_{tag}", f"bench{tag}.runs"
    base_stream, base_subject = f"BENCH_BASE_{tag}", f"bench{tag}.base"
    with fresh_pg_database(prefix="airlock_bench_events") as url:
        store = Store(make_engine(url=url, pool_size=10))
        services = build_services(store, ServerSettings(database_url=url), Policy())
        who = Principal(key_id="bench", owner="bench", role=Role.ADMIN)
        await services.registry.register(who, RegisterRequest(MANIFEST))
        if args.load_slots:
            log("run load: building/reusing the offline base and the misbehave image ...")
            await asyncio.to_thread(ensure_image, None)
            await services.registry.register(who, RegisterRequest(
                (AGENT_DIR / "agent.yaml").read_text().replace("risk: critical", "risk: low")))
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        receiver = None
        try:
            await js.add_stream(name=base_stream, subjects=[f"{base_subject}.>"])
            with relay_process(url, stream, prefix) as relay:
                await wait_stream(js, stream)
                subs = [[f"{base_subject}.>", base_stream], [f"{prefix}.>", stream]]
                receiver = spawn_server([sys.executable, "-c",
                                         "import asyncio, sys, json, bench.events as e; "
                                         "asyncio.run(e.receive(sys.argv[1], "
                                         "json.loads(sys.argv[2])))",
                                         NATS_URL, json.dumps(subs)])
                arrivals = Arrivals(receiver.proc)
                log("baseline: bare JetStream publish -> subscriber ...")
                base = await baseline(js, arrivals, base_subject, rate=args.rate,
                                      seconds=args.seconds, burst=args.backlog)
                await steady(services.runs, who, arrivals, rate=args.rate, seconds=1.0)  # warm-up
                log(f"steady: {args.rate:.0f} state changes/s for {args.seconds:.0f} s ...")
                load = await steady(services.runs, who, arrivals, rate=args.rate,
                                    seconds=args.seconds)
                loaded = None
                if args.load_slots:
                    log(f"under run load: the same, with {args.load_slots} sandboxes running "
                        "...")
                    loaded = await under_run_load(services.runs, who, arrivals, url, tag,
                                                  slots=args.load_slots, rate=args.rate,
                                                  seconds=args.seconds)
                relay.send_signal(signal.SIGTERM)  # the outage: no relay
                relay.wait(15)
            log(f"outage: {args.backlog} events committed with no relay ...")
            backlog = await make_backlog(services.runs, who, args.backlog)
            with relay_process(url, stream, prefix):
                t_start = time.time()
                ok = await arrivals.wait_for(backlog, 120)
            times = [arrivals.got[i][0] for i in backlog if i in arrivals.got]
            first, last = (min(times), max(times)) if times else (t_start, t_start)
            drain = {"events": len(backlog), "delivered": len(times), "complete": ok,
                     "rate": len(times) / max(last - first, 1e-9),
                     "rate_incl_startup": len(times) / max(last - t_start, 1e-9),
                     "first_after_s": first - t_start, "duplicates": arrivals.duplicates}
        finally:
            if receiver is not None:
                receiver.stop()
                arrivals.close()
            for name in (stream, base_stream):
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
            await nc.close()
            await store.dispose()
    return {"baseline": base, "steady": load, "loaded": loaded, "drain": drain}


def report(res: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    b, s, d, u = res["baseline"], res["steady"], res["drain"], res["loaded"]
    nan = float("nan")
    rows = [
        ["baseline: JetStream publish -> subscriber", b["n"], f"{args.rate:.0f}/s",
         b["p50_ms"], b["p95_ms"], b["p99_ms"], b["max_ms"]],
        ["relay, idle: commit -> subscriber", s["n"], f"{s['rate']:.0f}/s", s["p50_ms"],
         s["p95_ms"], s["p99_ms"], s["max_ms"]],
        ["relay, idle: row timestamp (before its tx) -> subscriber", s["n"],
         f"{s['rate']:.0f}/s", s["from_row_time_p50_ms"], s["from_row_time_p95_ms"],
         s["from_row_time_p99_ms"], nan],
    ]
    if u is not None:
        rows += [
            [f"relay, {u['slots']} sandboxes running: commit -> subscriber", u["n"],
             f"{u['rate']:.0f}/s", u["p50_ms"], u["p95_ms"], u["p99_ms"], u["max_ms"]],
            [f"relay, {u['slots']} sandboxes running: executor's events, row time -> sub.",
             u["executor_events"], f"{u['sandbox_runs_per_s']:.1f} runs/s",
             u["executor_events_p50_ms"], u["executor_events_p95_ms"],
             u["executor_events_p99_ms"], nan],
        ]
    print_table(rows, ["latency", "events", "rate", "p50 ms", "p95 ms", "p99 ms", "max ms"])
    print()
    print_table([
        ["baseline: JetStream publish+ack -> subscriber (256 in flight)", args.backlog,
         b["throughput"]],
        ["relay: backlog drain after the outage (first to last)", d["delivered"], d["rate"]],
        ["relay: backlog drain incl. process start-up", d["delivered"], d["rate_incl_startup"]],
    ], ["throughput", "events", "events/s"])
    targets = {"p99_le_50ms": bool(s["p99_ms"] <= P99_TARGET_MS and s["missing"] == 0
                                   and s["errors"] == 0),
               "drain_ge_1000_per_s": bool(d["complete"] and d["rate"] >= DRAIN_TARGET)}
    print()
    print_table([[f"commit -> subscriber p99 <= {P99_TARGET_MS:.0f} ms", s["p99_ms"],
                  targets["p99_le_50ms"]],
                 [f"backlog drain >= {DRAIN_TARGET:,.0f} events/s", d["rate"],
                  targets["drain_ge_1000_per_s"]]],
                ["target", "measured", "met"])

    def r(x: Any) -> Any:
        return round(x, 3) if isinstance(x, float) else x

    return {"benchmark": "events", "database": "postgresql", "nats": NATS_URL,
            "rate_per_s": args.rate, "duration_s": args.seconds,
            "baseline": {k: r(v) for k, v in b.items()},
            "steady": {k: r(v) for k, v in s.items()},
            "loaded": None if u is None else {k: r(v) for k, v in u.items()},
            "drain": {k: r(v) for k, v in d.items()},
            "targets": targets, "all_targets_met": all(targets.values())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="state changes per second")
    p.add_argument("--seconds", type=float, default=10.0, help="steady-load duration")
    p.add_argument("--backlog", type=int, default=5000, help="events committed during the outage")
    p.add_argument("--load-slots", type=int, default=2,
                   help="sandboxes kept running during the run-load phase (0: skip it)")
    p.add_argument("--quick", action="store_true", help="2 s and a 1,000-event backlog")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.backlog = 2.0, 1000
    res = asyncio.run(main_async(args))
    emit_json(report(res, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
