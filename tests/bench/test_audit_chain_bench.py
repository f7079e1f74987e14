"""bench/audit_chain.py runs end to end (``--quick``) and ends with its JSON line.

Only the shape is checked; whether the chain's cost is within the target is reported by the
benchmark itself (``targets``), never asserted. The chained plane's trail must verify.
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

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_audit_chain_quick_ends_with_json_line() -> None:
    require("PostgreSQL", pg_available())
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "audit_chain.py"), "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 1, "expected a table before the JSON line"
    doc = json.loads(lines[-1])
    assert doc["benchmark"] == "audit_chain" and doc["rounds"] == 1
    ops = {f"{op}/{v}" for op in ("SubmitRun", "Approve") for v in ("baseline", "chain")}
    assert set(doc["measurements"]) == ops
    for op in ops:
        for clients in ("10", "50"):
            cell = doc["measurements"][op][clients]
            assert cell["calls"] > 0 and cell["errors"] == 0, (op, clients, cell)
    assert set(doc["chain_over_baseline"]) == {"SubmitRun", "Approve"}
    assert set(doc["targets"]) == {"SubmitRun_chain_cost_le_15pct", "chain_verifies"}
    assert doc["targets"]["chain_verifies"] is True
    assert doc["all_targets_met"] == all(doc["targets"].values())
