"""Sandbox benchmark: per-run overhead of the jail and podman runtimes, and end-to-end throughput.

The same trivial agent (the ``ok`` capability of the misbehave fixture: read the input, write
``{"output": ...}``, exit 0) is started N times, one at a time, five ways:

- ``host``: ``/usr/bin/python3 main.py`` directly on the host with the helper on PYTHONPATH and the
  contract's files in a temporary directory; the floor, no isolation at all;
- ``podman CLI``: the exact ``podman run`` command line the runtime builds, plus ``--rm``;
  what podman itself costs with these limits;
- ``PodmanRuntime.run``: the full runtime (tmpfs, input, limits, log capture, output read,
  cgroup peak, ``podman rm``, cleanup), as the executor calls it;
- ``jail CLI``: the jail supervisor with the exact command line ``JailRuntime`` builds (its
  cgroup, bubblewrap as uid 65534, seccomp, the image's read-only layers); what the jail costs;
- ``JailRuntime.run``: the full jail runtime as the executor calls it;
- ``jail in podman run --privileged``: the exact exec the Dagger runtime sends
  (``executor.runtime.jail_core.bundle.container_exec``: the image's root filesystem only, the read-only
  bundle, the run's files), run as Dagger documents ``insecureRootCapabilities``: one
  ``podman run --privileged`` per run, podman's own start included, the result document read
  back and judged (``tests/executor/jail_container.py``, as the test suite runs it).

The image is built on the offline base if missing and is warm (cached) before measuring.

Part 2 (throughput): runs submitted over gRPC to a control plane on PostgreSQL and executed
by an executor (``airlock executor``, its own process, as deployed) with its slots saturated,
timed from the first submit to the last SUCCEEDED,
once per runtime (``--runtimes``); beside the floor measured in the same run: the same number
of bare ``podman run`` commands at the same concurrency, with no Airlock at all.

    python bench/sandbox.py            # N=20
    python bench/sandbox.py -n 50
    python bench/sandbox.py --quick    # N=5, throughput with 20 runs on the jail only

Prints a table, then one JSON line ``{"bench": "sandbox", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.build import build_image
from agents.limits import Limits
from bench._common import emit_json, log, percentile, print_table
from executor.base_image import make_base_image
from executor.runtime.base import RunSpec, SandboxRuntime, Termination
from executor.runtime.jail import JailRuntime
from executor.runtime.jail_core.bundle import host_bundle
from executor.runtime.podman import PodmanRuntime

REPO = Path(__file__).resolve().parent.parent
AGENT_DIR = REPO / "tests" / "agents" / "misbehave"
# The distribution's python3, as in the offline base image (not a pyenv shim or a venv).
HOST_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
LIMITS = Limits(memory_mib=64, timeout_seconds=30, pids=32, cpus=1, output_kib=64, log_kib=64)


def _spec(i: int, image: str) -> RunSpec:
    return RunSpec(
        run_id=f"bench{os.getpid()}x{i}",
        attempt=1,
        image=image,
        capability="ok",
        input={"i": i},
        limits=LIMITS,
        executor_id="bench",
    )


def _host_once(i: int, tmp: Path) -> float:
    """The agent's own cost: the same main.py with the same helper, no sandbox."""
    inp, out = tmp / f"in{i}.json", tmp / f"out{i}.json"
    inp.write_text(json.dumps({"run_id": str(i), "capability": "ok", "input": {"i": i}}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    env |= {"AIRLOCK_INPUT": str(inp), "AIRLOCK_OUTPUT": str(out)}
    t0 = time.perf_counter()
    subprocess.run([HOST_PYTHON, str(AGENT_DIR / "main.py")], env=env, check=True)
    elapsed = time.perf_counter() - t0
    assert json.loads(out.read_text())["output"]["ok"] is True
    return elapsed


def _cli_once(rt: PodmanRuntime, i: int, image: str) -> float:
    """podman alone, with the runtime's exact command line (internals used on purpose)."""
    spec = _spec(10_000 + i, image)
    work = rt._prepare(spec)
    try:
        argv = rt._argv(spec, work)
        argv.insert(argv.index("run") + 1, "--rm")
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        elapsed = time.perf_counter() - t0
        assert (work / "out" / "output.json").exists()
        return elapsed
    finally:
        rt._cleanup_host(spec.sandbox_name)


def _jail_cli_once(rt: JailRuntime, i: int, image: str) -> float:
    """The jail alone: the supervisor with the runtime's exact command (internals on purpose)."""
    spec = _spec(30_000 + i, image)
    rootfs = rt._rootfs[image][1]  # resolved by the warm-up run
    work = rt._prepare(spec)
    try:
        cmd = rt._command(spec, rootfs, work)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True, env={})
        elapsed = time.perf_counter() - t0
        assert (work / "out" / "output.json").exists()
        return elapsed
    finally:
        rt._remove_work(work)


def _privileged_once(priv: Any, i: int, image: str) -> float:
    """The Dagger exec's jail in ``podman run --privileged``: the command built untimed, then
    podman, the jail and the agent, and the result document judged."""
    from executor.runtime.jail import result_from_document

    spec = _spec(40_000 + i, image)
    with tempfile.TemporaryDirectory(prefix="airlock-bench-priv-") as tmp:
        cmd = priv.command(spec, Path(tmp), None)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        result = result_from_document((Path(tmp) / "result.json").read_bytes(), duration_seconds=0.0)
        elapsed = time.perf_counter() - t0
    if result.termination is not Termination.EXITED or result.exit_code != 0:
        raise RuntimeError(f"privileged jail run failed: {result}")
    return elapsed


async def _runtime_once(rt: SandboxRuntime, i: int, image: str) -> float:
    t0 = time.perf_counter()
    result = await rt.run(_spec(i, image), asyncio.Event())
    elapsed = time.perf_counter() - t0
    if result.termination is not Termination.EXITED or result.exit_code != 0:
        raise RuntimeError(f"benchmark run failed: {result}")
    return elapsed


def _stats(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
            "min_ms": min(ms)}


async def measure_overhead(n: int, image: str) -> dict[str, Any]:
    """Part 1: sequential single runs: host floor, podman CLI and runtime, jail CLI and runtime."""
    rt = PodmanRuntime(executor_id="bench")
    await rt.check()
    jail = JailRuntime(executor_id="bench")
    await jail.check()
    from tests.executor.jail_container import PrivilegedJail

    priv = PrivilegedJail(await asyncio.to_thread(host_bundle, jail.work_root / "bundle"))
    await _runtime_once(rt, -1, image)  # warm: image layers, digest cache, page cache
    await _runtime_once(jail, -1, image)  # warm: the image's read-only mount
    await asyncio.to_thread(_privileged_once, priv, -1, image)
    host, cli, runtime, jcli, jrun, prun = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        _host_once(-1, Path(tmp))
        # Interleaved so that all six see the same machine state.
        for i in range(n):
            host.append(_host_once(i, Path(tmp)))
            cli.append(await asyncio.to_thread(_cli_once, rt, i, image))
            runtime.append(await _runtime_once(rt, i, image))
            jcli.append(await asyncio.to_thread(_jail_cli_once, jail, i, image))
            jrun.append(await _runtime_once(jail, i, image))
            prun.append(await asyncio.to_thread(_privileged_once, priv, i, image))
    await jail.close()
    h, c, r, jc, jr = _stats(host), _stats(cli), _stats(runtime), _stats(jcli), _stats(jrun)
    pr = _stats(prun)
    return {
        "jail_privileged": pr,
        "jail_privileged_overhead_p50_ms": pr["p50_ms"] - h["p50_ms"],
        "jail_privileged_over_podman_cli_p50_ms": pr["p50_ms"] - c["p50_ms"],
        "n": n,
        "host": h,
        "podman_cli": c,
        "runtime": r,
        "jail_cli": jc,
        "jail_runtime": jr,
        "overhead_p50_ms": r["p50_ms"] - h["p50_ms"],
        "overhead_p95_ms": r["p95_ms"] - h["p95_ms"],
        "overhead_p99_ms": r["p99_ms"] - h["p99_ms"],
        "runtime_over_cli_p50_ms": r["p50_ms"] - c["p50_ms"],
        "jail_overhead_p50_ms": jr["p50_ms"] - h["p50_ms"],
        "jail_overhead_p95_ms": jr["p95_ms"] - h["p95_ms"],
        "jail_cli_overhead_p50_ms": jc["p50_ms"] - h["p50_ms"],
    }


async def _bare_parallel(rt: PodmanRuntime, image: str, runs: int, slots: int) -> float:
    """Floor: ``runs`` bare podman runs, ``slots`` at a time; returns runs/s."""
    sem = asyncio.Semaphore(slots)

    async def one(i: int) -> None:
        async with sem:
            await asyncio.to_thread(_cli_once, rt, 20_000 + i, image)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(runs)))
    return runs / (time.perf_counter() - t0)


