"""Several serving processes on one port: start them, replace any that dies, stop them all.

One Python process is CPU-bound long before PostgreSQL is (docs/performance.md), and every
piece of state is in the database, so ``airlock serve`` scales out on one host by running
several full control planes (gRPC and HTTP) on the same ports. This supervisor is the parent:

1. ``prepare_database`` (``server.app``) applies the migrations and creates the first admin
   key, once, before any serving process starts;
2. it reserves the gRPC and HTTP ports: a socket bound with ``SO_REUSEPORT`` and never
   listening, held for its lifetime, so a port 0 becomes one number every child binds (the
   recipe of grpc's multiprocessing example); listening sockets of the children share the
   port and the kernel spreads new connections among them;
3. it starts N serving processes (``airlock serve --serving-process``, each a
   ``ControlPlane(reuse_port=True)``), each reporting ready with one JSON line on its stdout;
4. it replaces a serving process that exits while it should be serving (at once, then backing
   off while replacements keep dying young);
5. ``stop`` sends every child SIGTERM (each drains as a single ``airlock serve`` does), waits
   up to the grace period plus ``STOP_SLACK_SECONDS``, then kills what is left.

Children run in their own session (a terminal's Ctrl-C reaches only the parent, which stops
them in order) and stop by themselves when their stdin closes, i.e. when the parent is gone,
even killed. Duties that must run once (the approval expiry sweep, ...) are taken by one child
through a PostgreSQL advisory lock (``server.store.duties``), not by this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Mapping

from server.settings import ServerSettings

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60.0  # a serving process that is not ready by then failed to start
STOP_SLACK_SECONDS = 5.0  # beyond the grace period, before a stopping child is killed
YOUNG_SECONDS = 10.0  # a replacement dying sooner than this counts toward backing off
MAX_BACKOFF_SECONDS = 30.0


class ServingProcessFailed(RuntimeError):
    """A serving process exited, or did not report ready, during its start."""


def serving_processes(requested: int, database_url: str) -> tuple[int, str | None]:
    """How many serving processes to run, and a note when the request cannot be honoured.

    ``requested`` 0 means one per CPU core this process may use. SQLite has one writer and
    serialises writes inside one process (``Store``), so it always gets one.
    """
    if database_url.startswith("sqlite"):
        note = (f"SQLite: serving with 1 process (AIRLOCK_SERVE_PROCESSES={requested} needs "
                "PostgreSQL)") if requested > 1 else None
        return 1, note
    if requested:
        return requested, None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(cores, 1), None


def _reserve(listen: str) -> socket.socket:
    """Bind ``listen`` (host:port, port 0 allowed) with SO_REUSEPORT, without listening."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
    except OSError:
        sock.close()
        raise
    return sock


def _address(listen: str, sock: socket.socket) -> str:
    host = listen.rpartition(":")[0]
    return f"{host}:{sock.getsockname()[1]}"


