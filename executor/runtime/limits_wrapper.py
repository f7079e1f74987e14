#!/usr/bin/env python3
"""Airlock limits wrapper: run one agent command under hard limits, then report what happened.

Standard library only, one file: the Dagger runtime injects this source into the agent's
container (``/airlock/wrapper.py``) and puts it in front of the agent's command, because
Dagger's ``withExec`` has no memory, pids or time limit of its own. It also runs on a plain
host (the tests run it that way).

What it enforces on the agent (its child and everything the child starts):

- ``RLIMIT_AS`` (``--memory-mib``): address-space cap. Allocations beyond it fail (Python raises
  ``MemoryError``). It counts *virtual* memory, so runtimes that reserve large address ranges
  up front (JVM, V8, Go) need a generous value; a cgroup limit would be exact but is not
  available through Dagger.
- ``RLIMIT_NPROC`` (``--pids``, plus one for this wrapper, which runs as the same user):
  processes of the sandbox user. Not enforced for root.
- ``RLIMIT_FSIZE`` (``--fsize-bytes``) and ``RLIMIT_CORE`` = 0: no huge files, no core dumps.
- ``oom_score_adj`` = 1000 for the agent, so under memory pressure the kernel kills it first.
- A hard wall clock (``--timeout``): SIGTERM to the agent's process group, SIGKILL to the
  group and every descendant ``--kill-grace`` seconds later.
- stdout and stderr go to one pipe (interleaved, as the agent contract says) and are kept up to
  ``--log-kib``; the rest is counted and dropped.

It becomes a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so processes that the agent
daemonises are re-parented here and can be found and killed, and it reaps every one of them.

When the agent is done it kills whatever the agent left behind, then writes ``--status-file``
(small JSON, see ``STATUS_FIELDS``), ``--log-file``, and, if asked, ``--result-file``: the status
plus base64 logs and output in one JSON document, so that a runtime which can only read text
files back (Dagger's ``File.contents`` is a GraphQL String) gets exact bytes in one request.
Everything is written after the agent's processes are dead, so the agent cannot forge it.

Out of memory is reported only on evidence the agent cannot forge: its main process died of a
SIGKILL the wrapper did not send *and* the kernel's ``oom_kill`` counter of the sandbox's
memory cgroup (``memory.oom_control`` on cgroup v1, ``memory.events`` on v2) went up during the
run. An agent can SIGKILL itself or print ``MemoryError``; neither moves that counter. Where the
counter cannot be read (no cgroup filesystem in the container), or when ``RLIMIT_AS`` made an
allocation fail (only the agent sees that failure), the run is a plain failure with its exit
code and signal, never an OOM.

Exit status: 0 when a status file was written (the agent's own exit code is *in* the status),
125 when the wrapper itself failed. Never 128-191: Dagger's ``expect: ANY`` does not cover
that range, and the runtime must always get to read the status.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import ctypes.util
import json
import os
import resource
import selectors
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

WRAPPER_VERSION = 1
WRAPPER_FAILED = 125  # like `docker run`: the runner failed, not the command
PR_SET_CHILD_SUBREAPER = 36
READ_CHUNK = 64 * 1024
DRAIN_SECONDS = 2.0  # how long to keep reading the log pipe after the agent's processes died
STATUS_FIELDS = (
    "version", "exit_code", "signal", "timed_out", "terminated", "oom_suspected", "oom_reason",
    "duration_seconds", "logs_bytes", "logs_truncated", "output_present", "output_bytes",
    "output_truncated", "peak_rss_bytes", "subreaper", "start_error", "limits",
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="airlock-limits-wrapper", description=__doc__.split("\n")[0])
    p.add_argument("--timeout", type=float, required=True, help="wall-clock seconds")
    p.add_argument("--kill-grace", type=float, default=1.0, help="SIGTERM to SIGKILL, seconds")
    p.add_argument("--memory-mib", type=int, default=0, help="RLIMIT_AS in MiB (0: none)")
    p.add_argument("--pids", type=int, default=0, help="agent processes (0: no RLIMIT_NPROC)")
    p.add_argument("--fsize-bytes", type=int, default=0, help="RLIMIT_FSIZE (0: none)")
    p.add_argument("--log-kib", type=int, default=1024)
    p.add_argument("--log-file", required=True)
    p.add_argument("--status-file", required=True)
    p.add_argument("--output-file", default=None, help="the agent's AIRLOCK_OUTPUT file")
    p.add_argument("--output-kib", type=int, default=1024)
    p.add_argument("--result-file", default=None, help="status + base64 logs/output, one JSON")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the agent's command")
    ns = p.parse_args(list(argv))
    if ns.command and ns.command[0] == "--":
        ns.command = ns.command[1:]
    if not ns.command:
        p.error("no command given (put it after --)")
    if ns.timeout <= 0 or ns.kill_grace < 0 or ns.log_kib < 0 or ns.output_kib < 0:
        p.error("--timeout must be > 0; --kill-grace, --log-kib, --output-kib must be >= 0")
    return ns


# --- process-tree helpers ----------------------------------------------------------------


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to us (Linux >= 3.4); False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) from /proc; empty where /proc is missing."""
    table: dict[int, tuple[int, str]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        rest = data[data.rfind(b")") + 2 :].split()
        if len(rest) >= 2:
            table[int(name)] = (int(rest[1]), rest[0].decode("ascii", "replace"))
    return table


def live_descendants(root: int) -> list[int]:
    """Descendants of ``root`` that are not zombies (needs /proc)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if table[pid][1] != "Z":
            found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def signal_tree(pgid: int, sig: int) -> None:
    """Signal the agent's process group and every live descendant of this wrapper that left
    it, each exactly once (a second SIGTERM can hit a process while it is shutting down)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in live_descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) != pgid:
                os.kill(pid, sig)


