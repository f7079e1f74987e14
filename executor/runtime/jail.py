"""The ``jail`` sandbox runtime: bubblewrap + the kernel's cgroups, started in milliseconds.

One attempt = one run of the jail supervisor (``executor/runtime/jail_core/supervisor.c``, a small static
C program run as root in its own session), which creates the run's cgroup (memory = memory +
swap, pids, cpu), starts bubblewrap in it as uid 65534 and enforces the wall clock by killing
the whole cgroup. Because the supervisor, not this process, holds the deadline, a run ends by
its deadline even if the executor is killed with SIGKILL. OOM is read from the cgroup's own
``oom_kill`` counter, never from an exit code or a message the agent could fake.

Inside bubblewrap the agent has new user, pid, net, ipc, uts, mount and cgroup namespaces;
uid/gid 65534; no capabilities; no-new-privileges; the seccomp filter of
``executor.runtime.jail_core.seccomp``; no further user namespaces; only ``lo`` unless the run was granted
egress, in which case it gets user-mode networking (slirp4netns, with the host's loopback
refused) in its own network namespace, never the host's.

The image's root filesystem is a read-only mount of the image's layers (``podman image
mount``), made once per image and reused by every run of it (no copy per run), bound
read-only under the work root so that bubblewrap, running unprivileged, can reach it. The
sandbox's ``/`` is a read-only tmpfs holding the image's top-level entries, each bound
read-only, plus ``/proc``, a minimal ``/dev`` (read-only, with a bounded ``/dev/shm``), a
bounded ``/tmp``, an empty read-only ``/run`` (with ``/run/secrets`` when the run has secrets)
and the agent contract's ``/airlock``.

Per-run layout on the host, one size-limited tmpfs (nothing reaches the host disk)::

    <work_root>/runs/<sandbox_name>.<token>/  tmpfs, 0711 root
        private/     (root, 0700)   input.json, secrets, bwrap arguments, status.json, pid
        out/         (uid 65534, 0700) -> OUTPUT_DIR (read-write bind)

The input and the secrets reach the sandbox as copies bubblewrap makes from file descriptors
(``--ro-bind-data``), so nothing but the output directory is reachable by path; the random
token keeps even that unguessable for other processes of uid 65534 on the host.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import errno
import json
import logging
import os
import secrets as _secrets
import shutil
import signal
import subprocess
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
    RunSpec,
    RuntimeFactory,
    RuntimeSettings,
    RuntimeUnavailable,
    SandboxResult,
    Termination,
)
from executor.runtime.jail_core.build import BuildError, supervisor_path
from executor.runtime.jail_core.bundle import (
    FD_BASE,
    SANDBOX_UID,
    SLIRP_RESOLV,
    bwrap_options,
    limit_options,
)
from executor.runtime.jail_core.seccomp import SeccompUnavailable, compile_filter
from executor.runtime.output_file import read_output

log = logging.getLogger(__name__)

# After the deadline, how long the supervisor may take to kill the cgroup and report before
# the executor stops waiting for it (it normally needs milliseconds).
SUPERVISOR_GRACE_SECONDS = 10.0
LOG_DRAIN_SECONDS = 1.0
EXIT_SIGKILL = 128 + 9
SUPERVISOR_FAILED = 125
READ_CHUNK = 1 << 18
WARM_POOL = 2  # supervisors started ahead of need, per runtime
# Top-level names of the image that the jail provides itself.
PROVIDED = frozenset({"proc", "dev", "tmp", "run", "sys", "airlock"})

PROBE_OUTPUT = b'{"probe": "ok"}'
PROBE_SCRIPT = f"printf '%s' '{PROBE_OUTPUT.decode()}' > \"$AIRLOCK_OUTPUT\""
PROBE_LIMITS = Limits(memory_mib=64, timeout_seconds=60, pids=16, cpus=1, output_kib=4, log_kib=16)
# Configurations whose trial run passed in this process: later runtimes built alike skip it.
_TRIALS_PASSED: set[tuple[object, ...]] = set()

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND = 32, 4096
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: bytes, target: Path, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    if _libc.mount(source, bytes(target), fstype, flags, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source.decode(errors='replace')} on {target}: {os.strerror(err)}")


def _mount_tmpfs(target: Path, size_bytes: int, mode: int) -> None:
    opts = f"size={size_bytes},nr_inodes=4096,mode={mode:o}".encode()
    _mount(b"tmpfs", target, b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, opts)


def _bind_read_only(source: Path, target: Path) -> None:
    _mount(bytes(source), target, None, _MS_BIND, None)
    _mount(b"none", target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)


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

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.buf)
        if room > 0:
            self.buf += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))


class _Supervised:
    """One supervisor process, watched from the event loop with no helper thread: a pidfd
    tells when it exits and the log pipe is read whenever it is readable (Python 3.11's
    asyncio subprocesses start a waiter thread per process, a cost on every run)."""

    def __init__(self, cmd: list[str], sink: _LogSink, *, warm: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.sink = sink
        self.popen = subprocess.Popen(
            cmd, stdin=subprocess.PIPE if warm else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one pipe: stdout and stderr interleaved
            start_new_session=True,  # outlives us: the deadline holds without us
            env={}, bufsize=0,
        )  # fmt: skip
        assert self.popen.stdout is not None
        self.exited: asyncio.Future[int] = self.loop.create_future()
        self.eof: asyncio.Future[None] = self.loop.create_future()
        self.out = self.popen.stdout.fileno()
        os.set_blocking(self.out, False)
        self.loop.add_reader(self.out, self._on_log)
        self.pidfd = os.pidfd_open(self.popen.pid)
        self.loop.add_reader(self.pidfd, self._on_exit)

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def configure(self, options: list[str]) -> None:
        """Give a warm supervisor its run (NUL-separated options, then EOF)."""
        assert self.popen.stdin is not None
        data = b"".join(o.encode() + b"\0" for o in options)
        try:
            self.popen.stdin.write(data)  # a few KiB: within the pipe's buffer
        finally:
            self.popen.stdin.close()

    def dismiss(self) -> None:
        """An unused warm supervisor: EOF on its stdin ends it (it removes its cgroup)."""
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            self.popen.stdin.close()

    def _on_exit(self) -> None:
        self.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        rc = self.popen.wait()  # it has exited: no blocking
        if not self.exited.done():
            self.exited.set_result(rc)

    def _on_log(self) -> None:
        try:
            chunk = os.read(self.out, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            self.sink.feed(chunk)
        else:
            self.close_log()

    def close_log(self) -> None:
        if not self.eof.done():
            self.loop.remove_reader(self.out)
            assert self.popen.stdout is not None
            self.popen.stdout.close()
            self.eof.set_result(None)

    def signal(self, sig: int) -> None:
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    async def wait(self) -> int:
        return await asyncio.shield(self.exited)


@dataclass(frozen=True, slots=True)
class _Rootfs:
    """One image, mounted read-only and ready to be a jail's root (cached by image ID)."""

    image_id: str
    digest: str
    path: Path  # the read-only bind under work_root/rootfs, reachable by uid 65534
    entries: tuple[tuple[str, str, str], ...]  # (name, "dir"|"file"|"link", link target)
    argv: tuple[str, ...]  # the image's entrypoint + cmd
    env: tuple[tuple[str, str], ...]
    workdir: str
    has_resolv_conf: bool


