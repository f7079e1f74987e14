"""The snippets in docs/events.md run as written, against real NATS and a real plane: the Python
ones, and the Node.js consumer of docs/examples/node-consumer (installed from its lockfile into
a directory of the test's own)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, Plane, start_plane
from tests.events.conftest import (
    Names,
    echo_world,
    fetch_all,
    relay_settings,
    running_relay,
    unpublished,
)
from tests.helpers.api import cancel, submit
from tests.helpers.requirements import require
from tests.helpers.wait import assert_eventually

pytestmark = [pytest.mark.nats, pytest.mark.postgres]

DOC = REPO / "docs" / "events.md"
NODE_EXAMPLE = REPO / "docs" / "examples" / "node-consumer"


def snippet(name: str) -> str:
    m = re.search(rf"<!-- snippet: {name} -->\s*```python\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"no python snippet {name!r} in {DOC}"
    return m.group(1)


async def run_script(path: Path, env: dict[str, str], timeout: float = 60,
                     interpreter: str = sys.executable) -> str:
    proc = await asyncio.create_subprocess_exec(
        interpreter, str(path), env={**os.environ, **env}, cwd=path.parent,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


async def test_subscribe_snippet_follows_events_and_resumes(pg_plane: Plane, nats_url: str,
                                                            names: Names, tmp_path: Path) -> None:
    script = tmp_path / "subscribe.py"
    script.write_text(snippet("subscribe"))
    _, alice = await echo_world(pg_plane)
    env = {"NATS_URL": nats_url, "AIRLOCK_NATS_STREAM": names.stream,
           "SUBJECTS": f"{names.prefix}.>", "DURABLE": "docs"}
    async with running_relay(relay_settings(pg_plane.url, nats_url, names)) as rr:
        ids = []
        for i in range(3):
            run = (await submit(alice, text=f"d{i}")).run
            await cancel(alice, run.id, "docs")
            ids += [f"{run.id}.1", f"{run.id}.2"]
        await assert_eventually(lambda: unpublished(rr.store), lambda n: n == 0, timeout=20)
        first = await run_script(script, {**env, "MAX_EVENTS": "4"})
        rest = await run_script(script, {**env, "MAX_EVENTS": "2"})  # same durable: resumes
    lines = [ln.split() for ln in (first + rest).splitlines()]
    assert [ln[0] for ln in lines] == ids
    assert [ln[1] for ln in lines] == ["RUN_STATE_QUEUED", "RUN_STATE_CANCELLED"] * 3


async def test_submit_snippet_creates_a_run(pg_url: str, nats_url: str, tmp_path: Path) -> None:
    subject = f"t{uuid.uuid4().hex[:12]}.submit"
    plane = await start_plane(pg_url, nats_url=nats_url, nats_submit_subject=subject)
    try:
        _, alice = await echo_world(plane)
        assert plane.cp.nats_submit is not None
        await asyncio.wait_for(plane.cp.nats_submit.ready.wait(), 10)
        script = tmp_path / "submit.py"
        script.write_text(snippet("submit"))
        env = {"NATS_URL": nats_url, "AIRLOCK_NATS_SUBMIT_SUBJECT": subject,
               "AIRLOCK_API_KEY": str(alice.token), "AGENT": "echo", "CAPABILITY": "echo"}
        run_id, state = (await run_script(script, env)).split()
        assert state == "RUN_STATE_QUEUED"
        async with plane.cp.store.read() as tx:
            run = await tx.runs.get(run_id)
        assert run is not None and json.loads(run.input_json) == {"text": "hello"}
    finally:
        await plane.close()


@pytest.fixture(scope="module")
def node_consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Node.js example, copied to a directory of this test's own and installed with
    ``npm ci`` from its lockfile (the npm registry, or npm's cache)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    require("Node.js and npm", None if node and npm else "node or npm not on PATH")
    assert npm is not None
    work = tmp_path_factory.mktemp("node-consumer")
    for name in ("package.json", "package-lock.json", "consumer.mjs"):
        shutil.copy(NODE_EXAMPLE / name, work / name)
    proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "consumer.mjs"


async def test_node_consumer_follows_events_in_order_and_resumes(
        pg_plane: Plane, nats_url: str, names: Names, node_consumer: Path) -> None:
    """A team in another language, from docs/events.md alone: a durable consumer sees every
    event of each run in sequence order, knows the final states, and a restart with the same
    durable name resumes after the last ack."""
    node = shutil.which("node")
    assert node is not None
    _, alice = await echo_world(pg_plane)
    env = {"NATS_URL": nats_url, "AIRLOCK_NATS_STREAM": names.stream,
           "SUBJECTS": f"{names.prefix}.>", "DURABLE": "node-docs"}
    async with running_relay(relay_settings(pg_plane.url, nats_url, names)) as rr:
        ids = []
        for i in range(3):
            run = (await submit(alice, text=f"n{i}")).run
            await cancel(alice, run.id, "node docs")
            ids += [f"{run.id}.1", f"{run.id}.2"]
        await assert_eventually(lambda: unpublished(rr.store), lambda n: n == 0, timeout=20)
        first = await run_script(node_consumer, {**env, "MAX_EVENTS": "4"}, interpreter=node)
        rest = await run_script(node_consumer, {**env, "MAX_EVENTS": "2"}, interpreter=node)
    lines = [ln.split(" ", 4) for ln in (first + rest).splitlines()]
    seen = [ln[0] for ln in lines]
    # Every event once, across the restart; runs may interleave (the relay publishes runs
    # concurrently), but each run's events arrive in sequence order.
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    for run_id in {i.rsplit(".", 1)[0] for i in ids}:
        assert [i for i in seen if i.startswith(run_id + ".")] == [f"{run_id}.1", f"{run_id}.2"]
    kinds = {"1": ("RUN_STATE_QUEUED", "-"), "2": ("RUN_STATE_CANCELLED", "final")}
    assert all((ln[1], ln[2]) == kinds[ln[0].rsplit(".", 1)[1]] for ln in lines)
    assert all(json.loads(ln[4]) for ln in lines)  # the reason, as JSON text
    # As documented: every message was published with Nats-Expected-Stream (JetStream keeps
    # the header), so a subject taken by another stream is refused, not stored there.
    got = await fetch_all(nats_url, names, 6)
    assert [m.headers.get("Nats-Expected-Stream") for m in got] == [names.stream] * 6
