"""Polling helpers for asynchronous effects (never fixed sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


# A polling helper: ``timeout`` is its own deadline, not a cancellation scope.
async def assert_eventually(
        probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], *,
        timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if check(last):
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s; last value: {last!r}")


def wait_until(
        cond: Callable[[], bool], *, timeout: float = 10.0, interval: float = 0.02,
        what: str = "condition") -> None:
    """Block until ``cond()`` is true (for tests driving subprocesses synchronously)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


async def wait_for_condition(
        cond: Callable[[], bool], *, timeout: float = 10.0, interval: float = 0.02,
        what: str = "condition") -> None:
    """Await until the synchronous ``cond()`` is true."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(interval)
