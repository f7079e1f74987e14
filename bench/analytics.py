"""Analytics benchmark: GetAnalytics on a PostgreSQL database seeded with a million runs, with
and without the index that serves it, in the same run.

A private scratch database (created, migrated to head, dropped at the end) is seeded in one
statement with ``generate_series``: runs spread evenly over 100 days, 20 agents, 50 owners,
mostly finished (with wall time, CPU time, peak memory and a queue wait), some queued or
running. Then a control plane in this process answers ``UsageService.GetAnalytics`` over gRPC
for the last 24 hours (the default range of the CLI and the UI, about 10,000 runs here) and the
last 7 days (about 70,000), ``--repeat`` times each; then ``ix_runs_created_usage`` is dropped
and the same calls are measured again.

    python bench/analytics.py                 # 1,000,000 runs
    python bench/analytics.py --quick         # 20,000 runs (CI smoke)

Target: p95 <= 200 ms for the 24-hour range with the index, on 1,000,000 runs. Prints a table,
then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from bench._common import emit_json, fresh_pg_database, log, percentile, print_table

TARGET_P95_MS = 200.0
DAYS = 100
INDEX = "ix_runs_created_usage"
# The latest run is submitted at END; runs go back DAYS from there.
END = datetime(2026, 12, 1, tzinfo=UTC)
RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}

SEED = """
INSERT INTO runs (id, agent_name, version, capability, state, reason, effective_risk,
                  risk_reasons, submitter, submitter_key_id, idempotency_key, request_hash,
                  input_json, network, secrets, limits, image, entrypoint, output_schema,
                  attempt, max_attempts, last_seq, traceparent, created_at, updated_at,
                  started_at, finished_at, cancel_requested, error_code, error_message,
                  logs_truncated, duration_seconds, cpu_seconds, peak_memory_bytes, exit_code,
                  output_bytes, log_bytes)
SELECT 'run_' || lpad(g::text, 26, '0'), 'agent-' || (g %% 20), '1.0.0', 'run',
       s.state, '', 0, '[]', 'owner-' || (g %% 50), 'key_bench', NULL, '', '{}', false, '[]',
       '{}', 'localhost/bench:1', NULL, '{}', 1, 3, 3, '', c.created, c.created,
       CASE WHEN s.state = 'QUEUED' THEN NULL ELSE c.created + w.wait END,
       CASE WHEN s.state IN ('QUEUED', 'RUNNING') THEN NULL ELSE c.created + w.wait + d.dur END,
       false, '', '', false,
       CASE WHEN s.state IN ('QUEUED', 'RUNNING') THEN NULL ELSE extract(epoch FROM d.dur) END,
       CASE WHEN s.state IN ('QUEUED', 'RUNNING') THEN NULL ELSE extract(epoch FROM d.dur) * 0.8 END,
       CASE WHEN s.state IN ('QUEUED', 'RUNNING') THEN NULL ELSE (32 + g %% 480)::bigint << 20 END,
       0, 128, 4096
FROM generate_series(1::bigint, %(n)s) AS g
CROSS JOIN LATERAL (SELECT %(end)s::timestamptz
                    - make_interval(secs => (%(n)s - g) * %(step)s) AS created) AS c
CROSS JOIN LATERAL (SELECT make_interval(secs => (g * 7919 %% 3000) / 1000.0) AS wait) AS w
CROSS JOIN LATERAL (SELECT make_interval(secs => 0.05 + (g * 104729 %% 60000) / 1000.0) AS dur) AS d
CROSS JOIN LATERAL (SELECT CASE WHEN g %% 100 < 80 THEN 'SUCCEEDED' WHEN g %% 100 < 92 THEN 'FAILED'
                                WHEN g %% 100 < 95 THEN 'TIMED_OUT' WHEN g %% 100 < 96 THEN 'OOM_KILLED'
                                WHEN g %% 100 < 98 THEN 'CANCELLED' WHEN g %% 100 < 99 THEN 'RUNNING'
                                ELSE 'QUEUED' END AS state) AS s
