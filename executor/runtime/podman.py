"""The podman sandbox runtime: one ``podman run`` per attempt, under hard limits.

Per-run layout on the host (all inside one size-limited tmpfs, so neither the agent's output
nor the secrets ever reach the host disk, and an agent cannot fill it)::

    <work_root>/<sandbox_name>/          tmpfs, size = input + secrets + 2*output_kib + slack
        input.json                       -> INPUT_PATH  (read-only bind)
        out/        (uid 65534, 0700)    -> OUTPUT_DIR  (read-write bind)
        secrets/    (uid 65534, 0500)    -> SECRETS_DIR (read-only bind; files 0400)

Why a host tmpfs rather than ``--tmpfs`` or a loopback: a container tmpfs vanishes with the
container (podman cannot copy from it after exit), a loopback image needs mkfs and losetup per
run (slow, a finite pool of loop devices), while one tmpfs ``mount(2)`` is a single syscall,
bounded by its ``size=`` and charged to the writer's memory cgroup.

Why a per-run cgroup parent (``--cgroup-parent=airlock/<sandbox_name>`` with
``--cgroups=no-conmon``): the container's own cgroup is deleted the moment it exits, but the
parent keeps the hierarchical peak (``memory.max_usage_in_bytes`` / ``memory.peak``) until we
remove it, and holds nothing but the container.

How OOM is recognised: podman's ``State.OOMKilled`` stays false here (podman 4.3 + runc on
cgroup v1 never sets it), and an exit code or a peak near the limit is something the agent can
produce itself (fill memory to just under the limit, then SIGKILL itself). The evidence used is
conmon's: conmon listens to the container cgroup's OOM notifications (the kernel's eventfd) and,
on one, creates a file named ``oom`` in its working directory. ``podman run`` is started in the
run's private work dir (root-only; the agent sees only its ``out/`` subdirectory), so
``<work>/oom`` exists exactly when the kernel OOM-killed something in this container.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field

from agents.limits import Limits
from executor.base_image import DEFAULT_TAG as DEFAULT_PROBE_IMAGE
from executor.runtime.base import (
    INPUT_PATH,
    LABEL_EXECUTOR,
    LABEL_RUN_ID,
    OUTPUT_DIR,
    OUTPUT_PATH,
    SECRETS_DIR,
    RunSpec,
    RuntimeFactory,
    RuntimeSettings,
    RuntimeUnavailable,
    SandboxResult,
    Termination,
)
from executor.runtime.output_file import read_output

log = logging.getLogger(__name__)

# crun fails on these hosts (cgroup hybrid mode); runc + cgroupfs works everywhere we run.
GLOBAL_OPTIONS: tuple[str, ...] = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
SANDBOX_UID = 65534
NOFILE = 1024  # the host's hard limit is 20000; podman's default exceeds it and runc fails
# RLIMIT_NPROC counts every process of uid 65534 on the host (no user namespace), so a low
# value would let one run's fork bomb starve another run. The per-container bound is the pids
# cgroup (--pids-limit); nproc is set explicitly because podman's default cannot be applied
# here, to the highest value runc may set (above kernel.pid_max it fails with EPERM here).
NPROC_MAX = 32768
TMP_SIZE = "32m"  # the agent's scratch /tmp; also charged to its memory cgroup
KILL_GRACE_SECONDS = 0.8  # after this, stop asking podman nicely and remove the container
# The wall-clock limit does not depend on the executor staying alive: every container is
# started with `podman run --timeout` = limit + this grace, which conmon (not the executor)
# enforces with SIGKILL. The executor's own timer fires first and reports TIMED_OUT; the
# backstop ends a sandbox whose executor was killed, hung or cut off. Contract: a sandbox
# never runs longer than its timeout plus DEADLINE_GRACE_SECONDS after it started.
DEADLINE_GRACE_SECONDS = 3
# One lock file per executor id (label value) on this host, held (shared) for as long as a
# process that runs sandboxes under that id is alive; the kernel drops it when the process
# dies, even by SIGKILL. A lock file nobody holds names a dead executor: its leftovers
# (containers, work dirs, cgroups) are reaped by the next executor starting on this host.
LIVENESS_DIR = Path("/run/airlock-executors")
LOG_DRAIN_SECONDS = 1.0  # after the client exits, how long the log pipe may take to close
CONMON_OOM_FILE = "oom"  # created by conmon, in its cwd, when the kernel OOM-kills in the container
EXIT_SIGKILL = 128 + 9
READ_CHUNK = 1 << 18

# The trial sandbox of check(): writes a fixed output, so a pass proves the whole path a run
# takes (tmpfs work dir, binds, --init, every limit, output read back), not only `podman info`.
PROBE_OUTPUT = b'{"probe": "ok"}'
PROBE_SCRIPT = f"printf '%s' '{PROBE_OUTPUT.decode()}' > \"$AIRLOCK_OUTPUT\""
PROBE_LIMITS = Limits(memory_mib=64, timeout_seconds=60, pids=16, cpus=1, output_kib=4, log_kib=16)
# Configurations whose trial sandbox passed in this process (podman, global options, work
# root, cgroup parent, image): later runtimes built the same way skip the trial.
_TRIALS_PASSED: set[tuple[object, ...]] = set()
# Known causes of a failed trial, and what to do about each.
_TRIAL_HINTS = (
    ("container-init binary not found", "install catatonit (Debian: apt-get install catatonit)"),
    ("catatonit", "install catatonit (Debian: apt-get install catatonit)"),
    ("executable file not found", "install runc (Debian: apt-get install runc)"),
)

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(target: Path, size_bytes: int) -> None:
    """Mount a private tmpfs (one syscall: no mount(8) process on the hot path)."""
    opts = f"size={size_bytes},nr_inodes=4096,mode=0700".encode()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc.mount(b"tmpfs", bytes(target), b"tmpfs", flags, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {target}: {os.strerror(err)}")


def _umount(target: Path) -> None:
    if _libc.umount2(bytes(target), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


class _LogSink:
    """Keeps the first ``cap`` bytes of the log stream; counts (and drops) the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.dropped = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(READ_CHUNK):
            room = self.cap - len(self.buf)
            if room > 0:
                self.buf += chunk[:room]
            self.dropped += max(0, len(chunk) - max(room, 0))


