"""Control-plane benchmark: GetAgent, GetRun and SubmitRun against PostgreSQL, beside their floors.

Airlock runs as deployed, ``airlock serve --processes N`` (N serving processes on one port,
default one per core) on a fresh PostgreSQL database, and again with one process for
comparison. Each is measured beside its floors, in the same run, at the same client
concurrency (1, 10 and 50 closed-loop clients, each over its own connection, so connections
spread over the processes):

- reads: a bare grpc.aio echo served by **the same number of processes** on one port
  (SO_REUSEPORT), echoing a message the size of a GetRun response;
- SubmitRun: ``pgbench`` running the statements of one real SubmitRun transaction (captured
  from the store, as literal SQL with a fresh run id per transaction) in a scratch database
  this benchmark creates, migrates and drops: what PostgreSQL itself does on this machine.

    python bench/control_plane.py                 # 5 s per cell
    python bench/control_plane.py --quick         # 1 s per cell (CI smoke)
    python bench/control_plane.py --processes 4   # serving (and echo) processes; default: cores

Targets (at 50 clients, N processes): GetAgent and GetRun reach >= 70 % of the echo floor's
throughput with a p99 <= 1.5x the floor's; SubmitRun reaches >= 80 % of pgbench's
transactions/s. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench._common import (
    PG_ADMIN_URL,
    REPO,
    Cell,
    children_of,
    closed_loop,
    emit_json,
    fresh_pg_database,
    log,
    percentile,
    print_table,
    spawn_echo_servers,
)

CONCURRENCY = (1, 10, 50)
OPS = ("GetAgent", "GetRun", "SubmitRun")
READS = ("GetAgent", "GetRun")
TARGET_CLIENTS = 50
READ_THROUGHPUT_RATIO = 0.7  # of the echo floor's, at least
READ_P99_RATIO = 1.5  # of the echo floor's, at most
SUBMIT_RATIO = 0.8  # of pgbench's, at least
AGENT = "bench-echo"
GET_RUN_POOL = 200  # runs submitted up front for GetRun to read
PGBENCH = shutil.which("pgbench") or "/usr/bin/pgbench"

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
INPUT = '{"text": "hello, benchmark"}'
_TIMESTAMP = re.compile(r"'\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?\+00:00'")


# --- keys, and the SQL of one submit -------------------------------------------------------------


async def make_keys(url: str) -> tuple[str, str]:
    """An admin and a submitter key, made in the database before the server starts."""
    from server.domain.principal import Role
    from server.services.admin import AdminService, CreateKeyRequest
    from server.store import Store, make_engine

    store = Store(make_engine(url=url, pool_size=1))
    try:
        admin = AdminService(store)
        _, admin_token = await admin.create_key("bench", CreateKeyRequest("bench-admin", Role.ADMIN))
        _, token = await admin.create_key("bench", CreateKeyRequest("bench-submitter",
                                                                    Role.SUBMITTER))
    finally:
        await store.dispose()
    return admin_token, token


async def capture_submit_sql(url: str) -> list[str]:
    """The statements of one real SubmitRun transaction, as literal SQL (pgbench's script).

    A submit runs through the services on ``url`` with every cursor execution recorded; the
    registry read before the transaction is left out (served from the registry cache in a
    running control plane). The run's id becomes a pgbench expression, fresh per transaction.
    """
    import psycopg
    from sqlalchemy import event

    from server.app import build_services
    from server.domain.policy import Policy
    from server.domain.principal import Principal, Role
    from server.services.registry import RegisterRequest
    from server.services.runs import SubmitRequest
    from server.settings import ServerSettings
    from server.store import Store, make_engine

    store = Store(make_engine(url=url, pool_size=1))
    seen: list[tuple[str, Any]] = []
    try:
        services = build_services(store, ServerSettings(database_url=url), Policy())  # type: ignore[arg-type]
        who = Principal(key_id="bench", owner="bench", role=Role.ADMIN)
        await services.registry.register(who, RegisterRequest(MANIFEST))

        @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
        def record(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            seen.append((statement, params))

        run, _ = await services.runs.submit(who, SubmitRequest(AGENT, "echo", INPUT))
    finally:
        await store.dispose()
    # The registry read (agents, agent_versions) is served from memory by a running plane.
    kept = [(sql, params) for sql, params in seen
            if "agent_versions" not in sql and "FROM agents" not in sql]
    statements = []
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        cur = psycopg.ClientCursor(conn)
        for sql, params in kept:
            literal = cur.mogrify(sql, params)
            # Every literal holding the run id (the id, the chain "run:<id>") takes a fresh one.
            literal = re.sub(f"'([^']*){run.id}([^']*)'", lambda m: (
                f"('{_colons(m.group(1))}run_' || :client_id::text || '_' || :n::text || "
                f"'{_colons(m.group(2))}')"), literal)
            # pgbench reads ":name" as a variable, also inside a time's "12:34:56"
            statements.append(_TIMESTAMP.sub("CURRENT_TIMESTAMP", literal))
    return statements


def _colons(text: str) -> str:
    """``text`` for inside a quoted literal with its colons spliced in: pgbench would read
    ``run:run_1`` as a variable ``:run_1``."""
    return text.replace(":", "' || ':' || '")


def pgbench_script(statements: list[str]) -> str:
    body = "\n".join(" ".join(s.split()) + ";" for s in statements)
    return f"\\set n random(1, 9000000000000000)\nBEGIN;\n{body}\nEND;\n"


# --- the servers ----------------------------------------------------------------------------------


@dataclass
class Served:
    """``airlock serve`` (the supervisor, or the one serving process) and its address."""

    proc: subprocess.Popen[bytes]
    address: str

    def server_pids(self) -> list[int]:
        return [self.proc.pid, *children_of(self.proc.pid)]


@contextlib.contextmanager
def airlock_serve(url: str, processes: int) -> Iterator[Served]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AIRLOCK_DATABASE_URL": url,
           "AIRLOCK_GRPC_LISTEN": "127.0.0.1:0", "AIRLOCK_HTTP_ENABLED": "false",
           "AIRLOCK_MIGRATE_ON_START": "false", "AIRLOCK_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "airlock.cli", "serve", "--processes",
                             str(processes), "--grace", "1"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        deadline, pending, address = time.monotonic() + 120, b"", ""
        while not address:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"airlock serve did not start (exit {proc.poll()})")
            if sel.select(1.0):
                chunk = os.read(fd, 65536)
                pending += chunk
                if m := re.search(rb"serving gRPC on (\S+)", pending):
                    address = m.group(1).decode()
        sel.close()
        # Nothing more is printed, but keep the pipe drained all the same.
        drain = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
        try:
            yield Served(proc, address)
        finally:
            drain.terminate()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- load -----------------------------------------------------------------------------------------


def channels(address: str, n: int) -> list[grpc.aio.Channel]:
    """``n`` channels, each with its own connection (gRPC would share one subchannel)."""
    return [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(n)]


async def measure(echo_address: str, echo_pids: list[int], served: Served, admin_token: str,
                  token: str, *, register: bool, duration: float, warmup: float,
                  concurrency: tuple[int, ...]) -> list[Cell]:
    from airlock.v1 import registry_service_pb2 as reg
    from airlock.v1 import registry_service_pb2_grpc as regg
    from airlock.v1 import run_service_pb2 as rs
    from airlock.v1 import run_service_pb2_grpc as rsg
    from airlock.v1.run_pb2 import RUN_STATE_QUEUED

    admin_md = (("authorization", f"Bearer {admin_token}"),)
    md = (("authorization", f"Bearer {token}"),)
    width = max(concurrency)
    echo_chs, plane_chs = channels(echo_address, width), channels(served.address, width)
    cells: list[Cell] = []
    try:
        registries = [regg.RegistryServiceStub(c) for c in plane_chs]
        runs = [rsg.RunServiceStub(c) for c in plane_chs]
        if register:
            await registries[0].RegisterAgentVersion(
                reg.RegisterAgentVersionRequest(manifest=MANIFEST), metadata=admin_md)
        submit_req = rs.SubmitRunRequest(agent=AGENT, capability="echo", input_json=INPUT)
        first = await runs[0].SubmitRun(submit_req, metadata=md)
        if first.run.state != RUN_STATE_QUEUED:
            raise RuntimeError(f"low-risk run was not queued: {first.run}")
        ids = [first.run.id]
        for i in range(GET_RUN_POOL - 1):
            ids.append((await runs[i % width].SubmitRun(submit_req, metadata=md)).run.id)
        # The floor echoes a payload the size of a GetRun response.
        sample = await runs[0].GetRun(rs.GetRunRequest(run_id=ids[0]), metadata=md)
        payload = b"x" * sample.ByteSize()
        echo_calls = [c.unary_unary("/bench.Echo/Echo") for c in echo_chs]
        get_agent_req = reg.GetAgentRequest(name=AGENT)
        get_run_reqs = [rs.GetRunRequest(run_id=i) for i in ids]

        async def floor(i: int, n: int) -> None:
            await echo_calls[i](payload)

        async def get_agent(i: int, n: int) -> None:
            await registries[i].GetAgent(get_agent_req, metadata=md)

        async def get_run(i: int, n: int) -> None:
            await runs[i].GetRun(get_run_reqs[(i * 7919 + n) % len(get_run_reqs)], metadata=md)

        async def submit(i: int, n: int) -> None:
            await runs[i].SubmitRun(submit_req, metadata=md)

        calls = {"floor": floor, "GetAgent": get_agent, "GetRun": get_run, "SubmitRun": submit}
        for c in concurrency:
            for op in ("floor", *OPS):
                log(f"  {op} x{c} ...")
                pids = echo_pids if op == "floor" else served.server_pids()
                cells.append(await closed_loop(op, calls[op], clients=c, duration=duration,
                                               warmup=warmup, server_pid=pids))
    finally:
        for ch in (*echo_chs, *plane_chs):
            await ch.close()
    return cells


def run_pgbench(url: str, script: str, *, clients: int, duration: float,
                warmup: float) -> Cell:
    """pgbench running ``script`` with ``clients`` connections; latencies from its per-
    transaction log, the first ``warmup`` seconds left out."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with tempfile.TemporaryDirectory(prefix="airlock-pgbench-") as tmp:
        path = Path(tmp) / "submit.sql"
        path.write_text(script)
        argv = [PGBENCH, "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
                "-T", str(max(1, round(duration + warmup))), "-f", str(path),
                "-l", "--log-prefix", str(Path(tmp) / "log"),
                "-h", u.host or "127.0.0.1", "-p", str(u.port or 5432),
                "-U", u.username or "postgres", u.database or "postgres"]
        started = time.time()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench failed: {proc.stderr[-2000:]}")
        latencies: list[float] = []
        first = last = None
        for f in Path(tmp).glob("log*"):
            for line in f.read_text().splitlines():
                cols = line.split()  # client txn latency_us script epoch_s epoch_us
                at = int(cols[4]) + int(cols[5]) / 1e6
                if at - int(cols[2]) / 1e6 < started + warmup:
                    continue
                latencies.append(int(cols[2]) / 1e6)
                first = at if first is None else min(first, at)
                last = at if last is None else max(last, at)
    window = max((last or 0) - (started + warmup), 1e-9)
    return Cell(op="pgbench", clients=clients, calls=len(latencies), errors=0, seconds=window,
                throughput=len(latencies) / window, p50_ms=percentile(latencies, 50) * 1000,
                p99_ms=percentile(latencies, 99) * 1000)


# --- report ---------------------------------------------------------------------------------------


def report(cells: list[Cell], one: list[Cell], *, processes: int, duration: float,
           warmup: float, concurrency: tuple[int, ...]) -> dict[str, Any]:
    by = {(c.op, c.clients): c for c in cells}
    one_by = {(c.op, c.clients): c for c in one}

    def floor_of(c: Cell, table: dict[tuple[str, int], Cell]) -> Cell | None:
        if c.op in READS:
            return table.get(("floor", c.clients))
        if c.op == "SubmitRun":
            return table.get(("pgbench", c.clients))
        return None

    def rows(cs: list[Cell], table: dict[tuple[str, int], Cell], label: str) -> list[list[object]]:
        out = []
        for c in cs:
            f = floor_of(c, table)
            rel_tp = c.throughput / f.throughput if f and f.throughput else None
            rel_p99 = c.p99_ms / f.p99_ms if f and f.p99_ms else None
            out.append([c.op, label, c.clients, c.throughput, c.p50_ms, c.p99_ms, c.errors,
                        f"{rel_tp:.0%}" if rel_tp is not None else "",
                        f"{rel_p99:.1f}x" if rel_p99 is not None else "",
                        f"{c.server_cpu_us:,.0f}" if c.server_cpu_us is not None else "-"])
        return out

    print("floors: reads against a bare grpc.aio echo on the same number of processes; "
          "SubmitRun against pgbench running its statements")
    print_table(rows(cells, by, str(processes)) + rows(one, one_by, "1"),
                ["op", "procs", "clients", "calls/s", "p50 ms", "p99 ms", "errors", "tput/floor",
                 "p99/floor", "server CPU us/call"])

    targets: dict[str, bool] = {}
    detail: list[list[object]] = []
    f50 = by.get(("floor", TARGET_CLIENTS))
    for op in READS:
        c = by.get((op, TARGET_CLIENTS))
        ok_tp = bool(c and f50 and c.errors == 0
                     and c.throughput >= READ_THROUGHPUT_RATIO * f50.throughput)
        ok_p99 = bool(c and f50 and c.errors == 0 and c.p99_ms <= READ_P99_RATIO * f50.p99_ms)
        targets[f"{op}_throughput_ge_70pct_floor"] = ok_tp
        targets[f"{op}_p99_le_1.5x_floor"] = ok_p99
        if c and f50:
            detail.append([f"{op} calls/s >= {READ_THROUGHPUT_RATIO:.0%} of floor", c.throughput,
                           READ_THROUGHPUT_RATIO * f50.throughput, ok_tp])
            detail.append([f"{op} p99 ms <= {READ_P99_RATIO:g}x floor", c.p99_ms,
                           READ_P99_RATIO * f50.p99_ms, ok_p99])
    s = by.get(("SubmitRun", TARGET_CLIENTS))
    pg = by.get(("pgbench", TARGET_CLIENTS))
    ok_submit = bool(s and pg and s.errors == 0 and s.throughput >= SUBMIT_RATIO * pg.throughput)
    targets["SubmitRun_ge_80pct_pgbench"] = ok_submit
    if s and pg:
        detail.append([f"SubmitRun calls/s >= {SUBMIT_RATIO:.0%} of pgbench", s.throughput,
                       SUBMIT_RATIO * pg.throughput, ok_submit])
    print()
    print(f"targets at {TARGET_CLIENTS} clients, {processes} processes:")
    print_table(detail, ["target", "measured", "bound", "met"])

    def measurements(cs: list[Cell]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for c in cs:
            out.setdefault(c.op, {})[str(c.clients)] = c.as_dict()
        return out

    return {
        "benchmark": "control_plane",
        "database": "postgresql",
        "server_process": "separate",
        "processes": processes,
        "duration_s": duration,
        "warmup_s": warmup,
        "concurrency": list(concurrency),
        "measurements": measurements([c for c in cells if c.op != "pgbench"]),
        "pgbench": measurements([c for c in cells if c.op == "pgbench"]).get("pgbench", {}),
        "one_process": measurements(one),
        "targets": targets,
        "all_targets_met": all(targets.values()),
    }


def default_processes() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:
        return os.cpu_count() or 1


async def run_config(url: str, processes: int, admin_token: str, token: str, *, register: bool,
                     duration: float, warmup: float,
                     concurrency: tuple[int, ...]) -> list[Cell]:
    echoes, reserved = spawn_echo_servers(processes)
    try:
        with airlock_serve(url, processes) as served:
            log(f"{processes} serving process(es) on {served.address}: "
                f"{served.server_pids()[1:] or [served.proc.pid]}")
            return await measure(echoes[0].info["address"], [e.pid for e in echoes], served,
                                 admin_token, token, register=register, duration=duration,
                                 warmup=warmup, concurrency=concurrency)
    finally:
        for e in echoes:
            e.stop()
        if reserved is not None:
            reserved.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell (5)")
    p.add_argument("--quick", action="store_true", help="1 s cells, short warm-up (CI smoke)")
    p.add_argument("--processes", type=int, default=0,
                   help="serving processes, and echo processes for the floor (default: cores)")
    args = p.parse_args(argv)

    duration = 1.0 if args.quick else args.duration
    warmup = 0.2 if args.quick else 0.5
    processes = args.processes or default_processes()
    if not Path(PGBENCH).exists():
        p.error(f"pgbench not found ({PGBENCH}): it measures SubmitRun's floor")
    with fresh_pg_database() as url, \
            fresh_pg_database(PG_ADMIN_URL, prefix="airlock_bench_pgbench") as scratch:
        log(f"database {url.rpartition('/')[2]}; pgbench scratch {scratch.rpartition('/')[2]}")
        script = pgbench_script(asyncio.run(capture_submit_sql(scratch)))
        log("pgbench script:\n" + script)
        admin_token, token = asyncio.run(make_keys(url))
        cells = asyncio.run(run_config(url, processes, admin_token, token, register=True,
                                       duration=duration, warmup=warmup,
                                       concurrency=CONCURRENCY))
        for c in CONCURRENCY:
            log(f"  pgbench x{c} ...")
            cells.append(run_pgbench(scratch, script, clients=c, duration=duration, warmup=warmup))
        one: list[Cell] = []
        if processes != 1:
            log("one serving process, for comparison")
            one = asyncio.run(run_config(url, 1, admin_token, token, register=False,
                                         duration=duration, warmup=warmup,
                                         concurrency=(TARGET_CLIENTS,)))
            one.append(run_pgbench(scratch, script, clients=TARGET_CLIENTS, duration=duration,
                                   warmup=warmup))
    doc = report(cells, one, processes=processes, duration=duration, warmup=warmup,
                 concurrency=CONCURRENCY)
    emit_json(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
