"""``airlock audit``: verify the tamper-evident audit trail, list and export its records
(admin and viewer roles)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import TextIO

from google.protobuf.timestamp_pb2 import Timestamp

from airlock.cli._args import positive_int
from airlock.cli._client import ApiClient, call, connect
from airlock.cli._framework import EXIT_ERROR, EXIT_OK, Commands
from airlock.cli._output import clip, key_values, print_json, print_table, to_dict, when
from airlock.v1 import audit_service_pb2 as aus


def _time(text: str) -> Timestamp:
    """An ISO 8601 time (a date alone is midnight UTC; no offset means UTC)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


async def cmd_audit_verify(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        api.timeout = max(api.timeout, 600.0)  # it reads every run
        v = await call(api, api.audit.VerifyAuditTrail,
                       aus.VerifyAuditTrailRequest(run_id=ns.run_id))
    if ns.json:
        print_json(v)
    elif v.ok:
        print(f"OK: {v.runs_checked} runs, {v.records_checked} chained records verified; "
              f"chain digest {v.chain_digest}")
    else:
        print(f"MISMATCH at {v.problem.record}: {v.problem.problem}")
        print(f"({v.runs_checked} runs checked before it)")
    return EXIT_OK if v.ok else EXIT_ERROR


def _request(ns: argparse.Namespace, page_token: str, page_size: int) -> aus.ListAuditRecordsRequest:
    req = aus.ListAuditRecordsRequest(page_size=page_size, page_token=page_token,
                                      target=ns.target, actor=ns.actor)
    if ns.since is not None:
        req.since.CopyFrom(ns.since)
    if ns.until is not None:
        req.until.CopyFrom(ns.until)
    return req


async def _pages(api: ApiClient, ns: argparse.Namespace, limit: int | None
                 ) -> list[aus.AuditRecord]:
    out: list[aus.AuditRecord] = []
    token = ""
    while limit is None or len(out) < limit:
        resp = await call(api, api.audit.ListAuditRecords, _request(ns, token, 200))
        out.extend(resp.records)
        token = resp.next_page_token
        if not token:
            break
    return out if limit is None else out[:limit]


async def cmd_audit_list(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        records = await _pages(api, ns, ns.limit)
    if ns.json:
        print_json({"records": [to_dict(r) for r in records]})
        return EXIT_OK
    rows = [(r.id, when(r, "time"), r.actor, r.action, r.target,
             clip(r.details_json, 50)) for r in records]
    print_table(("ID", "TIME", "ACTOR", "ACTION", "TARGET", "DETAILS"), rows, "no audit records")
    return EXIT_OK


async def cmd_audit_export(ns: argparse.Namespace) -> int:
    """JSON lines, one record each, oldest first (the protobuf JSON of AuditRecord, with
    details as an object)."""
    out: TextIO = (await asyncio.to_thread(open, ns.output, "w", encoding="utf-8")
                   if ns.output != "-" else sys.stdout)
    n = 0
    try:
        async with connect(ns) as api:
            token = ""
            while True:
                resp = await call(api, api.audit.ListAuditRecords, _request(ns, token, 200))
                for r in resp.records:
                    doc = to_dict(r)
                    doc["details"] = json.loads(doc.pop("details_json", "{}") or "{}")
                    out.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
                    n += 1
                token = resp.next_page_token
                if not token:
                    break
    finally:
        if out is not sys.stdout:
            out.close()
    if ns.output != "-":
        print(key_values([("records", n), ("written to", ns.output)]), file=sys.stderr)
    return EXIT_OK


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=_time, metavar="TIME",
                   help="only records at or after this ISO 8601 time (UTC unless it says)")
    p.add_argument("--until", type=_time, metavar="TIME", help="only records before this time")
    p.add_argument("--target", default="", metavar="ID",
                   help="only records about this run id, key id or agent@version")
    p.add_argument("--actor", default="", help="only records by this key owner or executor")


def register(cli: Commands) -> None:
    audit = cli.group("audit", help="verify the tamper-evident audit trail, list and export it")
    p = audit.add(
        "verify", cmd_audit_verify, remote=True, help="recompute every hash chain and digest",
        description="Recompute every run's hash chain, its input, output, logs and action "
                    "digests and its approval decisions, then the audit chain. Prints OK and "
                    "the chain digest, or the first record that does not match (exit 1).")
    p.add_argument("--run", dest="run_id", default="", metavar="RUN_ID",
                   help="verify only this run")
    p = audit.add("list", cmd_audit_list, remote=True, help="list audit records, oldest first")
    _filters(p)
    p.add_argument("--limit", type=positive_int, default=100, help="at most this many (default 100)")
    p = audit.add("export", cmd_audit_export, remote=True,
                  help="write audit records as JSON lines",
                  description="Write every audit record of a period (--since, --until) as one "
                              "JSON object per line, oldest first, with its chain, position, "
                              "previous hash and hash.")
    _filters(p)
    p.add_argument("--output", "-o", default="-", metavar="FILE",
                   help="where to write (default: stdout)")
