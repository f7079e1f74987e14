"""Real ``airlock`` processes for tests: started as a user would, stopped as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]
Output = int | IO[bytes] | None


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def airlock_process(command: str, env: Mapping[str, str], *, stdout: Output = subprocess.DEVNULL,
                    stderr: Output = subprocess.PIPE, stop_timeout: float = 30,
                    ) -> Iterator[subprocess.Popen[bytes]]:
    """``airlock <command>`` in its own interpreter with ``env`` over this one's; stopped on exit."""
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    proc = subprocess.Popen([sys.executable, "-m", "airlock.cli", command], cwd=REPO, env=full,
                            stdout=stdout, stderr=stderr)
    try:
        yield proc
    finally:
        stop(proc, stop_timeout)


def executor_env(url: str, executor_id: str, **env: str) -> dict[str, str]:
    """Settings of a test executor: quick heartbeats and polls so tests wait less."""
    return {"AIRLOCK_DATABASE_URL": url, "AIRLOCK_EXECUTOR_ID": executor_id,
            "AIRLOCK_RUNTIME": "podman", "AIRLOCK_HEARTBEAT_SECONDS": "1",
            "AIRLOCK_POLL_SECONDS": "1", **env}
