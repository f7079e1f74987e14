"""``airlock serve`` with several serving processes, and which process holds a connection.

The kernel picks the serving process of each new TCP connection (SO_REUSEPORT); tests learn
which one it picked from /proc, not from anything the server says: the accepted socket's
inode is in /proc/net/tcp (keyed by the client's port) and in exactly one process's fd table.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers.client import Client
from tests.helpers.processes import REPO, stop

_ESTABLISHED = "01"


def children_of(pid: int) -> list[int]:
    """Ids of the live processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def connection_owners(server_port: int, pids: Iterable[int]) -> dict[int, int]:
    """Client port -> id of the process (among ``pids``) holding the accepted connection to
    ``server_port``. A connection not yet accepted has no owner and is left out."""
    by_inode: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                if state == _ESTABLISHED and int(local.rpartition(":")[2], 16) == server_port:
                    by_inode[inode] = int(remote.rpartition(":")[2], 16)
    owners: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in by_inode:
                        owners[by_inode[link[8:-1]]] = pid
    return owners


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


@dataclass
class Served:
    """A running ``airlock serve`` (the supervisor) and what it printed."""

    proc: subprocess.Popen[bytes]
    grpc_address: str
    http_address: str
    admin_token: str
    log: Path
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        """The serving processes now."""
        return children_of(self.proc.pid)

    def log_messages(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def client(self, token: str, owner: str = "") -> Client:
        """A client over a connection of its own (no subchannel shared with other clients)."""
        ch = grpc.aio.insecure_channel(self.grpc_address,
                                       options=[("grpc.use_local_subchannel_pool", 1)])
        self.channels.append(ch)
        return Client(ch, token, owner)

    async def client_on(self, token: str, owner: str = "") -> tuple[Client, int]:
        """A client over a new connection, and the serving process that accepted it."""
        port = port_of(self.grpc_address)
        pids = self.pids
        before = set(connection_owners(port, pids))
        c = self.client(token, owner)
        await health_pb2_grpc.HealthStub(c.channel).Check(health_pb2.HealthCheckRequest())
        new = {cp: pid for cp, pid in connection_owners(port, pids).items() if cp not in before}
        assert len(new) == 1, f"expected one new connection, found {new}"
        return c, next(iter(new.values()))

    async def client_per_process(self, token: str, owner: str = "", *,
                                 pids: Iterable[int] | None = None,
                                 tries: int = 60) -> dict[int, Client]:
        """One client connected to each serving process in ``pids`` (default: all)."""
        want = set(self.pids if pids is None else pids)
        got: dict[int, Client] = {}
        for _ in range(tries):
            c, pid = await self.client_on(token, owner)
            if pid in want and pid not in got:
                got[pid] = c
            if set(got) == want:
                return got
        raise AssertionError(f"{tries} connections reached only {sorted(got)} of {sorted(want)}")

    async def close_channels(self) -> None:
        for ch in self.channels:
            await ch.close()
        self.channels.clear()


def http_status_per_process(http_address: str, path: str, pids: Iterable[int], *,
                            tries: int = 60) -> dict[int, int]:
    """GET ``path`` over new connections until every process in ``pids`` has answered one:
    pid -> HTTP status."""
    host, port = http_address.rpartition(":")[0], port_of(http_address)
    want = set(pids)
    got: dict[int, int] = {}
    for _ in range(tries):
        with socket.create_connection((host, port), timeout=30) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {http_address}\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                assert chunk, "the HTTP port closed the connection without answering"
                head += chunk
            status = int(head.split(b" ", 2)[1])
            owner = connection_owners(port, want).get(s.getsockname()[1])
        if owner is not None and owner not in got:
            got[owner] = status
        if set(got) == want:
            return got
    raise AssertionError(f"{tries} connections reached only {sorted(got)} of {sorted(want)}")


_TOKEN = re.compile(r"^\s+(key_\S+)$")


@contextlib.contextmanager
def serve_processes(env: Mapping[str, str], log: Path, *, processes: int = 2,
                    timeout: float = 120) -> Iterator[Served]:
    """``airlock serve --processes N`` on ports 0 (gRPC and HTTP), until it printed its
    addresses and first admin token; SIGTERM on exit. Its log (stderr) goes to ``log``."""
    full = {**os.environ, "PYTHONPATH": str(REPO), "AIRLOCK_GRPC_LISTEN": "127.0.0.1:0",
            "AIRLOCK_HTTP_LISTEN": "127.0.0.1:0", "AIRLOCK_LOG_FORMAT": "text", **env}
    full.pop("AIRLOCK_ADMIN_TOKEN_FILE", None)
    with log.open("ab") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "airlock.cli", "serve", "--processes",
                                 str(processes), "--grace", "1"], cwd=REPO, env=full,
                                stdout=subprocess.PIPE, stderr=sink)
    try:
        grpc_address = http_address = token = ""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        pending = b""
        while not (grpc_address and http_address and token):
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, (
                f"airlock serve did not start (exit {proc.poll()}): {log.read_text()[-3000:]}")
            if not sel.select(min(left, 1.0)):
                continue
            pending += os.read(fd, 65536)  # raw reads: a buffered readline hides lines
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode()
                if m := re.search(r"serving gRPC on (\S+)", line):
                    grpc_address = m.group(1)
                elif m := re.search(r"gRPC-Web and the UI on http://(\S+)", line):
                    http_address = m.group(1)
                elif m := _TOKEN.match(line):
                    token = m.group(1)
        sel.close()
        yield Served(proc, grpc_address, http_address, token, log)
    finally:
        stop(proc, 60)
