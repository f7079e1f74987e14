"""Containment on the jail runtime: each misbehaviour runs for real, in bubblewrap under the
run's own cgroup, and (where a neighbour matters) next to a well-behaved run that must still
succeed. The verdicts come from the runtime and are interpreted by executor.results, exactly
as the executor does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agents.limits import Limits
from agents.manifest import Manifest
from executor.results import Outcome, interpret
from executor.runtime.base import RunSpec, SandboxResult, Termination
from executor.runtime.jail import JailRuntime
from tests.executor import jail_support
from tests.executor.conftest import SMALL, new_run_id, run_agent
from tests.executor.jail_support import NetnsListener, host_addresses, jail_cgroups, sandbox_processes
from tests.helpers.wait import wait_for_condition

pytestmark = pytest.mark.podman
jail_runtime = jail_support.jail_runtime  # fixtures
host_listener = jail_support.host_listener
netns_listener = jail_support.netns_listener

T = TypeVar("T")
OWNED = "/srv/sandbox-owned"  # owned by uid 65534 in the misbehave image (its Containerfile)
REPO = Path(__file__).resolve().parents[2]


async def alongside_ok(runtime: JailRuntime, image: str, manifest: Manifest, bad: Awaitable[T]) -> T:
    """Await ``bad`` while an ``ok`` run goes on in parallel; the ok run must succeed."""
    ok = asyncio.create_task(run_agent(runtime, image, manifest, "ok", {"n": 1}, limits=SMALL))  # type: ignore[arg-type]
    res = await bad
    _, ok_outcome = await ok
    assert ok_outcome.state == "SUCCEEDED", f"neighbour run failed: {ok_outcome}"
    return res


async def _bad(runtime: JailRuntime, image: str, manifest: Manifest, capability: str,
               payload: Any = None, limits: Limits = SMALL, **kw: Any) -> tuple[SandboxResult, Outcome, float]:
    t0 = time.monotonic()
    result, outcome = await alongside_ok(
        runtime, image, manifest,
        run_agent(runtime, image, manifest, capability, payload, limits=limits, **kw))  # type: ignore[arg-type]
    return result, outcome, time.monotonic() - t0


async def _script(runtime: JailRuntime, image: str, script: str, *, limits: Limits = SMALL,
                  network: bool = False, run_id: str | None = None,
                  cancel: asyncio.Event | None = None) -> SandboxResult:
    """Run ``python3 -c script`` in the jail (the image's Python, as uid 65534)."""
    spec = RunSpec(run_id=run_id or new_run_id("script"), attempt=1, image=image, capability="script",
                   input={}, limits=limits, network=network, entrypoint=("python3", "-c", script),
                   executor_id="pytest")
    return await runtime.run(spec, cancel or asyncio.Event())


def _dial(host: str, port: int) -> None:
    socket.create_connection((host, port), timeout=5).close()


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# --------------------------------------------------------------------------------------------


async def test_memory_hog_is_oom_killed(
    jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    run_id = new_run_id("hog")
    result, outcome, _ = await _bad(jail_runtime, misbehave_image, misbehave_manifest, "hog_memory",
                                    {"mib": 512}, run_id=run_id)
    assert result.termination is Termination.OOM_KILLED, result
    assert (outcome.state, outcome.reason) == ("OOM_KILLED", "memory limit of 64 MiB exceeded")
    assert outcome.peak_memory_bytes is not None and outcome.peak_memory_bytes >= 63 << 20
    assert outcome.peak_memory_bytes <= 64 << 20  # memory + swap capped at the limit
    assert jail_cgroups(jail_runtime, run_id) == []


async def test_self_sigkill_and_printed_memoryerror_are_not_oom(
    jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    result, outcome, _ = await _bad(jail_runtime, misbehave_image, misbehave_manifest, "kill_self",
                                    {"mib": 16})
    assert b"MemoryError" in result.logs  # it did try to look like an OOM
    assert result.termination is Termination.EXITED and result.exit_code == 137, result
    assert (outcome.state, outcome.reason) == ("FAILED", "agent exited with code 137")
    assert outcome.peak_memory_bytes is not None and outcome.peak_memory_bytes < 48 << 20


async def test_spin_ignoring_sigterm_is_killed_at_the_deadline(
    jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    limits = Limits(memory_mib=64, timeout_seconds=3, pids=32, cpus=1)
    run_id = new_run_id("spin")
    result, outcome, elapsed = await _bad(jail_runtime, misbehave_image, misbehave_manifest, "spin",
                                          limits=limits, run_id=run_id)
    assert (outcome.state, outcome.reason) == ("TIMED_OUT", "timed out after 3s")
    # The contract: killed at the 3 s limit. The supervisor SIGKILLs the whole cgroup at the
    # deadline (no SIGTERM grace to ignore); the bound allows 1 s for the kill and the report.
    assert 3 <= result.duration_seconds < 3 + 1
    assert elapsed < 3 + 1, f"run() took {elapsed:.2f}s for a 3 s limit"
    assert jail_cgroups(jail_runtime, run_id) == []


async def test_fork_bomb_is_stopped_by_the_pids_limit(
    jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    run_id = new_run_id("fork")
    _, outcome, _ = await _bad(jail_runtime, misbehave_image, misbehave_manifest, "fork_bomb",
                               {"seconds": 1.5}, run_id=run_id)
    assert outcome.state == "SUCCEEDED", outcome
    report = outcome.output
    # The agent gets exactly its pids budget: itself plus pids-1 children (the jail's own two
    # processes are added to the cgroup's limit, not taken from the agent's).
    assert report["forked"] == SMALL.pids - 1, report
    assert report["refused"] > 0 and "temporarily unavailable" in report["error"]
    assert jail_cgroups(jail_runtime, run_id) == []
    assert sandbox_processes(run_id) == []  # its sleeping children went with it


async def test_two_runs_cannot_exhaust_each_others_pids_or_memory(
    jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    # pids: two fork bombs at once each get their whole budget (a shared budget, like an
    # RLIMIT_NPROC on one uid, would split it between them).
    bombs = await asyncio.gather(*(
        run_agent(jail_runtime, misbehave_image, misbehave_manifest, "fork_bomb",  # type: ignore[arg-type]
                  {"seconds": 2.0}) for _ in range(2)))
    assert [o.output["forked"] for _, o in bombs] == [SMALL.pids - 1] * 2, [o for _, o in bombs]
    # memory: a run holding 40 MiB of its 64 MiB lives through a neighbour hitting its own
    # limit; each peak is its own cgroup's.
    holder = asyncio.create_task(_script(jail_runtime, misbehave_image,
        "import time, json, os\n"
        "b = bytearray(40 << 20)\n"
        "for i in range(0, len(b), 4096): b[i] = 1\n"
        "time.sleep(2)\n"
        "json.dump({'output': {'held': 40}}, open(os.environ['AIRLOCK_OUTPUT'], 'w'))\n"))
    hog, _ = await run_agent(jail_runtime, misbehave_image, misbehave_manifest, "hog_memory",  # type: ignore[arg-type]
                             {"mib": 512})
    held = await holder
    assert hog.termination is Termination.OOM_KILLED, hog
    assert held.termination is Termination.EXITED and held.exit_code == 0, held
    assert json.loads(held.output or b"{}") == {"output": {"held": 40}}
    assert held.peak_memory_bytes is not None and 40 << 20 <= held.peak_memory_bytes < 64 << 20


async def test_no_network_without_egress_and_never_the_hosts_loopback_with_it(
    jail_runtime: JailRuntime,
    misbehave_image: str,
    misbehave_manifest: Manifest,
    host_listener: tuple[int, list[int]],
    netns_listener: NetnsListener,
) -> None:
    port, accepted = host_listener
    elsewhere = f"{netns_listener.addr}:{netns_listener.port}"
    targets = [elsewhere] + [f"{a}:{port}" for a in host_addresses()]
    # Control: every target is reachable from the host, so a refusal below is the jail's.
    for t in targets:
        host, _, p = t.rpartition(":")
        await asyncio.to_thread(_dial, host, int(p))
    await wait_for_condition(lambda: accepted[0] == len(targets) - 1, what="host accepts counted")
    before = accepted[0]

    _, outcome, _ = await _bad(jail_runtime, misbehave_image, misbehave_manifest, "connect",
                               {"targets": targets})
    assert outcome.state == "SUCCEEDED", outcome
    results = outcome.output["results"]
    assert set(results) == set(targets)
    assert not [t for t, r in results.items() if r == "connected"], results
    assert accepted[0] == before  # nothing from the sandbox reached the host

    # Granted egress: its own network namespace behind slirp4netns. It reaches the address
    # "elsewhere" (control: the check above would have seen a connection), but never the
    # host's loopback, where PostgreSQL trusts every local connection.
    loopback = [f"127.0.0.1:{port}", f"10.0.2.2:{port}"]
    _, granted = await run_agent(jail_runtime, misbehave_image, misbehave_manifest, "connect",  # type: ignore[arg-type]
                                 {"targets": [elsewhere, *loopback]}, network=True)
    assert granted.state == "SUCCEEDED", granted
    got = granted.output["results"]
    assert got[elsewhere] == "connected", got
    assert all(got[t].startswith("error") for t in loopback), got
    assert accepted[0] == before


async def test_writes_outside_the_output_dir_are_refused_and_the_root_is_read_only(
    jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    _, outcome, _ = await _bad(jail_runtime, misbehave_image, misbehave_manifest, "write_outside")
    assert outcome.state == "SUCCEEDED", outcome
    results, owners = outcome.output["results"], outcome.output["owners"]
    assert [p for p, r in results.items() if r == "written"] == [], results
    refusals = ("Read-only file system", "Permission denied", "No such file or directory")
    assert all(r.removeprefix("error: ") in refusals for r in results.values()), results
    # uid 65534 owns these in the image (the jail maps the sandbox user to host uid 65534, so
    # file permissions allow the write): only the read-only root can refuse it, with EROFS.
    for path in (f"{OWNED}/existing.txt", f"{OWNED}/new-file"):
        assert owners[path] == 65534, (path, owners[path])
        assert results[path] == "error: Read-only file system", (path, results[path])


async def test_the_owned_path_is_writable_by_the_sandbox_user_without_the_read_only_root(
    jail_runtime: JailRuntime, misbehave_image: str
) -> None:
    # Control for the test above: the same image files, the same host uid 65534, a writable
    # copy-on-write mount instead of the read-only one: the write succeeds, so the EROFS
    # above comes from the read-only root alone.
    r = await asyncio.to_thread(
        subprocess.run,
        ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "run", "--rm",
         "--network=none", "--user", "65534:65534", "--entrypoint", "sh",
         "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", misbehave_image, "-c",
         f"echo x > {OWNED}/new-file && echo y >> {OWNED}/existing.txt && echo wrote"],
        capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.strip()) == (0, "wrote"), r.stderr


async def test_gigabytes_of_stdout_keep_logs_capped_and_executor_memory_flat(
    jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    limits = Limits(memory_mib=64, timeout_seconds=60, pids=32, log_kib=64)
    baseline = peak = _rss_bytes()
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, _rss_bytes())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        result, outcome, _ = await _bad(jail_runtime, misbehave_image, misbehave_manifest,
                                        "flood_stdout", {"mib": 2048}, limits=limits)
    finally:
        done = True
        await sampler
    assert outcome.state == "SUCCEEDED", outcome
    assert outcome.output == {"written_mib": 2048}
    assert result.logs_truncated and len(result.logs) == 64 * 1024
    assert peak - baseline < 100 << 20, f"executor RSS grew by {(peak - baseline) >> 20} MiB"


async def test_orphaned_daemon_does_not_outlive_the_run(
    jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    run_id = new_run_id("orphan")
    _, outcome, _ = await _bad(jail_runtime, misbehave_image, misbehave_manifest, "orphan",
                               run_id=run_id)
    # SUCCEEDED, not TIMED_OUT: the run ended when its main process did, not at the limit.
    assert outcome.state == "SUCCEEDED", outcome
    assert jail_cgroups(jail_runtime, run_id) == []
    assert sandbox_processes(run_id) == []


async def test_forged_output_is_a_failure_never_a_read_outside_the_sandbox(
    jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    _, garbage, _ = await _bad(jail_runtime, misbehave_image, misbehave_manifest, "garbage_output")
    assert garbage.state == "FAILED" and garbage.reason.startswith("output is not valid JSON"), garbage
    # A symlink planted as the output (to a host file) or a FIFO (to block the reader) is not
    # followed: the run has no output.
    for plant in ("os.symlink('/etc/passwd', out)", "os.mkfifo(out)"):
        script = f"import os\nout = os.environ['AIRLOCK_OUTPUT']\n{plant}\n"
        result = await _script(jail_runtime, misbehave_image, script)
        assert result.termination is Termination.EXITED and result.exit_code == 0, result
        assert result.output is None, (plant, result.output)
        outcome = interpret(result, {"type": "object"}, limits=SMALL)
        assert (outcome.state, outcome.reason) == ("FAILED", "no output written")


async def test_inside_the_jail(jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest) -> None:
    _, outcome = await run_agent(jail_runtime, misbehave_image, misbehave_manifest, "whoami",  # type: ignore[arg-type]
                                 secrets={"api_key": b"s3cret"}, env={"TRACEPARENT": "00-x"})
    assert outcome.state == "SUCCEEDED", outcome
    me = outcome.output
    assert (me["uid"], me["gid"], me["cap_eff"], me["no_new_privs"]) == (65534, 65534, "0000000000000000", "1")
    assert me["pid1"].endswith("bwrap")  # bubblewrap's reaper; the supervisor is not in this pid namespace
    assert me["env"]["AIRLOCK_SECRETS_DIR"] == "/run/secrets" and me["env"]["TRACEPARENT"] == "00-x"
    assert me["secrets"] == {"api_key": {"mode": "0o400", "uid": 65534, "size": 6}}
    assert "s3cret" not in me["env_values"]
    # What the agent sees of the machine: its own processes, one loopback, no host mounts,
    # and no way to make namespaces or mounts (seccomp + no capabilities).
    probe = await _script(jail_runtime, misbehave_image, """
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(f, *a):
    r = f(*a)
    return 0 if r == 0 else ctypes.get_errno()
res = {
    "pids": sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),
    "ifaces": [n for _, n in socket.if_nameindex()],
    "unshare_user": call(libc.unshare, 0x10000000),
    "unshare_net": call(libc.unshare, 0x40000000),
    "mount": call(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None),
    "cgroup_fs": os.path.exists('/sys/fs/cgroup/memory'),
    "hostname": socket.gethostname(),
    "tmp_size": os.statvfs('/tmp').f_blocks * os.statvfs('/tmp').f_frsize,
    "root_ro": bool(os.statvfs('/').f_flag & os.ST_RDONLY),
}
json.dump({"output": res}, open(os.environ['AIRLOCK_OUTPUT'], 'w'))
""")
    seen = json.loads(probe.output or b"{}")["output"]
    assert seen["ifaces"] == ["lo"]
    assert len(seen["pids"]) <= 3 and seen["pids"][0] == 1  # reaper, python (and a transient)
    assert seen["unshare_user"] == seen["unshare_net"] == seen["mount"] == 1  # EPERM
    assert not seen["cgroup_fs"] and seen["hostname"] == "airlock" and seen["root_ro"]
    assert seen["tmp_size"] <= 32 << 20


async def test_cancel_ends_the_run_at_once(jail_runtime: JailRuntime, misbehave_image: str,
                                           misbehave_manifest: Manifest) -> None:
    run_id = new_run_id("cancel")
    cancel = asyncio.Event()
    task = asyncio.create_task(run_agent(jail_runtime, misbehave_image, misbehave_manifest, "spin",  # type: ignore[arg-type]
                                         limits=Limits(memory_mib=64, timeout_seconds=60, pids=32),
                                         cancel=cancel, run_id=run_id))
    await wait_for_condition(lambda: bool(jail_cgroups(jail_runtime, run_id)), what="run started")
    t0 = time.monotonic()
    cancel.set()
    result, outcome = await task
    assert result.termination is Termination.CANCELLED and outcome.state == "CANCELLED"
    assert time.monotonic() - t0 < 5  # within about a second (the protocol's promise), with slack
    assert jail_cgroups(jail_runtime, run_id) == []


async def test_a_killed_executor_does_not_extend_the_run_past_its_deadline(
    jail_runtime: JailRuntime, misbehave_image: str
) -> None:
    """kill -9 of the process that started the run: the supervisor still ends it on time."""
    run_id = new_run_id("orphaned")
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", f"""
import asyncio
from agents.limits import Limits
from executor.runtime.base import RunSpec
from executor.runtime.jail import JailRuntime
spec = RunSpec(run_id={run_id!r}, attempt=1, image={misbehave_image!r}, capability="spin", input={{}},
               limits=Limits(memory_mib=64, timeout_seconds=4, pids=32), executor_id="doomed")
asyncio.run(JailRuntime(executor_id="doomed").run(spec, asyncio.Event()))
""", cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        await wait_for_condition(lambda: any((d / "cgroup.procs").read_text().strip()
                                             for d in jail_cgroups(jail_runtime, run_id)),
                                 timeout=60, what="the jailed agent running")
        started = time.monotonic()  # the supervisor started before this: the deadline is earlier
        child.send_signal(signal.SIGKILL)
        await child.wait()
        # Contract: the run ends by its 4 s deadline with nobody watching it; 1 s for the kill.
        await wait_for_condition(lambda: jail_cgroups(jail_runtime, run_id) == [], timeout=4 + 1,
                                 what="the cgroup emptied and removed by the supervisor")
        assert time.monotonic() - started < 4 + 1
        assert sandbox_processes(run_id) == []
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    # What the dead executor left (its work tmpfs, with the supervisor's report) is reaped.
    work = jail_runtime._work_dirs(run_id)
    assert len(work) == 1 and json.loads((work[0] / "private" / "status.json").read_text())["timed_out"]
    await jail_runtime.reap(run_id)
    assert jail_runtime._work_dirs(run_id) == []


async def test_reap_ends_a_running_jail(jail_runtime: JailRuntime, misbehave_image: str,
                                        misbehave_manifest: Manifest) -> None:
    run_id = new_run_id("reap")
    task = asyncio.create_task(run_agent(jail_runtime, misbehave_image, misbehave_manifest, "spin",  # type: ignore[arg-type]
                                         limits=Limits(memory_mib=64, timeout_seconds=60, pids=32),
                                         run_id=run_id))
    await wait_for_condition(lambda: bool(jail_cgroups(jail_runtime, run_id)), what="run started")
    assert await jail_runtime.reap(run_id) >= 1
    result, _ = await asyncio.wait_for(task, 10)
    assert result.termination is Termination.CANCELLED, result  # the supervisor was told to stop
    assert jail_cgroups(jail_runtime, run_id) == [] and sandbox_processes(run_id) == []


async def test_missing_image_and_missing_command_are_start_failures(
    jail_runtime: JailRuntime, misbehave_image: str
) -> None:
    spec = RunSpec(run_id=new_run_id("noimg"), attempt=1, image="localhost/airlock/no-such:1",
                   capability="x", input={}, limits=SMALL)
    result = await jail_runtime.run(spec, asyncio.Event())
    assert result.termination is Termination.START_FAILED and "no-such" in result.detail, result
    spec = RunSpec(run_id=new_run_id("nocmd"), attempt=1, image=misbehave_image, capability="x",
                   input={}, limits=SMALL, entrypoint=("/no/such/program",))
    result = await jail_runtime.run(spec, asyncio.Event())
    assert result.termination is Termination.START_FAILED, result
    assert "/no/such/program" in result.detail
    assert interpret(result, {}, limits=SMALL).reason.startswith("sandbox failed to start: bwrap: execvp")


async def test_check_refuses_a_host_that_cannot_jail_naming_why() -> None:
    with pytest.raises(Exception, match="'no-such-bwrap' not found on PATH; install bubblewrap"):
        await JailRuntime(bwrap="no-such-bwrap").check()
    with pytest.raises(Exception, match=r"trial run \(localhost/airlock/no-such:1"):
        await JailRuntime(probe_image="localhost/airlock/no-such:1", executor_id="pytest").check()


async def test_cold_supervisors_enforce_the_same_limits(misbehave_image: str, misbehave_manifest: Manifest,
                                                        jail_runtime: JailRuntime) -> None:
    # Without warm supervisors each run creates and joins its cgroup itself: same verdicts.
    cold = JailRuntime(executor_id="pytest", warm_pool=0)
    await cold.check()
    hog, outcome = await run_agent(cold, misbehave_image, misbehave_manifest, "hog_memory", {"mib": 512})  # type: ignore[arg-type]
    assert hog.termination is Termination.OOM_KILLED and outcome.state == "OOM_KILLED", hog
    _, bomb = await run_agent(cold, misbehave_image, misbehave_manifest, "fork_bomb", {"seconds": 1.0})  # type: ignore[arg-type]
    assert bomb.output["forked"] == SMALL.pids - 1, bomb
    assert cold._warm == []
    await cold.close()


async def test_warm_supervisors_end_with_the_process_that_started_them(misbehave_image: str,
                                                                       jail_runtime: JailRuntime) -> None:
    """Supervisors waiting for a run hold a cgroup each: if their executor dies (kill -9) they
    see EOF on their stdin, remove their cgroup and exit."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", """
import asyncio, os
from executor.runtime.jail import JailRuntime
async def main():
    rt = JailRuntime(executor_id="doomed-warm", warm_pool=2)
    await rt.check()
    await asyncio.sleep(0)  # the pool fills right after the first run
    print(len(rt._warm), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
""", cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    try:
        assert int(await asyncio.wait_for(child.stdout.readline(), 120)) == 2
        prefix = f"warm-{child.pid}-"

        def warm_cgroups() -> list[Path]:
            return [p for root in jail_support._cgroup_roots()
                    if (root / jail_runtime.cgroup_parent).is_dir()
                    for p in (root / jail_runtime.cgroup_parent).iterdir() if p.name.startswith(prefix)]

        await wait_for_condition(lambda: len(warm_cgroups()) >= 2, what="warm cgroups created")
        child.send_signal(signal.SIGKILL)
        await child.wait()
        await wait_for_condition(lambda: warm_cgroups() == [], what="warm cgroups removed")
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def test_back_to_back_runs_through_the_warm_pool_all_succeed(
    jail_runtime: JailRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    # Runs taking warm supervisors as fast as they are replaced (the pool is 2, 4 at once).
    sem = asyncio.Semaphore(4)

    async def one(i: int) -> str:
        async with sem:
            _, outcome = await run_agent(jail_runtime, misbehave_image, misbehave_manifest, "ok", {"i": i})  # type: ignore[arg-type]
            return str(outcome.state)

    assert await asyncio.gather(*(one(i) for i in range(16))) == ["SUCCEEDED"] * 16


async def test_the_agent_cannot_signal_its_supervisor(jail_runtime: JailRuntime, misbehave_image: str) -> None:
    # kill(-1, SIGKILL) reaches every process the caller may signal but itself and its pid 1.
    # In the jail that leaves nobody: the supervisor (root, outside its pid namespace) and the
    # executor are out of reach, and the run ends normally.
    script = """
import errno, json, os, signal
try:
    os.kill(-1, signal.SIGKILL)
    res = "signalled something"
except OSError as e:
    res = errno.errorcode[e.errno]
json.dump({"output": {"kill_all": res}}, open(os.environ["AIRLOCK_OUTPUT"], "w"))
"""
    result = await _script(jail_runtime, misbehave_image, script)
    assert result.termination is Termination.EXITED and result.exit_code == 0, result
    assert json.loads(result.output or b"{}") == {"output": {"kill_all": "ESRCH"}}


async def test_auto_picks_the_jail_where_it_runs(jail_runtime: JailRuntime) -> None:
    # The fixture proved the jail runs here and no Dagger engine answers on these machines, so
    # auto's first usable choice is the jail (podman only where the jail's check fails).
    from executor.runtime.dagger import probe_engine
    from executor.runtime.registry import resolve_runtime

    assert (await probe_engine()).reachable is not True
    auto = await resolve_runtime("auto", executor_id="pytest-auto")
    try:
        assert auto.name == "jail" and isinstance(auto, JailRuntime)
    finally:
        await auto.close()  # type: ignore[attr-defined]