"""


def stamp(t: datetime) -> Timestamp:
    s = Timestamp()
    s.FromDatetime(t)
    return s


def seed(url: str, n: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(SEED, {"n": n, "end": END, "step": DAYS * 86400 / n})
        c.execute("VACUUM ANALYZE runs")  # index-only scans need the visibility map
    return time.perf_counter() - started


async def calls(admin: Any, repeat: int) -> dict[str, dict[str, Any]]:
    """``repeat`` timed GetAnalytics calls per range (after one untimed call)."""
    from airlock.v1 import usage_service_pb2 as us

    out: dict[str, dict[str, Any]] = {}
    for label, span in RANGES.items():
        req = us.GetAnalyticsRequest(start_time=stamp(END - span),
                                     end_time=stamp(END + timedelta(seconds=1)))
        first = await admin.GetAnalytics(req, metadata=MD)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            await admin.GetAnalytics(req, metadata=MD)
            times.append((time.perf_counter() - t0) * 1000)
        out[label] = {"runs_in_range": first.total_runs, "calls": repeat,
                      "p50_ms": round(percentile(times, 50), 2),
                      "p95_ms": round(percentile(times, 95), 2), "max_ms": round(max(times), 2)}
    return out


MD: tuple[tuple[str, str], ...] = ()


async def measure(url: str, repeat: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(with the index, without it): one control plane, the index dropped in between."""
    global MD
    import grpc

    from airlock.v1 import usage_service_pb2_grpc as usg
    from server.app import ControlPlane
    from server.settings import ServerSettings

    cp = ControlPlane(ServerSettings(database_url=url, grpc_listen="127.0.0.1:0",  # type: ignore[arg-type]
                                     http_enabled=False, migrate_on_start=False))
    await cp.start()
    channel = grpc.aio.insecure_channel(cp.grpc_address)
    try:
        MD = (("authorization", f"Bearer {cp.admin_token}"),)
        stub = usg.UsageServiceStub(channel)
        log(f"measuring with {INDEX} ...")
        with_index = await calls(stub, repeat)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(f"DROP INDEX {INDEX}")
            c.execute("ANALYZE runs")
        log(f"dropped {INDEX}; measuring without it ...")
        without = await calls(stub, repeat)
        return with_index, without
    finally:
        await channel.close()
        await cp.stop(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=40, help="calls per range and index setting")
    ap.add_argument("--quick", action="store_true", help="20,000 runs, 10 calls (CI smoke)")
    args = ap.parse_args(argv)
    n, repeat = (20_000, 10) if args.quick else (args.runs, args.repeat)

    with fresh_pg_database(prefix="airlock_bench_analytics") as url:
        scratch = url.rpartition("/")[2]
        log(f"seeding {n:,} runs over {DAYS} days ...")
        seed_s = seed(url, n)
        log(f"seeded in {seed_s:.1f}s")
        with_index, without = asyncio.run(measure(url, repeat))

    rows = []
    for label in RANGES:
        for setting, cells in (("with index", with_index), ("without", without)):
            c = cells[label]
            rows.append((f"last {label}", setting, c["runs_in_range"], c["p50_ms"], c["p95_ms"],
                         c["max_ms"]))
    print(f"GetAnalytics over gRPC on {n:,} runs ({DAYS} days, PostgreSQL), {repeat} calls each")
    print_table(rows, ("RANGE", "INDEX", "RUNS", "P50 MS", "P95 MS", "MAX MS"))
    met = with_index["24h"]["p95_ms"] <= TARGET_P95_MS
    emit_json({
        "benchmark": "analytics", "database": "postgresql", "scratch_database": scratch,
        "runs": n, "days": DAYS,
        "repeat": repeat, "seed_s": round(seed_s, 1),
        "with_index": with_index, "without_index": without,
        "targets": {"p95_24h_le_200ms": met}, "all_targets_met": met,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
