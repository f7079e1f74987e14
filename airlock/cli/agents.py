"""``airlock agents``: the agent registry (register, list, inspect, deprecate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from airlock.cli._client import call, connect
from airlock.cli._framework import EXIT_OK, CliError, Commands
from airlock.cli._output import (
    clip,
    key_values,
    limits_text,
    print_json,
    print_table,
    risk_name,
    to_dict,
    when,
)
from airlock.v1 import agent_pb2
from airlock.v1 import registry_service_pb2 as reg


def manifest_source(path_or_text: str) -> str:
    """A folder (its agent.yaml), a file, ``-`` (stdin), or the manifest text itself."""
    if path_or_text in ("-", "@-"):
        return sys.stdin.read()
    if "\n" not in path_or_text:
        p = Path(path_or_text)
        if p.is_dir():
            p = p / "agent.yaml"
        if p.is_file():
            return p.read_text()
        if not path_or_text.lstrip().startswith("{"):
            raise CliError(f"{path_or_text}: no such file or folder (expected agent.yaml or "
                           "a folder holding one)")
    return path_or_text


async def register_manifest(ns: argparse.Namespace, text: str, image_digest: str = "") -> int:
    """Register one manifest and print the version (shared with ``airlock agent register``)."""
    async with connect(ns) as api:
        resp = await call(api, api.registry.RegisterAgentVersion,
                          reg.RegisterAgentVersionRequest(manifest=text, image_digest=image_digest))
    v = resp.version
    if ns.json:
        print_json(resp)
    else:
        print(f"registered {v.agent} {v.version} (risk {risk_name(v.risk)}, "
              f"image {v.image}{' @ ' + v.image_digest if v.image_digest else ''})")
    return EXIT_OK


async def cmd_agents_register(ns: argparse.Namespace) -> int:
    return await register_manifest(ns, manifest_source(ns.manifest), ns.image_digest)


async def cmd_agents_list(ns: argparse.Namespace) -> int:
    agents: list[agent_pb2.Agent] = []
    async with connect(ns) as api:
        token = ""
        while True:
            resp = await call(api, api.registry.ListAgents, reg.ListAgentsRequest(
                page_size=100, page_token=token, name_prefix=ns.prefix,
                capability=ns.capability, search=ns.search))
            agents.extend(resp.agents)
            token = resp.next_page_token
            if not token:
                break
    if ns.json:
        print_json({"agents": [to_dict(a) for a in agents]})
        return EXIT_OK
    rows = [(a.name, a.latest_version or "-", ", ".join(a.versions), clip(a.description))
            for a in agents]
    print_table(("NAME", "LATEST", "VERSIONS", "DESCRIPTION"), rows, "no agents")
    return EXIT_OK


def _version_detail(v: agent_pb2.AgentVersion) -> str:
    pairs: list[tuple[str, object]] = [
        ("agent", v.agent),
        ("version", v.version + (" (deprecated: " + v.deprecation_reason + ")"
                                 if v.deprecated else "")),
        ("description", clip(v.description, 200) or "-"),
        ("image", v.image),
        ("image digest", v.image_digest or "-"),
        ("entrypoint", " ".join(v.entrypoint) or "(image default)"),
        ("risk", risk_name(v.risk)),
        ("network", "may ask" if v.network else "never"),
        ("secrets", ", ".join(v.secrets) or "-"),
        ("default limits", limits_text(v.default_limits)),
        ("max limits", limits_text(v.max_limits)),
        ("registered", f"{when(v, 'create_time')} by {v.created_by or '-'}"),
    ]
    for c in v.capabilities:
        pairs.append(("capability", c.name + (f": {clip(c.description, 100)}"
                                              if c.description else "")))
    return key_values(pairs)


async def cmd_agents_get(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        if ns.version:
            vresp = await call(api, api.registry.GetAgentVersion,
                               reg.GetAgentVersionRequest(name=ns.name, version=ns.version))
            if ns.json:
                print_json(vresp)
            else:
                print(_version_detail(vresp.version))
            return EXIT_OK
        resp = await call(api, api.registry.GetAgent, reg.GetAgentRequest(name=ns.name))
    if ns.json:
        print_json(resp)
        return EXIT_OK
    a = resp.agent
    print(key_values([("agent", a.name), ("description", clip(a.description, 200) or "-"),
                      ("latest", a.latest_version or "- (all versions deprecated)"),
                      ("created", when(a, "create_time"))]))
    print()
    rows = [(v.version, risk_name(v.risk), "yes" if v.network else "no",
             ", ".join(v.secrets) or "-", ", ".join(c.name for c in v.capabilities),
             ("yes: " + clip(v.deprecation_reason, 40)) if v.deprecated else "no",
             when(v, "create_time")) for v in resp.versions]
    print_table(("VERSION", "RISK", "NETWORK", "SECRETS", "CAPABILITIES", "DEPRECATED",
                 "REGISTERED"), rows, "no versions")
    return EXIT_OK


async def cmd_agents_deprecate(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.registry.DeprecateAgentVersion, reg.DeprecateAgentVersionRequest(
            name=ns.name, version=ns.version, reason=ns.reason))
    if ns.json:
        print_json(resp)
    else:
        print(f"deprecated {resp.version.agent} {resp.version.version}: "
              f"{resp.version.deprecation_reason}")
    return EXIT_OK


def register(cli: Commands) -> None:
    agents = cli.group("agents", help="the agent registry: register, list, inspect, deprecate")
    p = agents.add("register", cmd_agents_register, remote=True,
                   help="register an agent version from its manifest",
                   description="Register an agent version from its manifest. Versions are "
                               "immutable: registering\nthe same manifest again is a no-op, a "
                               "different one with the same version is refused.\nAgent "
                               "authors: `airlock agent register PATH` also fills in the local "
                               "image digest.")
    p.add_argument("manifest", metavar="PATH_OR_MANIFEST",
                   help="agent.yaml, a folder holding one, '-' for stdin, or the YAML/JSON text")
    p.add_argument("--image-digest", default="", metavar="DIGEST",
                   help="content digest of the image (sha256:...), pinned with the version")
    p = agents.add("list", cmd_agents_list, remote=True, help="list agents")
    p.add_argument("--prefix", default="", help="only names starting with this")
    p.add_argument("--capability", default="", metavar="NAME",
                   help="only agents offering this capability (in a version not deprecated)")
    p.add_argument("--search", default="", metavar="TEXT",
                   help="only agents whose name, description or capabilities contain every "
                        "word of TEXT (ignoring case)")
    p = agents.add("get", cmd_agents_get, remote=True,
                   help="show an agent and its versions, or one version in detail")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--version", default="",
                   help="show this version in detail ('latest' is not special: omit for the list)")
    p = agents.add("deprecate", cmd_agents_deprecate, remote=True,
                   help="deprecate a version (it stays readable, accepts no new runs)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--reason", required=True, help="why (shown to users of the version)")
