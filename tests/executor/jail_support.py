"""Fixtures and helpers for the jail runtime's tests (imported by tests/*/test_jail_*.py).

The jail needs root, bubblewrap, slirp4netns, podman (for image mounts), a C compiler and
libseccomp; where one is missing its tests skip locally and fail under CI, naming it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from executor.base_image import make_base_image
from executor.runtime.base import RuntimeUnavailable
from executor.runtime.jail import JailRuntime, _cgroup_roots
from tests.helpers.requirements import require


@pytest.fixture(scope="session")
async def jail_runtime() -> AsyncIterator[JailRuntime]:
    require("root", None if os.geteuid() == 0 else "the jail runtime runs as root")
    for prog in ("bwrap", "slirp4netns", "podman", "cc"):
        require(prog, None if shutil.which(prog) else "not on PATH (scripts/setup.sh installs it)")
    try:  # the runtime's check runs a trial from the base image
        await asyncio.to_thread(make_base_image)
    except (RuntimeError, OSError) as e:
        require("the offline base image", f"`airlock base-image` failed: {e}")
    runtime = JailRuntime(executor_id="pytest")
    try:
        await runtime.check()
    except RuntimeUnavailable as e:
        require("a working jail", str(e))
    yield runtime
    await runtime.close()  # its warm supervisors and image mounts


def jail_cgroups(runtime: JailRuntime, run_id: str) -> list[Path]:
    """The cgroup directories (any hierarchy) still present for ``run_id``."""
    prefix = f"airlock-{run_id}-"
    found = []
    for root in _cgroup_roots():
        parent = root / runtime.cgroup_parent
        if parent.is_dir():
            found += [p for p in parent.iterdir() if p.name.startswith(prefix)]
    return found


def sandbox_processes(run_id: str) -> list[int]:
    """Host pids of processes started for ``run_id`` (the jail gives each AIRLOCK_RUN_ID)."""
    marker = f"AIRLOCK_RUN_ID={run_id}\0".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


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
    """A TCP listener in a network namespace the test created, joined to the host by a veth
    pair: "somewhere else" that is still on this machine, so nothing can leave it."""

    host_addr: str
    addr: str
    port: int


@pytest.fixture
def netns_listener() -> Iterator[NetnsListener]:
    require("ip (iproute2)", None if shutil.which("ip") else "needed to create a test netns")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"airlock-j-{tag}", f"alj{tag}h", f"alj{tag}n"
    third = int(tag[:2], 16)  # 10.214.<0-255>.0/30: a link route on the veth, nothing else
    host_addr, ns_addr = f"10.214.{third}.1", f"10.214.{third}.2"

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
            "import socket\n"
            f"s = socket.create_server(({ns_addr!r}, 0))\n"
            "print(s.getsockname()[1], flush=True)\n"
            "while True:\n"
            "    s.accept()[0].close()\n"
        )
        listener = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", serve],
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


def host_addresses() -> list[str]:
    """Every IPv4 address of this host's interfaces (all on this machine by definition)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    return sorted({line.split()[3].split("/")[0] for line in out.splitlines()})
