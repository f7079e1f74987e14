"""The audit chain's cost: SubmitRun and Approve throughput with the hash chain and without it.

Two control planes run side by side, each in its own process on its own fresh PostgreSQL
database: one as shipped, one with the chain switched off (no hashing of events and audit
records, no chain head written before the commit, no lock on the ``audit`` chain's head: the
store as it was before the chain, except for columns left empty). Each cell measures the
baseline then the chained plane right after it, so both see the same machine load.

- SubmitRun: a low-risk run (auto-approved): insert, its first event, its audit record.
- Approve: one approver deciding a high-risk run (pending, 1 approval needed): the decision,
  its audit record, the approval closed, the run QUEUED (an event). Runs are submitted
  beforehand, so every call approves a fresh one.

    python bench/audit_chain.py            # 3 rounds of 5 s per cell, alternating the order
    python bench/audit_chain.py --quick    # 1 round of 1 s (smoke)

Target: at 50 clients the chain costs at most 15 % of SubmitRun throughput (chained >= 85 %
of the baseline). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
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
    spawn_server,
    wait_stdin_closed,
)

CONCURRENCY = (10, 50)
TARGET_CLIENTS = 50
MAX_SUBMIT_COST = 0.15  # the chain may cost at most this share of SubmitRun throughput
PENDING_PER_SECOND = 700  # high-risk runs submitted up front per measured second of Approve
MANIFEST = """
name: {name}
version: 1.0.0
description: benchmark agent
image: localhost/airlock/echo:1
risk: {risk}
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


def switch_chain_off() -> None:
    """The baseline: the store without the chain's work (hashes, head writes, head lock)."""
    from server.store import audit, events, store

    audit.chain_hash = events.chain_hash = lambda prev, content: ""  # type: ignore[assignment]

    async def no_head(self: Any, chain: str) -> tuple[int, str]:
        return 0, ""

    async def no_flush(self: Any) -> None:
        self.dirty_heads.clear()

    audit.AuditRepository._head = no_head  # type: ignore[method-assign]
    store.Tx.flush_chains = no_flush  # type: ignore[method-assign]


async def serve_plane(url: str, chain: bool) -> None:
    """Child body: a control plane (migrating on start) and its keys, announced."""
    if not chain:
        switch_chain_off()
    from server.app import ControlPlane
    from server.domain.policy import Policy
    from server.domain.principal import Role
    from server.services.admin import CreateKeyRequest
    from server.settings import ServerSettings

    settings = ServerSettings(database_url=url, grpc_listen="127.0.0.1:0",
                              http_listen="127.0.0.1:0", migrate_on_start=True)
    cp = ControlPlane(settings, policy=Policy())  # low: auto-approved; high: 1 approval
    await cp.start()
    keys = {}
    for owner, role in (("bench-admin", Role.ADMIN), ("bench-submitter", Role.SUBMITTER),
                        ("bench-approver", Role.APPROVER)):
        _, keys[owner] = await cp.services.admin.create_key("bench", CreateKeyRequest(owner, role))
    announce({"address": cp.grpc_address, "keys": keys, "pid": os.getpid()})
    await wait_stdin_closed()
    await cp.stop(1.0)


class Plane:
    """Stubs and prepared runs for one control plane."""

    def __init__(self, proc: ServerProcess, channel: grpc.aio.Channel) -> None:
        from airlock.v1 import approval_service_pb2_grpc as apsg
        from airlock.v1 import registry_service_pb2_grpc as regg
        from airlock.v1 import run_service_pb2_grpc as rsg

        self.proc = proc
        keys = proc.info["keys"]
        self.md = {k: (("authorization", f"Bearer {v}"),) for k, v in keys.items()}
        self.registry = regg.RegistryServiceStub(channel)
        self.runs = rsg.RunServiceStub(channel)
        self.approvals = apsg.ApprovalServiceStub(channel)
        self.pending: list[str] = []

    async def setup(self) -> None:
        from airlock.v1 import registry_service_pb2 as reg

        for name, risk in (("bench-low", "low"), ("bench-high", "high")):
            await self.registry.RegisterAgentVersion(reg.RegisterAgentVersionRequest(
                manifest=MANIFEST.format(name=name, risk=risk)), metadata=self.md["bench-admin"])

    async def submit_pending(self, n: int) -> None:
        from airlock.v1 import run_service_pb2 as rs

        req = rs.SubmitRunRequest(agent="bench-high", capability="echo",
                                  input_json='{"text": "approve me"}')
        sem = asyncio.Semaphore(20)

        async def one() -> None:
            async with sem:
                r = await self.runs.SubmitRun(req, metadata=self.md["bench-submitter"])
                self.pending.append(r.run.id)

        await asyncio.gather(*(one() for _ in range(n)))