@dataclass(frozen=True, slots=True)
class _HostInfo:
    graph_images_json: Path | None  # changes whenever any image tag changes (digest cache key)
    cgroup_roots: tuple[Path, ...]  # every mounted cgroup hierarchy (v1 controllers, v2)
    memory_root: Path | None  # where memory.* files of our parent cgroup live
    cgroup_v2: bool
    nproc: int


def _nproc_limit() -> int:
    limit = NPROC_MAX
    with contextlib.suppress(OSError, ValueError):
        limit = min(limit, int(Path("/proc/sys/kernel/pid_max").read_text()))
    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    return limit if hard == resource.RLIM_INFINITY else min(limit, hard)


def _cgroup_mounts() -> list[Path]:
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype = right.split(" ", 1)[0]
            if fstype in ("cgroup", "cgroup2"):
                roots.append(Path(left.split(" ")[4]))
    return roots


class PodmanRuntime:
    """Runs each attempt with real podman (runc, cgroupfs) as uid 65534 under hard limits."""

    name = "podman"
    network_pool: bool | None = None  # network is chosen per run (--network=none|bridge)

    def __init__(
        self,
        *,
        podman: str = "podman",
        global_options: Sequence[str] = GLOBAL_OPTIONS,
        work_root: str | Path = "/run/airlock",
        cgroup_parent: str = "airlock",
        executor_id: str | None = None,
        probe_image: str = DEFAULT_PROBE_IMAGE,
        liveness_dir: str | Path = LIVENESS_DIR,
    ) -> None:
        self.podman = podman
        self.liveness_dir = Path(liveness_dir)
        self._alive_fds: dict[str, int] = {}  # executor label -> its held liveness lock
        self._alive_lock = asyncio.Lock()
        self.probe_image = probe_image
        self.global_options = tuple(global_options)
        self.work_root = Path(work_root)
        self.cgroup_parent = cgroup_parent.strip("/")
        self.executor_id = executor_id
        self._checked: RuntimeUnavailable | bool | None = False  # False: not yet checked
        self._check_lock = asyncio.Lock()
        self._host: _HostInfo | None = None
        self._digests: dict[str, tuple[int, str | None]] = {}

    # ------------------------------------------------------------------ podman plumbing

    def _cmd(self, *args: str) -> list[str]:
        return [self.podman, *self.global_options, *args]

    async def _podman(self, *args: str, time_limit: float = 30.0) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *self._cmd(*args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), time_limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return 124, "", f"podman {args[0]} timed out after {time_limit}s"
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    # ------------------------------------------------------------------ check

    async def check(self) -> None:
        """Raise ``RuntimeUnavailable`` unless podman can run sandboxes here (cached).

        Besides podman itself (root, runc, a tmpfs under the work root), one real trivial
        sandbox runs, built by the same ``_argv`` as every run, from ``probe_image``: a host
        that cannot run sandboxes (no catatonit for ``--init``, ...) is refused here, naming
        the cause, instead of failing every run.
        """
        async with self._check_lock:
            if self._checked is False:
                try:
                    self._host = await self._probe()
                    self._checked = None
                except RuntimeUnavailable as e:
                    self._checked = e
            if isinstance(self._checked, RuntimeUnavailable):
                raise self._checked

    async def _probe(self) -> _HostInfo:
        if shutil.which(self.podman) is None:
            raise RuntimeUnavailable(f"podman runtime: {self.podman!r} not found on PATH")
        if os.geteuid() != 0:
            # Bounded output dirs and secrets need a host tmpfs mount (and rootless podman
            # cannot apply these cgroup limits on cgroup v1).
            raise RuntimeUnavailable("podman runtime: the executor must run as root")
        try:
            rc, out, err = await self._podman("info", "--format", "json", time_limit=60)
        except OSError as e:
            raise RuntimeUnavailable(f"podman runtime: cannot start podman: {e}") from e
        if rc != 0:
            raise RuntimeUnavailable(
                f"podman runtime: `{' '.join(self._cmd('info'))}` failed (exit {rc}): "
                f"{err.strip()[-500:]}"
            )
        info = json.loads(out)
        runtime = info.get("host", {}).get("ociRuntime", {}).get("name")
        if runtime != "runc":
            raise RuntimeUnavailable(f"podman runtime: OCI runtime is {runtime!r}, need runc")
        store = info.get("store", {})
        images_json = None
        if store.get("graphRoot") and store.get("graphDriverName"):
            images_json = (
                Path(store["graphRoot"]) / f"{store['graphDriverName']}-images/images.json"
            )
        try:
            self.work_root.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.work_root / f".probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            try:
                _mount_tmpfs(probe, 4096)
                _umount(probe)
            finally:
                probe.rmdir()
        except OSError as e:
            raise RuntimeUnavailable(
                f"podman runtime: cannot mount a tmpfs under {self.work_root}: {e}"
            ) from e
        roots = _cgroup_mounts()
        v2 = info.get("host", {}).get("cgroupVersion") == "v2"
        memory_root = None
        for r in roots:
            if (v2 and (r / "cgroup.controllers").exists()) or (
                not v2 and (r / "memory.max_usage_in_bytes").exists()
            ):
                memory_root = r
                break
        host = _HostInfo(images_json, tuple(roots), memory_root, v2, _nproc_limit())
        self._host = host  # the trial's _argv and cleanup read it
        try:
            await self._trial_sandbox()
        except BaseException:
            self._host = None
            raise
        return host

    async def _trial_sandbox(self) -> None:
        """Run one trivial sandbox exactly as runs are run; raise naming why it failed."""
        key = (self.podman, self.global_options, str(self.work_root), self.cgroup_parent,
               self.probe_image)
        if key in _TRIALS_PASSED:
            return
        rc, _, err = await self._podman("image", "exists", self.probe_image, time_limit=30)
        if rc != 0:
            raise RuntimeUnavailable(
                f"podman runtime: the probe image {self.probe_image} is not in local storage "
                f"(needed to try one sandbox at start-up): make it with `airlock base-image`, "
                f"or set AIRLOCK_PODMAN_PROBE_IMAGE to a local image that has /bin/sh"
                + (f" ({err.strip()[-300:]})" if err.strip() else "")
            )
        spec = RunSpec(
            run_id=f"probe-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            attempt=1,
            image=self.probe_image,
            capability="probe",
            input={},
            limits=PROBE_LIMITS,
            entrypoint=("/bin/sh", "-c", PROBE_SCRIPT),
            executor_id=self.executor_id or "probe",
        )
        result = await self._run_once(spec, asyncio.Event())
        if (result.termination is Termination.EXITED and result.exit_code == 0
                and result.output == PROBE_OUTPUT):
            _TRIALS_PASSED.add(key)
            return
        detail = (result.detail or bytes(result.logs[-1500:]).decode(errors="replace")).strip()
        if result.termination is Termination.EXITED and result.exit_code == 0:
            detail = f"it exited 0 but its output was {result.output!r}, not {PROBE_OUTPUT!r}"
        hint = next((h for needle, h in _TRIAL_HINTS if needle in detail), "")
        raise RuntimeUnavailable(
            f"podman runtime: a trial sandbox ({self.probe_image}, run with the runs' own "
            f"options) failed: {result.termination.value}, exit {result.exit_code}: "
            f"{detail or 'no detail'}" + (f"; {hint}" if hint else "")
        )

    # ------------------------------------------------------------------ run

    def _argv(self, spec: RunSpec, work: Path) -> list[str]:
        lim = spec.limits
        mem = f"{int(lim.memory_mib)}m"
        executor_id = self.executor_id or spec.executor_id
        nproc = self._host.nproc if self._host else NPROC_MAX
        argv = self._cmd(
            "run",
            "--name", spec.sandbox_name,
            "--label", f"{LABEL_RUN_ID}={spec.run_id}",
            "--label", f"{LABEL_EXECUTOR}={executor_id}",
            "--pull=never",  # no registry: a missing image is a start failure, not a pull
            # The container writes straight into our pipe (no conmon copy, no log file on
            # disk that gigabytes of stdout could fill).
            "--log-driver=passthrough",
            "--cgroups=no-conmon",
            f"--cgroup-parent=/{self.cgroup_parent}/{spec.sandbox_name}",
            "--init",  # PID 1 reaps and, when the agent exits, ends every orphan with it
            # conmon kills the container at this deadline even if the executor is gone.
            "--timeout", str(math.ceil(float(lim.timeout_seconds)) + DEADLINE_GRACE_SECONDS),
            "--network=" + ("bridge" if spec.network else "none"),
            "--read-only",
            "--read-only-tmpfs=false",  # no unbounded default tmpfs on /run, /var/tmp
            "--tmpfs", f"/tmp:rw,size={TMP_SIZE},mode=1777,nosuid,nodev",
            "--memory", mem,
            "--memory-swap", mem,
            "--pids-limit", str(int(lim.pids)),
            "--cpus", f"{float(lim.cpus):g}",
            "--ulimit", f"nofile={NOFILE}:{NOFILE}",
            "--ulimit", f"nproc={nproc}:{nproc}",
            "--cap-drop=ALL",
            "--security-opt", "no-new-privileges",
            "--user", f"{SANDBOX_UID}:{SANDBOX_UID}",
            "--volume", f"{work / 'input.json'}:{INPUT_PATH}:ro",
            "--volume", f"{work / 'out'}:{OUTPUT_DIR}:rw",
            "--env", f"AIRLOCK_INPUT={INPUT_PATH}",
            "--env", f"AIRLOCK_OUTPUT={OUTPUT_PATH}",
            "--env", f"AIRLOCK_RUN_ID={spec.run_id}",
        )  # fmt: skip
        if spec.secrets:  # only then: a run without secrets sees no secrets directory at all
            argv += ["--volume", f"{work / 'secrets'}:{SECRETS_DIR}:ro",
                     "--env", f"AIRLOCK_SECRETS_DIR={SECRETS_DIR}"]
        for k, v in spec.env.items():
            argv += ["--env", f"{k}={v}"]
        if spec.entrypoint:
            argv += ["--entrypoint", json.dumps(list(spec.entrypoint))]
        argv.append(spec.image)
        return argv

    def _prepare(self, spec: RunSpec) -> Path:
        work = self.work_root / spec.sandbox_name
        if work.exists():  # left by a crashed executor: start clean
            _umount(work)
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        request = spec.request_json()
        secret_bytes = sum(len(v.value) + 4096 for v in spec.secrets.values())
        # Twice the output cap: a slightly-too-big result is reported as truncated rather
        # than failing with ENOSPC; anything beyond that is refused by the kernel.
        size = len(request) + secret_bytes + 2 * spec.limits.output_kib * 1024 + (256 << 10)
        _mount_tmpfs(work, size)
        inp = work / "input.json"
        inp.write_bytes(request)
        inp.chmod(0o444)
        out = work / "out"
        out.mkdir(mode=0o700)
        os.chown(out, SANDBOX_UID, SANDBOX_UID)
        if spec.secrets:
            sec = work / "secrets"
            sec.mkdir(mode=0o700)
            for name, value in spec.secrets.items():
                fd = os.open(sec / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
                try:
                    os.write(fd, value.value)
                    os.fchown(fd, SANDBOX_UID, SANDBOX_UID)
                finally:
                    os.close(fd)
            os.chown(sec, SANDBOX_UID, SANDBOX_UID)
            sec.chmod(0o500)
        return work

    def _cleanup_host(self, sandbox_name: str) -> None:
        work = self.work_root / sandbox_name
        try:
            _umount(work)  # frees input, output and secrets in one go
            work.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove %s: %s", work, e)
        for root in self._host.cgroup_roots if self._host else ():
            d = root / self.cgroup_parent / sandbox_name
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("could not remove cgroup %s: %s", d, e)

    def _cpu_seconds(self, spec: RunSpec) -> float | None:
        """CPU time of the container, from the run's parent cgroup (read after the container
        exited: the parent's counter still holds its removed child's time, cpuacct charging
        every ancestor and v2 folding a removed child's stats into its parent)."""
        h = self._host
        if h is None:
            return None
        for root in h.cgroup_roots:
            d = root / self.cgroup_parent / spec.sandbox_name
            try:
                if h.cgroup_v2 and (root / "cgroup.controllers").exists():
                    for line in (d / "cpu.stat").read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "usage_usec":
                            return int(value) / 1e6
                elif (d / "cpuacct.usage").exists():
                    return int((d / "cpuacct.usage").read_text()) / 1e9
            except (OSError, ValueError):
                continue
        return None

    def _peak_memory(self, spec: RunSpec) -> int | None:
        h = self._host
        if h is None or h.memory_root is None:
            return None
        d = h.memory_root / self.cgroup_parent / spec.sandbox_name
        name = "memory.peak" if h.cgroup_v2 else "memory.max_usage_in_bytes"
        try:
            return int((d / name).read_text())
        except (OSError, ValueError):
            return None

    async def _image_digest(self, image: str) -> str | None:
        """Digest (or ID) of the image; cached until any image in the store changes."""
        key_file = self._host.graph_images_json if self._host else None
        try:
            stamp = key_file.stat().st_mtime_ns if key_file else -1
        except OSError:
            stamp = -1
        hit = self._digests.get(image)
        if hit and hit[0] == stamp and stamp != -1:
            return hit[1]
        try:
            rc, out, _ = await self._podman(
                "image", "inspect", "--format", "{{.Digest}} {{.Id}}", image, time_limit=15
            )
        except OSError:
            return None
        digest = None
        if rc == 0 and out.split():
            parts = out.split()
            digest = parts[0] if parts[0].startswith("sha256:") else f"sha256:{parts[-1]}"
        self._digests[image] = (stamp, digest)
        return digest

    async def _kill(self, spec: RunSpec, proc: asyncio.subprocess.Process) -> None:
        """SIGKILL the container (its PID 1 is --init, so the whole tree dies)."""
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while proc.returncode is None:
            # Fails with "no such container" while podman is still creating it: retry.
            await self._podman("kill", "--signal", "KILL", spec.sandbox_name, time_limit=2)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.15):  # not wait_for: keeps cancellations (3.11)
                    await proc.wait()
            if proc.returncode is None and time.monotonic() > deadline:
                await self._podman("rm", "-f", "-t", "0", spec.sandbox_name, time_limit=5)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def run(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        """Run one attempt; see the module docstring for the host-side layout."""
        await self.check()
        result = await self._run_once(spec, cancel)
        if result.termination is Termination.START_FAILED and "already in use" in result.detail:
            # A container of a crashed executor held the name; _run_once's cleanup removed it.
            log.warning(
                "sandbox name %s was taken by a stale container; retrying", spec.sandbox_name
            )
            result = await self._run_once(spec, cancel)
        return result

    async def _run_once(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        # Before any container exists under this label: a reaper never takes it for dead.
        await self.hold_liveness(self.executor_id or spec.executor_id)
        started = time.monotonic()
        if cancel.is_set():
            return SandboxResult(Termination.CANCELLED, None, None, False, b"", False, 0.0)
        limits = spec.limits
        sink = _LogSink(int(limits.log_kib) * 1024)
        digest_task = asyncio.create_task(self._image_digest(spec.image))
        proc: asyncio.subprocess.Process | None = None
        try:
            work = await asyncio.to_thread(self._prepare, spec)
            proc = await asyncio.create_subprocess_exec(
                *self._argv(spec, work),
                cwd=work,  # where conmon (a child of podman) leaves its OOM evidence
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,  # one pipe: stdout and stderr interleaved
            )
            assert proc.stdout is not None
            drain = asyncio.create_task(sink.drain(proc.stdout))
            waiter = asyncio.create_task(proc.wait())
            cancelled = asyncio.create_task(cancel.wait())
            remaining = limits.timeout_seconds - (time.monotonic() - started)
            done, _ = await asyncio.wait(
                {waiter, cancelled}, timeout=max(remaining, 0), return_when="FIRST_COMPLETED"
            )
            killed_by: Termination | None = None
            if waiter not in done:
                killed_by = Termination.CANCELLED if cancelled in done else Termination.TIMED_OUT
                await self._kill(spec, proc)
            cancelled.cancel()
            await waiter
            duration = time.monotonic() - started
            try:
                await asyncio.wait_for(asyncio.shield(drain), LOG_DRAIN_SECONDS)
            except TimeoutError:
                drain.cancel()
                log.warning("log pipe of %s still open after exit", spec.sandbox_name)
            exit_code = proc.returncode
            output, truncated, output_bytes = read_output(work / "out" / "output.json",
                                                          int(limits.output_kib) * 1024)
            peak = self._peak_memory(spec)
            cpu = self._cpu_seconds(spec)
            termination, detail = Termination.EXITED, ""
            if killed_by is not None:
                termination = killed_by
            elif exit_code != 0 and duration >= float(limits.timeout_seconds):
                # conmon's deadline backstop (--timeout) ended it before our own timer did.
                termination = Termination.TIMED_OUT
            elif exit_code != 0 and exit_code is not None:
                termination, exit_code, detail = await self._diagnose(spec, exit_code, peak, sink, work)
            return SandboxResult(
                termination=termination,
                exit_code=exit_code,
                output=output,
                output_truncated=truncated,
                logs=bytes(sink.buf),
                logs_truncated=sink.dropped > 0,
                duration_seconds=duration,
                peak_memory_bytes=peak,
                detail=detail,
                cpu_seconds=cpu,
                output_bytes=output_bytes,
                log_bytes=len(sink.buf) + sink.dropped,
                image_digest=await digest_task,
            )
        except OSError as e:
            # Host-side failure before the agent ran (tmpfs, spawning podman...).
            return SandboxResult(
                Termination.START_FAILED, None, None, False, bytes(sink.buf), False,
                time.monotonic() - started, detail=f"could not start the sandbox: {e}",
            )  # fmt: skip
        finally:
            if not digest_task.done():
                digest_task.cancel()
            if proc is not None and proc.returncode is None:  # we were cancelled ourselves
                await asyncio.shield(self._kill(spec, proc))
            await asyncio.shield(self._remove(spec))

    async def _remove(self, spec: RunSpec) -> None:
        rc, _, err = await self._podman("rm", "-f", "-t", "0", spec.sandbox_name, time_limit=30)
        if rc not in (0, 1) or (rc == 1 and "no such container" not in err.lower()):
            log.warning("podman rm %s failed (exit %s): %s", spec.sandbox_name, rc, err.strip())
        await asyncio.to_thread(self._cleanup_host, spec.sandbox_name)

    async def _diagnose(
        self, spec: RunSpec, exit_code: int, peak: int | None, sink: _LogSink, work: Path
    ) -> tuple[Termination, int | None, str]:
        """A non-zero exit: did the agent fail, did the kernel OOM-kill it, or did it never run?"""
        rc, out, err = await self._podman(
            "container", "inspect", "--format", "{{json .State}}", spec.sandbox_name, time_limit=15
        )
        tail = bytes(sink.buf[-2000:]).decode(errors="replace").strip()
        if rc != 0:  # podman never created it (bad image, bad option, name clash...)
            return Termination.START_FAILED, None, tail or err.strip()
        head = bytes(sink.buf[:4096])
        if exit_code == 1 and b"failed to exec pid1" in head:  # --init could not exec the agent
            line = next(ln for ln in head.splitlines() if b"failed to exec pid1" in ln)
            return Termination.START_FAILED, None, line.decode(errors="replace")
        state: dict[str, Any] = json.loads(out)
        if state.get("Error") or str(state.get("StartedAt", "")).startswith("0001-"):
            return Termination.START_FAILED, None, state.get("Error") or tail
        code = int(state.get("ExitCode", exit_code))
        # Only the kernel's word counts (see the module docstring), never the exit code alone.
        oom_seen = (work / CONMON_OOM_FILE).exists()
        if state.get("OOMKilled") or (code == EXIT_SIGKILL and oom_seen):
            return Termination.OOM_KILLED, code, f"peak memory {peak} bytes"
        return Termination.EXITED, code, ""

    # ------------------------------------------------------------------ reap

    async def reap(self, run_id: str) -> int:
        """Remove containers, tmpfs mounts and cgroups left for ``run_id``; return how many."""
        await self.check()
        rc, out, err = await self._podman(
            "ps", "-a", "--filter", f"label={LABEL_RUN_ID}={run_id}", "--format", "{{.Names}}"
        )
        if rc != 0:
            raise RuntimeError(f"podman ps failed: {err.strip()}")
        names = out.split()
        if names:
            await self._podman("rm", "-f", "-t", "0", *names, time_limit=60)
        leftovers = set(names)
        if self.work_root.is_dir():
            prefix = f"airlock-{run_id}-"
            leftovers |= {
                p.name
                for p in self.work_root.iterdir()
                if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit()
            }
        for name in leftovers:
            await asyncio.to_thread(self._cleanup_host, name)
        return len(names)


    # ------------------------------------------------------------------ dead executors

    def _liveness_path(self, label: str) -> Path:
        return self.liveness_dir / f"{hashlib.sha256(label.encode()).hexdigest()[:32]}.lock"

    def _hold_liveness_sync(self, label: str) -> int:
        self.liveness_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._liveness_path(label)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a reaper holds it (briefly)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # a reaper removed that file meanwhile: lock the new one
        record = json.dumps({"executor": label, "work_root": str(self.work_root),
                             "cgroup_parent": self.cgroup_parent, "pid": os.getpid()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        return fd

    async def hold_liveness(self, label: str) -> None:
        """Mark ``label`` (an executor id) alive on this host for this process's lifetime."""
        if label in self._alive_fds:
            return
        async with self._alive_lock:
            if label not in self._alive_fds:
                self._alive_fds[label] = await asyncio.to_thread(self._hold_liveness_sync, label)

    def _dead_executors(self) -> list[tuple[int, Path, dict[str, Any]]]:
        """Lock files nobody holds, each locked exclusively now: (fd, path, record)."""
        dead: list[tuple[int, Path, dict[str, Any]]] = []
        if not self.liveness_dir.is_dir():
            return dead
        for path in sorted(self.liveness_dir.glob("*.lock")):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    raise FileNotFoundError(path)  # replaced meanwhile: not ours to judge
                record = json.loads(os.pread(fd, 65536, 0) or b"{}")
                if not isinstance(record, dict) or not record.get("executor"):
                    raise ValueError(f"unreadable liveness record {path}")
            except (BlockingIOError, FileNotFoundError):  # alive (or gone): leave it
                os.close(fd)
                continue
            except ValueError as e:  # torn write of a process that died at once: drop it
                log.warning("%s; removing it", e)
                with contextlib.suppress(OSError):
                    path.unlink()
                os.close(fd)
                continue
            dead.append((fd, path, record))
        return dead

    async def reap_dead_executors(self) -> dict[str, int]:
        """Remove what executors that died on this host left behind: their containers (still
        running, or stopped by the deadline backstop), tmpfs work dirs and cgroups.

        Returns {dead executor id: containers removed}. Executors that are alive (any process
        holding their liveness lock) are never touched; call before ``hold_liveness`` so an
        executor restarted under the same id reaps its previous life's leftovers."""
        await self.check()
        reaped: dict[str, int] = {}
        for fd, path, record in await asyncio.to_thread(self._dead_executors):
            label = str(record["executor"])
            try:
                rc, out, err = await self._podman(
                    "ps", "-a", "--filter", f"label={LABEL_EXECUTOR}={label}",
                    "--format", "{{.Names}}")
                if rc != 0:
                    log.warning("could not list containers of dead executor %s: %s", label,
                                err.strip())
                    continue  # keep its lock file: try again at the next start
                names = out.split()
                if names:
                    await self._podman("rm", "-f", "-t", "0", *names, time_limit=60)
                work_root = Path(record.get("work_root") or self.work_root)
                parent = str(record.get("cgroup_parent") or self.cgroup_parent)
                for name in names:
                    await asyncio.to_thread(self._cleanup_paths, work_root, parent, name)
                reaped[label] = len(names)
                path.unlink(missing_ok=True)
                log.warning("reaped leftovers of dead executor %s (pid %s): %d container(s)%s",
                            label, record.get("pid"), len(names),
                            f" {', '.join(names)}" if names else "")
            finally:
                os.close(fd)  # releases the exclusive lock
        return reaped

    def _cleanup_paths(self, work_root: Path, cgroup_parent: str, sandbox_name: str) -> None:
        """``_cleanup_host`` for another executor's layout (its work root and cgroup parent)."""
        work = work_root / sandbox_name
        try:
            _umount(work)
            work.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove %s: %s", work, e)
        for root in self._host.cgroup_roots if self._host else ():
            d = root / cgroup_parent / sandbox_name
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("could not remove cgroup %s: %s", d, e)


class PodmanSettings(RuntimeSettings):
    """The podman runtime's options, from ``AIRLOCK_PODMAN_*`` and ``AIRLOCK_EXECUTOR_ID``."""

    podman: str = "podman"
    global_options: tuple[str, ...] = GLOBAL_OPTIONS
    work_root: Path = Field(default=Path("/run/airlock"),
                            validation_alias=AliasChoices("work_root", "podman_work_root"))
    cgroup_parent: str = "airlock"
    executor_id: str | None = None
    probe_image: str = Field(default=DEFAULT_PROBE_IMAGE,
                             validation_alias=AliasChoices("probe_image", "podman_probe_image"))


FACTORY = RuntimeFactory(settings=PodmanSettings, create=lambda s: PodmanRuntime(**s.model_dump()))
