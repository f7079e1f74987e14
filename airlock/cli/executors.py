"""``airlock executors``: the executor fleet as the control plane sees it."""

from __future__ import annotations

import argparse

from airlock.cli._client import call, connect
from airlock.cli._framework import EXIT_OK, Commands
from airlock.cli._output import print_json, print_table, when
from airlock.v1 import admin_service_pb2 as adm


async def cmd_executors_list(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.admin.ListExecutors, adm.ListExecutorsRequest())
    if ns.json:
        print_json(resp)
        return EXIT_OK
    rows = [(e.id, e.host, e.runtime, f"{e.slots_in_use}/{e.slots}",
             adm.ExecutorState.Name(e.state).removeprefix("EXECUTOR_STATE_").lower(),
             when(e, "start_time"), when(e, "heartbeat_time"))
            for e in resp.executors]
    print_table(("ID", "HOST", "RUNTIME", "SLOTS", "STATE", "STARTED", "HEARTBEAT"), rows,
                "no executors registered")
    return EXIT_OK


def register(cli: Commands) -> None:
    ex = cli.group("executors", help="the executor fleet")
    ex.add("list", cmd_executors_list, remote=True,
           help="list executors with their slots and state (active, lost, stopped)",
           description="List the executor fleet. STATE: active (heartbeating), lost (no "
                       "heartbeat within the lease timeout: killed or cut off; its runs are "
                       "re-queued) or stopped (shut down). Stopped and lost executors are "
                       "dropped after AIRLOCK_EXECUTOR_RETENTION_SECONDS.")