async def measure_throughput(runs: int, slots: int, image: str, runtime: str = "podman") -> dict[str, Any]:
    """Part 2: gRPC submit -> QUEUED -> executor (``runtime``) -> SUCCEEDED, slots saturated."""
    import grpc

    from airlock.v1 import admin_service_pb2 as adm
    from airlock.v1 import admin_service_pb2_grpc as admg
    from airlock.v1 import registry_service_pb2 as reg
    from airlock.v1 import registry_service_pb2_grpc as regg
    from airlock.v1 import run_service_pb2 as rs
    from airlock.v1 import run_service_pb2_grpc as rsg
    from bench._common import fresh_pg_database
    from server.app import ControlPlane
    from server.settings import ServerSettings

    rt = PodmanRuntime(executor_id="bench-e2e")
    await rt.check()
    floor = await _bare_parallel(rt, image, runs, slots)
    manifest = (AGENT_DIR / "agent.yaml").read_text().replace("risk: critical", "risk: low")
    with fresh_pg_database() as url:
        cp = ControlPlane(ServerSettings(database_url=url, grpc_listen="127.0.0.1:0",  # type: ignore[arg-type]
                                         migrate_on_start=False, http_enabled=False))
        await cp.start()
        # The executor in its own process, as deployed (``airlock executor``: its own event
        # loop, pool and LISTEN connection); this process is the control plane and the client.
        ex = await _start_executor(cp, url, runtime, slots)
        ch = grpc.aio.insecure_channel(cp.grpc_address)
        try:
            md = (("authorization", f"Bearer {cp.admin_token}"),)
            await regg.RegistryServiceStub(ch).RegisterAgentVersion(
                reg.RegisterAgentVersionRequest(manifest=manifest), metadata=md)
            key = await admg.AdminServiceStub(ch).CreateApiKey(
                adm.CreateApiKeyRequest(owner="bench", role=adm.ROLE_SUBMITTER), metadata=md)
            smd = (("authorization", f"Bearer {key.token}"),)
            stub = rsg.RunServiceStub(ch)
            latencies: list[float] = []
            client: dict[str, tuple[float, float]] = {}  # run id -> (submit sent, terminal seen), wall clock

            async def one(i: int) -> None:
                t, wall = time.perf_counter(), time.time()
                sub = await stub.SubmitRun(rs.SubmitRunRequest(
                    agent="misbehave", capability="ok", input_json=json.dumps({"i": i})), metadata=smd)
                async for msg in stub.WatchRun(rs.WatchRunRequest(run_id=sub.run.id), metadata=smd):
                    last = msg.event.state
                if last != 4:  # RUN_STATE_SUCCEEDED
                    raise RuntimeError(f"run {sub.run.id} ended in state {last}")
                latencies.append(time.perf_counter() - t)
                client[sub.run.id] = (wall, time.time())

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(runs)))
            elapsed = time.perf_counter() - t0
        finally:
            await ch.close()
            ex.terminate()  # SIGTERM: stop leasing, finish (nothing is running), exit
            await asyncio.wait_for(ex.wait(), 60)
            await cp.stop(grace=0)
        phases = _phases(url, client, slots)
    ms = [x * 1000 for x in latencies]
    return {"runtime": runtime, "runs": runs, "slots": slots, "seconds": elapsed, "runs_per_s": runs / elapsed,
            "bare_podman_runs_per_s": floor, "latency_p50_ms": percentile(ms, 50),
            "latency_p99_ms": percentile(ms, 99), "phases_ms": phases}