def pooled(cells: list[Cell]) -> Cell:
    """Rounds of one op and variant as one cell: calls over the summed windows; the median
    p50, the worst p99; server CPU per call weighted by calls."""
    calls = sum(c.calls for c in cells)
    seconds = sum(c.seconds for c in cells)
    cpu = [(c.server_cpu_us, c.calls) for c in cells if c.server_cpu_us is not None]
    return Cell(op=cells[0].op, clients=cells[0].clients, calls=calls,
                errors=sum(c.errors for c in cells), seconds=seconds,
                throughput=calls / seconds if seconds else 0.0,
                p50_ms=statistics.median(c.p50_ms for c in cells),
                p99_ms=max(c.p99_ms for c in cells),
                first_error=next((c.first_error for c in cells if c.first_error), ""),
                server_cpu_us=(sum(u * n for u, n in cpu) / max(1, sum(n for _, n in cpu))
                               if cpu else None))


async def measure(planes: dict[str, ServerProcess], *, duration: float, warmup: float,
                  concurrency: tuple[int, ...], rounds: int) -> tuple[list[Cell], bool]:
    from airlock.v1 import approval_service_pb2 as aps
    from airlock.v1 import audit_service_pb2 as aus
    from airlock.v1 import audit_service_pb2_grpc as ausg
    from airlock.v1 import run_service_pb2 as rs

    cells: list[Cell] = []
    channels = {k: grpc.aio.insecure_channel(p.info["address"]) for k, p in planes.items()}
    try:
        stubs = {k: Plane(planes[k], channels[k]) for k in planes}
        for p in stubs.values():
            await p.setup()
        low = rs.SubmitRunRequest(agent="bench-low", capability="echo",
                                  input_json='{"text": "hello, benchmark"}')

        def submit(p: Plane) -> Any:
            async def call(i: int, n: int) -> None:
                await p.runs.SubmitRun(low, metadata=p.md["bench-submitter"])
            return call

        def approve(p: Plane) -> Any:
            async def call(i: int, n: int) -> None:
                if not p.pending:
                    raise RuntimeError("ran out of pending runs (raise PENDING_PER_SECOND)")
                await p.approvals.Approve(aps.ApproveRequest(run_id=p.pending.pop()),
                                          metadata=p.md["bench-approver"])
            return call

        for c in concurrency:
            for op, make in (("SubmitRun", submit), ("Approve", approve)):
                runs: dict[str, list[Cell]] = {"baseline": [], "chain": []}
                for r in range(rounds):
                    # Alternate which goes first: load from others drifts within a round.
                    for variant in (("baseline", "chain") if r % 2 == 0 else ("chain", "baseline")):
                        p = stubs[variant]
                        if op == "Approve":
                            need = int(PENDING_PER_SECOND * (duration + warmup) * 1.2)
                            log(f"  submitting {need} high-risk runs to {variant} ...")
                            p.pending.clear()
                            await p.submit_pending(need)
                        log(f"  {op} x{c} {variant} (round {r + 1}/{rounds}) ...")
                        runs[variant].append(await closed_loop(
                            f"{op}/{variant}", make(p), clients=c, duration=duration,
                            warmup=warmup, server_pid=p.proc.pid))
                cells += [pooled(runs["baseline"]), pooled(runs["chain"])]
        log("  verifying the chained plane's trail ...")
        stub = ausg.AuditServiceStub(channels["chain"])
        v = await stub.VerifyAuditTrail(aus.VerifyAuditTrailRequest(),
                                        metadata=stubs["chain"].md["bench-admin"], timeout=900)
        if not v.ok:
            log(f"  verification failed: {v.problem.record}: {v.problem.problem}")
        return cells, bool(v.ok)
    finally:
        for ch in channels.values():
            await ch.close()


