"""The jail inside a privileged container: the read-only bundle and the exec that runs it.

A Dagger exec run with ``insecureRootCapabilities`` (Dagger's equivalent of ``docker run
--privileged``) may create namespaces and cgroups, so the jail can run inside it. Its image is
untrusted, so **nothing that runs privileged comes from the image**: the supervisor (static),
``bwrap`` and ``slirp4netns`` with every library they load and the dynamic loader itself are
copied from the executor's host into a bundle directory, mounted read-only at ``BUNDLE_MOUNT``.
The dynamic programs run through the bundle's loader (``ld.so --inhibit-cache --library-path
BUNDLE/lib PROGRAM``), in a private mount namespace where the image's ``/etc`` is covered (no
``ld.so.preload`` of the image is read). The image is only the jail's root filesystem; the exec
container is built from the image's root filesystem alone, without its configuration, so not
even its environment reaches the supervisor. See docs/security.md for the trust model.

Layout inside the container::

    /.airlock-jail/       the bundle (read-only): airlock-jail, bwrap, slirp4netns, seccomp.bpf,
                          lib/ (the loader and every library of bwrap and slirp4netns)
    /.airlock-run/        the run's files: input.json (+ resolv.conf with egress); the
                          supervisor adds out/ (the agent's, uid 65534), shield/, status.json and
                          result.json (status + base64 logs and output: one read, exact bytes)
    /.airlock-secrets/N   secret N (root, 0400), given to the sandbox from a descriptor

This module is pure (no engine, no podman): ``container_exec`` gives the exec's argv and files,
used alike by the Dagger pipeline and by the test that runs it in ``podman run --privileged``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from executor.runtime.base import INPUT_PATH, OUTPUT_DIR, OUTPUT_PATH, SECRETS_DIR, RunSpec

BUNDLE_MOUNT = "/.airlock-jail"
RUN_MOUNT = "/.airlock-run"
SECRETS_MOUNT = "/.airlock-secrets"
RESULT_FILE = "result.json"
SUPERVISOR = "airlock-jail"
SANDBOX_UID = 65534
TMP_SIZE = 32 << 20  # the agent's /tmp; charged to its memory cgroup as well
SHM_SIZE = 16 << 20  # /dev/shm
RUN_SIZE = 1 << 20  # /run (secrets only)
# Processes of the jail itself inside the run's cgroup: bubblewrap and its pid-1 reaper. The
# pids limit is raised by this much so the agent gets exactly ``limits.pids``.
JAIL_PIDS = 2
CPU_PERIOD_US = 100_000
FD_BASE = 100  # descriptors given to bubblewrap: above any the supervisor itself uses
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SLIRP_RESOLV = b"nameserver 10.0.2.3\n"  # slirp4netns's built-in DNS forwarder
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


class BundleError(RuntimeError):
    """The bundle could not be assembled here; the message says why."""


def _libraries(program: Path) -> list[Path]:
    """Every shared object ``program`` loads, its loader included (from the host's ``ldd``)."""
    r = subprocess.run(["ldd", str(program)], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise BundleError(f"ldd {program} failed: {(r.stderr or r.stdout).strip()[-300:]}")
    libs = []
    for line in r.stdout.splitlines():
        m = _LDD_LINE.match(line)
        if m:
            libs.append(Path(m.group(1)))
    if not any(p.name.startswith("ld-linux") for p in libs):
        raise BundleError(f"ldd {program}: no dynamic loader found in {r.stdout.strip()!r}")
    return libs


def is_static(program: Path) -> bool:
    """True when ``program`` is an ELF executable with no program interpreter (``PT_INTERP``):
    it loads no dynamic loader and no library, so nothing of the filesystem it runs on."""
    with program.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:  # ELF64, little-endian only
            raise BundleError(f"{program} is not a 64-bit little-endian ELF executable")
        phoff = int.from_bytes(head[0x20:0x28], "little")
        phentsize = int.from_bytes(head[0x36:0x38], "little")
        phnum = int.from_bytes(head[0x38:0x3A], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(int.from_bytes(table[i:i + 4], "little") != pt_interp
               for i in range(0, len(table), phentsize))


def bundle_files(supervisor: Path, bwrap: Path, slirp4netns: Path) -> dict[str, Path]:
    """What the bundle holds: its relative path -> the host file it is copied from.

    The supervisor is the exec's first program and runs as root before anything covers the
    image's ``/etc``: it must be static, or the image's loader (and ``/etc/ld.so.preload``)
    would run with it. bwrap and slirp4netns run later, through the bundle's loader."""
    if not is_static(supervisor):
        raise BundleError(f"the jail supervisor {supervisor} is dynamically linked; the bundle "
                          "needs a static build (Debian: apt-get install libc6-dev, for libc.a)")
    files: dict[str, Path] = {SUPERVISOR: supervisor, "bwrap": bwrap, "slirp4netns": slirp4netns}
    for program in (bwrap, slirp4netns):
        for lib in _libraries(program):
            files[f"lib/{lib.name}"] = lib.resolve()
    return files


def loader_name(files: Mapping[str, Path]) -> str:
    return next(name for name in files if name.startswith("lib/ld-linux"))


@dataclass(frozen=True, slots=True)
class Bundle:
    path: Path  # the directory on the executor's host
    loader: str  # relative path of the dynamic loader in it


def assemble_bundle(cache_dir: Path, *, supervisor: Path, bwrap: Path, slirp4netns: Path,
                    seccomp: bytes) -> Bundle:
    """The bundle directory for these programs, built once per content (name = its hash)."""
    files = bundle_files(supervisor, bwrap, slirp4netns)
    digest = hashlib.sha256(seccomp)
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].read_bytes())
    out = cache_dir / f"bundle-{digest.hexdigest()[:16]}"
    loader = loader_name(files)
    if (out / SUPERVISOR).is_file():
        return Bundle(out, loader)
    cache_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".bundle-"))
    try:
        (tmp / "lib").mkdir(mode=0o755)
        for name, src in files.items():
            shutil.copyfile(src, tmp / name)
            (tmp / name).chmod(0o755)
        (tmp / "seccomp.bpf").write_bytes(seccomp)
        (tmp / "seccomp.bpf").chmod(0o644)
        tmp.chmod(0o755)
        try:
            os.rename(tmp, out)
        except OSError:  # another process made it meanwhile
            if not (out / SUPERVISOR).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle(out, loader)


