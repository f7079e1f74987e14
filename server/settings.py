"""Settings: environment variables with the ``AIRLOCK_`` prefix, validated once at start-up.

``CommonSettings`` holds what every process reads the same way (the database, logging,
telemetry); ``ServerSettings`` here, and ``ExecutorSettings`` and ``RelaySettings`` in
``executor.settings``, add their own fields to it. One environment serves every process:
variables a process does not use are ignored.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CommonSettings(BaseSettings):
    """The fields every Airlock process shares, with one validator each."""

    model_config = SettingsConfigDict(env_prefix="AIRLOCK_", extra="ignore")

    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///airlock-data/airlock.db"),
        description="the control plane's database: postgresql://user@host:5432/db or "
                    "sqlite:///path/to/file.db",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR "
                           "(any case)")
    log_format: str = Field(default="json", pattern="^(json|text)$",
                            description="json: one object per line with run_id and trace_id; or text")
    otlp_endpoint: str | None = Field(default=None,
                                      description="OTLP/HTTP endpoint for traces and metrics")

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.upper() not in LOG_LEVELS:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v.upper()

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: SecretStr) -> SecretStr:
        s = v.get_secret_value()
        if not (s.startswith("postgresql") or s.startswith("sqlite")):
            raise ValueError("must start with postgresql:// or sqlite://")
        return v


class ServerSettings(CommonSettings):
    """Settings of ``airlock serve`` (and the control-plane part of ``airlock dev``)."""

    db_pool_size: int = Field(default=20, ge=1, le=500,
                              description="PostgreSQL connections each serving process keeps "
                              "at most")
    serve_processes: int = Field(
        default=0, ge=0, le=256,
        description="serving processes of `airlock serve`, sharing its ports (each a full gRPC "
        "and HTTP server); 0: one per CPU core on PostgreSQL. SQLite always uses 1")
    grpc_listen: str = Field(default="127.0.0.1:50051", description="host:port of the gRPC server")
    http_listen: str = Field(default="127.0.0.1:8080", description="host:port of gRPC-Web and the UI")
    http_enabled: bool = Field(default=True, description="serve gRPC-Web and the UI on http_listen")
    policy_file: Path | None = Field(default=None, description="YAML risk policy file: the "
                                     "approvals each risk needs (format: see Risk policy file "
                                     "below; default: built-in)")
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024,
                                   description="largest request or response message accepted")
    max_input_bytes: int = Field(default=256 * 1024, ge=1, description="largest run input (JSON)")
    expiry_sweep_seconds: float = Field(default=1.0, gt=0, le=3600,
                                        description="how often expired approvals are swept")
    watch_poll_seconds: float = Field(default=1.0, gt=0, le=60,
                                      description="fallback poll of WatchRun/WatchApprovals")
    auth_cache_seconds: float = Field(default=5.0, ge=0, le=300,
                                      description="how long a verified key is cached (revocation lag)")
    lease_seconds: float = Field(default=15.0, gt=0, description="executor lease timeout")
    executor_retention_seconds: float = Field(
        default=86400.0, ge=0, description="how long a stopped or lost executor stays listed "
        "(`airlock executors list`) before it is dropped")
    max_attempts: int = Field(default=3, ge=1, le=20, description="attempts before LOST")
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate: enables gRPC TLS")
    tls_key_file: Path | None = Field(default=None, description="PEM private key for TLS")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed for gRPC-Web")
    admin_token_file: Path | None = Field(
        default=None, description="where the first admin key is written (0600) at first start")
    migrate_on_start: bool = Field(default=True, description="apply migrations at start-up")
    nats_url: SecretStr | None = Field(
        default=None, description="NATS server(s), comma-separated, for runs submitted by NATS "
        "request; unset: no NATS (events still stream over gRPC from the database)")
    page_token_key: SecretStr | None = Field(
        default=None, description="key authenticating page tokens (HMAC-SHA256); unset: a "
        "random key per process, so tokens do not survive a restart: give every process of "
        "one deployment the same key")
    nats_submit_subject: str = Field(default="airlock.submit",
                                     pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
                                     description="subject answered with SubmitRun over NATS")

    @field_validator("grpc_listen", "http_listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be host:port")
        return v
