"""Text and JSON output shared by the commands: enum labels, times, tables, key/value lists."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import agent_pb2, approval_pb2, run_pb2


def err(text: str) -> None:
    """One line on stderr (details and hints; stdout carries what scripts capture)."""
    print(text, file=sys.stderr, flush=True)


def _enum_label(enum: Any, value: int, prefix: str, *, lower: bool) -> str:
    try:
        name = str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        return str(value)
    return name.lower() if lower else name


def state_name(value: int) -> str:
    return _enum_label(run_pb2.RunState, value, "RUN_STATE_", lower=False)


def risk_name(value: int) -> str:
    return _enum_label(agent_pb2.Risk, value, "RISK_", lower=True)


def role_name(value: int) -> str:
    return _enum_label(adm.Role, value, "ROLE_", lower=True)


def status_name(value: int) -> str:
    return _enum_label(approval_pb2.ApprovalStatus, value, "APPROVAL_STATUS_", lower=True)


ROLES = ("admin", "submitter", "approver", "viewer", "executor")
STATES = tuple(state_name(v) for v in run_pb2.RunState.values() if v)


def when(message: Message, field: str) -> str:
    if not message.HasField(field):
        return "-"
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def print_json(value: Message | dict[str, Any] | list[Any]) -> None:
    doc = to_dict(value) if isinstance(value, Message) else value
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned columns, two spaces apart; the last column is not padded."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> None:
    print(table(headers, rows) if rows else empty)


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    items = [(k, str(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in items)


def clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def limits_text(lim: agent_pb2.Limits) -> str:
    parts = []
    if lim.memory_mib:
        parts.append(f"memory {lim.memory_mib} MiB")
    if lim.timeout_seconds:
        parts.append(f"timeout {lim.timeout_seconds:g}s")
    if lim.pids:
        parts.append(f"pids {lim.pids}")
    if lim.cpus:
        parts.append(f"cpus {lim.cpus:g}")
    if lim.output_kib:
        parts.append(f"output {lim.output_kib} KiB")
    if lim.log_kib:
        parts.append(f"logs {lim.log_kib} KiB")
    return ", ".join(parts) or "-"


def risk_text(risk: int, reasons: Sequence[str]) -> str:
    return risk_name(risk) + (f" ({'; '.join(reasons)})" if reasons else "")


def digest_text(digest: str) -> str:
    """An action digest as approvers compare it (``sha256:<hex>``), "-" when absent."""
    return f"sha256:{digest}" if digest else "-"
