"""text-stats: counts and most frequent words of a text. Standard library only."""

from __future__ import annotations

import collections
import re
from typing import Any

from agents import AgentError, serve

WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")  # letters/digits, keeping don't and well-known


def stats(text: str, top: int) -> dict[str, Any]:
    words = [w.lower() for w in WORD.findall(text)]
    counts = collections.Counter(words)
    # Ties broken alphabetically so the answer is deterministic.
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "chars": len(text),
        "words": len(words),
        "lines": len(text.splitlines()),
        "unique_words": len(counts),
        "top_words": [{"word": w, "count": c} for w, c in ranked],
    }


def handle(capability: str, payload: dict[str, Any]) -> dict[str, Any]:
    if capability != "stats":
        raise AgentError("E_CAPABILITY", f"unknown capability {capability!r}")
    return stats(payload["text"], int(payload.get("top", 5)))


if __name__ == "__main__":
    serve(handle)
