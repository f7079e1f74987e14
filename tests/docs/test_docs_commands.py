"""Every shell command in the docs either runs here or says what it needs.

Convention for fenced code blocks in ``docs/*.md`` whose info string is ``sh``, ``bash``,
``shell`` or ``console`` (in ``console`` blocks only lines starting with ``$ `` are commands;
the rest is sample output). The block's first line is a marker comment:

``# test: run``
    This test runs the block as one bash script (``set -euo pipefail``) from the repository
    root, with this Python environment's ``bin`` first on ``PATH`` (so ``airlock`` and
    ``python`` are the ones under test). It must exit 0 within two minutes, need no network
    and leave nothing behind outside ``mktemp``. Its exit status is that of its last command
    (so a last line ``! cmd`` asserts that ``cmd`` fails).

``# (needs WHAT)``  (or ``# needs: WHAT``)
    Not run here; reported as skipped with "needs WHAT". Use the wording readers see:
    ``# (needs Docker)``, ``# (needs a Dagger engine)``, ``# (needs podman)``,
    ``# (needs a running control plane)``.

A block without a marker fails this test. Independently of the marker, every
``airlock …`` command in a block is parsed by the real CLI parser (``server.cli.build_parser``):
a subcommand, option or choice the CLI does not have fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SHELL_LANGS = {"sh", "bash", "shell", "console"}
RUN = re.compile(r"^#\s*test:\s*run\s*$")
NEEDS = re.compile(r"^#\s*\(?\s*needs[:\s]\s*(?P<what>[^)]+?)\s*\)?\s*$", re.I)


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.doc.name}:{self.line}"

    @property
    def marker(self) -> str | None:
        first = next((ln.strip() for ln in self.body if ln.strip()), "")
        return first if RUN.match(first) or NEEDS.match(first) else None

    def commands(self) -> list[str]:
        """Command lines (continuations joined), without the marker."""
        lines = list(self.body)
        if self.lang == "console":
            lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
        out: list[str] = []
        pending = ""
        for ln in lines:
            if ln.rstrip().endswith("\\"):
                pending += ln.rstrip()[:-1] + " "
                continue
            cmd = (pending + ln).strip()
            pending = ""
            if cmd and not cmd.startswith("#"):
                out.append(cmd)
        return out

    def script(self) -> str:
        return "\n".join(self.commands()) + "\n"


def blocks_of(doc: Path) -> list[Block]:
    found: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(2), m.group(3).lower(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        if lang in SHELL_LANGS:
            found.append(Block(doc, start + 1, lang, tuple(body)))
    return found


DOC_FILES = sorted(DOCS.glob("*.md"))
BLOCKS = [b for d in DOC_FILES for b in blocks_of(d)]
RUNNABLE = [b for b in BLOCKS if b.marker and RUN.match(b.marker)]
NEEDING = [b for b in BLOCKS if b.marker and NEEDS.match(b.marker)]


def test_the_docs_have_commands() -> None:
    mine = {"deployment.md", "security.md", "operations.md", "agent-authors.md"}
    assert mine <= {b.doc.name for b in BLOCKS}
    assert RUNNABLE and NEEDING


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda d: d.name)
def test_every_shell_block_is_marked(doc: Path) -> None:
    blocks = blocks_of(doc)
    unmarked = [b.id for b in blocks if b.marker is None]
    assert unmarked == [], (f"shell blocks without `# test: run` or `# (needs …)`: {unmarked}"
                            " (see the docstring of tests/docs/test_docs_commands.py)")


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_runnable_block(block: Block) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block.script()], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (f"docs/{block.id} failed (exit {r.returncode}):\n"
                               f"{block.script()}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")


@pytest.mark.parametrize("block", NEEDING, ids=lambda b: b.id)
def test_block_needing_what_is_not_here(block: Block) -> None:
    m = NEEDS.match(block.marker or "")
    assert m and m.group("what").strip()
    assert block.commands(), f"docs/{block.id}: a marked block with no command"
    pytest.skip(f"needs {m.group('what').strip()}")


# Leading `VAR=value ` words, values possibly holding $(…) with spaces.
_ASSIGNMENTS = re.compile(r"^\s*(?:[A-Za-z_]\w*=(?:\$\([^)]*\)|[^\s$]|\$)*\s+)+")


def _airlock_argv(command: str) -> list[str] | None:
    """The argv of an `airlock …` command line (after VAR=value prefixes), else None."""
    command = _ASSIGNMENTS.sub("", command)
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None
    if not words or words[0] != "airlock":
        return None
    argv = []
    for w in words[1:]:
        if w in {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&"}:
            break
        argv.append(w)
    return argv


AIRLOCK_COMMANDS = [
    (b, argv) for b in BLOCKS for c in b.commands() if (argv := _airlock_argv(c)) is not None
]


def test_docs_show_airlock_commands() -> None:
    assert len(AIRLOCK_COMMANDS) >= 10


@pytest.mark.parametrize(("block", "argv"), AIRLOCK_COMMANDS,
                         ids=[f"{b.id}:{' '.join(a[:2])}" for b, a in AIRLOCK_COMMANDS])
def test_airlock_command_exists(block: Block, argv: list[str]) -> None:
    from server.cli import build_parser

    parser = build_parser()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            ns = parser.parse_args(argv)
        except SystemExit as e:
            help_asked = "-h" in argv or "--help" in argv
            assert help_asked and e.code == 0, (
                f"docs/{block.id}: `airlock {' '.join(argv)}` is not a valid command: "
                f"{err.getvalue().strip()}")
            return
    assert getattr(ns, "handler", None) is not None, (
        f"docs/{block.id}: `airlock {' '.join(argv)}` names a command group, not a command")