def _bind_image(merged: Path, target: Path) -> None:
    target.mkdir(mode=0o755, exist_ok=True)
    _bind_read_only(merged, target)


def _describe_rootfs(image_id: str, info: dict[str, Any], target: Path) -> _Rootfs:
    entries = []
    for e in sorted(os.scandir(target), key=lambda e: e.name):
        if e.name in PROVIDED:
            continue
        if e.is_symlink():
            entries.append((e.name, "link", os.readlink(e.path)))
        elif e.is_dir():
            entries.append((e.name, "dir", ""))
        elif e.is_file():
            entries.append((e.name, "file", ""))
    cfg = info.get("Config") or {}
    env = []
    for item in cfg.get("Env") or ():
        k, sep, v = item.partition("=")
        if sep:
            env.append((k, v))
    digest = info.get("Digest") or ""
    resolv = target / "etc" / "resolv.conf"
    return _Rootfs(
        image_id=image_id,
        digest=digest if digest.startswith("sha256:") else f"sha256:{image_id}",
        path=target,
        entries=tuple(entries),
        argv=tuple(cfg.get("Entrypoint") or ()) + tuple(cfg.get("Cmd") or ()),
        env=tuple(env),
        workdir=cfg.get("WorkingDir") or "/",
        has_resolv_conf=resolv.is_file() and not resolv.is_symlink(),
    )


def _cgroup_roots() -> list[Path]:
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] in ("cgroup", "cgroup2"):
                roots.append(Path(left.split(" ")[4]))
    return roots


def _kill_cgroup(dirs: Sequence[Path], rel: str) -> int:
    """SIGKILL every process in ``dirs`` until they are empty; return how many were seen.

    Used only when the supervisor is gone (reap after a crash, or a supervisor that failed):
    each pid is pinned with a pidfd and checked to still be in the cgroup before it is hit.
    """
    seen: set[int] = set()
    for _ in range(2000):
        alive = 0
        for d in dirs:
            try:
                pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                continue
            for pid in pids:
                alive += 1
                seen.add(pid)
                try:
                    pidfd = os.pidfd_open(pid)
                except OSError:
                    continue
                try:
                    if f":{rel}\n" in Path(f"/proc/{pid}/cgroup").read_text():
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                except OSError:
                    pass
                finally:
                    os.close(pidfd)
        if not alive:
            break
        time.sleep(0.005)
    return len(seen)