def reap_others() -> None:
    """Collect exit statuses of re-parented descendants so no zombie is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_everything(pgid: int, deadline: float) -> None:
    """SIGKILL the agent's whole tree until nothing of it is left (or ``deadline`` passes)."""
    while True:
        signal_tree(pgid, signal.SIGKILL)
        reap_others()
        if not live_descendants(os.getpid()) or time.monotonic() >= deadline:
            return
        time.sleep(0.01)  # forks in flight during the last pass are caught in the next


# --- the child's limits ------------------------------------------------------------------


def _clamp(limit: int, value: int) -> None:
    """Set soft and hard limit (the agent cannot raise them again); never above the hard one."""
    _soft, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))


def child_setup(memory_bytes: int, nproc: int, fsize_bytes: int) -> Callable[[], None]:
    """Runs in the forked child before exec. Limit errors propagate: no limits, no run."""

    def setup() -> None:
        if memory_bytes:
            _clamp(resource.RLIMIT_AS, memory_bytes)
        if nproc:
            _clamp(resource.RLIMIT_NPROC, nproc)
        if fsize_bytes:
            _clamp(resource.RLIMIT_FSIZE, fsize_bytes)
        _clamp(resource.RLIMIT_CORE, 0)
        # Raising one's own oom_score_adj needs no privilege; best effort where /proc is absent.
        with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")

    return setup


# --- OOM evidence ------------------------------------------------------------------------


def oom_kill_counter(
    mountinfo: str = "/proc/self/mountinfo", cgroup: str = "/proc/self/cgroup"
) -> tuple[str, str] | None:
    """(file, key) of the kernel's OOM-kill counter for this process's memory cgroup, which
    the agent (a child, in the same cgroup) shares; None where no such file is readable.

    cgroup v1: ``<memory mount>/<path>/memory.oom_control``, line ``oom_kill N`` (counts kills
    of processes in that very cgroup). cgroup v2: ``memory.events``, line ``oom_kill N``
    (includes descendants).
    """
    try:
        with open(cgroup) as f:
            memberships = [line.rstrip("\n").split(":", 2) for line in f]
        with open(mountinfo) as f:
            mounts = f.read().splitlines()
    except OSError:
        return None
    paths_v1 = {c: p for _, ctrls, p in memberships if ctrls for c in ctrls.split(",")}
    path_v2 = next((p for h, ctrls, p in memberships if h == "0" and not ctrls), None)
    candidates: list[str] = []
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(" "), right.split(" ")
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, point, fstype = fields[3], fields[4], rfields[0]
        if fstype == "cgroup" and "memory" in rfields[2].split(",") and "memory" in paths_v1:
            candidates.append(_under(point, root, paths_v1["memory"]) + "/memory.oom_control")
        elif fstype == "cgroup2" and path_v2 is not None:
            candidates.append(_under(point, root, path_v2) + "/memory.events")
    for path in candidates:
        if oom_kill_count((path, "oom_kill")) is not None:
            return path, "oom_kill"
    return None


