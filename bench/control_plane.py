"""Control-plane benchmark: GetAgent, GetRun and SubmitRun against PostgreSQL, beside a floor.

The control plane runs in its own process (as in a deployment) on a fresh PostgreSQL database;
the floor is a bare grpc.aio echo server, also in its own process, echoing a message the size
of a GetRun response. This process is the load generator: 1, 10 and 50 closed-loop clients per
cell, the floor measured right before the control-plane cells at each concurrency so both see
the same machine load.

    python bench/control_plane.py                 # 5 s per cell
    python bench/control_plane.py --quick         # 1 s per cell (CI smoke)
    python bench/control_plane.py --database-url postgresql://postgres@127.0.0.1:5432/mydb

Targets (at 50 clients): GetAgent and GetRun reach >= 50 % of the floor's throughput with a
p99 <= 2x the floor's; SubmitRun sustains >= 500 runs/s. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench._common import (
    Cell,
    ServerProcess,
    announce,
    closed_loop,
    emit_json,
    fresh_pg_database,
    log,
    print_table,
    spawn_echo_server,
    spawn_server,
    wait_stdin_closed,
)

CONCURRENCY = (1, 10, 50)
OPS = ("GetAgent", "GetRun", "SubmitRun")
READS = ("GetAgent", "GetRun")
TARGET_CLIENTS = 50
READ_THROUGHPUT_RATIO = 0.5  # of the floor's, at least
READ_P99_RATIO = 2.0  # of the floor's, at most
SUBMIT_MIN_PER_S = 500.0
AGENT = "bench-echo"
GET_RUN_POOL = 200  # runs submitted up front for GetRun to read

MANIFEST = f"""
name: {AGENT}
version: 1.0.0
description: benchmark agent
image: localhost/airlock/echo:1
risk: low
permissions: {{network: false, secrets: []}}
limits:
  default: {{memory_mib: 128, timeout_seconds: 10}}
  max: {{memory_mib: 512, timeout_seconds: 60}}
capabilities:
  - name: echo
    input_schema:
      type: object
      properties: {{text: {{type: string, maxLength: 10000}}}}
      required: [text]
    output_schema: {{type: object}}
