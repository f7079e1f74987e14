"""The jail's seccomp filter, compiled to classic BPF with the host's libseccomp.

Why a ctypes binding of ``libseccomp.so.2`` rather than a package: the official Python
binding is a Cython extension that PyPI does not ship as a wheel, and the filter is built once
per executor process, by trusted code, from a dozen calls. The compiled program (bytes) is what
bubblewrap loads (``--seccomp FD``) right before it runs the agent; nothing privileged loads
libseccomp, and a bundle can carry the same bytes instead of the library.

Policy: allow by default (agents are ordinary programs in any language), and refuse with
``EPERM`` the calls that are only useful to get out of or attack the sandbox: mounting and
namespace changes, new user/pid/net/... namespaces through ``clone`` flags, ``clone3``
(``ENOSYS``, so libc falls back to ``clone``, whose flags can be checked), kernel keyrings,
``ptrace`` and cross-process memory access, BPF, perf, userfaultfd, io_uring, modules and
kexec, file handles (``open_by_handle_at``), swap, reboot, clocks, ``TIOCSTI`` terminal
injection. Syscalls of any other architecture (32-bit ``int 0x80``, x32) kill the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import tempfile
from collections.abc import Iterable

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7


def SCMP_ACT_ERRNO(code: int) -> int:  # libseccomp's name
    return 0x00050000 | (code & 0xFFFF)


DENIED = (
    "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "keyctl", "add_key", "request_key",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at", "acct", "swapon", "swapoff", "reboot", "syslog",
    "quotactl", "quotactl_fd", "lookup_dcookie", "nfsservctl", "uselib", "vhangup",
    "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
)  # fmt: skip
ENOSYS_CALLS = ("clone3",)
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
CLONE_NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                  0x40000000, 0x00000080)
TIOCSTI = 0x5412


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class SeccompUnavailable(RuntimeError):
    """libseccomp is missing or refused the filter."""


def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise SeccompUnavailable(f"cannot load libseccomp ({name}): {e}; "
                                 "install it (Debian: apt-get install libseccomp2)") from e
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def compile_filter(denied: Iterable[str] = DENIED) -> bytes:
    """The filter as a BPF program (``struct sock_filter[]``), ready for ``bwrap --seccomp``."""
    lib = _lib()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        def check(rc: int, what: str) -> None:
            if rc < 0:
                raise SeccompUnavailable(f"libseccomp: {what}: {os.strerror(-rc)}")

        check(lib.seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
              "bad-arch action")

        def rule(action: int, name: str, *cmps: _ArgCmp) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a syscall on this architecture (e.g. iopl elsewhere)
                return
            arr = (_ArgCmp * len(cmps))(*cmps) if cmps else None
            check(lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr), name)

        for name in denied:
            rule(SCMP_ACT_ERRNO(errno.EPERM), name)
        for name in ENOSYS_CALLS:
            rule(SCMP_ACT_ERRNO(errno.ENOSYS), name)
        for flag in CLONE_NS_FLAGS:
            rule(SCMP_ACT_ERRNO(errno.EPERM), "clone", _ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag))
        rule(SCMP_ACT_ERRNO(errno.EPERM), "ioctl",
             _ArgCmp(1, SCMP_CMP_MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
        with tempfile.TemporaryFile() as f:
            check(lib.seccomp_export_bpf(ctx, f.fileno()), "export")
            f.seek(0)
            program = f.read()
    finally:
        lib.seccomp_release(ctx)
    if not program or len(program) % 8:
        raise SeccompUnavailable(f"libseccomp exported a malformed program ({len(program)} bytes)")
    return program
