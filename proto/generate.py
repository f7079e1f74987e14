"""Regenerate the Python code for proto/airlock/v1 into the importable package ``airlock.v1``.

Usage: python proto/generate.py          # write airlock/v1/*
       python proto/generate.py --check  # fail if the checked-in code is stale (CI)

grpcio (``_pb2_grpc``, absolute imports) and connectrpc (``_connect``, relative imports) share
one set of ``_pb2`` message classes: connectrpc runs with ``protobuf=google``.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_PKG = ROOT / "airlock" / "v1"


def generate(out_root: Path) -> Path:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "airlock" / "v1").glob("*.proto"))
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
        f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-connectrpc={Path(sys.executable).parent / 'protoc-gen-connectrpc'}",
        f"--connectrpc_out={out_root}", "--connectrpc_opt=protobuf=google", *protos,
    ]
    subprocess.run(cmd, check=True)
    pkg = out_root / "airlock" / "v1"
    (out_root / "airlock" / "__init__.py").write_text('"""Generated protobuf code (package airlock.v1)."""\n')
    (pkg / "__init__.py").write_text("")
    return pkg


def main() -> int:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        pkg = generate(Path(tmp))
        if check:
            cmp = filecmp.dircmp(pkg, OUT_PKG, ignore=["__pycache__"])
            stale = cmp.diff_files + cmp.left_only + cmp.right_only
            if stale:
                print(f"generated code is stale: {sorted(stale)}; run: python proto/generate.py")
                return 1
            print("generated code is current")
            return 0
        if OUT_PKG.exists():
            shutil.rmtree(OUT_PKG)
        shutil.copytree(pkg, OUT_PKG)
        # airlock/ also holds the CLI: its __init__.py is ours, written only if missing.
        if not (OUT_PKG.parent / "__init__.py").exists():
            shutil.copy(Path(tmp) / "airlock" / "__init__.py", OUT_PKG.parent / "__init__.py")
    print(f"wrote {OUT_PKG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
