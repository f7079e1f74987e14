"""Time source, injectable so tests can move time (expiry) without sleeping; used by the
control plane and the executor alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
