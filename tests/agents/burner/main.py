"""Known work for the usage tests (test fixture). Standard library only."""

from __future__ import annotations

import sys
import time
from typing import Any

from agents import AgentError, serve


def burn(inp: dict[str, Any]) -> dict[str, Any]:
    mib = int(inp.get("mib", 0))
    # One bytes object written page by page: resident, not merely reserved.
    held = bytearray(mib << 20)
    for i in range(0, len(held), 4096):
        held[i] = 1
    target = float(inp.get("cpu_seconds", 0))
    start = time.process_time()
    n = 0
    while time.process_time() - start < target:
        n += sum(range(1000))
    log = b"l" * 1023 + b"\n"
    for _ in range(int(inp.get("log_kib", 0))):
        sys.stderr.buffer.write(log)
    sys.stderr.flush()
    return {"cpu_seconds": time.process_time(), "held_mib": len(held) >> 20,
            "pad": "p" * (int(inp.get("pad_kib", 0)) * 1024)}


def dispatch(capability: str, inp: Any) -> Any:
    if capability == "burn":
        return burn(inp)
    raise AgentError("E_CAPABILITY", f"unknown capability {capability!r}")


if __name__ == "__main__":
    serve(dispatch)
