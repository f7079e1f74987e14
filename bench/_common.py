"""Shared helpers for the benchmarks: closed-loop load, percentiles, server subprocesses,
a bare gRPC echo floor, fresh PostgreSQL databases, and the table + final JSON line output.

Every benchmark prints a human table and then, as its LAST line of stdout, one JSON object
(``emit_json``) that scripts and the smoke tests parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("AIRLOCK_BENCH_PG",
                              os.environ.get("AIRLOCK_TEST_PG",
                                             "postgresql://postgres@127.0.0.1:5432/postgres"))


# --- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation; ``values`` need not be sorted."""
    if not values:
        return math.nan
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Cell:
    """One measurement: ``clients`` closed-loop callers of ``op`` for ``seconds``."""

    op: str
    clients: int
    calls: int
    errors: int
    seconds: float
    throughput: float  # successful calls per second
    p50_ms: float
    p99_ms: float
    first_error: str = ""
    server_cpu_us: float | None = None  # server process CPU per successful call, if known

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("seconds", "throughput", "p50_ms", "p99_ms", "server_cpu_us"):
            if d[k] is not None:
                d[k] = round(d[k], 3) if math.isfinite(d[k]) else None
        if d["server_cpu_us"] is None:
            del d["server_cpu_us"]
        if not d["first_error"]:
            del d["first_error"]
        return d


# --- closed-loop load -----------------------------------------------------------------------------


async def closed_loop(op: str, call: Callable[[int, int], Awaitable[object]], *, clients: int,
                      duration: float, warmup: float = 0.5,
                      server_pid: int | Sequence[int] | None = None) -> Cell:
    """Run ``clients`` callers that each issue ``await call(client_index, n)`` back to back.

    Calls that *start* during the first ``warmup`` seconds are not counted; calls that start
    before the end of the window are counted when they succeed (latency = that call's wall
    time). Throughput is successful calls over the measurement window. With ``server_pid``
    (one process or several), also the server processes' CPU time per call over the window:
    steadier than throughput on a shared machine, since it shows the server's cost even when
    others take the cores.
    """
    pids = [server_pid] if isinstance(server_pid, int) else list(server_pid or ())
    loop = asyncio.get_running_loop()
    start = loop.time()
    t_measure = start + warmup
    t_end = t_measure + duration
    latencies: list[float] = []
    errors = 0
    first_error = ""
    cpu_start: list[float | None] = [None]
    if pids:
        loop.call_at(t_measure, lambda: cpu_start.__setitem__(0, processes_cpu_seconds(pids)))

    async def client(i: int) -> None:
        nonlocal errors, first_error
        n = 0
        clock = time.perf_counter
        now = loop.time
        while True:
            t_start = now()
            if t_start >= t_end:
                return
            t0 = clock()
            try:
                await call(i, n)
            except Exception as e:
                if t_start >= t_measure:
                    errors += 1
                    if not first_error:
                        first_error = f"{type(e).__name__}: {e}"[:300]
                    await asyncio.sleep(0.01)  # do not spin on a failing server
            else:
                if t_start >= t_measure:
                    latencies.append(clock() - t0)
            n += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    window = max(loop.time() - t_measure, 1e-9)
    cpu_end = processes_cpu_seconds(pids) if pids else None
    cpu_us = None
    if cpu_start[0] is not None and cpu_end is not None and latencies:
        cpu_us = (cpu_end - cpu_start[0]) * 1e6 / len(latencies)
    return Cell(op=op, clients=clients, calls=len(latencies), errors=errors, seconds=window,
                throughput=len(latencies) / window,
                p50_ms=percentile(latencies, 50) * 1000, p99_ms=percentile(latencies, 99) * 1000,
                first_error=first_error, server_cpu_us=cpu_us)


