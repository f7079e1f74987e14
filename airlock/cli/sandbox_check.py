"""``airlock sandbox-check``: the executor's start-up check of its sandbox runtime, alone."""

from __future__ import annotations

import argparse

from airlock.cli._framework import EXIT_CONFIG, EXIT_OK, Commands
from airlock.cli._output import err, print_json
from airlock.cli._settings import load_settings


async def cmd_sandbox_check(ns: argparse.Namespace) -> int:
    from executor.runtime.base import RuntimeUnavailable
    from executor.runtime.registry import resolve_runtime
    from executor.settings import ExecutorSettings

    overrides = {"runtime": ns.runtime} if ns.runtime else {}
    settings = load_settings(ExecutorSettings, **overrides)
    try:  # the same runtime, from the same settings, as `airlock executor`
        runtime = await resolve_runtime(settings.runtime, **settings.model_dump())
    except RuntimeUnavailable as e:
        if ns.json:
            print_json({"ok": False, "runtime": settings.runtime, "error": str(e)})
        err(f"error: cannot run sandboxes here: {e}")
        return EXIT_CONFIG
    image = getattr(runtime, "probe_image", None)
    if ns.json:
        print_json({"ok": True, "runtime": runtime.name, "probe_image": image})
    else:
        tried = f"a trial sandbox ran from {image}" if image else "its start-up check passed"
        print(f"sandbox runtime {runtime.name}: ok ({tried})")
    return EXIT_OK


def register(cli: Commands) -> None:
    from executor.runtime.registry import runtime_names  # names only; no runtime is imported

    p = cli.add(
        "sandbox-check", cmd_sandbox_check,
        help="check that this host can run sandboxes, as `airlock executor` would",
        description=(
            "Resolve the sandbox runtime exactly as `airlock executor` does (AIRLOCK_RUNTIME,\n"
            "AIRLOCK_PODMAN_WORK_ROOT, AIRLOCK_PODMAN_PROBE_IMAGE, ...) and run its start-up\n"
            "check. For the jail and podman that starts one real trivial sandbox with every\n"
            "option a run uses (the jail: supervisor, cgroup, bubblewrap, seccomp; podman: each\n"
            "limit, --init, the work-dir tmpfs and binds) from the probe image (default\n"
            "localhost/airlock/base:bookworm, made by `airlock base-image`).\n"
            "Exit 0 if it works; else exit 3 with a message naming what is missing\n"
            "(catatonit for --init, runc, the probe image, ...). scripts/setup.sh ends with it."
        ),
    )
    p.add_argument("--runtime", metavar="NAME",
                   help=f"sandbox runtime: {', '.join(runtime_names())} "
                        "(default AIRLOCK_RUNTIME or auto)")