def host_bundle(cache_dir: Path) -> Bundle:
    """The bundle from this host's programs: the supervisor built here, ``bwrap`` and
    ``slirp4netns`` from PATH, the seccomp filter compiled here. Raises BundleError naming
    what is missing."""
    from executor.runtime.jail_core.build import BuildError, supervisor_path
    from executor.runtime.jail_core.seccomp import SeccompUnavailable, compile_filter

    found = {}
    for prog, package in (("bwrap", "bubblewrap"), ("slirp4netns", "slirp4netns")):
        path = shutil.which(prog)
        if path is None:
            raise BundleError(f"{prog!r} not found on PATH; install it (Debian: apt-get install {package})")
        found[prog] = Path(path)
    try:
        supervisor = supervisor_path(cache_dir / "bin")
        seccomp = compile_filter()
    except (BuildError, SeccompUnavailable, OSError) as e:
        raise BundleError(str(e)) from e
    return assemble_bundle(cache_dir, supervisor=supervisor, bwrap=found["bwrap"],
                           slirp4netns=found["slirp4netns"], seccomp=seccomp)


def bwrap_options(spec: RunSpec, *, env: Mapping[str, str], workdir: str, fds: Mapping[str, int],
                  out_dir: str, clearenv: bool = True) -> list[str]:
    """bubblewrap's options for a run (every runtime of the jail): namespaces, uid 65534, no
    capabilities, the agent contract's files, bounded tmpfs, read-only root, seccomp. The
    image's root entries are not included (the caller or ``--image-root`` adds them)."""
    a = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
         "--new-session", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
         "--hostname", "airlock", "--cap-drop", "ALL"]
    if clearenv:
        a.append("--clearenv")
    full = dict(env)
    full.setdefault("PATH", DEFAULT_PATH)
    full.setdefault("HOME", "/tmp")
    full |= {"AIRLOCK_INPUT": INPUT_PATH, "AIRLOCK_OUTPUT": OUTPUT_PATH, "AIRLOCK_RUN_ID": spec.run_id}
    if spec.secrets:
        full["AIRLOCK_SECRETS_DIR"] = SECRETS_DIR
    full |= dict(spec.env)
    for k, v in full.items():
        a += ["--setenv", k, v]
    a += ["--proc", "/proc", "--dev", "/dev",
          "--size", str(SHM_SIZE), "--perms", "1777", "--tmpfs", "/dev/shm",
          "--remount-ro", "/dev",
          "--size", str(TMP_SIZE), "--perms", "1777", "--tmpfs", "/tmp",
          "--size", str(RUN_SIZE), "--perms", "0755", "--tmpfs", "/run"]
    if spec.secrets:
        a += ["--perms", "0500", "--dir", SECRETS_DIR]
        for i, name in enumerate(spec.secrets):
            a += ["--perms", "0400", "--ro-bind-data", str(fds[f"secret-{i}"]), f"{SECRETS_DIR}/{name}"]
    a += ["--remount-ro", "/run",
          "--perms", "0755", "--dir", "/airlock",
          "--perms", "0444", "--ro-bind-data", str(fds["input"]), INPUT_PATH,
          "--bind", out_dir, OUTPUT_DIR]
    if "resolv" in fds:
        a += ["--ro-bind-data", str(fds["resolv"]), "/etc/resolv.conf"]
    a += ["--remount-ro", "/", "--seccomp", str(fds["seccomp"]), "--chdir", workdir]
    return a


