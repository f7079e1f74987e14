"""Sandbox benchmark, part 1: per-run overhead of the podman runtime.

The same trivial agent (the ``ok`` capability of the misbehave fixture: read the input, write
``{"output": ...}``, exit 0) is started N times, one at a time, three ways:

- ``host``: ``/usr/bin/python3 main.py`` directly on the host with the helper on PYTHONPATH and the
  contract's files in a temporary directory; the floor, no isolation at all;
- ``podman CLI``: the exact ``podman run`` command line the runtime builds, plus ``--rm``;
  what podman itself costs with these limits;
- ``PodmanRuntime.run``: the full runtime (tmpfs, input, limits, log capture, output read,
  cgroup peak, ``podman rm``, cleanup), as the executor calls it.

The image is built on the offline base if missing and is warm (cached) before measuring.

    python bench/sandbox.py            # N=20
    python bench/sandbox.py -n 50

Prints a table, then one JSON line ``{"bench": "sandbox", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.build import build_image
from agents.limits import Limits
from bench._common import emit_json, log, percentile, print_table
from executor.base_image import make_base_image
from executor.runtime.base import RunSpec, Termination
from executor.runtime.podman import PodmanRuntime

REPO = Path(__file__).resolve().parent.parent
AGENT_DIR = REPO / "tests" / "agents" / "misbehave"
# The distribution's python3, as in the offline base image (not a pyenv shim or a venv).
HOST_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
LIMITS = Limits(memory_mib=64, timeout_seconds=30, pids=32, cpus=1, output_kib=64, log_kib=64)


def _spec(i: int, image: str) -> RunSpec:
    return RunSpec(
        run_id=f"bench{os.getpid()}x{i}",
        attempt=1,
        image=image,
        capability="ok",
        input={"i": i},
        limits=LIMITS,
        executor_id="bench",
    )


def _host_once(i: int, tmp: Path) -> float:
    """The agent's own cost: the same main.py with the same helper, no sandbox."""
    inp, out = tmp / f"in{i}.json", tmp / f"out{i}.json"
    inp.write_text(json.dumps({"run_id": str(i), "capability": "ok", "input": {"i": i}}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    env |= {"AIRLOCK_INPUT": str(inp), "AIRLOCK_OUTPUT": str(out)}
    t0 = time.perf_counter()
    subprocess.run([HOST_PYTHON, str(AGENT_DIR / "main.py")], env=env, check=True)
    elapsed = time.perf_counter() - t0
    assert json.loads(out.read_text())["output"]["ok"] is True
    return elapsed


def _cli_once(rt: PodmanRuntime, i: int, image: str) -> float:
    """podman alone, with the runtime's exact command line (internals used on purpose)."""
    spec = _spec(10_000 + i, image)
    work = rt._prepare(spec)
    try:
        argv = rt._argv(spec, work)
        argv.insert(argv.index("run") + 1, "--rm")
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        elapsed = time.perf_counter() - t0
        assert (work / "out" / "output.json").exists()
        return elapsed
    finally:
        rt._cleanup_host(spec.sandbox_name)


async def _runtime_once(rt: PodmanRuntime, i: int, image: str) -> float:
    t0 = time.perf_counter()
    result = await rt.run(_spec(i, image), asyncio.Event())
    elapsed = time.perf_counter() - t0
    if result.termination is not Termination.EXITED or result.exit_code != 0:
        raise RuntimeError(f"benchmark run failed: {result}")
    return elapsed


def _stats(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "min_ms": min(ms)}


async def measure_overhead(n: int, image: str) -> dict[str, Any]:
    """Part 1: sequential single runs, host floor vs podman CLI vs the full runtime."""
    rt = PodmanRuntime(executor_id="bench")
    await rt.check()
    await _runtime_once(rt, -1, image)  # warm: image layers, digest cache, page cache
    host, cli, runtime = [], [], []
    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        _host_once(-1, Path(tmp))
        # Interleaved so that all three see the same machine state.
        for i in range(n):
            host.append(_host_once(i, Path(tmp)))
            cli.append(await asyncio.to_thread(_cli_once, rt, i, image))
            runtime.append(await _runtime_once(rt, i, image))
    h, c, r = _stats(host), _stats(cli), _stats(runtime)
    return {
        "n": n,
        "host": h,
        "podman_cli": c,
        "runtime": r,
        "overhead_p50_ms": r["p50_ms"] - h["p50_ms"],
        "overhead_p99_ms": r["p99_ms"] - h["p99_ms"],
        "runtime_over_cli_p50_ms": r["p50_ms"] - c["p50_ms"],
    }


# Part 2 (end-to-end throughput through the executor) is added separately; it gets its own
# ``async def measure_throughput(...)`` and its own key in the JSON line.


def ensure_image(image: str | None) -> str:
    if image:
        return image
    base = make_base_image()
    return build_image(AGENT_DIR, base_image=base)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=20, help="runs per variant (20)")
    p.add_argument("--image", default=None, help="agent image with an 'ok' capability")
    args = p.parse_args(argv)
    log("building/reusing the offline base and the misbehave image")
    image = ensure_image(args.image)
    log(f"measuring {args.n} runs per variant on {image}")
    over = asyncio.run(measure_overhead(args.n, image))
    rows = [
        [label, over[key]["p50_ms"], over[key]["p99_ms"], over[key]["min_ms"]]
        for label, key in (
            ("host python3 main.py", "host"),
            ("podman run (CLI, same flags)", "podman_cli"),
            ("PodmanRuntime.run", "runtime"),
        )
    ]
    print_table(rows, ["per run (ms)", "p50", "p99", "min"])
    print(
        f"overhead vs host: p50 {over['overhead_p50_ms']:.0f} ms, "
        f"p99 {over['overhead_p99_ms']:.0f} ms; runtime vs bare podman CLI: "
        f"p50 {over['runtime_over_cli_p50_ms']:.0f} ms"
    )
    emit_json({"bench": "sandbox", "image": image, "limits": LIMITS.as_dict(), "overhead": over})
    return 0


if __name__ == "__main__":
    sys.exit(main())