# Where each run's time goes, from the run_events rows' times (each written at its transition)
# and the client's clock
# (one host, one clock): submit -> QUEUED committed, QUEUED -> RUNNING (waiting for a slot
# and leased), RUNNING -> SUCCEEDED (the sandbox, output checks, the outcome's commit),
# SUCCEEDED -> the client's WatchRun delivers it.
PHASES = ("submit_to_queued", "queued_to_running", "running_to_done", "done_to_client")


def _phases(url: str, client: dict[str, tuple[float, float]], slots: int) -> dict[str, dict[str, float]]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as c:
        rows = c.execute("SELECT run_id, state, extract(epoch FROM created_at) FROM run_events"
                         " WHERE run_id = ANY(%s)", (list(client),)).fetchall()
    at: dict[str, dict[str, float]] = {}
    for run_id, state, epoch in rows:
        at.setdefault(run_id, {})[state] = float(epoch)
    spans: dict[str, list[float]] = {k: [] for k in PHASES}
    for run_id, (sent, seen) in client.items():
        e = at.get(run_id, {})
        if not {"QUEUED", "RUNNING", "SUCCEEDED"} <= set(e):
            continue
        for name, (a, b) in zip(PHASES, ((sent, e["QUEUED"]), (e["QUEUED"], e["RUNNING"]),
                                         (e["RUNNING"], e["SUCCEEDED"]), (e["SUCCEEDED"], seen)),
                                strict=True):
            spans[name].append((b - a) * 1000)
    out: dict[str, dict[str, float]] = {
        k: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for k, v in spans.items() if v}
    # How busy the slots were between the first lease and the last outcome: the rest is the
    # time a freed slot waited for its next run (outcome commit, lease loop, claim).
    started = [e["RUNNING"] for e in at.values() if "RUNNING" in e]
    ended = [e["SUCCEEDED"] for e in at.values() if "SUCCEEDED" in e]
    if started and ended and slots:
        window = (max(ended) - min(started)) * 1000 * slots
        out["slot_busy"] = {"fraction": sum(spans["running_to_done"]) / window if window else 0.0}
    return out


