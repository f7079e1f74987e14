"""Misbehaving agent (test fixture). Standard library only."""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from agents import AgentError, serve


def hog_memory(inp: dict[str, Any]) -> dict[str, Any]:
    chunks = []
    for _ in range(int(inp.get("mib", 1024)) // 8):
        chunks.append(bytearray(b"x" * (8 << 20)))  # touched, so really resident
    return {"allocated_mib": 8 * len(chunks)}


def spin(inp: dict[str, Any]) -> dict[str, Any]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        pass


def fork_bomb(inp: dict[str, Any]) -> dict[str, Any]:
    forked, refused, last_error = 0, 0, ""
    end = time.monotonic() + float(inp.get("seconds", 1.0))
    while time.monotonic() < end:
        try:
            pid = os.fork()
        except OSError as e:
            refused += 1
            last_error = e.strerror or str(e)
            time.sleep(0.001)
            continue
        if pid == 0:  # child: hold the slot
            while True:
                time.sleep(60)
        forked += 1
    return {"forked": forked, "refused": refused, "error": last_error}


def connect(inp: dict[str, Any]) -> dict[str, Any]:
    # Targets come only from the input: the tests give listeners they own, never the internet.
    targets = inp.get("targets")
    if not targets:
        raise AgentError("E_INPUT", "targets: give at least one host:port to dial")
    results = {}
    for target in targets:
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                results[target] = "connected"
        except OSError as e:
            results[target] = f"error: {e}"
    return {"results": results}


OWNED_DIR = "/srv/sandbox-owned"  # owned by uid 65534 in the image (see the Containerfile)


def _owner(path: str) -> int | None:
    """Owner of ``path``, or of its directory when the file does not exist."""
    for p in (path, os.path.dirname(path)):
        try:
            return os.stat(p).st_uid
        except OSError:
            continue
    return None


def write_outside(inp: dict[str, Any]) -> dict[str, Any]:
    results, owners = {}, {}
    for path in [
        f"{OWNED_DIR}/existing.txt",
        f"{OWNED_DIR}/new-file",
        "/etc/airlock-x",
        "/airlock-x",
        "/app/x",
        "/opt/airlock/x",
        "/usr/bin/x",
        "/airlock/input.json",
        "/airlock/x",
        "/run/secrets/x",
    ]:
        owners[path] = _owner(path)
        try:
            with open(path, "w") as f:
                f.write("pwned")
            results[path] = "written"
        except OSError as e:
            results[path] = f"error: {e.strerror}"
    return {"results": results, "owners": owners}


def _cgroup_memory() -> tuple[Path, Path] | None:
    """(usage file, limit file) of this sandbox's memory cgroup, as the agent sees them."""
    for usage, limit in (("memory.usage_in_bytes", "memory.limit_in_bytes"),
                         ("memory.current", "memory.max")):
        root = Path("/sys/fs/cgroup/memory") if usage.startswith("memory.usage") else Path("/sys/fs/cgroup")
        if (root / usage).exists() and (root / limit).exists():
            return root / usage, root / limit
    return None


def kill_self(inp: dict[str, Any]) -> dict[str, Any]:
    held = [bytearray(b"x" * (1 << 20)) for _ in range(int(inp.get("mib", 0)))]
    files = _cgroup_memory() if inp.get("to_limit") else None
    if files is not None:  # creep up to just under the limit, as a real OOM's peak would be
        usage, limit = files
        ceiling = int(limit.read_text()) - (384 << 10)
        while int(usage.read_text()) + (64 << 10) < ceiling:
            held.append(bytearray(b"x" * (64 << 10)))
    sys.stdout.write("MemoryError: Cannot allocate memory\n")  # as an OOM'd program might
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    return {"held_mib": len(held)}  # never reached


def flood_stdout(inp: dict[str, Any]) -> dict[str, Any]:
    block = b"y" * (1 << 20)
    out = sys.stdout.buffer
    for _ in range(int(inp.get("mib", 1024))):
        out.write(block)
    out.flush()
    return {"written_mib": int(inp.get("mib", 1024))}


def orphan(inp: dict[str, Any]) -> dict[str, Any]:
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:  # grandchild, re-parented to PID 1, sleeps forever
            while True:
                time.sleep(60)
        os._exit(0)
    os.waitpid(pid, 0)
    return {"orphaned": True}


def garbage_output(inp: dict[str, Any]) -> dict[str, Any]:
    with open(os.environ["AIRLOCK_OUTPUT"], "w") as f:
        f.write("this is {not json")
    os._exit(0)


def whoami(inp: dict[str, Any]) -> dict[str, Any]:
    """What the sandbox looks like from inside (never the secret values, only their sizes)."""
    status = dict(
        line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line
    )
    secrets_dir = os.environ.get("AIRLOCK_SECRETS_DIR", "/run/secrets")
    secrets = {}
    if os.path.isdir(secrets_dir):
        for name in sorted(os.listdir(secrets_dir)):
            st = os.stat(os.path.join(secrets_dir, name))
            with open(os.path.join(secrets_dir, name), "rb") as f:
                size = len(f.read())
            secrets[name] = {"mode": oct(st.st_mode & 0o777), "uid": st.st_uid, "size": size}
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cap_eff": status["CapEff"].strip(),
        "no_new_privs": status.get("NoNewPrivs", "").strip(),
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "nproc": list(resource.getrlimit(resource.RLIMIT_NPROC)),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("AIRLOCK_", "TRACEPARENT"))},
        "env_values": sorted(os.environ.values()),
        "secrets": secrets,
        "pid1": open("/proc/1/cmdline", "rb").read().split(b"\0")[0].decode(),
    }


def dispatch(capability: str, inp: Any) -> Any:
    if capability == "ok":
        return {"ok": True, "echo": inp}
    if capability == "big_output":
        return {"blob": "z" * (int(inp.get("kib", 2048)) * 1024)}
    if capability == "schema_violation":
        return {"count": "x"}
    if capability == "crash":
        print("crashing on purpose", file=sys.stderr)
        sys.exit(3)
    if capability == "fail":
        raise AgentError("E_BAD", "bad things")
    if capability == "sleep":  # a well-behaved slow run (crash-safety tests)
        time.sleep(float(inp.get("seconds", 1)))
        return {"slept": float(inp.get("seconds", 1))}
    handlers = {
        "hog_memory": hog_memory,
        "spin": spin,
        "fork_bomb": fork_bomb,
        "connect": connect,
        "write_outside": write_outside,
        "flood_stdout": flood_stdout,
        "orphan": orphan,
        "garbage_output": garbage_output,
        "whoami": whoami,
        "kill_self": kill_self,
    }
    if capability not in handlers:
        raise AgentError("E_CAPABILITY", f"unknown capability {capability!r}")
    return handlers[capability](inp)


if __name__ == "__main__":
    serve(dispatch)