"""


# --- the control-plane child process --------------------------------------------------------------


async def serve_plane(url: str, profile: str | None) -> None:
    """Child body: a real ControlPlane (migrating on start) plus two fresh keys, announced."""
    from server.app import ControlPlane
    from server.domain.policy import Policy
    from server.domain.principal import Role
    from server.services.admin import CreateKeyRequest
    from server.settings import ServerSettings

    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    settings = ServerSettings(database_url=url, grpc_listen="127.0.0.1:0",
                              http_listen="127.0.0.1:0", migrate_on_start=True)
    cp = ControlPlane(settings, policy=Policy())  # built-in policy: low risk is auto-approved
    await cp.start()
    _, admin = await cp.services.admin.create_key("bench", CreateKeyRequest("bench-admin", Role.ADMIN))
    _, submitter = await cp.services.admin.create_key(
        "bench", CreateKeyRequest("bench-submitter", Role.SUBMITTER))
    if prof is not None:
        prof.enable()
    announce({"address": cp.grpc_address, "admin_token": admin, "token": submitter,
              "pid": os.getpid()})
    await wait_stdin_closed()
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    await cp.stop(1.0)


# --- load -----------------------------------------------------------------------------------------


async def measure(echo: ServerProcess, plane: ServerProcess, *, duration: float,
                  warmup: float, concurrency: tuple[int, ...]) -> list[Cell]:
    from airlock.v1 import registry_service_pb2 as reg
    from airlock.v1 import registry_service_pb2_grpc as regg
    from airlock.v1 import run_service_pb2 as rs
    from airlock.v1 import run_service_pb2_grpc as rsg
    from airlock.v1.run_pb2 import RUN_STATE_QUEUED

    admin_md = (("authorization", f"Bearer {plane.info['admin_token']}"),)
    md = (("authorization", f"Bearer {plane.info['token']}"),)
    cells: list[Cell] = []
    async with grpc.aio.insecure_channel(echo.info["address"]) as ech, \
            grpc.aio.insecure_channel(plane.info["address"]) as pch:
        registry = regg.RegistryServiceStub(pch)
        runs = rsg.RunServiceStub(pch)
        await registry.RegisterAgentVersion(reg.RegisterAgentVersionRequest(manifest=MANIFEST),
                                            metadata=admin_md)
        submit_req = rs.SubmitRunRequest(agent=AGENT, capability="echo",
                                         input_json='{"text": "hello, benchmark"}')
        first = await runs.SubmitRun(submit_req, metadata=md)
        if first.run.state != RUN_STATE_QUEUED:
            raise RuntimeError(f"low-risk run was not queued: {first.run}")
        ids = [first.run.id]
        sem = asyncio.Semaphore(20)

        async def one() -> None:
            async with sem:
                r = await runs.SubmitRun(submit_req, metadata=md)
                ids.append(r.run.id)

        await asyncio.gather(*(one() for _ in range(GET_RUN_POOL - 1)))
        # The floor echoes a payload the size of a GetRun response.
        sample = await runs.GetRun(rs.GetRunRequest(run_id=ids[0]), metadata=md)
        payload = b"x" * sample.ByteSize()
        echo_call = ech.unary_unary("/bench.Echo/Echo")
        get_agent_req = reg.GetAgentRequest(name=AGENT)
        get_run_reqs = [rs.GetRunRequest(run_id=i) for i in ids]

        async def floor(i: int, n: int) -> None:
            await echo_call(payload)

        async def get_agent(i: int, n: int) -> None:
            await registry.GetAgent(get_agent_req, metadata=md)

        async def get_run(i: int, n: int) -> None:
            await runs.GetRun(get_run_reqs[(i * 7919 + n) % len(get_run_reqs)], metadata=md)

        async def submit(i: int, n: int) -> None:
            await runs.SubmitRun(submit_req, metadata=md)

        calls = {"floor": floor, "GetAgent": get_agent, "GetRun": get_run, "SubmitRun": submit}
        for c in concurrency:
            for op in ("floor", *OPS):
                log(f"  {op} x{c} ...")
                pid = echo.pid if op == "floor" else plane.pid
                cells.append(await closed_loop(op, calls[op], clients=c, duration=duration,
                                               warmup=warmup, server_pid=pid))
    return cells


# --- report ---------------------------------------------------------------------------------------


def report(cells: list[Cell], *, duration: float, warmup: float,
           concurrency: tuple[int, ...]) -> dict[str, Any]:
    by = {(c.op, c.clients): c for c in cells}
    rows = []
    for c in cells:
        f = by.get(("floor", c.clients))
        rel_tp = c.throughput / f.throughput if f and f.throughput and c.op != "floor" else None
        rel_p99 = c.p99_ms / f.p99_ms if f and f.p99_ms and c.op != "floor" else None
        rows.append([c.op, c.clients, c.throughput, c.p50_ms, c.p99_ms, c.errors,
                     f"{rel_tp:.0%}" if rel_tp is not None else "",
                     f"{rel_p99:.1f}x" if rel_p99 is not None else "",
                     f"{c.server_cpu_us:,.0f}" if c.server_cpu_us is not None else "-"])
    print_table(rows, ["op", "clients", "calls/s", "p50 ms", "p99 ms", "errors", "tput/floor",
                       "p99/floor", "server CPU us/call"])

    targets: dict[str, bool] = {}
    detail: list[list[object]] = []
    f50 = by.get(("floor", TARGET_CLIENTS))
    for op in READS:
        c = by.get((op, TARGET_CLIENTS))
        ok_tp = bool(c and f50 and c.errors == 0
                     and c.throughput >= READ_THROUGHPUT_RATIO * f50.throughput)
        ok_p99 = bool(c and f50 and c.errors == 0 and c.p99_ms <= READ_P99_RATIO * f50.p99_ms)
        targets[f"{op}_throughput_ge_half_floor"] = ok_tp
        targets[f"{op}_p99_le_2x_floor"] = ok_p99
        if c and f50:
            detail.append([f"{op} calls/s >= {READ_THROUGHPUT_RATIO:.0%} of floor", c.throughput,
                           READ_THROUGHPUT_RATIO * f50.throughput, ok_tp])
            detail.append([f"{op} p99 ms <= {READ_P99_RATIO:g}x floor", c.p99_ms,
                           READ_P99_RATIO * f50.p99_ms, ok_p99])
    s = by.get(("SubmitRun", TARGET_CLIENTS))
    ok_submit = bool(s and s.errors == 0 and s.throughput >= SUBMIT_MIN_PER_S)
    targets["SubmitRun_ge_500_per_s"] = ok_submit
    if s:
        detail.append(["SubmitRun calls/s >= 500", s.throughput, SUBMIT_MIN_PER_S, ok_submit])
    print()
    print(f"targets at {TARGET_CLIENTS} clients:")
    print_table(detail, ["target", "measured", "bound", "met"])

    measurements: dict[str, dict[str, Any]] = {}
    for c in cells:
        measurements.setdefault(c.op, {})[str(c.clients)] = c.as_dict()
    return {
        "benchmark": "control_plane",
        "database": "postgresql",
        "server_process": "separate",
        "duration_s": duration,
        "warmup_s": warmup,
        "concurrency": list(concurrency),
        "measurements": measurements,
        "targets": targets,
        "all_targets_met": all(targets.values()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell (5)")
    p.add_argument("--quick", action="store_true", help="1 s cells, short warm-up (CI smoke)")
    p.add_argument("--database-url", default=None,
                   help="use this PostgreSQL database (migrated, kept); default: a fresh one, "
                        "dropped afterwards")
    p.add_argument("--profile-server", metavar="FILE", default=None,
                   help="write a cProfile of the control-plane process to FILE")
    p.add_argument("--serve-plane", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve_plane:
        asyncio.run(serve_plane(args.database_url, args.profile_server))
        return 0

    duration = 1.0 if args.quick else args.duration
    warmup = 0.2 if args.quick else 0.5
    if args.database_url and not args.database_url.startswith("postgresql"):
        p.error("--database-url must be a postgresql:// URL")
    db = (contextlib.nullcontext(args.database_url) if args.database_url
          else fresh_pg_database(migrate=False))
    with db as url:
        log(f"database {url.rpartition('/')[2]}; starting the echo floor and the control plane")
        echo = spawn_echo_server()
        try:
            plane_argv = [sys.executable, str(Path(__file__).resolve()), "--serve-plane",
                          "--database-url", url]
            if args.profile_server:
                plane_argv += ["--profile-server", str(Path(args.profile_server).resolve())]
            plane = spawn_server(plane_argv)
            try:
                cells = asyncio.run(measure(echo, plane, duration=duration, warmup=warmup,
                                            concurrency=CONCURRENCY))
            finally:
                plane.stop()
        finally:
            echo.stop()
    doc = report(cells, duration=duration, warmup=warmup, concurrency=CONCURRENCY)
    emit_json(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