def report(cells: list[Cell], *, verified: bool, duration: float, warmup: float,
           concurrency: tuple[int, ...]) -> dict[str, Any]:
    by = {(c.op, c.clients): c for c in cells}
    rows = []
    ratios: dict[str, dict[str, float]] = {}
    for c in concurrency:
        for op in ("SubmitRun", "Approve"):
            base, chain = by[(f"{op}/baseline", c)], by[(f"{op}/chain", c)]
            ratio = chain.throughput / base.throughput if base.throughput else 0.0
            ratios.setdefault(op, {})[str(c)] = round(ratio, 3)
            for cell in (base, chain):
                rows.append([cell.op, c, cell.throughput, cell.p50_ms, cell.p99_ms, cell.errors,
                             f"{cell.server_cpu_us:,.0f}" if cell.server_cpu_us else "-",
                             f"{ratio:.0%}" if cell is chain else ""])
    print_table(rows, ["op/variant", "clients", "calls/s", "p50 ms", "p99 ms", "errors",
                       "server CPU us/call", "chain/baseline"])
    s = ratios["SubmitRun"].get(str(TARGET_CLIENTS))
    errors = sum(c.errors for c in cells)
    ok = bool(s is not None and s >= 1 - MAX_SUBMIT_COST and errors == 0)
    print()
    print(f"target at {TARGET_CLIENTS} clients: SubmitRun with the chain >= "
          f"{1 - MAX_SUBMIT_COST:.0%} of without: {s if s is not None else '-'} -> "
          f"{'met' if ok else 'NOT met'}; the chained trail verifies: {verified}")
    measurements: dict[str, dict[str, Any]] = {}
    for cell in cells:
        measurements.setdefault(cell.op, {})[str(cell.clients)] = cell.as_dict()
    targets = {"SubmitRun_chain_cost_le_15pct": ok, "chain_verifies": verified}
    return {
        "benchmark": "audit_chain",
        "database": "postgresql",
        "server_process": "separate",
        "duration_s": duration,
        "warmup_s": warmup,
        "concurrency": list(concurrency),
        "measurements": measurements,
        "chain_over_baseline": ratios,
        "targets": targets,
        "all_targets_met": all(targets.values()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell (5)")
    p.add_argument("--quick", action="store_true", help="1 s cells, one round (smoke)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds per cell, alternating which variant goes first (3)")
    p.add_argument("--serve-plane", choices=("chain", "baseline"), help=argparse.SUPPRESS)
    p.add_argument("--database-url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_plane:
        asyncio.run(serve_plane(args.database_url, args.serve_plane == "chain"))
        return 0

    duration = 1.0 if args.quick else args.duration
    warmup = 0.2 if args.quick else 0.5
    rounds = 1 if args.quick else args.rounds
    with fresh_pg_database(migrate=False) as url_a, fresh_pg_database(migrate=False) as url_b:
        planes: dict[str, ServerProcess] = {}
        try:
            for variant, url in (("baseline", url_a), ("chain", url_b)):
                log(f"starting the {variant} control plane on {url.rpartition('/')[2]}")
                planes[variant] = spawn_server([sys.executable, str(Path(__file__).resolve()),
                                                "--serve-plane", variant, "--database-url", url])
            cells, verified = asyncio.run(measure(planes, duration=duration, warmup=warmup,
                                                  concurrency=CONCURRENCY, rounds=rounds))
        finally:
            for sp in planes.values():
                with contextlib.suppress(Exception):
                    sp.stop()
    doc = report(cells, verified=verified, duration=duration, warmup=warmup,
                 concurrency=CONCURRENCY)
    doc["rounds"] = rounds
    emit_json(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
