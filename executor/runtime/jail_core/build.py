"""Build the jail's supervisor (``supervisor.c``) once per source version.

The supervisor is C, not Python, for two reasons measured on these machines: a Python
interpreter costs 20-30 ms to start, more than the whole jail is allowed to add to a run, and a
statically linked binary needs nothing from the host or image it runs on (the same file can
later run inside a privileged container whose image is untrusted). It is compiled with the
host's C compiler into ``cache_dir``, under a name that carries the hash of its source and
flags, so an upgraded source is rebuilt and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("supervisor.c")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Wno-format-truncation")


class BuildError(RuntimeError):
    """The supervisor could not be built here; the message says why."""


def supervisor_path(cache_dir: Path, *, cc: str | None = None) -> Path:
    """The path of a built supervisor for the current source, building it if needed."""
    source = SOURCE.read_bytes()
    tag = hashlib.sha256(source + " ".join(CFLAGS).encode()).hexdigest()[:16]
    out = cache_dir / f"airlock-jail-{tag}"
    if out.is_file() and os.access(out, os.X_OK):
        return out
    compiler = cc or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise BuildError("no C compiler (cc) to build the jail supervisor; install one "
                         "(Debian: apt-get install gcc libc6-dev)")
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        binary = Path(tmp) / "airlock-jail"
        errors = ""
        # Static first (no loader or libc needed where it runs); dynamic where libc.a is missing.
        for link in (("-static",), ()):
            r = subprocess.run([compiler, *CFLAGS, *link, "-o", str(binary), str(SOURCE)],
                               capture_output=True, text=True, timeout=120)
            if r.returncode == 0:
                break
            errors = r.stderr.strip()[-800:]
        else:
            raise BuildError(f"building the jail supervisor with {compiler} failed: {errors}")
        binary.chmod(0o700)
        os.replace(binary, out)
    return out