class JailRuntime:
    """Runs each attempt in the jail: bubblewrap in a per-run cgroup, uid 65534, hard limits."""

    name = "jail"
    network_pool: bool | None = None  # network is chosen per run (none, or slirp4netns)

    def __init__(
        self,
        *,
        podman: str = "podman",
        bwrap: str = "bwrap",
        slirp4netns: str = "slirp4netns",
        work_root: str | Path = "/run/airlock-jail",
        cgroup_parent: str = "airlock-jail",
        executor_id: str | None = None,
        probe_image: str = DEFAULT_PROBE_IMAGE,
        supervisor: str | Path | None = None,
        warm_pool: int = WARM_POOL,
    ) -> None:
        self.podman = podman
        self.bwrap_name = bwrap
        self.slirp_name = slirp4netns
        self.work_root = Path(work_root)
        self.cgroup_parent = cgroup_parent.strip("/")
        self.executor_id = executor_id
        self.probe_image = probe_image
        self.supervisor_override = Path(supervisor) if supervisor else None
        self._checked: RuntimeUnavailable | bool | None = False  # False: not yet checked
        self._check_lock = asyncio.Lock()
        self.supervisor: Path | None = None
        self.bwrap: str | None = None
        self.slirp4netns: str | None = None
        self.seccomp_path: Path | None = None
        self._images_json: Path | None = None
        self._rootfs: dict[str, tuple[int, _Rootfs]] = {}  # image ref -> (store stamp, rootfs)
        self._by_id: dict[str, _Rootfs] = {}
        self._in_use: dict[str, int] = {}  # image ID -> runs using its root now
        self._token = _secrets.token_hex(4)
        self._mount_lock = asyncio.Lock()
        self.warm_pool = warm_pool
        self._warm: list[_Supervised] = []
        self._warm_seq = 0

    # ------------------------------------------------------------------ plumbing

    async def _podman(self, *args: str, time_limit: float = 30.0) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            self.podman, *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(time_limit):
                out, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return 124, "", f"podman {args[0]} timed out after {time_limit}s"
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    @property
    def runs_dir(self) -> Path:
        return self.work_root / "runs"

    # ------------------------------------------------------------------ check

    async def check(self) -> None:
        """Raise ``RuntimeUnavailable`` unless the jail can run here (cached).

        Besides its parts (root, bubblewrap, slirp4netns, podman for image mounts, a C compiler
        or a built supervisor, libseccomp, cgroups), one real jailed command runs from
        ``probe_image`` exactly as runs are run, so a host that cannot run the jail is refused
        at start with the reason.
        """
        async with self._check_lock:
            if self._checked is False:
                try:
                    await self._probe()
                    self._checked = None
                except RuntimeUnavailable as e:
                    self._checked = e
            if isinstance(self._checked, RuntimeUnavailable):
                raise self._checked

    async def _probe(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeUnavailable("jail runtime: the executor must run as root (it creates "
                                     "cgroups and mounts; the agent runs as uid 65534)")
        missing = {
            "bwrap": (self.bwrap_name, "bubblewrap (Debian: apt-get install bubblewrap)"),
            "slirp4netns": (self.slirp_name, "slirp4netns (Debian: apt-get install slirp4netns)"),
            "podman": (self.podman, "podman (Debian: apt-get install podman)"),
        }
        found: dict[str, str] = {}
        for key, (prog, hint) in missing.items():
            path = shutil.which(prog)
            if path is None:
                raise RuntimeUnavailable(f"jail runtime: {prog!r} not found on PATH; install {hint}")
            found[key] = path
        self.bwrap, self.slirp4netns = found["bwrap"], found["slirp4netns"]
        try:
            for d, mode in ((self.work_root, 0o711), (self.runs_dir, 0o711),
                            (self.work_root / "rootfs", 0o711), (self.work_root / "private", 0o700)):
                d.mkdir(mode=mode, parents=True, exist_ok=True)
                d.chmod(mode)
        except OSError as e:
            raise RuntimeUnavailable(f"jail runtime: cannot create {self.work_root}: {e}") from e
        try:
            self.supervisor = self.supervisor_override or await asyncio.to_thread(
                supervisor_path, self.work_root / "private" / "bin")
        except (BuildError, OSError) as e:
            raise RuntimeUnavailable(f"jail runtime: {e}") from e
        try:
            program = compile_filter()
        except SeccompUnavailable as e:
            raise RuntimeUnavailable(f"jail runtime: seccomp filter: {e}") from e
        self.seccomp_path = self.work_root / "private" / "seccomp.bpf"
        tmp = self.seccomp_path.with_suffix(f".{os.getpid()}")
        tmp.write_bytes(program)
        os.replace(tmp, self.seccomp_path)
        rc, out, err = await self._podman("info", "--format", "json", time_limit=60)
        if rc != 0:
            raise RuntimeUnavailable(f"jail runtime: `podman info` failed (exit {rc}): {err.strip()[-500:]}")
        store = json.loads(out).get("store", {})
        if store.get("graphRoot") and store.get("graphDriverName"):
            self._images_json = Path(store["graphRoot"]) / f"{store['graphDriverName']}-images/images.json"
        await self._remove_stale_roots()
        await self._trial()

    async def _trial(self) -> None:
        key = (str(self.supervisor), self.bwrap, str(self.work_root), self.cgroup_parent,
               self.probe_image)
        if key in _TRIALS_PASSED:
            return
        spec = RunSpec(
            run_id=f"probe-{os.getpid()}-{uuid.uuid4().hex[:8]}", attempt=1,
            image=self.probe_image, capability="probe", input={}, limits=PROBE_LIMITS,
            entrypoint=("/bin/sh", "-c", PROBE_SCRIPT), executor_id=self.executor_id or "probe",
        )  # fmt: skip
        result = await self._run_once(spec, asyncio.Event())
        if (result.termination is Termination.EXITED and result.exit_code == 0
                and result.output == PROBE_OUTPUT):
            _TRIALS_PASSED.add(key)
            return
        detail = (result.detail or bytes(result.logs[-1500:]).decode(errors="replace")).strip()
        if result.termination is Termination.EXITED and result.exit_code == 0:
            detail = f"it exited 0 but its output was {result.output!r}, not {PROBE_OUTPUT!r}"
        raise RuntimeUnavailable(
            f"jail runtime: a trial run ({self.probe_image}, jailed as every run is) failed: "
            f"{result.termination.value}, exit {result.exit_code}: {detail or 'no detail'}"
        )

    # ------------------------------------------------------------------ images

    def _store_stamp(self) -> int:
        try:
            return self._images_json.stat().st_mtime_ns if self._images_json else -1
        except OSError:
            return -1

    async def _image_rootfs(self, image: str) -> _Rootfs:
        """The image's read-only root, mounted once per image ID and reused."""
        stamp = self._store_stamp()
        hit = self._rootfs.get(image)
        if hit and hit[0] == stamp and stamp != -1:
            return hit[1]
        rc, out, err = await self._podman("image", "inspect", "--format", "json", image, time_limit=30)
        if rc != 0:
            raise _StartFailure(f"image {image} is not in local storage: {err.strip()[-300:]}")
        info: dict[str, Any] = json.loads(out)[0]
        image_id: str = info["Id"]
        async with self._mount_lock:
            rootfs = self._by_id.get(image_id)
            if rootfs is None:
                rootfs = await self._mount_image(image_id, info)
                self._by_id[image_id] = rootfs
            self._rootfs[image] = (stamp, rootfs)
            await self._unmount_unreferenced()
        return rootfs

    async def _unmount_unreferenced(self) -> None:
        """Unmount image roots no tag leads to any more (an image rebuilt under the same
        name), once no run uses them, so a long-lived executor does not pin old layers."""
        wanted = {r.image_id for _, r in self._rootfs.values()}
        for image_id, rootfs in list(self._by_id.items()):
            if image_id in wanted or self._in_use.get(image_id):
                continue
            del self._by_id[image_id]
            try:
                await asyncio.to_thread(_umount, rootfs.path)
                await asyncio.to_thread(rootfs.path.rmdir)
            except OSError as e:
                log.warning("could not unmount %s: %s", rootfs.path, e)
            await self._podman("image", "unmount", image_id, time_limit=30)

    async def _mount_image(self, image_id: str, info: dict[str, Any]) -> _Rootfs:
        # One bind per image and runtime instance (named after this process, so what a dead
        # executor left is recognised and removed by the next one's check()).
        target = self.work_root / "rootfs" / f"{image_id}.{os.getpid()}.{self._token}"
        rc, out, err = await self._podman("image", "mount", image_id, time_limit=60)
        if rc != 0 or not out.strip():
            raise _StartFailure(f"podman image mount {image_id[:12]} failed: {err.strip()[-300:]}")
        await asyncio.to_thread(_bind_image, Path(out.strip()), target)
        return await asyncio.to_thread(_describe_rootfs, image_id, info, target)

    async def _remove_stale_roots(self) -> None:
        """Unmount image roots left by executor processes that no longer exist."""
        root = self.work_root / "rootfs"
        for d in await asyncio.to_thread(lambda: list(root.iterdir())):
            image_id, _, rest = d.name.partition(".")
            pid = rest.partition(".")[0]
            if not pid.isdigit() or await asyncio.to_thread(Path(f"/proc/{pid}").exists):
                continue
            try:
                await asyncio.to_thread(_umount, d)
                await asyncio.to_thread(d.rmdir)
            except OSError as e:
                log.warning("could not remove the stale image root %s: %s", d, e)
                continue
            await self._podman("image", "unmount", image_id, time_limit=30)

    async def close(self) -> None:
        """End the warm supervisors and unmount the image roots (runs must be over)."""
        warm, self._warm, self.warm_pool = self._warm, [], 0
        for sup in warm:
            sup.dismiss()
        for sup in warm:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await sup.wait()
            sup.close_log()
        for rootfs in list(self._by_id.values()):
            with contextlib.suppress(OSError):
                _umount(rootfs.path)
                rootfs.path.rmdir()
            await self._podman("image", "unmount", rootfs.image_id, time_limit=30)
        self._by_id.clear()
        self._rootfs.clear()

    # ------------------------------------------------------------------ run

    def _prepare(self, spec: RunSpec) -> Path:
        leftovers = self._work_dirs(spec.run_id, spec.attempt)
        for old in leftovers:  # left by a crashed executor: start clean
            self._remove_work(old)
        work = self.runs_dir / f"{spec.sandbox_name}.{_secrets.token_hex(8)}"
        work.mkdir(mode=0o711)
        request = spec.request_json()
        secret_bytes = sum(len(v.value) + 4096 for v in spec.secrets.values())
        # Twice the output cap: a slightly-too-big result is reported as truncated rather
        # than failing with ENOSPC; anything beyond that is refused by the kernel.
        size = len(request) + secret_bytes + 2 * spec.limits.output_kib * 1024 + (256 << 10)
        _mount_tmpfs(work, size, 0o711)
        private = work / "private"
        private.mkdir(mode=0o700)
        (private / "input.json").write_bytes(request)
        out = work / "out"
        out.mkdir(mode=0o700)
        os.chown(out, SANDBOX_UID, SANDBOX_UID)
        for i, (_, value) in enumerate(spec.secrets.items()):
            fd = os.open(private / f"secret-{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            try:
                os.write(fd, value.value)
            finally:
                os.close(fd)
        return work

    def _work_dirs(self, run_id: str, attempt: int | None = None) -> list[Path]:
        if not self.runs_dir.is_dir():
            return []
        prefix = f"airlock-{run_id}-"
        found = []
        for p in self.runs_dir.iterdir():
            if not p.name.startswith(prefix):
                continue
            att, dot, _token = p.name[len(prefix):].partition(".")
            if att.isdigit() and dot and (attempt is None or int(att) == attempt):
                found.append(p)
        return found

    def _remove_work(self, work: Path) -> None:
        try:
            _umount(work)  # frees input, output, secrets and status in one go
            work.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove %s: %s", work, e)

    def _bwrap_args(self, spec: RunSpec, rootfs: _Rootfs, work: Path, fds: dict[str, int]) -> list[str]:
        """bubblewrap's options (given to it through ``--args``, not on its command line): the
        image's top-level entries bound read-only, then the jail's own (``bwrap_options``)."""
        a: list[str] = []
        for name, kind, target in rootfs.entries:
            if kind == "link":
                a += ["--symlink", target, f"/{name}"]
            else:
                a += ["--ro-bind", str(rootfs.path / name), f"/{name}"]
        return a + bwrap_options(spec, env=dict(rootfs.env), workdir=rootfs.workdir, fds=fds,
                                 out_dir=str(work / "out"))

    def _run_options(self, spec: RunSpec, rootfs: _Rootfs, work: Path) -> list[str]:
        """The supervisor's options for this run, from ``--name`` on (given on its command
        line, or to a warm supervisor on its stdin). The files bubblewrap reads (its arguments,
        seccomp, input, secrets) are opened by the supervisor as root (``--fd N:PATH``), so
        nothing but the output directory needs to be reachable by the sandbox user."""
        assert self.bwrap is not None and self.seccomp_path is not None
        argv = list(spec.entrypoint) if spec.entrypoint else list(rootfs.argv)
        if not argv:
            raise _StartFailure(f"image {spec.image} has no entrypoint or command, and the run gave none")
        private = work / "private"
        fds = {"args": FD_BASE, "seccomp": FD_BASE + 1, "input": FD_BASE + 2}
        paths = {"args": private / "bwrap-args", "seccomp": self.seccomp_path,
                 "input": private / "input.json"}
        for i in range(len(spec.secrets)):
            fds[f"secret-{i}"] = FD_BASE + 10 + i
            paths[f"secret-{i}"] = private / f"secret-{i}"
        if spec.network and rootfs.has_resolv_conf:
            fds["resolv"] = FD_BASE + 3
            paths["resolv"] = private / "resolv.conf"
            paths["resolv"].write_bytes(SLIRP_RESOLV)
        args = self._bwrap_args(spec, rootfs, work, fds)
        paths["args"].write_bytes(b"".join(x.encode() + b"\0" for x in args))
        opts = ["--name", spec.sandbox_name,
                "--cgroup-parent", self.cgroup_parent,
                *limit_options(spec),
                "--status", str(private / "status.json"),
                "--pidfile", str(private / "supervisor.pid")]  # fmt: skip
        for key, fd in fds.items():
            opts += ["--fd", f"{fd}:{paths[key]}"]
        if spec.network:
            assert self.slirp4netns is not None
            opts += ["--slirp4netns", self.slirp4netns]
        return [*opts, "--", self.bwrap, "--args", str(fds["args"]), "--", *argv]

    def _command(self, spec: RunSpec, rootfs: _Rootfs, work: Path) -> list[str]:
        """The whole command of a cold (not pre-started) supervisor for this run."""
        assert self.supervisor is not None
        return [str(self.supervisor), *self._run_options(spec, rootfs, work)]

    def _spawn_warm(self) -> None:
        """Fill the pool of supervisors started ahead of need (each has made and joined its
        cgroup: see supervisor.c's --warm)."""
        while self.supervisor is not None and len(self._warm) < self.warm_pool:
            self._warm_seq += 1
            try:
                sup = _Supervised([str(self.supervisor), "--warm", "--name",
                                   f"warm-{os.getpid()}-{self._warm_seq}",
                                   "--cgroup-parent", self.cgroup_parent], _LogSink(0), warm=True)
            except OSError as e:
                log.warning("could not pre-start a jail supervisor: %s", e)
                return
            self._warm.append(sup)

    def _take_warm(self) -> _Supervised | None:
        while self._warm:
            sup = self._warm.pop(0)
            if sup.returncode is None and not sup.exited.done() and sup.loop is asyncio.get_running_loop():
                return sup
            sup.dismiss()  # ended (a broken host?) or of another event loop: not used
            sup.close_log()
        return None

    def _cgroup_dirs(self, sandbox_name: str) -> list[Path]:
        return [r / self.cgroup_parent / sandbox_name for r in _cgroup_roots()
                if (r / self.cgroup_parent / sandbox_name).is_dir()]

    async def run(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        """Run one attempt; see the module docstring for the layout."""
        await self.check()
        return await self._run_once(spec, cancel)

    def _start(self, spec: RunSpec, rootfs: _Rootfs, sink: _LogSink) -> tuple[Path, _Supervised]:
        """Lay out the run's tmpfs and hand the run to a warm supervisor, or start a cold one
        (small tmpfs operations, done inline: a thread hop per step costs more under load)."""
        work = self._prepare(spec)
        try:
            sup = self._take_warm()
            if sup is not None:
                sup.sink = sink
                try:
                    sup.configure(self._run_options(spec, rootfs, work))
                except BrokenPipeError:  # it ended meanwhile: start a cold one instead
                    sup.close_log()
                    sup = None
            if sup is not None:
                asyncio.get_running_loop().call_soon(self._spawn_warm)  # replace it, off this path
            else:
                sup = _Supervised(self._command(spec, rootfs, work), sink)
                if self.warm_pool:
                    asyncio.get_running_loop().call_soon(self._spawn_warm)
            return work, sup
        except BaseException:
            self._remove_work(work)
            raise

    async def _run_once(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        started = time.monotonic()
        if cancel.is_set():
            return SandboxResult(Termination.CANCELLED, None, None, False, b"", False, 0.0)
        limits = spec.limits
        sink = _LogSink(int(limits.log_kib) * 1024)
        sup: _Supervised | None = None
        work: Path | None = None
        digest: str | None = None
        using: str | None = None
        try:
            rootfs = await self._image_rootfs(spec.image)
            digest = rootfs.digest
            using = rootfs.image_id
            self._in_use[using] = self._in_use.get(using, 0) + 1
            work, sup = self._start(spec, rootfs, sink)
            waiter = asyncio.ensure_future(sup.wait())
            cancelled = asyncio.ensure_future(cancel.wait())
            backstop = float(limits.timeout_seconds) + SUPERVISOR_GRACE_SECONDS
            done, _ = await asyncio.wait({waiter, cancelled}, timeout=backstop,
                                         return_when="FIRST_COMPLETED")
            if waiter not in done and cancelled in done:
                sup.signal(signal.SIGTERM)  # the supervisor kills the cgroup and reports
                done, _ = await asyncio.wait({waiter}, timeout=SUPERVISOR_GRACE_SECONDS)
            if waiter not in done:  # the supervisor itself is stuck: do its job
                log.error("jail supervisor of %s did not finish; killing it", spec.sandbox_name)
                sup.signal(signal.SIGKILL)
                await asyncio.to_thread(_kill_cgroup, self._cgroup_dirs(spec.sandbox_name),
                                        f"/{self.cgroup_parent}/{spec.sandbox_name}")
            cancelled.cancel()
            await waiter
            # Every process that held the pipe is dead: what is left to read is buffered.
            try:
                async with asyncio.timeout(LOG_DRAIN_SECONDS):
                    await asyncio.shield(sup.eof)
            except TimeoutError:
                log.warning("log pipe of %s still open after exit", spec.sandbox_name)
            sup.close_log()
            output, truncated, output_bytes = read_output(work / "out" / "output.json",
                                                          int(limits.output_kib) * 1024)
            status = self._read_status(work)
            termination, exit_code, detail = self._judge(status, sup.returncode, sink, cancel)
            peak = status.get("peak_memory_bytes") if status else None
            return SandboxResult(
                termination=termination,
                exit_code=exit_code,
                output=output,
                output_truncated=truncated,
                logs=bytes(sink.buf),
                logs_truncated=sink.dropped > 0,
                duration_seconds=float(status.get("duration_seconds", 0.0)) if status
                else time.monotonic() - started,
                peak_memory_bytes=peak if isinstance(peak, int) else None,
                detail=detail,
                image_digest=digest,
                cpu_seconds=_cpu_seconds(status),
                output_bytes=output_bytes,
                log_bytes=len(sink.buf) + sink.dropped,
            )
        except _StartFailure as e:
            return SandboxResult(Termination.START_FAILED, None, None, False, bytes(sink.buf), False,
                                 time.monotonic() - started, detail=str(e), image_digest=digest)
        except OSError as e:
            return SandboxResult(
                Termination.START_FAILED, None, None, False, bytes(sink.buf), False,
                time.monotonic() - started, detail=f"could not start the sandbox: {e}",
                image_digest=digest,
            )  # fmt: skip
        finally:
            if sup is not None:
                if sup.returncode is None:  # we were cancelled ourselves
                    sup.signal(signal.SIGTERM)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(SUPERVISOR_GRACE_SECONDS):
                            await sup.wait()
                sup.close_log()
            if work is not None:
                self._remove_work(work)
            if using is not None:
                self._in_use[using] -= 1

    @staticmethod
    def _read_status(work: Path) -> dict[str, Any] | None:
        try:
            doc = json.loads((work / "private" / "status.json").read_bytes())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    @staticmethod
    def _judge(status: dict[str, Any] | None, supervisor_rc: int | None, sink: _LogSink,
               cancel: asyncio.Event) -> tuple[Termination, int | None, str]:
        """The raw observation, from the supervisor's status (written after the run's
        processes were all dead, so the agent cannot forge it) and the cgroup's counters."""
        if status is None:
            if cancel.is_set():
                return Termination.CANCELLED, None, ""
            tail = bytes(sink.buf[-1500:]).decode(errors="replace").strip()
            return (Termination.START_FAILED, None,
                    f"the jail supervisor failed (exit {supervisor_rc}): {tail or 'no detail'}")
        exit_code = status.get("exit_code")
        error = str(status.get("error") or "")
        if status.get("cancelled"):
            return Termination.CANCELLED, exit_code, ""
        if status.get("timed_out"):
            return Termination.TIMED_OUT, exit_code, ""
        if exit_code is None or error:  # the jail itself failed (cgroup, network, ...)
            return Termination.START_FAILED, None, error or "the sandbox did not start"
        oom_kills = int(status.get("oom_kill") or 0)
        if oom_kills > 0 and exit_code == EXIT_SIGKILL:
            # The kernel's OOM killer acted in this run's own cgroup and the agent died of
            # SIGKILL: an agent killing itself or printing MemoryError moves neither counter.
            return (Termination.OOM_KILLED, exit_code,
                    f"oom_kill {oom_kills}, peak memory {status.get('peak_memory_bytes')} bytes")
        head = bytes(sink.buf[:4096])
        first = head.split(b"\n", 1)[0].decode(errors="replace")
        if exit_code == SUPERVISOR_FAILED and first.startswith("airlock-jail: "):
            return Termination.START_FAILED, None, first
        if exit_code == 1 and first.startswith("bwrap: "):
            # bubblewrap could not build the sandbox or exec the agent's command.
            return Termination.START_FAILED, None, first
        return Termination.EXITED, exit_code, ""

    # ------------------------------------------------------------------ reap

    async def reap(self, run_id: str) -> int:
        """End and remove every jail left for ``run_id`` (supervisor, cgroup, tmpfs)."""
        await self.check()
        return await asyncio.to_thread(self._reap, run_id)

    def _reap(self, run_id: str) -> int:
        found = 0
        works = self._work_dirs(run_id)
        names = {w.name.partition(".")[0] for w in works}
        prefix = f"airlock-{run_id}-"
        for root in _cgroup_roots():
            parent = root / self.cgroup_parent
            if parent.is_dir():
                names |= {p.name for p in parent.iterdir()
                          if p.is_dir() and p.name.startswith(prefix) and p.name[len(prefix):].isdigit()}
        for work in works:
            pid = _supervisor_pid(work, self.supervisor)
            if pid is not None:
                found += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)  # it kills the cgroup, then writes its status
                for _ in range(400):
                    if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                        break
                    time.sleep(0.01)
        for name in names:
            dirs = self._cgroup_dirs(name)
            if dirs:
                if _kill_cgroup(dirs, f"/{self.cgroup_parent}/{name}"):
                    found += 1
                for d in dirs:
                    with contextlib.suppress(OSError):
                        d.rmdir()
        for work in works:
            self._remove_work(work)
        return found


def result_from_document(text: str | bytes, *, duration_seconds: float,
                         image_digest: str | None = None) -> SandboxResult:
    """A SandboxResult from the supervisor's ``--result`` document (the jail inside a
    privileged container: status, base64 logs and output, written once the run's processes
    were all dead), judged exactly as the host runtime judges its status file."""
    try:
        doc = json.loads(text)
        status = doc["status"]
        logs = base64.b64decode(doc["logs_b64"], validate=True)
        out_b64 = doc.get("output_b64")
        output = None if out_b64 is None else base64.b64decode(out_b64, validate=True)
        if not isinstance(status, dict):
            raise TypeError("status is not an object")
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        return SandboxResult(Termination.START_FAILED, None, None, False, b"", False, duration_seconds,
                             detail=f"unreadable jail result: {e}", image_digest=image_digest)
    sink = _LogSink(len(logs))
    sink.feed(logs)
    termination, exit_code, detail = JailRuntime._judge(status, None, sink, asyncio.Event())
    peak = status.get("peak_memory_bytes")
    return SandboxResult(
        termination=termination, exit_code=exit_code, output=output,
        output_truncated=bool(doc.get("output_truncated")), logs=logs,
        logs_truncated=bool(doc.get("logs_truncated")),
        duration_seconds=float(status.get("duration_seconds") or duration_seconds),
        peak_memory_bytes=peak if isinstance(peak, int) else None, detail=detail,
        image_digest=image_digest, cpu_seconds=_cpu_seconds(status),
        # The document carries what was kept: a lower bound when truncated.
        output_bytes=None if output is None else len(output), log_bytes=len(logs),
    )  # fmt: skip


def _cpu_seconds(status: dict[str, Any] | None) -> float | None:
    """The run cgroup's CPU time from the supervisor's status (None where it had no counter)."""
    value = status.get("cpu_seconds") if status else None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


class _StartFailure(Exception):
    """The sandbox could not be prepared (image missing, no command...)."""


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _supervisor_pid(work: Path, supervisor: Path | None) -> int | None:
    """The pid in ``work``'s pidfile if that process is still a jail supervisor of this run."""
    try:
        pid = int((work / "private" / "supervisor.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    # Its own pidfile names it; the binary checks the pid was not reused by another program.
    # (A warm supervisor's command line names its pool cgroup, not the run.)
    if supervisor is None or cmdline[0] != bytes(supervisor):
        return None
    return pid


class JailSettings(RuntimeSettings):
    """The jail runtime's options (``AIRLOCK_JAIL_*``; the probe image is podman's)."""

    podman: str = "podman"  # mounts the images' layers; the same program as the podman runtime's
    executor_id: str | None = None
    work_root: Path = Field(default=Path("/run/airlock-jail"),
                            validation_alias=AliasChoices("jail_work_root", "work_root"))
    probe_image: str = Field(default=DEFAULT_PROBE_IMAGE,
                             validation_alias=AliasChoices("podman_probe_image", "probe_image"))


def _create(settings: JailSettings) -> JailRuntime:
    return JailRuntime(podman=settings.podman, executor_id=settings.executor_id,
                       work_root=settings.work_root, probe_image=settings.probe_image)


FACTORY: RuntimeFactory[JailSettings] = RuntimeFactory(settings=JailSettings, create=_create)
