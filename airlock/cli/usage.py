"""``airlock usage``: each owner's consumption against its quotas; ``airlock usage report``:
analytics over the runs submitted in a time range."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from airlock.cli._client import call, connect
from airlock.cli._framework import EXIT_OK, CliError, Commands
from airlock.cli._output import print_json, print_table, state_name, when
from airlock.v1 import usage_service_pb2 as us

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


def _moment(text: str, option: str, now: datetime) -> datetime:
    """``24h``/``7d``/``30m`` ago, or an ISO 8601 time (UTC unless it says otherwise)."""
    m = _AGO.match(text)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{option}: give a duration ago (24h, 7d, 30m) or an ISO time, "
                       f"not {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _stamp(t: datetime) -> Timestamp:
    s = Timestamp()
    s.FromDatetime(t)
    return s


def _seconds(p: us.Percentiles, name: str) -> str:
    return f"{getattr(p, name):.2f}s" if p.HasField(name) else "-"


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}" if n else "-"


async def cmd_report(ns: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    end = _moment(ns.until, "--until", now) if ns.until else now
    start = _moment(ns.since, "--since", end)
    async with connect(ns) as api:
        a = await call(api, api.usage.GetAnalytics, us.GetAnalyticsRequest(
            start_time=_stamp(start), end_time=_stamp(end), bucket_seconds=ns.bucket or 0))
    if ns.json:
        print_json(a)
        return EXIT_OK
    print(f"runs submitted {when(a, 'start_time')} .. {when(a, 'end_time')}: {a.total_runs}")
    if not a.total_runs:
        return EXIT_OK
    print()
    print_table(("STATE", "RUNS"), [(state_name(s.state), s.runs) for s in a.by_state], "")
    print()
    print_table(("", "P50", "P90", "P95", "P99"), [
        (label, *(_seconds(p, q) for q in ("p50", "p90", "p95", "p99")))
        for label, p in (("duration", a.duration), ("queue wait", a.queue_wait))], "")
    for title, groups in (("AGENT", a.by_agent), ("OWNER", a.by_owner)):
        print()
        print_table((title, "RUNS", "CPU-S", "WALL-S", "P50", "P95", "PEAK MIB MAX", "PEAK MIB AVG"),
                    [(g.key, g.runs, f"{g.cpu_seconds:.1f}", f"{g.wall_seconds:.1f}",
                      _seconds(g.duration, "p50"), _seconds(g.duration, "p95"),
                      _mib(g.peak_memory_max_bytes), _mib(g.peak_memory_avg_bytes))
                     for g in groups], "")
    return EXIT_OK


async def cmd_usage(ns: argparse.Namespace) -> int:
    if ns.view == "report":
        return await cmd_report(ns)
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
                            "and viewers see every owner, submitters their own.\n\n"
                            "`airlock usage report` prints analytics over the runs submitted in a "
                            "time range:\ncounts by state, duration and queue-wait percentiles, "
                            "usage by agent and by owner.")
    p.add_argument("view", nargs="?", choices=("report",),
                   help="report: analytics over the runs submitted in a time range (admin, viewer)")
    p.add_argument("--owner", help="only this owner (usage against quotas)")
    p.add_argument("--since", default="24h",
                   help="report: start of the range, a duration before --until (24h, 7d) or an "
                        "ISO time (default 24h)")
    p.add_argument("--until", help="report: end of the range, as --since (default now)")
    p.add_argument("--bucket", type=int, help="report: seconds per bucket of the series (--json)")
