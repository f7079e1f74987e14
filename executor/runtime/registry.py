"""The one factory that turns a configured runtime name into a usable ``SandboxRuntime``.

``auto`` prefers a reachable Dagger engine (production) and falls back to podman. If nothing
can sandbox here it raises ``RuntimeUnavailable``: Airlock never runs an agent unsandboxed.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

from executor.runtime.base import RuntimeUnavailable, SandboxRuntime

log = logging.getLogger(__name__)

RUNTIME_NAMES = ("auto", "dagger", "podman")


def _accepted(cls: type, opts: dict[str, Any]) -> dict[str, Any]:
    """Options may be meant for either runtime (the executor passes one set for both):
    give each only what its constructor accepts."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return opts
    return {k: v for k, v in opts.items() if k in params}


async def _dagger(opts: dict[str, Any], *, require: bool) -> SandboxRuntime | None:
    # Imported lazily: dagger-io is heavy, and the module may be absent or broken on a host
    # that only runs podman.
    try:
        mod = importlib.import_module("executor.runtime.dagger")
    except Exception as e:
        if require:
            raise RuntimeUnavailable(f"dagger runtime: cannot import it: {e}") from e
        log.info("dagger runtime not importable: %s", e)
        return None
    if not require:
        # auto-detection: only a positive quick probe counts (never a slow session attempt)
        try:
            reachable = bool(await mod.engine_reachable())
        except Exception as e:
            reachable = False
            log.info("dagger engine probe failed: %s", e)
        if not reachable:
            return None
    # Explicitly configured: DaggerRuntime.check() opens a real session, which also covers
    # runners a quick probe cannot see (docker-container://, ...).
    runtime: SandboxRuntime = mod.DaggerRuntime(
        **_accepted(mod.DaggerRuntime, opts)
    )
    await runtime.check()
    return runtime


async def _podman(opts: dict[str, Any]) -> SandboxRuntime:
    from executor.runtime.podman import PodmanRuntime

    runtime = PodmanRuntime(**_accepted(PodmanRuntime, opts))
    await runtime.check()
    return runtime


async def resolve_runtime(name: str, **opts: Any) -> SandboxRuntime:
    """Return a checked runtime for ``name`` (``auto``, ``dagger`` or ``podman``).

    ``opts`` go to the runtime's constructor. Raises ``ValueError`` for an unknown name and
    ``RuntimeUnavailable`` when the runtime (or, for ``auto``, every runtime) is unusable.
    """
    if name not in RUNTIME_NAMES:
        raise ValueError(f"unknown sandbox runtime {name!r}; expected one of {RUNTIME_NAMES}")
    if name == "dagger":
        runtime = await _dagger(opts, require=True)
        assert runtime is not None
        return runtime
    if name == "podman":
        return await _podman(opts)
    reasons = []
    try:
        dagger = await _dagger(opts, require=False)
    except RuntimeUnavailable as e:  # reachable but its check failed
        reasons.append(str(e))
        dagger = None
    if dagger is not None:
        return dagger
    if not reasons:
        reasons.append("dagger: no engine reachable")
    try:
        return await _podman(opts)
    except RuntimeUnavailable as e:
        reasons.append(str(e))
    raise RuntimeUnavailable("no sandbox runtime usable: " + "; ".join(reasons))
