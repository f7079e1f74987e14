"""text-transform: uppercase, reverse, and a jq-like `pick`. Standard library only."""

from __future__ import annotations

import re
from typing import Any

from agents import AgentError, serve

# One path step: .name, ."quoted name", or [index].
_STEP = re.compile(r'\.([A-Za-z_][A-Za-z0-9_-]*)|\."((?:[^"\\]|\\.)*)"|\[(-?\d+)\]')


def parse_path(path: str) -> list[str | int]:
    if path in ("", "."):
        return []
    steps: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            raise AgentError("E_PATH", f"bad path {path!r} at position {pos}")
        name, quoted, index = m.groups()
        if index is not None:
            steps.append(int(index))
        else:
            steps.append(name if name is not None else re.sub(r"\\(.)", r"\1", quoted))
        pos = m.end()
    return steps


def pick(data: Any, path: str) -> dict[str, Any]:
    value = data
    for step in parse_path(path):
        if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict) and step in value:
            value = value[step]
        else:
            return {"found": False, "value": None}
    return {"found": True, "value": value}


def handle(capability: str, payload: dict[str, Any]) -> dict[str, Any]:
    if capability == "uppercase":
        return {"text": payload["text"].upper()}
    if capability == "reverse":
        return {"text": payload["text"][::-1]}
    if capability == "pick":
        return pick(payload["data"], payload["path"])
    raise AgentError("E_CAPABILITY", f"unknown capability {capability!r}")


if __name__ == "__main__":
    serve(handle)
