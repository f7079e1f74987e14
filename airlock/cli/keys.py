"""``airlock keys``: create, list and revoke API keys (admin)."""

from __future__ import annotations

import argparse

from airlock.cli._client import call, connect
from airlock.cli._framework import EXIT_OK, Commands
from airlock.cli._output import ROLES, err, print_json, print_table, role_name, when
from airlock.v1 import admin_service_pb2 as adm


async def cmd_keys_create(ns: argparse.Namespace) -> int:
    role = getattr(adm, f"ROLE_{ns.role.upper()}")
    async with connect(ns) as api:
        resp = await call(api, api.admin.CreateApiKey,
                          adm.CreateApiKeyRequest(owner=ns.owner, role=role))
    if ns.json:
        print_json(resp)
        return EXIT_OK
    # The token alone on stdout, so `export AIRLOCK_TOKEN=$(airlock keys create ...)` works.
    err(f"created key {resp.key.id} for {resp.key.owner} ({role_name(resp.key.role)}); "
        "the token below is shown only once:")
    print(resp.token)
    return EXIT_OK


async def cmd_keys_list(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.admin.ListApiKeys, adm.ListApiKeysRequest())
    if ns.json:
        print_json(resp)
        return EXIT_OK
    rows = [(k.id, k.owner, role_name(k.role), when(k, "create_time"), when(k, "revoke_time"))
            for k in resp.keys]
    print_table(("ID", "OWNER", "ROLE", "CREATED", "REVOKED"), rows, "no keys")
    return EXIT_OK


async def cmd_keys_revoke(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.admin.RevokeApiKey, adm.RevokeApiKeyRequest(id=ns.id))
    if ns.json:
        print_json(resp)
    else:
        print(f"revoked {resp.key.id} ({resp.key.owner}, {role_name(resp.key.role)})")
    return EXIT_OK


def register(cli: Commands) -> None:
    keys = cli.group("keys", help="manage API keys (admin)")
    p = keys.add("create", cmd_keys_create, remote=True, help="create an API key",
                 description="Create an API key. The token is printed once, alone on stdout "
                             "(details go to stderr),\nso `export AIRLOCK_TOKEN=$(airlock keys "
                             "create ...)` captures it. Only its hash is stored.")
    p.add_argument("--owner", required=True,
                   help="person or service the key belongs to (approvals compare owners)")
    p.add_argument("--role", required=True, choices=ROLES, help="what the key may do")
    keys.add("list", cmd_keys_list, remote=True, help="list API keys (never their tokens)")
    p = keys.add("revoke", cmd_keys_revoke, remote=True, help="revoke an API key",
                 description="Revoke an API key; servers honour it within "
                             "AIRLOCK_AUTH_CACHE_SECONDS.")
    p.add_argument("id", metavar="ID", help="key id (key_...)")
