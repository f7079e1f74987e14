"""The agent registry: agents and their immutable versions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, exists, insert, or_, select, update
from sqlalchemy.engine import Row

from agents.manifest import Manifest, Risk, parse_manifest
from server.domain.models import Agent, AgentVersion
from server.store import tables as t
from server.store.base import Repository
from server.store.notify import REGISTRY

_AV = t.agent_versions
_AG = t.agents
_AC = t.agent_capabilities

# Hot statements, built once (see runs.py). Parameters are bound at execution.
_SELECT_AGENT_AND_VERSIONS = (  # one round trip; version columns are NULL if it has none
    select(_AG.c.description.label("agent_description"),
           _AG.c.created_at.label("agent_created_at"), *_AV.c)
    .select_from(_AG.outerjoin(_AV, _AV.c.agent_name == _AG.c.name))
    .where(_AG.c.name == bindparam("name")).order_by(_AV.c.id))
_SELECT_VERSIONS = select(_AV).where(_AV.c.agent_name == bindparam("name")).order_by(_AV.c.id)
_SELECT_VERSION = select(_AV).where(_AV.c.agent_name == bindparam("name"),
                                    _AV.c.version == bindparam("version")).limit(1)
_SELECT_LATEST_VERSION = (select(_AV).where(_AV.c.agent_name == bindparam("name"),
                                            _AV.c.deprecated.is_(False))
                          .order_by(_AV.c.id.desc()).limit(1))

_MANIFESTS: dict[str, Manifest] = {}


def _live_capability(cond: ColumnElement[bool]) -> ColumnElement[bool]:
    """The listed agent has a version that is not deprecated with a capability matching
    ``cond`` (a deprecated version takes no runs, so it offers nothing)."""
    return exists().where(and_(_AC.c.version_id == _AV.c.id, _AV.c.agent_name == _AG.c.name,
                               _AV.c.deprecated.is_(False), cond))


def _manifest(doc: Any) -> Manifest:
    """Parse a stored manifest, once per distinct document (keyed by its content).

    Parsing re-validates every capability's JSON Schema against the meta-schema, which cost
    milliseconds on every read of a version; a manifest's content never changes, and the
    parsed model is frozen, so equal documents can share one parse.
    """
    key = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    m = _MANIFESTS.get(key)
    if m is None:
        m = parse_manifest(doc, stored=True)
        if len(_MANIFESTS) >= 1024:
            _MANIFESTS.clear()
        _MANIFESTS[key] = m
    return m


def _version(r: Row[Any]) -> AgentVersion:
    return AgentVersion(
        agent=r.agent_name, version=r.version, image=r.image, image_digest=r.image_digest,
        risk=Risk(r.risk), manifest=_manifest(r.manifest), deprecated=r.deprecated,
        deprecation_reason=r.deprecation_reason, created_at=r.created_at, created_by=r.created_by,
    )


def _agent(name: str, description: str, created_at: datetime,
           versions: Sequence[AgentVersion]) -> Agent:
    live = [v.version for v in versions if not v.deprecated]
    return Agent(name=name, description=description, created_at=created_at,
                 versions=tuple(v.version for v in versions),
                 latest_version=live[-1] if live else "")


class RegistryRepository(Repository):
    """``agents`` and ``agent_versions``."""

    __slots__ = ()

    async def get_agent(self, name: str) -> Agent | None:
        found = await self.get_agent_and_versions(name)
        return found[0] if found else None

    async def get_agent_and_versions(self, name: str) -> tuple[Agent, list[AgentVersion]] | None:
        """The agent and its versions, oldest first (one round trip)."""
        rows = list(await self._conn.execute(_SELECT_AGENT_AND_VERSIONS, {"name": name}))
        if not rows:
            return None
        versions = [_version(r) for r in rows if r.id is not None]
        return _agent(name, rows[0].agent_description, rows[0].agent_created_at,
                      versions), versions

    async def add_agent(self, *, name: str, description: str, by: str, now: datetime) -> None:
        await self._conn.execute(
            insert(_AG).values(name=name, description=description, created_at=now, created_by=by))
        self._changed(name)

    def _changed(self, name: str) -> None:
        """After the commit, every process drops ``name`` from its registry read cache."""
        self._unit.notify_keys.add((REGISTRY, name))

    async def describe_agent(self, name: str, description: str) -> None:
        """Replace the agent's description (the newest registered manifest's)."""
        await self._conn.execute(
            update(_AG).where(_AG.c.name == name).values(description=description))
        self._changed(name)

    async def list_agents(self, *, prefix: str = "", capability: str = "",
                          terms: Sequence[str] = (), after: str = "", limit: int) -> list[Agent]:
        """By name, starting after ``after``. ``prefix`` matches names literally;
        ``capability``: only agents with a version that is not deprecated offering that
        capability; ``terms``: each must occur (ignoring ASCII case, literally) in the agent's
        name or description or in a capability name or description of such a version."""
        q = select(_AG).order_by(_AG.c.name).limit(limit)
        if prefix:
            q = q.where(_AG.c.name.startswith(prefix, autoescape=True))
        if capability:
            q = q.where(_live_capability(_AC.c.name == capability))
        for term in terms:
            q = q.where(or_(
                _AG.c.name.icontains(term, autoescape=True),
                _AG.c.description.icontains(term, autoescape=True),
                _live_capability(or_(_AC.c.name.icontains(term, autoescape=True),
                                     _AC.c.description.icontains(term, autoescape=True)))))
        if after:
            q = q.where(_AG.c.name > after)
        rows = list(await self._conn.execute(q))
        if not rows:
            return []
        vrows = await self._conn.execute(
            select(_AV).where(_AV.c.agent_name.in_([r.name for r in rows])).order_by(_AV.c.id))
        by_agent: dict[str, list[AgentVersion]] = {}
        for vr in vrows:
            by_agent.setdefault(vr.agent_name, []).append(_version(vr))
        return [_agent(r.name, r.description, r.created_at, by_agent.get(r.name, []))
                for r in rows]

    async def list_versions(self, name: str) -> list[AgentVersion]:
        rows = await self._conn.execute(_SELECT_VERSIONS, {"name": name})
        return [_version(r) for r in rows]

    async def get_version(self, name: str, version: str) -> AgentVersion | None:
        """``version == ""`` means the newest version that is not deprecated."""
        if version:
            q = self._conn.execute(_SELECT_VERSION, {"name": name, "version": version})
        else:
            q = self._conn.execute(_SELECT_LATEST_VERSION, {"name": name})
        row = (await q).first()
        return _version(row) if row else None

    async def add_version(self, v: AgentVersion) -> None:
        """Insert the version and its capabilities (what ListAgents filters and searches)."""
        result = await self._conn.execute(insert(_AV).values(
            agent_name=v.agent, version=v.version, image=v.image, image_digest=v.image_digest,
            risk=int(v.risk), manifest=v.manifest.to_json(), deprecated=False,
            deprecation_reason="", created_at=v.created_at, created_by=v.created_by,
        ))
        version_id = result.inserted_primary_key[0]  # type: ignore[index]
        await self._conn.execute(insert(_AC), [
            {"version_id": version_id, "name": c.name, "description": c.description}
            for c in v.manifest.capabilities])
        self._changed(v.agent)

    async def deprecate_version(self, name: str, version: str, reason: str) -> None:
        await self._conn.execute(
            update(_AV).where(_AV.c.agent_name == name, _AV.c.version == version)
            .values(deprecated=True, deprecation_reason=reason))
        self._changed(name)