def limit_options(spec: RunSpec) -> list[str]:
    """The supervisor's limit options (the same on every host)."""
    lim = spec.limits
    return ["--memory", str(int(lim.memory_mib) << 20),
            "--pids", str(int(lim.pids) + JAIL_PIDS),
            "--cpu-quota-us", str(max(1000, int(float(lim.cpus) * CPU_PERIOD_US))),
            "--cpu-period-us", str(CPU_PERIOD_US),
            "--timeout-ms", str(int(float(lim.timeout_seconds) * 1000))]  # fmt: skip


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What a run takes from the image's configuration (read by the executor, never by
    anything inside the container): the command, environment and working directory."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"


@dataclass(frozen=True, slots=True)
class ContainerExec:
    """One run of the jail inside a privileged container."""

    argv: list[str]  # the exec's command (absolute paths into the bundle; no shell)
    run_files: dict[str, str]  # RUN_MOUNT/<name> -> contents (text)
    secret_files: dict[str, str]  # secret name -> its path in the container (root, 0400)
    has_resolv: bool

    @property
    def result_path(self) -> str:
        return f"{RUN_MOUNT}/{RESULT_FILE}"


def container_exec(spec: RunSpec, image: ImageConfig, *, loader: str, network_resolv: bool = True) -> ContainerExec:
    """The exec's argv and files for ``spec`` (``loader``: the bundle's, e.g. from
    ``Bundle.loader``). Raises ValueError when the run has no command."""
    argv = list(spec.entrypoint) if spec.entrypoint else list(image.argv)
    if not argv:
        raise ValueError(f"image {spec.image} has no entrypoint or command, and the run gave none")
    fds = {"seccomp": FD_BASE + 1, "input": FD_BASE + 2}
    paths = {"seccomp": f"{BUNDLE_MOUNT}/seccomp.bpf", "input": f"{RUN_MOUNT}/input.json"}
    run_files = {"input.json": spec.request_json().decode()}
    secret_files = {}
    for i, name in enumerate(spec.secrets):
        fds[f"secret-{i}"] = FD_BASE + 10 + i
        paths[f"secret-{i}"] = secret_files[name] = f"{SECRETS_MOUNT}/{i}"
    if spec.network and network_resolv:
        fds["resolv"] = FD_BASE + 3
        paths["resolv"] = f"{RUN_MOUNT}/resolv.conf"
        run_files["resolv.conf"] = SLIRP_RESOLV.decode()
    env = dict(image.env)
    # bubblewrap starts with an empty environment (the supervisor gives it none); the image's
    # variables are set first, the contract's after them (and win).
    options = bwrap_options(spec, env=env, workdir=image.workdir or "/", fds=fds,
                            out_dir=f"{RUN_MOUNT}/out")
    lim = spec.limits
    cmd = [f"{BUNDLE_MOUNT}/{SUPERVISOR}",
           "--name", spec.sandbox_name, "--cgroup-parent", "airlock-jail", "--cgroup-nest",
           *limit_options(spec),
           "--status", f"{RUN_MOUNT}/status.json",
           "--result", f"{RUN_MOUNT}/{RESULT_FILE}",
           "--output-file", f"{RUN_MOUNT}/out/output.json",
           "--output-cap", str(int(lim.output_kib) * 1024),
           "--log-cap", str(int(lim.log_kib) * 1024),
           "--out-dir", f"{RUN_MOUNT}/out",
           "--loader", f"{BUNDLE_MOUNT}/{loader}", "--library-path", f"{BUNDLE_MOUNT}/lib",
           "--shield", f"{RUN_MOUNT}/shield",
           "--image-root", "/",
           "--hide", BUNDLE_MOUNT.lstrip("/"), "--hide", RUN_MOUNT.lstrip("/"),
           "--hide", SECRETS_MOUNT.lstrip("/")]  # fmt: skip
    for key, fd in fds.items():
        cmd += ["--fd", f"{fd}:{paths[key]}"]
    if spec.network:
        cmd += ["--slirp4netns", f"{BUNDLE_MOUNT}/slirp4netns"]
    cmd += ["--", f"{BUNDLE_MOUNT}/bwrap", *options, "--", *argv]
    return ContainerExec(argv=cmd, run_files=run_files, secret_files=secret_files,
                         has_resolv="resolv" in fds)
