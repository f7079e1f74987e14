"""The limits wrapper run for real on this host: real processes, real limits, real signals.

The wrapper is what enforces limits inside a Dagger exec; here it wraps small Python
programs started with this interpreter.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from executor.runtime import limits_wrapper
from tests.helpers.requirements import require
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only limits")

WRAPPER = Path(limits_wrapper.__file__)
MiB = 1024 * 1024


@dataclass
class WrapperRun:
    returncode: int
    stderr: bytes
    status: dict[str, Any]
    logs: bytes
    bundle: dict[str, Any]
    files: dict[str, Path]

    @property
    def bundle_output(self) -> bytes | None:
        b64 = self.bundle["output_b64"]
        return None if b64 is None else base64.b64decode(b64)


def _paths(tmp_path: Path) -> dict[str, Path]:
    return {k: tmp_path / n for k, n in
            (("log", "logs.txt"), ("status", "status.json"), ("result", "result.json"),
             ("output", "output.json"))}


def wrapper_argv(tmp_path: Path, command: list[str], *options: str) -> list[str]:
    p = _paths(tmp_path)
    return [
        sys.executable, "-I", "-S", str(WRAPPER),
        "--log-file", str(p["log"]), "--status-file", str(p["status"]),
        "--result-file", str(p["result"]), "--output-file", str(p["output"]),
        *options, "--", *command,
    ]  # fmt: skip


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def run_wrapper(
    tmp_path: Path, command: list[str], *options: str, timeout: float = 10
) -> WrapperRun:
    opts = list(options)
    if "--timeout" not in opts:
        opts += ["--timeout", str(timeout)]
    proc = subprocess.run(wrapper_argv(tmp_path, command, *opts), capture_output=True, timeout=60)
    p = _paths(tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    return WrapperRun(
        returncode=proc.returncode,
        stderr=proc.stderr,
        status=json.loads(p["status"].read_text()),
        logs=p["log"].read_bytes(),
        bundle=json.loads(p["result"].read_text()),
        files=p,
    )


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_exit_code_output_and_interleaved_logs(tmp_path: Path) -> None:
    out = _paths(tmp_path)["output"]
    r = run_wrapper(tmp_path, py(f"""
        import sys
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        open({str(out)!r}, "w").write('{{"output": 42}}')
        sys.exit(3)
    """))
    assert r.status["exit_code"] == 3
    assert r.status["signal"] is None
    assert not r.status["timed_out"] and not r.status["oom_suspected"]
    assert r.status["start_error"] is None
    assert b"to stdout" in r.logs and b"to stderr" in r.logs
    assert r.status["output_present"] and r.bundle_output == b'{"output": 42}'
    # The bundle carries the same status and logs as the separate files.
    assert r.bundle["status"] == r.status
    assert base64.b64decode(r.bundle["logs_b64"]) == r.logs


def test_success_without_output(tmp_path: Path) -> None:
    r = run_wrapper(tmp_path, py("print('hello')"))
    assert r.status["exit_code"] == 0
    assert r.status["output_present"] is False and r.bundle_output is None
    assert r.logs == b"hello\n"


def test_timeout_kills_a_sigterm_ignoring_loop_and_its_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    r = run_wrapper(tmp_path, py(f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        g = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(g.pid))
        print("looping", flush=True)
        while True:
            time.sleep(0.05)
    """), "--timeout", "1", "--kill-grace", "0.5")
    assert r.status["timed_out"] is True
    assert r.status["signal"] == signal.SIGKILL and r.status["exit_code"] == 137
    assert r.status["oom_suspected"] is False  # our own SIGKILL is not an OOM
    # The contract: SIGTERM at the 1 s limit, SIGKILL 0.5 s (the grace) later. The upper bound
    # is limit + grace + 1 s of scheduling slack on a loaded 2-core machine.
    assert 1.0 <= r.status["duration_seconds"] < 1 + 0.5 + 1
    assert b"looping" in r.logs
    assert not pid_alive(int(pidfile.read_text()))


