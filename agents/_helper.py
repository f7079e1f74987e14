"""In-container side of the agent contract. Standard library only: agent images install this.

Contract (see docs/agent-contract.md):
- ``AIRLOCK_INPUT`` names a read-only JSON file ``{"run_id", "capability", "input"}``;
- ``AIRLOCK_OUTPUT`` names the file to write: ``{"output": ...}`` or
  ``{"error": {"code", "message"}}``;
- stdout/stderr are logs; exit code 0 means success.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

Handler = Callable[[str, Any], Any]


class AgentError(Exception):
    """Raise from a handler to fail the run with a code and message of your choosing."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _write(path: str, doc: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, path)  # atomic: the executor never reads half a result


def serve(handler: Handler, *, argv: list[str] | None = None) -> None:
    """Read the run's input, call ``handler(capability, input)``, write the result, exit.

    Never returns: exits 0 on success, 1 when the handler raised.
    """
    in_path = os.environ.get("AIRLOCK_INPUT")
    out_path = os.environ.get("AIRLOCK_OUTPUT")
    if not in_path or not out_path:
        print("airlock: AIRLOCK_INPUT and AIRLOCK_OUTPUT must be set", file=sys.stderr)
        sys.exit(2)
    with open(in_path, encoding="utf-8") as f:
        request = json.load(f)
    try:
        result = handler(request["capability"], request["input"])
    except AgentError as e:
        _write(out_path, {"error": {"code": e.code, "message": e.message}})
        sys.exit(1)
    except Exception as e:  # an agent bug: report it as the run's error, keep the traceback in logs
        traceback.print_exc()
        _write(out_path, {"error": {"code": type(e).__name__, "message": str(e)[:1000]}})
        sys.exit(1)
    _write(out_path, {"output": result})
    sys.stdout.flush()
    sys.exit(0)
