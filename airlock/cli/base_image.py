"""``airlock base-image``: the offline base image for agent Containerfiles."""

from __future__ import annotations

import argparse

from airlock.cli._framework import EXIT_OK, CliError, Commands
from airlock.cli._output import err, print_json


def cmd_base_image(ns: argparse.Namespace) -> int:
    from executor.base_image import DEFAULT_TAG, make_base_image

    wanted = ns.tag or DEFAULT_TAG
    if not ns.json:
        err(f"making {wanted} (debootstrap + podman import; the first time takes a minute)")
    try:
        tag = make_base_image(wanted, force=ns.force, refresh_cache=ns.refresh)
    except (RuntimeError, OSError) as e:
        raise CliError(str(e)) from None
    if ns.json:
        print_json({"image": tag})
    else:
        print(tag)
    return EXIT_OK


def register(cli: Commands) -> None:
    p = cli.add("base-image", cmd_base_image, help="make the offline base image for agents",
                description="Make a local base image for agent Containerfiles without any "
                            "container registry:\ndebootstrap a minimal Debian with python3, then "
                            "`podman import` it.\nUse it with `airlock agent build --base-image "
                            "TAG`.")
    p.add_argument("--tag", default=None,
                   help="image tag (default: executor.base_image.DEFAULT_TAG, "
                        "localhost/airlock/base:bookworm)")
    p.add_argument("--force", action="store_true", help="re-import even if the image exists")
    p.add_argument("--refresh", action="store_true",
                   help="rerun debootstrap instead of reusing the cached root filesystem")