def _under(mount_point: str, mount_root: str, cgroup_path: str) -> str:
    """Where ``cgroup_path`` (as /proc/self/cgroup names it) appears below a mount."""
    rel = cgroup_path
    if mount_root != "/" and (rel == mount_root or rel.startswith(mount_root + "/")):
        rel = rel[len(mount_root):]
    return mount_point.rstrip("/") + "/" + rel.strip("/") if rel.strip("/") else mount_point


def oom_kill_count(counter: tuple[str, str] | None) -> int | None:
    """The counter's current value; None when it cannot be read."""
    if counter is None:
        return None
    path, key = counter
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


# --- files ---------------------------------------------------------------------------------


def write_atomic(path: str, data: bytes) -> None:
    """Write via a fresh temp file and rename: readers never see half a file, and a symlink
    planted by the agent at the temp path is not followed."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_output(path: str, cap: int) -> tuple[bytes | None, int, bool]:
    """(first ``cap`` bytes or None if absent, size, truncated). Regular files only."""
    try:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)  # O_NONBLOCK: a FIFO planted by the agent cannot hang us
    except OSError:
        return None, 0, False
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None, 0, False
        data = f.read(cap + 1)
    return data[:cap], max(st.st_size, len(data)), len(data) > cap


# --- main loop -----------------------------------------------------------------------------


class LogSink:
    """Keeps the first ``cap`` bytes; counts everything."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    @property
    def truncated(self) -> bool:
        return self.total > self.cap


