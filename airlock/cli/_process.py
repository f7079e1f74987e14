"""Signals for the long-running commands (``executor``, ``relay``, ``dev``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

log = logging.getLogger(__name__)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """First SIGINT/SIGTERM asks for a graceful stop; a second one exits at once."""
    loop = asyncio.get_running_loop()

    def handler() -> None:
        if stop.is_set():
            raise SystemExit(130)
        log.info("stopping (again to force)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, handler)