class Supervisor:
    """Runs ``processes`` serving processes of ``settings`` on shared ports.

    ``start()`` returns once all of them are ready (or raises ``ServingProcessFailed``,
    having stopped the others); ``stop(grace)`` stops them all; ``kill()`` ends them at once.
    """

    def __init__(self, settings: ServerSettings, processes: int, *, grace: float,
                 env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.processes = processes
        self.grace = grace
        self._base_env = dict(os.environ if env is None else env)
        self._sockets: list[socket.socket] = []
        self.grpc_address = ""
        self.http_address: str | None = None
        self._children: list[asyncio.subprocess.Process | None] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._relays: list[asyncio.Task[None]] = []
        self._stopping = False
        self.replacements = 0  # serving processes started to replace one that exited

    @property
    def pids(self) -> list[int]:
        """The serving processes' ids, as of now."""
        return [p.pid for p in self._children if p is not None and p.returncode is None]

    def _child_env(self) -> dict[str, str]:
        env = {**self._base_env,
               "AIRLOCK_GRPC_LISTEN": self.grpc_address,
               "AIRLOCK_MIGRATE_ON_START": "false",  # done once, by prepare_database
               "AIRLOCK_SERVE_PROCESSES": "1"}
        env.pop("AIRLOCK_ADMIN_TOKEN_FILE", None)  # the first admin key exists by now
        if self.http_address is not None:
            env["AIRLOCK_HTTP_LISTEN"] = self.http_address
        if self.settings.page_token_key is None:
            # A page token from one serving process must be good on every other one.
            env["AIRLOCK_PAGE_TOKEN_KEY"] = self._page_key
        return env

    async def start(self) -> None:
        s = self.settings
        self._page_key = secrets.token_urlsafe(32)
        grpc_sock = _reserve(s.grpc_listen)
        self._sockets.append(grpc_sock)
        self.grpc_address = _address(s.grpc_listen, grpc_sock)
        if s.http_enabled:
            http_sock = _reserve(s.http_listen)
            self._sockets.append(http_sock)
            self.http_address = _address(s.http_listen, http_sock)
        self._env = self._child_env()
        results = await asyncio.gather(*(self._spawn() for _ in range(self.processes)),
                                       return_exceptions=True)
        self._children = [r if isinstance(r, asyncio.subprocess.Process) else None
                          for r in results]
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.stop(0)
            raise failed[0]
        log.info("%d serving processes on gRPC %s%s: pids %s", self.processes,
                 self.grpc_address, f" and HTTP {self.http_address}" if self.http_address else "",
                 ", ".join(map(str, self.pids)))
        self._tasks = [asyncio.create_task(self._keep(slot), name=f"serving-process-{slot}")
                       for slot in range(self.processes)]

    async def _spawn(self) -> asyncio.subprocess.Process:
        """Start one serving process and wait for its ready line."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "airlock.cli", "serve", "--serving-process",
            "--grace", str(self.grace),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=self._env,
            start_new_session=True)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                line = await proc.stdout.readline()
                if not line:
                    raise ServingProcessFailed(f"serving process {proc.pid} exited during "
                                               f"start-up (exit status {await proc.wait()})")
            json.loads(line)
        except BaseException as e:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(e, TimeoutError):
                raise ServingProcessFailed(f"serving process {proc.pid} was not ready within "
                                           f"{READY_TIMEOUT_SECONDS:g}s") from None
            if isinstance(e, json.JSONDecodeError):
                raise ServingProcessFailed(f"serving process {proc.pid} wrote {line!r} "
                                           "instead of its ready line") from None
            raise
        self._relays.append(asyncio.create_task(self._relay_stdout(proc)))
        return proc

    @staticmethod
    async def _relay_stdout(proc: asyncio.subprocess.Process) -> None:
        """Pass on whatever a child prints after its ready line (and keep its pipe from filling)."""
        assert proc.stdout is not None
        async for line in proc.stdout:
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()

    async def _keep(self, slot: int) -> None:
        """Replace the serving process in ``slot`` whenever it exits while it should serve."""
        young_deaths = 0
        while not self._stopping:
            proc = self._children[slot]
            started = time.monotonic()
            if proc is not None:
                code = await proc.wait()
                if self._stopping:
                    return
                log.error("serving process %d exited (status %d); starting a replacement",
                          proc.pid, code)
                young_deaths = young_deaths + 1 if time.monotonic() - started < YOUNG_SECONDS else 0
            if young_deaths:
                await asyncio.sleep(min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** young_deaths))
            try:
                new = await self._spawn()
            except ServingProcessFailed as e:
                log.error("replacement failed: %s", e)
                self._children[slot] = None
                young_deaths += 1
                continue
            self._children[slot] = new
            self.replacements += 1
            log.warning("serving process %d replaces %s", new.pid,
                        proc.pid if proc is not None else "a failed start")

    async def stop(self, grace: float) -> None:
        """SIGTERM every serving process; kill those still running after ``grace`` + slack."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        live = [p for p in self._children if p is not None and p.returncode is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        if live:
            _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in live],
                                            timeout=grace + STOP_SLACK_SECONDS)
            if pending:
                log.error("%d serving process(es) did not stop within %gs; killing them",
                          len(pending), grace + STOP_SLACK_SECONDS)
                self.kill()
                await asyncio.gather(*pending)
        for t in self._relays:
            t.cancel()
        self._relays = []
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    def kill(self) -> None:
        """End every serving process at once (a forced exit)."""
        self._stopping = True
        for p in self._children:
            if p is not None and p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
