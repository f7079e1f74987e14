"""Containment: each misbehaviour runs in a real container next to a well-behaved run.

Every test asserts the misbehaving run's final state *and* that an ``ok`` run started at the
same time still succeeds, i.e. one bad agent cannot take the executor or its neighbours down.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agents.limits import Limits
from agents.manifest import Manifest
from executor.results import Outcome
from executor.runtime.base import SandboxResult, Termination
from executor.runtime.podman import KILL_GRACE_SECONDS, NOFILE, SANDBOX_UID, PodmanRuntime
from tests.executor.conftest import SMALL, new_run_id, run_agent
from tests.executor.conftest import containers as _containers
from tests.helpers.requirements import require
from tests.helpers.wait import wait_for_condition

pytestmark = pytest.mark.podman

T = TypeVar("T")
OWNED = "/srv/sandbox-owned"  # owned by uid 65534 in the misbehave image (its Containerfile)


async def alongside_ok(
    runtime: PodmanRuntime, image: str, manifest: Manifest, bad: Awaitable[T]
) -> T:
    """Await ``bad`` while an ``ok`` run goes on in parallel; the ok run must succeed."""
    ok = asyncio.create_task(run_agent(runtime, image, manifest, "ok", {"n": 1}, limits=SMALL))
    res = await bad
    _, ok_outcome = await ok
    assert ok_outcome.state == "SUCCEEDED", f"neighbour run failed: {ok_outcome}"
    return res


async def _bad(
    runtime: PodmanRuntime,
    image: str,
    manifest: Manifest,
    capability: str,
    payload: Any = None,
    limits: Limits = SMALL,
    **kw: Any,
) -> tuple[SandboxResult, Outcome, float]:
    t0 = time.monotonic()
    result, outcome = await alongside_ok(
        runtime,
        image,
        manifest,
        run_agent(runtime, image, manifest, capability, payload, limits=limits, **kw),
    )
    return result, outcome, time.monotonic() - t0


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
async def host_listener() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server on every host address: (port, accepted-connection counter)."""
    accepted = [0]

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        w.close()

    server = await asyncio.start_server(on_conn, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, accepted
    finally:
        server.close()
        await server.wait_closed()


@dataclass(frozen=True)
class NetnsListener:
    """A TCP listener inside a network namespace the test created, joined to the host by a
    veth pair: reachable from the host, a stand-in for "somewhere else" that is still on
    this machine, so no packet can leave it even if isolation breaks."""

    host_addr: str  # the host's end of the veth
    addr: str  # the namespace's end, where the listener is
    port: int


@pytest.fixture
def netns_listener() -> Iterator[NetnsListener]:
    require("iproute2 (`ip`)", None if shutil.which("ip") else "makes the test's network namespace")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"airlock-t-{tag}", f"alt{tag}h", f"alt{tag}n"
    third = int(tag[:2], 16)  # 10.213.<0-255>.0/30: a link route on the veth, nothing else
    host_addr, ns_addr = f"10.213.{third}.1", f"10.213.{third}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    listener: subprocess.Popen[str] | None = None
    ip("netns", "add", ns)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
        ip("addr", "add", f"{host_addr}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", f"{ns_addr}/30", "dev", ns_if)
        ip("-n", ns, "link", "set", ns_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        serve = (
            "import socket, sys\n"
            f"s = socket.create_server(({ns_addr!r}, 0))\n"
            "print(s.getsockname()[1], flush=True)\n"
            "while True:\n"
            "    s.accept()[0].close()\n"
        )
        listener = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", serve],
            stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None
        port = int(listener.stdout.readline())  # printed once listening
        yield NetnsListener(host_addr, ns_addr, port)
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _podman_gateway() -> str | None:
    r = subprocess.run(
        ["podman", "network", "inspect", "podman", "--format", "{{json .}}"],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        return None
    nets = json.loads(r.stdout)
    net = nets[0] if isinstance(nets, list) else nets
    subnets = net.get("subnets") or []
    return subnets[0].get("gateway") if subnets else None


def _host_addresses() -> list[str]:
    """Every IPv4 address of this host's interfaces (all on this machine by definition)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    return sorted({line.split()[3].split("/")[0] for line in out.splitlines()})


def _dial(addr: str, port: int) -> str:
    try:
        with socket.create_connection((addr, port), timeout=5):
            return "connected"
    except OSError as e:
        return f"error: {e}"


# ---------------------------------------------------------------------------------------------


async def test_memory_hog_is_oom_killed(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    result, outcome, _ = await _bad(
        podman_runtime, misbehave_image, misbehave_manifest, "hog_memory", {"mib": 512}
    )
    assert result.termination is Termination.OOM_KILLED, result
    assert (outcome.state, outcome.reason) == ("OOM_KILLED", "memory limit of 64 MiB exceeded")
    assert outcome.peak_memory_bytes is not None and outcome.peak_memory_bytes >= 63 << 20


async def test_spin_ignoring_sigterm_is_killed_at_the_deadline(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    limits = Limits(memory_mib=64, timeout_seconds=3, pids=32, cpus=1)
    result, outcome, elapsed = await _bad(
        podman_runtime, misbehave_image, misbehave_manifest, "spin", limits=limits
    )
    assert (outcome.state, outcome.reason) == ("TIMED_OUT", "timed out after 3s")
    # The contract: killed at the 3 s limit; the runtime's kill takes at most its grace
    # (KILL_GRACE_SECONDS, then `podman rm -f`). The bound is limit + 1 s.
    assert KILL_GRACE_SECONDS < 1
    assert result.duration_seconds < 3 + 1
    assert elapsed < 3 + 1, f"run() took {elapsed:.2f}s for a 3 s limit"


async def test_fork_bomb_is_stopped_by_the_pids_limit(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    run_id = new_run_id("fork")
    _, outcome, _ = await _bad(
        podman_runtime,
        misbehave_image,
        misbehave_manifest,
        "fork_bomb",
        {"seconds": 1.5},
        run_id=run_id,
    )
    assert outcome.state == "SUCCEEDED", outcome
    report = outcome.output
    assert 0 < report["forked"] < SMALL.pids  # the cgroup, not the agent, set the ceiling
    assert report["refused"] > 0 and "temporarily unavailable" in report["error"]
    assert _containers(run_id) == []  # and its sleeping children went with it


async def test_no_network_egress_without_permission(
    podman_runtime: PodmanRuntime,
    misbehave_image: str,
    misbehave_manifest: Manifest,
    host_listener: tuple[int, list[int]],
    netns_listener: NetnsListener,
) -> None:
    port, accepted = host_listener
    elsewhere = f"{netns_listener.addr}:{netns_listener.port}"
    targets = [elsewhere] + [f"{a}:{port}" for a in _host_addresses()]
    gw = _podman_gateway()
    if gw and f"{gw}:{port}" not in targets:
        targets.append(f"{gw}:{port}")
    # Control: every target is reachable from the host, so a refusal below is the sandbox's.
    dialled = await asyncio.gather(*(asyncio.to_thread(_dial, *_split(t)) for t in targets))
    assert dict(zip(targets, dialled, strict=True)) == dict.fromkeys(targets, "connected")
    host_targets = len(targets) - 1
    await wait_for_condition(lambda: accepted[0] == host_targets, what="host accepts counted")

    _, outcome, _ = await _bad(
        podman_runtime, misbehave_image, misbehave_manifest, "connect", {"targets": targets}
    )
    assert outcome.state == "SUCCEEDED", outcome
    results = outcome.output["results"]
    assert set(results) == set(targets)
    assert not [t for t, r in results.items() if r == "connected"], results
    assert accepted[0] == host_targets  # no connection from the sandbox reached the host

    # Control: with network granted, the same agent does reach the host listener, so the
    # check above would have seen a connection had there been one.
    if gw:
        _, granted = await run_agent(
            podman_runtime,
            misbehave_image,
            misbehave_manifest,
            "connect",
            {"targets": [f"{gw}:{port}"]},
            network=True,
        )
        assert granted.output["results"] == {f"{gw}:{port}": "connected"}


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


async def test_writes_outside_the_output_dir_are_refused(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    _, outcome, _ = await _bad(podman_runtime, misbehave_image, misbehave_manifest, "write_outside")
    assert outcome.state == "SUCCEEDED", outcome
    results, owners = outcome.output["results"], outcome.output["owners"]
    assert results, "nothing was tried"
    written = {p: r for p, r in results.items() if r == "written"}
    assert written == {}, written
    refusals = ("Read-only file system", "Permission denied", "No such file or directory")
    assert all(r.removeprefix("error: ") in refusals for r in results.values()), results
    # The sandbox user owns these in the image: file permissions allow the write, so only the
    # read-only root can refuse it, and it must say so (EROFS, not EACCES).
    for path in (f"{OWNED}/existing.txt", f"{OWNED}/new-file"):
        assert owners[path] == SANDBOX_UID, (path, owners[path])
        assert results[path] == "error: Read-only file system", (path, results[path])


async def test_the_owned_path_is_writable_without_the_read_only_root(
    podman_runtime: PodmanRuntime, misbehave_image: str
) -> None:
    # Control for the test above: the same user, image and path, without --read-only, can
    # write; so EROFS there comes from the read-only root and nothing else.
    r = await asyncio.to_thread(
        subprocess.run,
        [podman_runtime.podman, *podman_runtime.global_options, "run", "--rm",
         "--network=none", "--user", f"{SANDBOX_UID}:{SANDBOX_UID}", "--entrypoint", "sh",
         "--ulimit", f"nofile={NOFILE}:{NOFILE}", "--ulimit", "nproc=1024:1024",
         misbehave_image, "-c",
         f"echo x > {OWNED}/new-file && echo y >> {OWNED}/existing.txt && echo wrote"],
        capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.strip()) == (0, "wrote"), r.stderr


async def test_gigabytes_of_stdout_keep_logs_capped_and_executor_memory_flat(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    limits = Limits(memory_mib=64, timeout_seconds=30, pids=32, log_kib=64)
    baseline = peak = _rss_bytes()
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, _rss_bytes())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        result, outcome, _ = await _bad(
            podman_runtime,
            misbehave_image,
            misbehave_manifest,
            "flood_stdout",
            {"mib": 2048},
            limits=limits,
        )
    finally:
        done = True
        await sampler
    assert outcome.state == "SUCCEEDED", outcome
    assert outcome.output == {"written_mib": 2048}
    assert result.logs_truncated and len(result.logs) == 64 * 1024
    assert peak - baseline < 100 << 20, f"executor RSS grew by {(peak - baseline) >> 20} MiB"


async def test_orphaned_child_does_not_outlive_the_run(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    run_id = new_run_id("orphan")
    _, outcome, _ = await _bad(
        podman_runtime, misbehave_image, misbehave_manifest, "orphan", run_id=run_id
    )
    # SUCCEEDED, not TIMED_OUT: the run ended when its main process did, not at the 10 s limit.
    assert outcome.state == "SUCCEEDED", outcome
    assert _containers(run_id) == []
    sleepers = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and _proc_uid(pid) == 65534 and b"/app/main.py" in _cmdline(pid)
    ]
    assert sleepers == []


def _proc_uid(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