async def _start_executor(cp: Any, url: str, runtime: str, slots: int) -> asyncio.subprocess.Process:
    """``airlock executor`` on ``url``; returns once it has registered (its check passed)."""
    env = {**os.environ, "AIRLOCK_DATABASE_URL": url, "AIRLOCK_EXECUTOR_ID": "bench-e2e",
           "AIRLOCK_HEARTBEAT_SECONDS": "1", "AIRLOCK_POLL_SECONDS": "0.5", "AIRLOCK_LOG_LEVEL": "warning",
           "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "airlock.cli", "executor", "--runtime", runtime, "--slots", str(slots),
        env=env, cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"airlock executor exited with {proc.returncode}")
        async with cp.store.read() as tx:
            if any(e.id == "bench-e2e" for e in await tx.fleet.all()):
                return proc
        await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError("airlock executor did not register within 120 s")


def ensure_image(image: str | None) -> str:
    if image:
        return image
    base = make_base_image()
    return build_image(AGENT_DIR, base_image=base)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=20, help="runs per variant (20)")
    p.add_argument("--image", default=None, help="agent image with an 'ok' capability")
    p.add_argument("--runs", type=int, default=60, help="runs for the throughput part (60)")
    p.add_argument("--slots", type=int, default=4, help="executor slots for the throughput part (4)")
    p.add_argument("--skip-throughput", action="store_true", help="only part 1")
    p.add_argument("--runtimes", default="jail,podman", help="runtimes for part 2 (jail,podman)")
    p.add_argument("--quick", action="store_true",
                   help="a short run: -n 5, --runs 20, --runtimes jail")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.runs, args.runtimes = 5, 20, "jail"
    log("building/reusing the offline base and the misbehave image")
    image = ensure_image(args.image)
    log(f"measuring {args.n} runs per variant on {image}")
    over = asyncio.run(measure_overhead(args.n, image))
    rows = [
        [label, over[key]["p50_ms"], over[key]["p95_ms"], over[key]["p99_ms"], over[key]["min_ms"]]
        for label, key in (
            ("host python3 main.py", "host"),
            ("jail supervisor + bwrap (CLI, same flags)", "jail_cli"),
            ("JailRuntime.run", "jail_runtime"),
            ("podman run (CLI, same flags)", "podman_cli"),
            ("PodmanRuntime.run", "runtime"),
            ("jail in podman run --privileged (Dagger's exec)", "jail_privileged"),
        )
    ]
    print_table(rows, ["per run (ms)", "p50", "p95", "p99", "min"])
    print(
        f"jail overhead vs host: p50 {over['jail_overhead_p50_ms']:.0f} ms, "
        f"p95 {over['jail_overhead_p95_ms']:.0f} ms (jail CLI alone: p50 "
        f"{over['jail_cli_overhead_p50_ms']:.0f} ms); podman overhead vs host: p50 "
        f"{over['overhead_p50_ms']:.0f} ms, p95 {over['overhead_p95_ms']:.0f} ms; podman runtime vs "
        f"bare podman CLI: p50 {over['runtime_over_cli_p50_ms']:.0f} ms; jail in a privileged "
        f"container vs host: p50 {over['jail_privileged_overhead_p50_ms']:.0f} ms (vs bare podman "
        f"CLI: {over['jail_privileged_over_podman_cli_p50_ms']:+.0f} ms)"
    )
    doc: dict[str, Any] = {"bench": "sandbox", "image": image, "limits": LIMITS.as_dict(), "overhead": over,
                           "targets": {"overhead_p50_le_100ms": over["overhead_p50_ms"] <= 100,
                                       "jail_overhead_p50_le_20ms": over["jail_overhead_p50_ms"] <= 20}}
    if not args.skip_throughput:
        doc["throughput"] = {}
        rows = []
        for name in [r.strip() for r in args.runtimes.split(",") if r.strip()]:
            log(f"throughput: {args.runs} runs through gRPC + executor ({name}, {args.slots} slots) "
                "on PostgreSQL")
            tp = asyncio.run(measure_throughput(args.runs, args.slots, image, name))
            if not rows:
                rows.append(["bare podman run, same concurrency", tp["bare_podman_runs_per_s"], "", ""])
            rows.append([f"gRPC submit -> SUCCEEDED ({name})", tp["runs_per_s"], tp["latency_p50_ms"],
                         tp["latency_p99_ms"]])
            doc["throughput"][name] = tp
            doc["targets"][f"{name}_throughput_ge_10_runs_per_s"] = tp["runs_per_s"] >= 10
            if name == "jail":
                doc["targets"]["jail_throughput_ge_25_runs_per_s"] = tp["runs_per_s"] >= 25
        print_table(rows, ["throughput", "runs/s", "p50 ms", "p99 ms"])
        print_table([[f"{name}: {phase}", *(doc["throughput"][name]["phases_ms"].get(phase, {}).get(q, float("nan"))
                                            for q in ("p50", "p99"))]
                     for name in doc["throughput"] for phase in PHASES],
                    ["per run, from run_events (ms)", "p50", "p99"])
    emit_json(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
