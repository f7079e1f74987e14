"""Make a local base image offline (no container registry), from Debian packages.

``debootstrap --variant=minbase --include=python3 bookworm`` unpacks a minimal Debian with the
full ``python3`` (``python3-minimal`` lacks ``json``); ``podman import`` turns the tree into an
image. The rootfs tarball is cached under ``~/.cache/airlock`` so that a rerun (or a
``--force``) skips the slow download. Run it as ``python -m executor.base_image``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_TAG = "localhost/airlock/base:bookworm"
DEFAULT_SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "ca-certificates")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airlock"


def apt_mirror(root: Path = Path("/")) -> str:
    """The Debian archive this machine's apt uses (first main ``debian`` URI), else the default.

    Reads one-line ``sources.list`` style and deb822 ``*.sources`` files; security and
    third-party repositories are skipped because they do not carry the base suite.
    """
    apt = root / "etc/apt"
    files = [apt / "sources.list"]
    d = apt / "sources.list.d"
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    uris: list[str] = []
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            uris += [
                u for m in re.finditer(r"(?im)^URIs:\s*(.+)$", text) for u in m.group(1).split()
            ]
        else:
            for line in text.splitlines():
                # deb [options] URI suite components...
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+", line)
                if m:
                    uris.append(m.group(1))
    for uri in uris:
        path = uri.rstrip("/")
        if path.endswith("/debian") and "security" not in path:
            return path
    return FALLBACK_MIRROR


def image_exists(tag: str) -> bool:
    r = subprocess.run(["podman", "image", "exists", tag], capture_output=True)
    return r.returncode == 0


def _build_rootfs_tar(tarball: Path, suite: str, mirror: str) -> None:
    if os.geteuid() != 0:
        raise PermissionError("debootstrap needs root to build the base image")
    if shutil.which("debootstrap") is None:
        raise FileNotFoundError("debootstrap is not installed (apt-get install debootstrap)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="airlock-rootfs-") as tmp:
        root = Path(tmp) / "root"
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            suite,
            str(root),
            mirror,
        ]
        log.info("running %s", " ".join(cmd))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stdout + r.stderr)[-2000:]
            raise RuntimeError(f"debootstrap failed (exit {r.returncode}): {tail}")
        # Smaller image, no stale apt lists; the agents never use apt.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / junk).glob("*.deb" if "archives" in junk else "*_*"):
                p.unlink(missing_ok=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], check=True
        )
        partial.replace(tarball)  # only a complete tarball lands in the cache


def make_base_image(
    tag: str = DEFAULT_TAG,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str | None = None,
    force: bool = False,
    refresh_cache: bool = False,
) -> str:
    """Build (or reuse) the offline base image; return its tag.

    ``force`` re-imports the image even when it exists; ``refresh_cache`` also reruns
    debootstrap instead of reusing the cached rootfs tarball.
    """
    if not force and image_exists(tag):
        return tag
    tarball = cache_dir() / f"rootfs-{suite}-minbase-python3.tar"
    if refresh_cache or not tarball.exists():
        _build_rootfs_tar(tarball, suite, mirror or apt_mirror())
    r = subprocess.run(
        [
            "podman", "import",
            "--change", "CMD [\"/usr/bin/python3\"]",
            "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            str(tarball), tag,
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"podman import failed: {r.stderr.strip()}")
    return tag


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Make Airlock's offline base image (debootstrap).")
    p.add_argument("--tag", default=DEFAULT_TAG)
    p.add_argument("--suite", default=DEFAULT_SUITE)
    p.add_argument("--mirror", default=None, help="Debian mirror (default: the one apt uses)")
    p.add_argument("--force", action="store_true", help="re-import even if the image exists")
    p.add_argument("--refresh", action="store_true", help="rerun debootstrap, ignore the cache")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        tag = make_base_image(
            a.tag, suite=a.suite, mirror=a.mirror, force=a.force, refresh_cache=a.refresh
        )
    except (RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
