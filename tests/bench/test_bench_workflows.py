"""bench/workflows.py runs end to end (``--quick``) and ends with its JSON line.

Only the shape is checked; whether the targets are met is reported by the benchmark itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.db import pg_available
from tests.helpers.requirements import require

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.podman]


def test_workflows_quick_measures_both_latencies() -> None:
    require("PostgreSQL", pg_available())
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "workflows.py"), "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 1, "expected a table before the JSON line"
    doc = json.loads(lines[-1])
    assert doc["benchmark"] == "workflows" and doc["failed_workflows"] == 0
    assert doc["single_run_queued_to_running"]["n"] == 8
    assert doc["step_succeeded_to_next_running"]["n"] == 3 * 3  # 3 chains of 4 steps
    for key in ("single_run_queued_to_running", "step_succeeded_to_next_running"):
        cell = doc[key]
        assert 0 < cell["p50_ms"] <= cell["p99_ms"] <= cell["max_ms"], (key, cell)
    assert set(doc["targets"]) == {"step_p99_le_50ms", "step_p99_le_single_p99_plus_10ms"}
    assert doc["all_targets_met"] == all(doc["targets"].values())
