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
    The block needs something besides the repository. Use the wording readers see. This test
    provides what it can and runs the block (``test_block_with_what_it_needs``), as above:

    - ``podman``: used as it is (the suite's podman; root).
    - ``a running control plane``: ``airlock dev`` (control plane + podman executor, SQLite
      in a temporary directory, free ports), started once for these blocks; ``AIRLOCK_ADDRESS``
      and ``AIRLOCK_TOKEN`` are set, and the docs' example values (``<the admin token>``,
      ``127.0.0.1:50051``, a run id, a key id) are replaced by live ones (``EXAMPLES``).
    - ``PostgreSQL and NATS``: a fresh migrated database and the suite's NATS replace the
      compose host names; a block ending in a service (``airlock relay``) is
      started, must log that it is ready, and must stop cleanly on SIGTERM.

    A block whose needs name Docker, a Dagger engine, a registry (package registries, the
    compose stack's image registry) or minutes of run time cannot run in this suite and is
    left out of the parametrisation altogether (``LEFT_OUT``): it is neither run nor reported
    as a skipped test. Such blocks are still checked for a marker and their ``airlock``
    commands are still parsed.

A block without a marker fails this test. Independently of the marker, every
``airlock …`` command in a block is parsed by the real CLI parser (``airlock.cli.build_parser``):
a subcommand, option or choice the CLI does not have fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.wait import wait_until

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
# Needs this suite cannot provide: such blocks are not collected (see the module docstring).
LEFT_OUT = re.compile(r"\bDocker\b|Dagger engine|registr|\bminutes\b", re.I)
PROVIDED = re.compile(r"^(podman|a running control plane|PostgreSQL|NATS)$", re.I)


def needs(block: Block) -> str:
    m = NEEDS.match(block.marker or "")
    assert m, block.id
    return m.group("what").strip()


def alternatives(block: Block) -> list[list[str]]:
    """``podman or a Dagger engine`` -> [[``podman``], [``a Dagger engine``]]; ``and`` and
    commas join the parts one alternative needs together."""
    return [[p.strip() for p in re.split(r",|\band\b", alt) if p.strip()]
            for alt in re.split(r"\bor\b", needs(block))]


def provided(block: Block) -> list[str] | None:
    """The parts of the first alternative this test provides entirely, else None."""
    return next((alt for alt in alternatives(block) if all(PROVIDED.match(p) for p in alt)), None)


RUN_HERE = [b for b in NEEDING if provided(b) is not None]
# Blocks ending in a service that runs until stopped: (command pattern, line it logs when ready).
SERVICES = [(re.compile(r"airlock relay\s*$"), "relay connected to NATS")]


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


def test_marked_blocks_are_run_or_left_out_for_a_stated_reason() -> None:
    assert len(RUN_HERE) >= 5, "blocks needing something should mostly run here"
    for b in NEEDING:
        assert b.commands(), f"docs/{b.id}: a marked block with no command"
        assert provided(b) is not None or LEFT_OUT.search(needs(b)), (
            f"docs/{b.id} needs {needs(b)!r}, which this test neither provides nor leaves out: "
            "provide it here or reword the marker (see the module docstring)")


@pytest.mark.parametrize("block", RUN_HERE, ids=lambda b: b.id)
def test_block_with_what_it_needs(block: Block, request: pytest.FixtureRequest,
                                  tmp_path: Path) -> None:
    from tests.docs.conftest import DocsPlane, docs_env

    parts = {p.lower() for p in provided(block) or []}
    env = docs_env()
    script = block.script()
    examples: dict[str, str] = {}
    if "podman" in parts or "a running control plane" in parts:
        request.getfixturevalue("docs_podman")(script)
    if "a running control plane" in parts:
        plane: DocsPlane = request.getfixturevalue("docs_plane")
        env |= plane.env
        examples |= plane.examples
    if "postgresql" in parts:
        examples["postgresql://airlock@db:5432/airlock"] = request.getfixturevalue("pg_url")
    if "nats" in parts:
        from tests.helpers.requirements import require

        nats = os.environ.get("AIRLOCK_TEST_NATS", "nats://127.0.0.1:4222")
        host, _, port = nats.removeprefix("nats://").partition(":")
        try:
            socket.create_connection((host, int(port or 4222)), 2).close()
        except OSError as e:
            require("NATS", f"not reachable at {nats}: {e}")
        examples["nats://nats:4222"] = nats
        # This test's own stream and subjects on the shared server.
        env |= {"AIRLOCK_NATS_STREAM": f"DOCS_{uuid.uuid4().hex[:10]}",
                "AIRLOCK_NATS_SUBJECT_PREFIX": f"docs{uuid.uuid4().hex[:10]}.runs"}
    for example, live in examples.items():
        script = script.replace(example, live)
    left = re.findall(r"<[a-z][^<>|]*>", script)
    assert not left, f"docs/{block.id}: example values this test cannot fill in: {left}"
    service = next(((pat, ready) for pat, ready in SERVICES if pat.search(script)), None)
    if service is None:
        r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (f"docs/{block.id} failed (exit {r.returncode}):\n{script}"
                                   f"\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")
        return
    # A service (one command, maybe VAR=value prefixed; `exec env` so SIGTERM reaches it):
    # started as written, it must say it is ready, then stop cleanly on SIGTERM.
    assert len(block.commands()) == 1, f"docs/{block.id}: a service block holds one command"
    out = tmp_path / "service.log"
    with out.open("w") as f:
        proc = subprocess.Popen(["bash", "-c", "set -euo pipefail\nexec env " + script.strip()],
                                cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"docs/{block.id} exited early:\n{out.read_text()}"
            return service[1] in out.read_text()

        wait_until(ready, timeout=60, interval=0.1, what=f"docs/{block.id}: {service[1]!r}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    assert rc == 0, f"docs/{block.id} did not stop cleanly (exit {rc}):\n{out.read_text()}"


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
    from airlock.cli import build_parser

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
