"""Registry rules: versions are immutable, deprecated versions take no runs, all audited."""

from __future__ import annotations

import json
from dataclasses import dataclass

from agents.manifest import CAPABILITY_RE, NAME_RE, VERSION_RE, ManifestError, load_manifest_text
from server.domain.clock import Clock, utcnow
from server.domain.errors import AgentNotFound, InvalidArgument, VersionExists
from server.domain.models import Agent, AgentVersion, Page
from server.domain.principal import Principal
from server.services.validation import Paging, check, page_size, require
from server.store import Store

MAX_MANIFEST_BYTES = 256 * 1024
MAX_SEARCH_CHARS = 200
MAX_SEARCH_TERMS = 8


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """Register an agent version from its manifest (YAML or JSON text), pinning the digest."""

    manifest: str
    image_digest: str = ""


@dataclass(frozen=True, slots=True)
class ListAgentsRequest:
    """One page of agents by name, optionally only those starting with ``name_prefix``,
    offering ``capability``, or matching every whitespace-separated term of ``search``."""

    page_size: int = 0
    page_token: str = ""
    name_prefix: str = ""
    capability: str = ""
    search: str = ""


@dataclass(frozen=True, slots=True)
class DeprecateRequest:
    """Deprecate ``name``@``version``: it takes no new runs; ``reason`` is recorded."""

    name: str
    version: str
    reason: str = ""


class RegistryService:
    def __init__(self, store: Store, *, clock: Clock = utcnow) -> None:
        self.store = store
        self.clock = clock

    async def register(self, who: Principal, req: RegisterRequest) -> AgentVersion:
        """Register a version; registering the identical manifest again returns it unchanged."""
        manifest_text, image_digest = req.manifest, req.image_digest
        if len(manifest_text.encode("utf-8", "surrogatepass")) > MAX_MANIFEST_BYTES:
            raise InvalidArgument("manifest", f"is larger than {MAX_MANIFEST_BYTES} bytes")
        if not manifest_text.strip():
            raise InvalidArgument("manifest", "is required")
        check("image_digest", image_digest, pattern=r"^[a-z0-9]+:[a-f0-9]{32,128}$", max_len=200)
        try:
            manifest = load_manifest_text(manifest_text)
        except ManifestError as e:
            raise InvalidArgument(f"manifest.{e.field}" if e.field else "manifest", e.message) from None
        if manifest.image is None:
            raise InvalidArgument("manifest.image", "is required to register (build the image first)")
        now = self.clock()
        async with self.store.transaction() as tx:
            existing = await tx.registry.get_version(manifest.name, manifest.version)
            if existing is not None:
                same = json.dumps(existing.manifest.to_json(), sort_keys=True) == json.dumps(
                    manifest.to_json(), sort_keys=True)
                if same and existing.image_digest == image_digest:
                    return existing
                raise VersionExists(manifest.name, manifest.version)
            if await tx.registry.get_agent(manifest.name) is None:
                await tx.registry.add_agent(name=manifest.name, description=manifest.description,
                                            by=who.owner, now=now)
            else:
                await tx.registry.describe_agent(manifest.name, manifest.description)
            version = AgentVersion(
                agent=manifest.name, version=manifest.version, image=manifest.image,
                image_digest=image_digest, risk=manifest.risk, manifest=manifest,
                deprecated=False, deprecation_reason="", created_at=now, created_by=who.owner)
            await tx.registry.add_version(version)
            await tx.audit.record(actor=who.owner, action="agent.version.register",
                                  target=f"{manifest.name}@{manifest.version}", now=now,
                                  details={"image": manifest.image, "digest": image_digest,
                                           "risk": manifest.risk.label})
        return version

    async def get_agent(self, name: str) -> tuple[Agent, list[AgentVersion]]:
        require("name", name, pattern=NAME_RE, max_len=63)
        found = await self.store.agent_and_versions(name)
        if found is None:
            raise AgentNotFound(name)
        return found

    async def get_version(self, name: str, version: str) -> AgentVersion:
        require("name", name, pattern=NAME_RE, max_len=63)
        check("version", version, pattern=VERSION_RE, max_len=64)
        found = await self.store.agent_and_versions(name)
        v = pick_version(found[1], version) if found else None
        if v is None:
            raise AgentNotFound(name, version or None)
        return v

    async def list_agents(self, req: ListAgentsRequest) -> Page[Agent]:
        size = page_size(req.page_size)  # checked before the filters, as always
        check("name_prefix", req.name_prefix, pattern=r"^[a-z0-9-]*$", max_len=63)
        check("capability", req.capability, pattern=CAPABILITY_RE, max_len=63)
        terms = search_terms(req.search)
        paging = Paging.of(size, req.page_token, {
            "list": "agents", "name_prefix": req.name_prefix, "capability": req.capability,
            "search": terms})
        async with self.store.read() as tx:
            items = await tx.registry.list_agents(
                prefix=req.name_prefix, capability=req.capability, terms=terms,
                after=paging.after, limit=paging.fetch)
        return paging.page(items, key=lambda a: a.name)

    async def deprecate(self, who: Principal, req: DeprecateRequest) -> AgentVersion:
        name, version, reason = req.name, req.version, req.reason
        require("name", name, pattern=NAME_RE, max_len=63)
        require("version", version, pattern=VERSION_RE, max_len=64)
        check("reason", reason, max_len=2000)
        now = self.clock()
        async with self.store.transaction() as tx:
            v = await tx.registry.get_version(name, version)
            if v is None:
                raise AgentNotFound(name, version)
            if not v.deprecated:
                await tx.registry.deprecate_version(name, version, reason)
                await tx.audit.record(actor=who.owner, action="agent.version.deprecate",
                                      target=f"{name}@{version}", now=now,
                                      details={"reason": reason})
            v = await tx.registry.get_version(name, version)
        assert v is not None
        return v


def pick_version(versions: list[AgentVersion], version: str) -> AgentVersion | None:
    """``version`` among ``versions`` (oldest first); ``""``: the newest not deprecated."""
    if version:
        return next((v for v in versions if v.version == version), None)
    return next((v for v in reversed(versions) if not v.deprecated), None)


def search_terms(search: str) -> list[str]:
    """``search`` split on whitespace: each term must occur in a listed agent's text."""
    check("search", search, max_len=MAX_SEARCH_CHARS)
    terms = search.split()
    if len(terms) > MAX_SEARCH_TERMS:
        raise InvalidArgument("search", f"has more than {MAX_SEARCH_TERMS} words")
    return terms
