"""The one table of sandbox runtimes: a configured name to a checked ``SandboxRuntime``.

Each runtime lives in its own module, which exports ``FACTORY`` (a ``RuntimeFactory``: the
runtime's settings model and a constructor taking it). ``RUNTIMES`` names those modules; they
are imported only when their runtime is wanted (dagger-io is heavy and may be absent on a host
that only runs podman). Adding a runtime is one module plus one line in ``RUNTIMES`` (and in
``AUTO_ORDER`` if ``auto`` should consider it).

``auto`` tries ``AUTO_ORDER`` in turn: a runtime with a quick probe is skipped unless the
probe says it is worth trying; the first whose ``check()`` passes wins. If nothing can sandbox
here it raises ``RuntimeUnavailable``: Airlock never runs an agent unsandboxed.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from executor.runtime.base import RuntimeFactory, RuntimeUnavailable, SandboxRuntime

log = logging.getLogger(__name__)

AUTO = "auto"
# name -> "module:attribute" of its RuntimeFactory
RUNTIMES: dict[str, str] = {
    "dagger": "executor.runtime.dagger:FACTORY",
    "podman": "executor.runtime.podman:FACTORY",
    "jail": "executor.runtime.jail:FACTORY",
}
# What ``auto`` prefers: a reachable Dagger engine (production), else the jail where its
# check (a real jailed trial run) passes, else podman (hosts where bubblewrap cannot run).
AUTO_ORDER: tuple[str, ...] = ("dagger", "jail", "podman")


def runtime_names() -> tuple[str, ...]:
    """Every name a runtime may be configured with (``auto`` first)."""
    return (AUTO, *RUNTIMES)


def check_name(name: str) -> str:
    """``name`` if it is a configurable runtime, else ``ValueError`` listing the names."""
    if name not in runtime_names():
        raise ValueError(f"unknown sandbox runtime {name!r}; expected one of "
                         f"{', '.join(runtime_names())}")
    return name


def load_factory(name: str) -> RuntimeFactory[Any]:
    """Import the factory of runtime ``name``; ``RuntimeUnavailable`` if its module fails."""
    module_name, _, attr = RUNTIMES[check_name(name)].partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except Exception as e:  # absent or broken dependency (e.g. dagger-io)
        raise RuntimeUnavailable(f"{name} runtime: cannot import it: {e}") from e
    if not isinstance(factory, RuntimeFactory):
        raise TypeError(f"{RUNTIMES[name]} is not a RuntimeFactory")
    return factory


async def _checked(factory: RuntimeFactory[Any], options: dict[str, Any]) -> SandboxRuntime:
    runtime = factory.build(options)
    await runtime.check()
    return runtime


async def _why_not(name: str, factory: RuntimeFactory[Any]) -> str | None:
    """``auto`` only: None if ``name`` is worth a full check here, else the reason to skip."""
    if factory.probe is None:
        return None
    try:
        return await factory.probe()
    except Exception as e:
        log.info("%s runtime probe failed: %s", name, e)
        return f"{name}: probe failed ({e})"


async def resolve_runtime(name: str, /, **options: Any) -> SandboxRuntime:
    """Return a checked runtime for ``name`` (``auto`` or a key of ``RUNTIMES``).

    ``options`` are executor setting values by name (``ExecutorSettings.model_dump()``, or a
    few in tests); each runtime's settings model takes those it declares. Raises
    ``ValueError`` for an unknown name or a malformed option and ``RuntimeUnavailable`` when
    the runtime (or, for ``auto``, every runtime) is unusable.
    """
    if check_name(name) != AUTO:
        return await _checked(load_factory(name), options)
    reasons = []
    for candidate in AUTO_ORDER:
        try:
            factory = load_factory(candidate)
        except RuntimeUnavailable as e:
            log.info("%s", e)
            reasons.append(str(e))
            continue
        skip = await _why_not(candidate, factory)
        if skip is not None:
            reasons.append(skip)
            continue
        try:
            return await _checked(factory, options)
        except RuntimeUnavailable as e:
            reasons.append(str(e))
    raise RuntimeUnavailable("no sandbox runtime usable: " + "; ".join(reasons))
