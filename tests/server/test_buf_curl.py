"""One matrix of calls through ``buf curl`` over gRPC (the gRPC port), gRPC-Web and Connect with
JSON (the HTTP port): every protocol gets the same code, message and result. Also reflection
``v1`` and ``v1alpha`` on the gRPC port, and Connect JSON with plain ``curl``.

``buf`` is the one pinned in ui/package.json (``npm ci`` in ui/ installs it).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Plane, manifest_text, start_plane
from tests.helpers.api import cancel, register, submit
from tests.helpers.db import PgTemplates
from tests.helpers.requirements import require

REPO = Path(__file__).resolve().parents[2]
BUF = REPO / "ui" / "node_modules" / ".bin" / "buf"
PROTOCOLS = ("grpc", "grpcweb", "connect")
UNKNOWN_RUN = "run_00000000000000000000000000"



@pytest.fixture(autouse=True)
def _buf() -> None:
    require("buf", None if BUF.exists() else f"{BUF} is absent (npm --prefix ui ci, run by setup)")


@dataclass
class World:
    plane: Plane
    tokens: dict[str, str]  # caller -> token ("" for none)
    runs: dict[str, str]  # name -> run id


@pytest.fixture(scope="module")
async def world(pg_templates: PgTemplates) -> AsyncIterator[World]:
    url = pg_templates.fresh()
    plane = await start_plane(url)
    try:
        await register(plane.admin, manifest_text("echo"))
        alice = await plane.key("alice", "submitter")
        bob = await plane.key("bob", "submitter")
        done = (await submit(alice, text="from alice")).run.id
        await cancel(alice, done, "done")
        assert plane.admin.token and alice.token and bob.token
        yield World(plane, {"admin": plane.admin.token, "alice": alice.token, "bob": bob.token,
                            "nobody": ""}, {"done": done})
    finally:
        await plane.close()
        pg_templates.drop(url)


async def run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, cwd=REPO)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def buf_curl(w: World, protocol: str, method: str, body: dict[str, Any], caller: str,
                   *extra: str) -> tuple[str, Any]:
    """(code, result): the code in lower case as Connect names it ("ok" on success); the
    result is the response (a list of messages for a stream) or the error message."""
    address = w.plane.address if protocol == "grpc" else w.plane.cp.http_address
    argv = [str(BUF), "curl", "--protocol", protocol, "--schema", "proto",
            f"--http2-prior-knowledge={'true' if protocol == 'grpc' else 'false'}",
            "-d", json.dumps(body), *extra]
    if w.tokens[caller]:
        argv += ["-H", f"authorization: Bearer {w.tokens[caller]}"]
    code, out, err = await run(*argv, f"http://{address}/airlock.v1.{method}")
    if code == 0:
        decoder, docs, text = json.JSONDecoder(), [], out.strip()
        while text:  # a stream prints one JSON document per message
            doc, end = decoder.raw_decode(text)
            docs.append(doc)
            text = text[end:].strip()
        return "ok", docs
    doc = json.loads(err[err.index("{"):])  # buf curl prints the error as JSON
    return doc["code"], doc["message"]


# (what, method, request, caller, expected code)
MATRIX: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("whoami", "AdminService/WhoAmI", {}, "alice", "ok"),
    ("no key", "AdminService/WhoAmI", {}, "nobody", "unauthenticated"),
    ("forbidden role", "AdminService/ListApiKeys", {}, "alice", "permission_denied"),
    ("get agent", "RegistryService/GetAgent", {"name": "echo"}, "bob", "ok"),
    ("unknown agent", "RegistryService/GetAgent", {"name": "nope"}, "bob", "not_found"),
    ("bad name", "RegistryService/GetAgent", {"name": "NO!"}, "bob", "invalid_argument"),
    ("own run", "RunService/GetRun", {"runId": "<done>"}, "alice", "ok"),
    ("another owner's run", "RunService/GetRun", {"runId": "<done>"}, "bob", "not_found"),
    ("unknown run", "RunService/GetRun", {"runId": UNKNOWN_RUN}, "admin", "not_found"),
    ("bad run id", "RunService/GetRun", {"runId": "x"}, "admin", "invalid_argument"),
    ("result", "RunService/GetRunResult", {"runId": "<done>"}, "admin", "ok"),
    ("watch to the end", "RunService/WatchRun", {"runId": "<done>"}, "alice", "ok"),
    ("watch another's", "RunService/WatchRun", {"runId": "<done>"}, "bob", "not_found"),
    ("cancel terminal", "RunService/CancelRun", {"runId": "<done>"}, "alice", "failed_precondition"),
    ("bad input", "RunService/SubmitRun",
     {"agent": "echo", "capability": "echo", "inputJson": '{"text": 1}'}, "alice", "invalid_argument"),
    ("submit (idempotent)", "RunService/SubmitRun",
     {"agent": "echo", "capability": "echo", "inputJson": '{"text": "hi"}',
      "idempotencyKey": "buf-curl-1"}, "alice", "ok"),
]


@pytest.mark.parametrize(("what", "method", "body", "caller", "want"), MATRIX,
                         ids=[m[0] for m in MATRIX])
async def test_same_answer_over_every_protocol(world: World, what: str, method: str,
                                               body: dict[str, Any], caller: str, want: str) -> None:
    body = {k: world.runs["done"] if v == "<done>" else v for k, v in body.items()}
    if method.endswith("SubmitRun"):  # the first submit creates the run: later ones dedupe
        await buf_curl(world, "grpc", method, body, caller)
    answers = {p: await buf_curl(world, p, method, body, caller) for p in PROTOCOLS}
    codes = {p: a[0] for p, a in answers.items()}
    assert set(codes.values()) == {want}, codes
    results = {json.dumps(a[1], sort_keys=True) for a in answers.values()}
    assert len(results) == 1, answers
    if what == "watch to the end":
        states = [m["event"]["state"] for m in answers["connect"][1]]
        assert states[-1] == "RUN_STATE_CANCELLED", states
    if what == "submit (idempotent)":
        assert answers["connect"][1][0]["deduplicated"] is True


@pytest.mark.parametrize("reflect", ["grpc-v1", "grpc-v1alpha"])
async def test_reflection_v1_and_v1alpha(world: World, reflect: str) -> None:
    """Without --schema buf curl asks the server's reflection service for the schema."""
    code, out, err = await run(
        str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol",
        reflect, "-H", f"authorization: Bearer {world.tokens['alice']}", "-d", "{}",
        f"http://{world.plane.address}/airlock.v1.AdminService/WhoAmI")
    assert code == 0, err
    assert json.loads(out)["key"]["owner"] == "alice"
    code, out, err = await run(str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
                               "--reflect-protocol", reflect, "--list-services",
                               f"http://{world.plane.address}")
    assert code == 0, err
    assert {"airlock.v1.RunService", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= set(out.split())


async def test_connect_json_with_plain_curl(world: World) -> None:
    require("curl", None if shutil.which("curl") else "curl is not on PATH")
    base = f"http://{world.plane.cp.http_address}/airlock.v1."
    auth = f"authorization: Bearer {world.tokens['alice']}"
    code, out, err = await run("curl", "-sS", "-w", "\\n%{http_code}", base + "RunService/GetRun",
                               "-H", "content-type: application/json", "-H", auth,
                               "-d", json.dumps({"runId": world.runs["done"]}))
    body, status = out.rsplit("\n", 1)
    assert (code, status) == (0, "200"), err
    assert json.loads(body)["run"]["submitter"] == "alice"
    # Errors: the Connect HTTP status and a JSON body with the code and the message.
    code, out, err = await run("curl", "-sS", "-w", "\\n%{http_code}", base + "RunService/GetRun",
                               "-H", "content-type: application/json", "-H", auth,
                               "-d", json.dumps({"runId": UNKNOWN_RUN}))
    body, status = out.rsplit("\n", 1)
    assert status == "404" and json.loads(body) == {
        "code": "not_found", "message": f"run '{UNKNOWN_RUN}' not found"}
    # A misspelt field is refused, naming it (not silently ignored).
    code, out, err = await run("curl", "-sS", "-w", "\\n%{http_code}", base + "RunService/GetRun",
                               "-H", "content-type: application/json", "-H", auth,
                               "-d", '{"runIdd": "x"}')
    body, status = out.rsplit("\n", 1)
    assert status == "400" and "runIdd" in json.loads(body)["message"]
    # gRPC needs trailers: refused here with 415 (it is served on the gRPC port).
    code, out, err = await run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                               base + "RunService/GetRun", "-H", "content-type: application/grpc",
                               "--data-binary", "")
    assert out == "415"
