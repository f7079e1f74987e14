"""``airlock usage``: each owner's consumption against its quotas."""

from __future__ import annotations

import argparse

from airlock.cli._client import call, connect
from airlock.cli._framework import EXIT_OK, Commands
from airlock.cli._output import print_json, print_table, when
from airlock.v1 import usage_service_pb2 as us


def _of(used: float, quota: us.OwnerQuota, name: str, fmt: str = "{:g}") -> str:
    """``used / quota`` (or ``used`` alone when the owner has no such quota)."""
    text = fmt.format(used)
    return f"{text} / {fmt.format(getattr(quota, name))}" if quota.HasField(name) else text


def _ceilings(q: us.OwnerQuota) -> str:
    lim = q.max_limits
    parts = [f"{name} {getattr(lim, name):g}" for name in
             ("memory_mib", "timeout_seconds", "pids", "cpus", "output_kib", "log_kib")
             if getattr(lim, name)]
    return ", ".join(parts) or "-"


async def cmd_usage(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.usage.GetUsage, us.GetUsageRequest(owner=ns.owner or ""))
    if ns.json:
        print_json(resp)
        return EXIT_OK
    rows = [(o.owner, _of(o.runs_in_flight, o.quota, "runs_in_flight"),
             _of(o.runs_today, o.quota, "runs_per_day"),
             _of(o.cpu_seconds_today, o.quota, "cpu_seconds_per_day", "{:.1f}"),
             _ceilings(o.quota)) for o in resp.owners]
    print_table(("OWNER", "IN FLIGHT", "RUNS TODAY", "CPU-S TODAY", "LIMIT CEILINGS"), rows,
                "no usage today")
    if rows:
        print(f"\nday (UTC) {when(resp, 'day_start_time')} .. {when(resp, 'day_end_time')}; "
              "used / quota, no quota shown: unlimited")
    return EXIT_OK


def register(cli: Commands) -> None:
    p = cli.add("usage", cmd_usage, remote=True, help="show owners' usage against their quotas",
                description="Each owner's runs in flight, runs submitted today and CPU-seconds "
                            "used today (UTC), against\nthe quotas of the policy file. Admins "
                            "and viewers see every owner, submitters their own.")
    p.add_argument("--owner", help="only this owner")
