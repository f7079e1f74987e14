"""What the docs' marked blocks need, provided for real (see tests/docs/test_docs_commands.py).

``docs_podman``: the offline base image and the sample agents' images built on it (a block
that names ``sample_agents/X`` finds X's image in local storage, so nothing is pulled).
``docs_plane``: ``airlock dev`` (control plane and a podman executor in one process, SQLite in
a temporary directory, free ports), with one finished run and one API key whose ids replace
the docs' example ids.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.processes import stop
from tests.helpers.requirements import require
from tests.helpers.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SAMPLES = REPO / "sample_agents"
EXAMPLE_RUN_AGENT = "text-stats"  # not registered by any docs block, so no clash


def docs_env(**extra: str) -> dict[str, str]:
    """This environment with this venv's ``airlock`` and ``python`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return env | extra


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def airlock(env: dict[str, str], *args: str) -> str:
    r = subprocess.run([str(BIN / "airlock"), *args], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"airlock {' '.join(args)} (exit {r.returncode}):\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="session")
def docs_podman() -> Callable[[str], None]:
    """Returns ``ensure(script)``: builds the images of the sample agents the script names."""
    require("podman", None if shutil.which("podman") else "not on PATH (scripts/setup.sh installs it)")
    require("root", None if os.geteuid() == 0 else "the podman runtime runs as root")
    from agents.build import build_image
    from executor.base_image import make_base_image

    base = make_base_image()
    built: set[str] = set()

    def ensure(script: str) -> None:
        for d in sorted(SAMPLES.iterdir()):
            if d.name not in built and f"sample_agents/{d.name}" in script:
                build_image(d, base_image=base)
                built.add(d.name)

    return ensure


@dataclass
class DocsPlane:
    address: str
    token: str
    env: dict[str, str]
    examples: dict[str, str] = field(default_factory=dict)  # docs' example value -> live one


@pytest.fixture(scope="session")
def docs_plane(docs_podman: Callable[[str], None],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsPlane]:
    data = tmp_path_factory.mktemp("docs-plane")
    address = f"127.0.0.1:{free_port()}"
    http_address = f"127.0.0.1:{free_port()}"
    env = docs_env(AIRLOCK_GRPC_LISTEN=address, AIRLOCK_HTTP_LISTEN=http_address,
                   AIRLOCK_RUNTIME="podman")
    log = (data / "dev.log").open("w")
    proc = subprocess.Popen([str(BIN / "airlock"), "dev", "--data-dir", str(data)], env=env,
                            cwd=data, stdout=log, stderr=subprocess.STDOUT)

    def listening() -> bool:
        assert proc.poll() is None, f"airlock dev exited: {(data / 'dev.log').read_text()[-3000:]}"
        try:
            socket.create_connection(("127.0.0.1", int(address.rpartition(":")[2])), 1).close()
        except OSError:
            return False
        return (data / "admin.token").exists()

    try:
        wait_until(listening, timeout=120, interval=0.2, what="airlock dev listening")
        token = (data / "admin.token").read_text().strip()
        env |= {"AIRLOCK_ADDRESS": address, "AIRLOCK_TOKEN": token}
        plane = DocsPlane(address, token, env)
        # A finished run and a key, to stand for the docs' example ids.
        docs_podman(f"sample_agents/{EXAMPLE_RUN_AGENT}")
        airlock(env, "agent", "register", str(SAMPLES / EXAMPLE_RUN_AGENT))
        done = json.loads(airlock(env, "--json", "runs", "submit", EXAMPLE_RUN_AGENT, "stats",
                                  "--input", '{"text": "a b a"}', "--wait"))
        assert done["run"]["state"] == "RUN_STATE_SUCCEEDED", done
        key = json.loads(airlock(env, "--json", "keys", "create", "--owner", "docs-example",
                                 "--role", "viewer"))
        plane.examples = {
            "<the admin token>": token,
            "<an admin token>": token,
            "127.0.0.1:50051": address,
            "127.0.0.1:8080": http_address,  # the HTTP port: gRPC-Web, Connect, the UI
            "run_01hq3v5k7m9pabcdefghjkmnpq": done["run"]["id"],
            "key_01hq3v5k7m9p": key["key"]["id"],
        }
        yield plane
    finally:
        stop(proc)
        log.close()