def processes_cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU time of all ``pids`` so far; None if any is unreadable."""
    total = 0.0
    for pid in pids:
        t = process_cpu_seconds(pid)
        if t is None:
            return None
        total += t
    return total


def children_of(pid: int) -> list[int]:
    """Ids of the live child processes of ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return sorted(found)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc); None where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --- output ---------------------------------------------------------------------------------------


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str], *,
                file: Any = None) -> None:
    """A plain fixed-width table (numbers right-aligned)."""
    out = file or sys.stdout
    text = [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h)
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(cells, widths, strict=True)))

    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in text:
        print(line(r), file=out)
    out.flush()


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def emit_json(doc: dict[str, Any]) -> None:
    """The final line of stdout: one compact JSON object."""
    sys.stdout.flush()
    print(json.dumps(doc, separators=(",", ":"), sort_keys=False), flush=True)


def log(msg: str) -> None:
    """Progress goes to stderr so stdout stays table + JSON."""
    print(msg, file=sys.stderr, flush=True)


# --- server subprocesses --------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """A child process that printed one JSON line (its address etc.) when ready.

    The child must exit when its stdin closes, so it never outlives the benchmark.
    """

    proc: subprocess.Popen[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn_server(argv: Sequence[str], *, ready_timeout: float = 60.0,
                 env: dict[str, str] | None = None) -> ServerProcess:
    """Start ``argv`` (a Python process) and wait for its ready line (JSON on stdout)."""
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), child_env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=child_env, cwd=str(REPO))
    sp = ServerProcess(proc)
    assert proc.stdout is not None
    deadline = time.monotonic() + ready_timeout
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                break
            if sel.select(min(left, 0.5)):
                line = proc.stdout.readline()
                if not line:
                    break
                with contextlib.suppress(json.JSONDecodeError):
                    doc = json.loads(line)
                    if isinstance(doc, dict):
                        sp.info = doc
                        return sp
    finally:
        sel.close()
    sp.stop(2)
    raise RuntimeError(f"server {argv!r} did not become ready (exit code {proc.poll()})")


async def wait_stdin_closed() -> None:
    """In a server child: return when the parent closes our stdin (or dies)."""
    await asyncio.to_thread(sys.stdin.read)


def announce(info: dict[str, Any]) -> None:
    """In a server child: the ready line."""
    print(json.dumps(info), flush=True)


# --- the floor: a bare grpc.aio echo server -------------------------------------------------------

ECHO_METHOD = "/bench.Echo/Echo"


def reserve_port(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound with SO_REUSEPORT to a free port, never listening: holds the port number
    while several server processes bind it too (the kernel spreads connections among them)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


async def serve_echo(port: int = 0) -> None:
    """Child body: a bare grpc.aio unary echo server on 127.0.0.1 (bytes in, same bytes out);
    ``port`` given: bound with SO_REUSEPORT beside other echo processes on that port."""
    import grpc

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if port else 0)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})])
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    announce({"address": f"127.0.0.1:{bound}", "pid": os.getpid()})
    await wait_stdin_closed()
    await server.stop(0.5)


def spawn_echo_server(port: int = 0) -> ServerProcess:
    return spawn_server([sys.executable, "-c",
                         f"import asyncio, bench._common as c; asyncio.run(c.serve_echo({port}))"])


def spawn_echo_servers(n: int) -> tuple[list[ServerProcess], socket.socket | None]:
    """``n`` echo processes on one port (one: a plain server, as before); and the socket that
    reserves the port (close it after stopping them)."""
    if n == 1:
        return [spawn_echo_server()], None
    sock = reserve_port()
    port = sock.getsockname()[1]
    return [spawn_echo_server(port) for _ in range(n)], sock


# --- databases ------------------------------------------------------------------------------------


def _db_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def fresh_pg_database(admin_url: str = PG_ADMIN_URL, *, migrate: bool = True,
                      prefix: str = "airlock_bench") -> Iterator[str]:
    """A new PostgreSQL database (migrated to head), dropped afterwards."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = _db_url(admin_url, name)
    try:
        if migrate:
            from server.store.migrate import upgrade

            upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
