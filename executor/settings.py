"""Settings of the executor side (``AIRLOCK_`` prefix): ``ExecutorSettings`` and the events
relay's ``RelaySettings``. Executors are trusted: they reach the database. The fields every
process shares (database, logging, telemetry) come from ``server.settings.CommonSettings``."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from executor.runtime.registry import check_name, runtime_names
from server.settings import CommonSettings

# Subjects are <prefix>.<agent>.<state> (server.wire.event_codec.subject).
DEFAULT_SUBJECT_PREFIX = "airlock.runs"


def _default_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class ExecutorSettings(CommonSettings):
    """Settings of ``airlock executor`` (and the executor part of ``airlock dev``)."""

    db_pool_size: int = Field(default=4, ge=1, le=100, description="PostgreSQL connections at most")
    executor_id: str = Field(default_factory=_default_id, description="unique per process")
    runtime: str = Field(default="auto", description="sandbox runtime: one of "
                         f"{', '.join(runtime_names())} (auto: dagger if reachable, else jail where it "
                         "runs, else podman)")
    relay_events: bool = Field(default=False, description="also run the NATS event relay in this "
                               "process (AIRLOCK_NATS_* settings; see docs/events.md)")
    slots: int = Field(default=2, ge=1, le=256, description="runs executed at once")
    lease_seconds: float = Field(default=15.0, ge=1, description="lease length; renewed by heartbeats")
    heartbeat_seconds: float = Field(default=2.0, gt=0, description="lease renewal interval")
    poll_seconds: float = Field(default=2.0, gt=0, description="queue poll when no NOTIFY arrives")
    schema_wait_seconds: float = Field(
        default=60.0, ge=0, description="at start-up, how long to wait for the database schema "
        "(created by `airlock serve` or `airlock migrate`) before exiting with status 3")
    grace_seconds: float = Field(default=10.0, ge=0, description="shutdown wait for running runs")
    secrets_dir: Path | None = Field(default=None, description="one file per secret, named after it")
    secrets_env_prefix: str = Field(default="AIRLOCK_SECRET_",
                                    description="or environment variables <prefix><NAME>")
    jail_bundle_dir: Path | None = Field(
        default=None, description="dagger runtime: where the jail's read-only bundle (its supervisor, "
        "bwrap, slirp4netns and their libraries, from this host) is assembled; unset: "
        "$XDG_CACHE_HOME/airlock/jail or ~/.cache/airlock/jail")
    podman_work_root: Path = Field(default=Path("/run/airlock"),
                                   description="per-run scratch directories (podman runtime)")
    podman_probe_image: str = Field(
        default="localhost/airlock/base:bookworm",
        description="podman runtime: local image (with /bin/sh) of the one trial sandbox run at "
        "start-up; made by `airlock base-image`")

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        return check_name(value)  # the registry's names, so a new runtime needs no edit here


class RelaySettings(CommonSettings):
    """Settings of the events relay (``airlock relay``, or inside ``airlock executor`` with
    ``AIRLOCK_RELAY_EVENTS``); the database is the outbox it publishes from."""

    nats_url: SecretStr = Field(default=SecretStr("nats://127.0.0.1:4222"),
                                description="NATS server(s), comma-separated; may hold credentials")
    nats_stream: str = Field(default="AIRLOCK_RUNS", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                             description="JetStream stream (created if missing)")
    nats_subject_prefix: str = Field(
        default=DEFAULT_SUBJECT_PREFIX,
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="subjects are <prefix>.<agent>.<state>; the stream takes <prefix>.>")
    nats_stream_retention: Literal["limits", "interest", "workqueue"] = Field(
        default="limits", description="JetStream retention policy (fixed at creation)")
    nats_stream_storage: Literal["file", "memory"] = Field(default="file",
                                                           description="stream storage")
    nats_stream_replicas: int = Field(default=1, ge=1, le=5, description="stream replicas")
    nats_stream_max_age_seconds: float = Field(default=7 * 86400, ge=0,
                                               description="drop events older than this (0: never)")
    nats_stream_max_bytes: int = Field(default=-1, ge=-1, description="stream size cap (-1: none)")
    nats_duplicate_window_seconds: float = Field(
        default=120.0, gt=0,
        description="JetStream drops a repeated Nats-Msg-Id within this window")
    relay_batch_size: int = Field(default=256, ge=1, le=10_000,
                                  description="events read and published per batch")
    relay_poll_seconds: float = Field(default=5.0, gt=0, le=300,
                                      description="fallback poll when no notification arrives")
    relay_ack_timeout_seconds: float = Field(default=5.0, gt=0, le=120,
                                             description="wait for one JetStream ack")
    relay_backoff_max_seconds: float = Field(default=5.0, gt=0, le=300,
                                             description="longest pause between failed attempts")
    audit_head_seconds: float = Field(
        default=60.0, ge=0, le=86400,
        description="publish the audit trail's head (digest of every hash chain's head) this "
                    "often (0: never)")
    audit_head_subject: str = Field(
        default="airlock.audit.head", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="NATS subject of the audit trail's head (core NATS, outside the stream)")

    @field_validator("nats_url")
    @classmethod
    def _nats(cls, v: SecretStr) -> SecretStr:
        for url in v.get_secret_value().split(","):
            if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError("must be nats://host:port (comma-separated for several)")
        return v

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.get_secret_value().split(",")]
