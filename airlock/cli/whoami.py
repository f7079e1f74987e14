"""``airlock whoami``: the owner and role of the key in use."""

from __future__ import annotations

import argparse

from airlock.cli._client import call, connect
from airlock.cli._framework import EXIT_OK, Commands
from airlock.cli._output import print_json, role_name
from airlock.v1 import admin_service_pb2 as adm


async def cmd_whoami(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.admin.WhoAmI, adm.WhoAmIRequest())
    if ns.json:
        print_json(resp)
    else:
        print(f"{resp.key.owner} ({role_name(resp.key.role)}, key {resp.key.id})")
    return EXIT_OK


def register(cli: Commands) -> None:
    cli.add("whoami", cmd_whoami, remote=True, help="show the owner and role of the current key")