def test_timeout_sends_sigterm_first(tmp_path: Path) -> None:
    r = run_wrapper(tmp_path, py("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: (print("got SIGTERM", flush=True), sys.exit(0)))
        time.sleep(60)
    """), "--timeout", "2", "--kill-grace", "10")  # 2 s: time for the child to set its handler
    assert r.status["timed_out"] is True
    assert r.status["exit_code"] == 0 and r.status["signal"] is None
    assert b"got SIGTERM" in r.logs
    # Ended when the agent did, not when the 10 s grace ran out (limit + grace is the bound).
    assert r.status["duration_seconds"] < 2 + 10


def test_daemonised_grandchild_is_killed_when_the_agent_exits(tmp_path: Path) -> None:
    # A grandchild in its own session (out of reach of killpg) that keeps the log pipe open:
    # the wrapper must still return promptly and leave nothing behind.
    pidfile = tmp_path / "daemon.pid"
    r = run_wrapper(tmp_path, py(f"""
        import subprocess, sys
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                             start_new_session=True)
        open({str(pidfile)!r}, "w").write(str(g.pid))
        print("parent done", flush=True)
    """), timeout=3600)
    # Had the wrapper waited for the grandchild (or its pipe), run_wrapper's own 60 s guard
    # would have failed this test; the 3600 s limit rules out the timeout as the way out.
    assert r.status["subreaper"] is True
    assert r.status["exit_code"] == 0 and not r.status["timed_out"]
    assert not pid_alive(int(pidfile.read_text()))


def test_memory_cap_makes_allocation_fail_as_a_plain_failure(tmp_path: Path) -> None:
    # RLIMIT_AS refusals are seen only by the agent, which could just as well print the same
    # text: the wrapper reports the exit code, not an OOM.
    r = run_wrapper(tmp_path, py("buf = bytearray(512 * 1024 * 1024)"), "--memory-mib", "128")
    assert r.status["exit_code"] == 1 and r.status["signal"] is None
    assert b"MemoryError" in r.logs
    assert r.status["oom_suspected"] is False and r.status["oom_reason"] == ""


def test_printing_memory_error_does_not_fake_an_oom(tmp_path: Path) -> None:
    r = run_wrapper(tmp_path, py("""
        import sys
        print("MemoryError: Cannot allocate memory; out of memory; std::bad_alloc", flush=True)
        sys.exit(1)
    """))
    assert r.status["exit_code"] == 1
    assert r.status["oom_suspected"] is False and r.status["oom_reason"] == ""


def test_allocation_within_the_cap_succeeds(tmp_path: Path) -> None:
    r = run_wrapper(tmp_path, py("buf = bytearray(16 * 1024 * 1024); print(len(buf))"),
                    "--memory-mib", "128")
    assert r.status["exit_code"] == 0 and r.status["oom_suspected"] is False
    assert r.status["peak_rss_bytes"] >= 16 * MiB


def test_self_sigkill_is_not_an_oom(tmp_path: Path) -> None:
    r = run_wrapper(tmp_path, py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert r.status["signal"] == signal.SIGKILL and r.status["exit_code"] == 137
    assert not r.status["timed_out"]
    assert r.status["oom_suspected"] is False and r.status["oom_reason"] == ""


# --- the kernel's OOM killer, for real: the wrapper in a memory cgroup with a hard limit ----


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A fresh cgroup-v1 memory cgroup limited to 64 MiB (no swap), removed afterwards."""
    root = Path("/sys/fs/cgroup/memory")
    require("root", None if os.geteuid() == 0 else "a memory cgroup is made for the wrapper")
    require("a cgroup-v1 memory hierarchy", None if (root / "memory.oom_control").exists()
            else f"{root}/memory.oom_control is absent (the podman runtime needs it too)")
    cg = root / f"airlock-wrapper-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    cg.mkdir()
    try:
        (cg / "memory.limit_in_bytes").write_text(str(64 * MiB))
        with contextlib.suppress(OSError):  # absent without swap accounting
            (cg / "memory.memsw.limit_in_bytes").write_text(str(64 * MiB))
        (cg / "memory.swappiness").write_text("0")
        yield cg
    finally:
        for _ in range(100):  # the last member may still be exiting
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def run_in_cgroup(tmp_path: Path, cg: Path, command: list[str]) -> WrapperRun:
    """Run the wrapper (and so the agent) as a member of ``cg``."""
    shell = f'echo $$ > {cg}/cgroup.procs && exec "$@"'
    p = _paths(tmp_path)
    argv = ["sh", "-c", shell, "sh", *wrapper_argv(tmp_path, command, "--timeout", "60")]
    proc = subprocess.run(argv, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return WrapperRun(proc.returncode, proc.stderr, json.loads(p["status"].read_text()),
                      p["log"].read_bytes(), json.loads(p["result"].read_text()), p)


def _oom_kills(cg: Path) -> int:
    lines = dict(ln.split(" ", 1) for ln in (cg / "memory.oom_control").read_text().splitlines())
    return int(lines["oom_kill"])


def test_kernel_oom_kill_is_reported_with_the_kernels_count(
        tmp_path: Path, memory_cgroup: Path) -> None:
    r = run_in_cgroup(tmp_path, memory_cgroup, py("""
        chunks = []
        while True:
            chunks.append(bytearray(b"x" * (8 << 20)))  # touched: really resident
    """))
    assert _oom_kills(memory_cgroup) >= 1  # the kernel did kill it
    assert r.status["signal"] == signal.SIGKILL and not r.status["timed_out"]
    assert r.status["oom_suspected"] is True
    assert str(memory_cgroup / "memory.oom_control") in r.status["oom_reason"]
    assert "oom_kill 0 -> " in r.status["oom_reason"]


def test_self_sigkill_under_a_readable_oom_counter_is_not_an_oom(
        tmp_path: Path, memory_cgroup: Path) -> None:
    # Same cgroup, same limit, the counter readable: only the evidence differs.
    r = run_in_cgroup(tmp_path, memory_cgroup, py("""
        import os, signal
        print("MemoryError", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """))
    assert _oom_kills(memory_cgroup) == 0
    assert r.status["signal"] == signal.SIGKILL
    assert r.status["oom_suspected"] is False


def test_oom_counter_is_found_for_v1_and_v2_layouts(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    (v1 / "pod1").mkdir(parents=True)  # the hierarchy's /kubepods is what is mounted at v1
    (v1 / "pod1/memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"35 31 0:32 /kubepods {v1} rw,relatime - cgroup cgroup rw,memory\n"
        f"40 31 0:37 / {tmp_path}/systemd rw - cgroup cgroup rw,name=systemd\n")
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("4:memory:/kubepods/pod1\n1:name=systemd:/\n0::/\n")
    found = limits_wrapper.oom_kill_counter(str(mountinfo), str(cgroup))
    assert found == (f"{v1}/pod1/memory.oom_control", "oom_kill")
    assert limits_wrapper.oom_kill_count(found) == 3
    # cgroup v2 only (a namespaced container: its cgroup is the mount's root).
    mountinfo.write_text(f"30 23 0:27 / {v2} rw - cgroup2 cgroup2 rw,nsdelegate\n")
    cgroup.write_text("0::/\n")
    found = limits_wrapper.oom_kill_counter(str(mountinfo), str(cgroup))
    assert found == (f"{v2}/memory.events", "oom_kill")
    assert limits_wrapper.oom_kill_count(found) == 2
    # Nothing readable: no evidence source, so no OOM can ever be claimed.
    cgroup.write_text("0::/elsewhere\n")
    assert limits_wrapper.oom_kill_counter(str(mountinfo), str(cgroup)) is None


def test_logs_are_capped_and_counted(tmp_path: Path) -> None:
    r = run_wrapper(tmp_path, py("""
        import sys
        for _ in range(300):
            sys.stdout.write("x" * 1023 + "\\n")
        sys.stdout.flush()
        print("the end", file=sys.stderr)
    """), "--log-kib", "16")
    assert len(r.logs) == 16 * 1024
    assert r.status["logs_truncated"] is True
    assert r.status["logs_bytes"] == 300 * 1024 + len("the end\n")
    assert base64.b64decode(r.bundle["logs_b64"]) == r.logs


def test_limits_are_applied_to_the_agent(tmp_path: Path) -> None:
    r = run_wrapper(tmp_path, py("""
        import json, resource
        names = ["RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_CORE"]
        lim = {n: resource.getrlimit(getattr(resource, n)) for n in names}
        lim["oom_score_adj"] = open("/proc/self/oom_score_adj").read().strip()
        print(json.dumps(lim))
    """), "--memory-mib", "256", "--pids", "32", "--fsize-bytes", str(8 * MiB))
    lim = json.loads(r.logs)
    assert lim["RLIMIT_AS"] == [256 * MiB, 256 * MiB]  # soft and hard: the agent can't raise it
    assert lim["RLIMIT_NPROC"] == [33, 33]  # the agent's 32 plus the wrapper (same user)
    assert lim["RLIMIT_FSIZE"] == [8 * MiB, 8 * MiB]
    assert lim["RLIMIT_CORE"] == [0, 0]
    assert lim["oom_score_adj"] == "1000"


def test_file_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    r = run_wrapper(tmp_path, py(f"open({str(big)!r}, 'wb').write(b'x' * (4 * 1024 * 1024))"),
                    "--fsize-bytes", str(1 * MiB))
    assert r.status["exit_code"] != 0  # EFBIG (Python ignores SIGXFSZ) or SIGXFSZ
    assert big.stat().st_size <= 1 * MiB


def test_output_is_capped(tmp_path: Path) -> None:
    out = _paths(tmp_path)["output"]
    r = run_wrapper(tmp_path, py(f"open({str(out)!r}, 'w').write('y' * 5000)"), "--output-kib", "1")
    assert r.status["output_present"] and r.status["output_truncated"]
    assert r.status["output_bytes"] == 5000
    assert r.bundle_output == b"y" * 1024


def test_output_symlink_is_not_followed(tmp_path: Path) -> None:
    out = _paths(tmp_path)["output"]
    target = tmp_path / "elsewhere.txt"
    target.write_text("not the agent's output")
    r = run_wrapper(tmp_path, py(f"import os; os.symlink({str(target)!r}, {str(out)!r})"))
    assert r.status["output_present"] is False and r.bundle_output is None


def test_command_not_found_is_a_start_error(tmp_path: Path) -> None:
    r = run_wrapper(tmp_path, ["/nonexistent/agent-binary"])
    assert r.status["exit_code"] == 127
    assert "cannot start" in r.status["start_error"]
    assert r.status["duration_seconds"] == 0.0


def test_sigterm_to_the_wrapper_ends_the_run_in_order(tmp_path: Path) -> None:
    pidfile = tmp_path / "agent.pid"
    proc = subprocess.Popen(
        wrapper_argv(tmp_path, py(f"""
            import os, signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open({str(pidfile)!r}, "w").write(str(os.getpid()))
            time.sleep(60)
        """), "--timeout", "60", "--kill-grace", "0.5"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text() != "", timeout=30,
                   what="the agent wrote its pid")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    status = json.loads(_paths(tmp_path)["status"].read_text())
    assert status["terminated"] is True and status["timed_out"] is False
    assert status["signal"] == signal.SIGKILL
    assert not pid_alive(int(pidfile.read_text()))


def test_wrapper_never_exits_in_the_range_dagger_rejects(tmp_path: Path) -> None:
    # with_exec(expect=ANY) accepts 0-127 and 192-255 only; a killed agent must not make the
    # wrapper exit 137.
    r = run_wrapper(tmp_path, py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert r.returncode == 0 and r.status["exit_code"] == 137


def test_missing_command_is_a_usage_error(tmp_path: Path) -> None:
    p = _paths(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(WRAPPER), "--timeout", "1",
         "--log-file", str(p["log"]), "--status-file", str(p["status"])],
        capture_output=True, timeout=30,
    )
    assert proc.returncode == 2 and b"no command" in proc.stderr
    assert not os.path.exists(p["status"])
