"""The control-plane benchmark runs end to end (``--quick``) and ends with its JSON line.

Only the shape is checked here; whether the performance targets are met is reported by the
benchmark itself (the ``targets`` booleans), never asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.db import pg_available
from tests.helpers.requirements import require

REPO = Path(__file__).resolve().parents[2]
OPS = ("floor", "GetAgent", "GetRun", "SubmitRun")
CONCURRENCY = ("1", "10", "50")
TARGETS = {
    "GetAgent_throughput_ge_70pct_floor", "GetAgent_p99_le_1.5x_floor",
    "GetRun_throughput_ge_70pct_floor", "GetRun_p99_le_1.5x_floor",
    "SubmitRun_ge_80pct_pgbench",
}


def _cell_ok(cell: dict, op: str, clients: str) -> None:
    assert cell["op"] == op and str(cell["clients"]) == clients
    assert cell["calls"] > 0, (op, clients, cell)
    assert cell["errors"] == 0, (op, clients, cell)
    for key in ("throughput", "p50_ms", "p99_ms"):
        assert isinstance(cell[key], int | float) and cell[key] > 0, (op, clients, key)


pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_control_plane_quick_ends_with_json_line() -> None:
    """Airlock on two serving processes beside its floors (an echo on two processes, pgbench
    with the submit's statements), and the one-process figures beside them."""
    require("PostgreSQL", pg_available())
    require("pgbench", None if shutil.which("pgbench") else "pgbench is not installed")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "control_plane.py"), "--quick",
                           "--processes", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 1, "expected a table before the JSON line"
    doc = json.loads(lines[-1])

    assert doc["benchmark"] == "control_plane"
    assert doc["database"] == "postgresql" and doc["processes"] == 2
    assert doc["duration_s"] == 1.0
    assert [str(c) for c in doc["concurrency"]] == list(CONCURRENCY)
    assert set(doc["measurements"]) == set(OPS)
    for op in OPS:
        assert set(doc["measurements"][op]) == set(CONCURRENCY), op
        for c in CONCURRENCY:
            _cell_ok(doc["measurements"][op][c], op, c)
    assert set(doc["pgbench"]) == set(CONCURRENCY)
    for c in CONCURRENCY:
        _cell_ok(doc["pgbench"][c], "pgbench", c)
    assert set(doc["one_process"]) == {*OPS, "pgbench"}
    for op, cells in doc["one_process"].items():
        _cell_ok(cells["50"], op, "50")
    assert set(doc["targets"]) == TARGETS
    assert all(isinstance(v, bool) for v in doc["targets"].values())
    assert doc["all_targets_met"] == all(doc["targets"].values())
    import psycopg

    from tests.helpers.db import PG_ADMIN_URL

    with psycopg.connect(PG_ADMIN_URL) as c:  # the scratch databases are gone
        assert not c.execute("SELECT datname FROM pg_database WHERE datname LIKE "
                             "'airlock_bench_pgbench%%'").fetchall()


@pytest.mark.nats
@pytest.mark.podman
def test_events_quick_measures_idle_and_under_run_load() -> None:
    """bench/events.py --quick: idle, and with one sandbox slot kept busy; ends with JSON."""
    reason = pg_available()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "events.py"), "--quick",
                           "--load-slots", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 1, "expected tables before the JSON line"
    doc = json.loads(lines[-1])
    assert doc["benchmark"] == "events" and doc["duration_s"] == 2.0
    for phase in ("steady", "loaded"):
        cell = doc[phase]
        assert cell["missing"] == 0 and cell["errors"] == 0, (phase, cell)
        assert 0 < cell["p50_ms"] <= cell["p95_ms"] <= cell["p99_ms"], (phase, cell)
    loaded = doc["loaded"]
    # How many sandboxes finish in 2 s depends on the machine; each one's two events arrive.
    assert loaded["slots"] == 1, loaded
    assert loaded["sandbox_runs_succeeded"] == loaded["sandbox_runs"], loaded
    assert loaded["executor_events"] == 2 * loaded["sandbox_runs"], loaded
    assert doc["drain"]["complete"] and doc["drain"]["duplicates"] == 0, doc["drain"]
    assert set(doc["targets"]) == {"p99_le_50ms", "drain_ge_1000_per_s"}


def test_analytics_quick_measures_with_and_without_the_index() -> None:
    """bench/analytics.py --quick: seeds a scratch database, measures GetAnalytics with and
    without its index, drops the database, ends with its JSON line."""
    import psycopg

    from tests.helpers.db import PG_ADMIN_URL

    require("PostgreSQL", pg_available())
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "analytics.py"), "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 3, "expected a table before the JSON line"
    doc = json.loads(lines[-1])
    assert doc["benchmark"] == "analytics" and doc["runs"] == 20_000
    for setting in ("with_index", "without_index"):
        for label in ("24h", "7d"):
            cell = doc[setting][label]
            assert cell["calls"] == 10 and 0 < cell["p50_ms"] <= cell["p95_ms"] <= cell["max_ms"]
    # 20,000 runs evenly over 100 days: 200 a day, the same runs with and without the index
    assert doc["with_index"]["24h"]["runs_in_range"] == doc["without_index"]["24h"]["runs_in_range"]
    assert 190 <= doc["with_index"]["24h"]["runs_in_range"] <= 210
    assert set(doc["targets"]) == {"p95_24h_le_200ms"}
    assert doc["all_targets_met"] == all(doc["targets"].values())
    assert doc["scratch_database"].startswith("airlock_bench_analytics_")
    with psycopg.connect(PG_ADMIN_URL) as c:  # the scratch database is gone
        assert not c.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (doc["scratch_database"],)).fetchall()
