"""API keys (hash only), authentication, and the executor fleet."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from server.domain.clock import Clock, utcnow
from server.domain.errors import InvalidArgument, KeyNotFound, Unauthenticated
from server.domain.models import ApiKey, ExecutorInfo
from server.domain.principal import Principal, Role
from server.ids import new_key_id
from server.services.validation import require
from server.store import Store

OWNER_RE = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$"


class ExecutorState(StrEnum):
    """Derived from the executor's row: stopped_at set, or heartbeat age vs the lease."""

    ACTIVE = "active"  # heartbeat within the lease timeout
    LOST = "lost"  # no heartbeat within the lease timeout, never stopped (killed, cut off)
    STOPPED = "stopped"  # stopped on purpose


def hash_secret(secret: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CreateKeyRequest:
    """Create an API key for ``owner`` with ``role``."""

    owner: str
    role: Role


@dataclass(frozen=True, slots=True)
class RevokeKeyRequest:
    """Revoke the API key ``key_id`` (takes effect within the auth cache time)."""

    key_id: str


class AdminService:
    def __init__(self, store: Store, *, clock: Clock = utcnow, auth_cache_seconds: float = 5.0,
                 lease_seconds: float = 30.0, executor_retention_seconds: float = 86400.0) -> None:
        self.store = store
        self.clock = clock
        self.auth_cache_seconds = auth_cache_seconds
        self.lease_seconds = lease_seconds
        self.executor_retention_seconds = executor_retention_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def create_key(self, by: str, req: CreateKeyRequest) -> tuple[ApiKey, str]:
        """Returns the key and its token; the token is not stored and cannot be shown again."""
        owner, role = req.owner, req.role
        require("owner", owner, pattern=OWNER_RE, max_len=200)
        key_id = new_key_id()
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        async with self.store.transaction() as tx:
            key = await tx.keys.add(key_id=key_id, owner=owner, role=role,
                                    secret_hash=hash_secret(secret), now=now)
            await tx.audit.record(actor=by, action="key.create", target=key_id, now=now,
                                  details={"owner": owner, "role": role.value})
        return key, f"{key_id}.{secret}"

    async def ensure_first_admin(self) -> str | None:
        """Create an admin key when there is none; returns its token (else None)."""
        async with self.store.read() as tx:
            if await tx.keys.count_active_admins():
                return None
        _, token = await self.create_key("system", CreateKeyRequest("admin", Role.ADMIN))
        return token

    async def list_keys(self) -> list[ApiKey]:
        async with self.store.read() as tx:
            return await tx.keys.all()

    async def get_key(self, key_id: str) -> ApiKey:
        """The key ``key_id`` (never its secret or hash)."""
        async with self.store.read() as tx:
            found = await tx.keys.get_with_hash(key_id)
        if found is None:
            raise KeyNotFound(key_id)
        return found[0]

    async def revoke_key(self, by: str, req: RevokeKeyRequest) -> ApiKey:
        key_id = req.key_id
        require("id", key_id, pattern=r"^key_[0-9a-z]{12}$", max_len=40)
        now = self.clock()
        async with self.store.transaction() as tx:
            found = await tx.keys.get_with_hash(key_id)
            if found is None:
                raise KeyNotFound(key_id)
            await tx.keys.revoke(key_id, now)
            await tx.audit.record(actor=by, action="key.revoke", target=key_id, now=now)
            found = await tx.keys.get_with_hash(key_id)
        self._cache.clear()
        assert found is not None
        return found[0]

    async def authenticate(self, token: str | None) -> Principal:
        """Map a bearer token to a principal. Results are cached briefly (revocation lag)."""
        if not token:
            raise Unauthenticated("missing bearer token (authorization: Bearer <key>)")
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            principal = hit[1]
        else:
            principal = await self._lookup(token)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now + self.auth_cache_seconds, principal)
        if principal is None:
            raise Unauthenticated("invalid or revoked API key")
        return principal

    async def _lookup(self, token: str) -> Principal | None:
        key_id, _, secret = token.partition(".")
        if not secret or not key_id.startswith("key_") or len(key_id) > 40:
            return None
        async with self.store.read() as tx:
            found = await tx.keys.get_with_hash(key_id)
        if found is None:
            return None
        key, stored = found
        if key.revoked_at is not None or not hmac.compare_digest(stored, hash_secret(secret)):
            return None
        return Principal(key_id=key.id, owner=key.owner, role=key.role)

    def executor_state(self, e: ExecutorInfo, now: datetime) -> ExecutorState:
        if e.stopped_at is not None:
            return ExecutorState.STOPPED
        if now - e.heartbeat_at > timedelta(seconds=self.lease_seconds):
            return ExecutorState.LOST
        return ExecutorState.ACTIVE

    async def drop_old_executors(self) -> int:
        """Forget executors stopped, or lost, longer ago than the retention period.

        A lost executor counts as lost from its last heartbeat plus the lease timeout (when the
        others start re-queueing its runs)."""
        now = self.clock()
        keep = timedelta(seconds=self.executor_retention_seconds)
        async with self.store.transaction() as tx:
            return await tx.fleet.drop(
                stopped_before=now - keep,
                heartbeat_before=now - keep - timedelta(seconds=self.lease_seconds))

    async def list_executors(self) -> list[tuple[ExecutorInfo, ExecutorState]]:
        """Executors still retained, each with its state (active, lost or stopped)."""
        await self.drop_old_executors()
        now = self.clock()
        async with self.store.read() as tx:
            rows = await tx.fleet.all()
        return [(e, self.executor_state(e, now)) for e in rows]


def parse_role(field: str, value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidArgument(field, f"unknown role {value!r}; one of "
                              f"{', '.join(r.value for r in Role)}") from None