def run(ns: argparse.Namespace) -> dict[str, Any]:
    """Run the command under the limits; return the status document."""
    subreaper = become_subreaper()
    limits = {
        "timeout_seconds": ns.timeout, "kill_grace_seconds": ns.kill_grace,
        "memory_mib": ns.memory_mib, "pids": ns.pids, "fsize_bytes": ns.fsize_bytes,
        "log_kib": ns.log_kib, "output_kib": ns.output_kib,
    }
    status: dict[str, Any] = dict.fromkeys(STATUS_FIELDS)
    status.update(version=WRAPPER_VERSION, timed_out=False, terminated=False,
                  oom_suspected=False, oom_reason="", subreaper=subreaper, limits=limits)
    sink = LogSink(ns.log_kib * 1024)

    # Signals to the wrapper itself (podman stop, engine shutdown) end the run in order.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stop_requested: list[int] = []
    for stop_sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(stop_sig, lambda signum, _frame: stop_requested.append(signum))

    counter = oom_kill_counter()
    kills_before = oom_kill_count(counter)
    log_r, log_w = os.pipe()
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            ns.command,
            stdin=subprocess.DEVNULL,
            stdout=log_w,
            stderr=log_w,
            close_fds=True,
            start_new_session=True,  # own process group: one killpg reaches all of it
            preexec_fn=child_setup(ns.memory_mib * 1024 * 1024, ns.pids + 1 if ns.pids else 0,
                                   ns.fsize_bytes),
        )
    except (OSError, subprocess.SubprocessError) as e:
        for fd in (log_w, log_r, wake_r, wake_w):
            os.close(fd)
        signal.set_wakeup_fd(-1)
        not_found = isinstance(e, FileNotFoundError)
        status.update(exit_code=127 if not_found else 126, duration_seconds=0.0,
                      start_error=f"cannot start {ns.command[0]!r}: {e}", logs_bytes=0,
                      logs_truncated=False, output_present=False, output_bytes=0,
                      output_truncated=False)
        return status | {"_logs": b"", "_output": None}
    os.close(log_w)  # only the agent's side holds the write end now: EOF means all writers gone
    pgid = proc.pid

    sel = selectors.DefaultSelector()
    sel.register(log_r, selectors.EVENT_READ, "log")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    pidfd = -1
    if hasattr(os, "pidfd_open"):  # wake at once when the child exits (Linux >= 5.3)
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(proc.pid)
            sel.register(pidfd, selectors.EVENT_READ, "exit")

    deadline = started + ns.timeout
    kill_at: float | None = None
    we_killed = False
    returncode: int | None = None
    log_open = True
    while returncode is None:
        now = time.monotonic()
        if kill_at is None and (now >= deadline or stop_requested):
            if stop_requested:
                status["terminated"] = True
            else:
                status["timed_out"] = True
            signal_tree(pgid, signal.SIGTERM)
            kill_at = now + ns.kill_grace
        if kill_at is not None and now >= kill_at and not we_killed:
            signal_tree(pgid, signal.SIGKILL)
            we_killed = True
        wait = (kill_at if kill_at is not None else deadline) - now
        wait = min(max(wait, 0.0), 0.05 if pidfd < 0 or we_killed else 1.0)
        for key, _ in sel.select(wait):
            if key.data == "log":
                data = os.read(log_r, READ_CHUNK)
                if data:
                    sink.feed(data)
                else:
                    sel.unregister(log_r)
                    log_open = False
            elif key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
        returncode = proc.poll()

    ended = time.monotonic()
    # From here on only the log pipe matters (an exited pidfd would stay readable: a busy loop).
    for fd in (wake_r, pidfd):
        if fd >= 0:
            sel.unregister(fd)
    # The agent's main process is done: whatever it left running goes too.
    kill_everything(pgid, ended + DRAIN_SECONDS)
    drain_until = time.monotonic() + DRAIN_SECONDS
    while log_open and time.monotonic() < drain_until:
        for key, _ in sel.select(0.05):
            if key.data == "log":
                data = os.read(log_r, READ_CHUNK)
                if data:
                    sink.feed(data)
                else:
                    log_open = False
    sel.close()
    for fd in (log_r, wake_r, wake_w, pidfd):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    signal.set_wakeup_fd(-1)
    reap_others()

    signum = -returncode if returncode < 0 else None
    status["exit_code"] = 128 + signum if signum else returncode  # the shell's/podman's convention
    status["signal"] = signum
    status["duration_seconds"] = round(ended - started, 3)
    status["logs_bytes"] = sink.total
    status["logs_truncated"] = sink.truncated
    # ru_maxrss of waited-for descendants: KiB on Linux.
    status["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if not status["timed_out"] and not status["terminated"] and signum == signal.SIGKILL:
        # Not our SIGKILL. Only the kernel's own count says whether its OOM killer sent it;
        # the agent may have killed itself (or be killed by a process of its own).
        kills_after = oom_kill_count(counter)
        if counter and kills_before is not None and (kills_after or 0) > kills_before:
            status.update(oom_suspected=True, oom_reason=(
                f"killed by the kernel's OOM killer ({counter[0]}: oom_kill "
                f"{kills_before} -> {kills_after})"))

    output: bytes | None = None
    status.update(output_present=False, output_bytes=0, output_truncated=False)
    if ns.output_file:
        output, size, truncated = read_output(ns.output_file, ns.output_kib * 1024)
        status.update(output_present=output is not None, output_bytes=size,
                      output_truncated=truncated)
    return status | {"_logs": bytes(sink.kept), "_output": output}


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = run(ns)
        logs: bytes = result.pop("_logs")
        output: bytes | None = result.pop("_output")
        write_atomic(ns.log_file, logs)
        write_atomic(ns.status_file, json.dumps(result, sort_keys=True).encode())
        if ns.result_file:
            bundle = {
                "status": result,
                "logs_b64": base64.b64encode(logs).decode("ascii"),
                "output_b64": None if output is None else base64.b64encode(output).decode("ascii"),
            }
            write_atomic(ns.result_file, json.dumps(bundle, sort_keys=True).encode())
    except Exception as e:  # the wrapper's own failure: say so plainly, never a 128+ code
        print(f"airlock limits wrapper failed: {type(e).__name__}: {e}", file=sys.stderr)
        return WRAPPER_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
