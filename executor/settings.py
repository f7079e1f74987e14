"""Executor settings (``AIRLOCK_`` prefix). Executors are trusted: they reach the database."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from executor.runtime.registry import check_name, runtime_names


def _default_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class ExecutorSettings(BaseSettings):
    """Settings of ``airlock executor`` (and the executor part of ``airlock dev``)."""

    model_config = SettingsConfigDict(env_prefix="AIRLOCK_", extra="ignore")

    database_url: SecretStr = Field(default=SecretStr("sqlite:///airlock-data/airlock.db"),
                                    description="the control plane's database")
    db_pool_size: int = Field(default=4, ge=1, le=100, description="PostgreSQL connections at most")
    executor_id: str = Field(default_factory=_default_id, description="unique per process")
    runtime: str = Field(default="auto", description="sandbox runtime: one of "
                         f"{', '.join(runtime_names())} (auto: dagger if reachable, else podman)")
    engine_has_egress: bool = Field(
        default=False, description="dagger runtime only: the engine can reach the internet, so this "
        "executor takes only runs granted network egress (and an engine without takes none of them)")
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
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$",
                           description="DEBUG, INFO, WARNING or ERROR")
    log_format: str = Field(default="json", pattern="^(json|text)$",
                            description="json: one object per line with run_id and trace_id; or text")
    podman_work_root: Path = Field(default=Path("/run/airlock"),
                                   description="per-run scratch directories (podman runtime)")
    podman_probe_image: str = Field(
        default="localhost/airlock/base:bookworm",
        description="podman runtime: local image (with /bin/sh) of the one trial sandbox run at "
        "start-up; made by `airlock base-image`")
    otlp_endpoint: str | None = Field(default=None,
                                      description="OTLP/HTTP endpoint for traces and metrics")

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        return check_name(value)  # the registry's names, so a new runtime needs no edit here
