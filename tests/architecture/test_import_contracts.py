"""The layering in pyproject.toml ([tool.importlinter]) holds, and would catch a back-edge.

CI also runs ``lint-imports`` directly (scripts/test.sh); here the contracts are checked on
the tree as it is and on a copy with one deliberate back-edge, so a contract that silently
stopped checking anything would fail too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("agents", "server", "executor", "airlock")
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _copy_tree(dst: Path) -> None:
    shutil.copy(REPO / "pyproject.toml", dst / "pyproject.toml")
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, dst / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "webui", "node_modules"))


def test_contracts_hold_on_this_tree(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    r = _lint(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout, r.stdout


def test_a_back_edge_from_the_domain_to_transport_is_refused(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    states = tmp_path / "server" / "domain" / "states.py"
    states.write_text(states.read_text() + "\nfrom server.transport import errors as _back_edge  # noqa\n")
    r = _lint(tmp_path)
    assert r.returncode != 0
    assert "server.domain.states -> server.transport.errors" in r.stdout, r.stdout


def test_the_kit_may_not_import_the_executor(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    limits = tmp_path / "agents" / "limits.py"
    limits.write_text(limits.read_text() + "\nimport executor.results as _back_edge  # noqa\n")
    r = _lint(tmp_path)
    assert r.returncode != 0
    assert "agents.limits -> executor.results" in r.stdout, r.stdout
