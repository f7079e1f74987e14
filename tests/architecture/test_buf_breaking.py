"""``buf breaking`` (scripts/buf_breaking.sh, run by scripts/test.sh) holds on the tree as it
is, against the last landed main named in proto/BREAKING_BASE, and catches a breaking change:
a copy of proto/ with one field deleted fails naming that field."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.requirements import require

REPO = Path(__file__).resolve().parents[2]
BUF = REPO / "ui" / "node_modules" / ".bin" / "buf"
SCRIPT = REPO / "scripts" / "buf_breaking.sh"



@pytest.fixture(autouse=True)
def _buf() -> None:
    require("buf", None if BUF.exists() else f"{BUF} is absent (npm --prefix ui ci, run by setup)")


def _breaking(proto_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = ["bash", str(SCRIPT)] + ([str(proto_dir)] if proto_dir else [])
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_base_is_a_full_commit_of_this_history() -> None:
    base = (REPO / "proto" / "BREAKING_BASE").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{40}", base), base
    # The base is an ancestor of this tree's HEAD: an older main, never a side branch.
    assert subprocess.run(["git", "merge-base", "--is-ancestor", base, "HEAD"], cwd=REPO).returncode == 0


def test_tree_as_it_is_has_no_breaking_change() -> None:
    r = _breaking()
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_deleted_field_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "proto"
    shutil.copytree(REPO / "proto", copy, ignore=shutil.ignore_patterns("__pycache__"))
    f = copy / "airlock" / "v1" / "run_service.proto"
    text = f.read_text()
    changed = re.sub(r"(message GetRunRequest \{.*?)\n\s*string run_id = 1;", r"\1", text,
                     count=1, flags=re.S)
    assert changed != text
    f.write_text(changed)
    r = _breaking(copy)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert '"run_id"' in out and "GetRunRequest" in out and "deleted" in out, out


def test_a_renumbered_field_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "proto"
    shutil.copytree(REPO / "proto", copy, ignore=shutil.ignore_patterns("__pycache__"))
    f = copy / "airlock" / "v1" / "run_service.proto"
    text = f.read_text()
    changed = text.replace("message GetRunResponse {\n  Run run = 1;",
                           "message GetRunResponse {\n  Run run = 2;", 1)
    assert changed != text
    f.write_text(changed)
    r = _breaking(copy)
    assert r.returncode != 0 and "GetRunResponse" in r.stdout + r.stderr, r.stdout + r.stderr
