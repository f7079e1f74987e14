"""Each sample agent, built on the offline base image and run for real through podman.

url-fetch and the network: a run granted network uses podman's default bridge, from which the
host is reachable as ``host.containers.internal`` (podman writes it into /etc/hosts); the test
serves a page from an ``http.server`` bound on the host's wildcard address. Without network
the same fetch fails cleanly with the agent's own E_FETCH error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.limits import Limits
from agents.manifest import Manifest, load_manifest
from executor.results import Outcome
from executor.runtime.base import SandboxResult
from executor.runtime.podman import PodmanRuntime
from tests.executor.conftest import SAMPLES_DIR, run_agent

pytestmark = pytest.mark.podman

LIMITS = Limits(memory_mib=96, timeout_seconds=15, pids=16, cpus=1, output_kib=256, log_kib=64)
PAGE = b"<html><head><title>Airlock &amp; friends</title></head><body>hello</body></html>"


def manifest(name: str) -> Manifest:
    return load_manifest(SAMPLES_DIR / name)


async def run(
    runtime: PodmanRuntime,
    images: dict[str, str],
    name: str,
    capability: str,
    payload: object,
    **kw: Any,
) -> tuple[SandboxResult, Outcome]:
    return await run_agent(
        runtime, images[name], manifest(name), capability, payload, limits=LIMITS, **kw
    )


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root: Path = tmp_path_factory.mktemp("www")
    (root / "page.html").write_bytes(PAGE)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("capability", "payload", "expected"),
    [
        ("uppercase", {"text": "héllo wörld"}, {"text": "HÉLLO WÖRLD"}),
        ("reverse", {"text": "abc€"}, {"text": "€cba"}),
        ("pick", {"data": {"a": {"b": [10, {"c": 42}]}}, "path": ".a.b[1].c"},
         {"found": True, "value": 42}),
        ("pick", {"data": {"a key": [1]}, "path": '."a key"[-1]'}, {"found": True, "value": 1}),
        ("pick", {"data": {"a": 1}, "path": ".a.b"}, {"found": False, "value": None}),
    ],
)  # fmt: skip
async def test_text_transform(
    podman_runtime: PodmanRuntime,
    sample_images: dict[str, str],
    capability: str,
    payload: object,
    expected: object,
) -> None:
    _, outcome = await run(podman_runtime, sample_images, "text-transform", capability, payload)
    assert outcome.state == "SUCCEEDED", outcome
    assert outcome.output == expected


async def test_text_transform_bad_path_is_an_agent_error(
    podman_runtime: PodmanRuntime, sample_images: dict[str, str]
) -> None:
    payload = {"data": {}, "path": ".a[x"}
    _, outcome = await run(podman_runtime, sample_images, "text-transform", "pick", payload)
    assert outcome.state == "FAILED"
    assert outcome.error_code == "E_PATH"
    assert outcome.reason == "agent error E_PATH: bad path '.a[x' at position 2"


async def test_text_stats(podman_runtime: PodmanRuntime, sample_images: dict[str, str]) -> None:
    text = "The cat and the hat.\nThe end, don't stop!\n"
    payload = {"text": text, "top": 2}
    _, outcome = await run(podman_runtime, sample_images, "text-stats", "stats", payload)
    assert outcome.state == "SUCCEEDED", outcome
    assert outcome.output == {
        "chars": len(text),
        "words": 9,
        "lines": 2,
        "unique_words": 7,
        "top_words": [{"word": "the", "count": 3}, {"word": "and", "count": 1}],
    }


async def test_url_fetch_with_network_reaches_a_host_server(
    podman_runtime: PodmanRuntime, sample_images: dict[str, str], web_server: int
) -> None:
    url = f"http://host.containers.internal:{web_server}/page.html"
    _, outcome = await run(
        podman_runtime, sample_images, "url-fetch", "fetch", {"url": url}, network=True
    )
    assert outcome.state == "SUCCEEDED", (outcome.reason, outcome.logs)
    assert outcome.output == {
        "url": url,
        "status": 200,
        "bytes": len(PAGE),
        "sha256": hashlib.sha256(PAGE).hexdigest(),
        "truncated": False,
        "content_type": "text/html",
        "title": "Airlock & friends",
    }


async def test_url_fetch_without_network_fails_cleanly(
    podman_runtime: PodmanRuntime, sample_images: dict[str, str], web_server: int
) -> None:
    url = f"http://host.containers.internal:{web_server}/page.html"
    _, outcome = await run(podman_runtime, sample_images, "url-fetch", "fetch", {"url": url})
    assert outcome.state == "FAILED"
    assert outcome.error_code == "E_FETCH"
    assert outcome.reason.startswith(f"agent error E_FETCH: cannot fetch {url}: ")


async def test_url_fetch_refuses_other_schemes(
    podman_runtime: PodmanRuntime, sample_images: dict[str, str]
) -> None:
    _, outcome = await run(
        podman_runtime, sample_images, "url-fetch", "fetch", {"url": "file:///etc/passwd"}
    )
    assert (outcome.state, outcome.error_code) == ("FAILED", "E_URL")


async def test_signed_digest_uses_the_secret_and_never_reveals_it(
    podman_runtime: PodmanRuntime, sample_images: dict[str, str]
) -> None:
    key = b"k3y-\x00-\xff-very-secret"
    result, outcome = await run(
        podman_runtime, sample_images, "signed-digest", "sign", {"text": "pay 10 €"},
        secrets={"SIGNING_KEY": key},
    )  # fmt: skip
    assert outcome.state == "SUCCEEDED", outcome
    expected = hmac.new(key, "pay 10 €".encode(), hashlib.sha256).hexdigest()
    assert outcome.output == {"algorithm": "HMAC-SHA256", "digest": expected}
    assert key not in result.logs and key not in (result.output or b"")


async def test_signed_digest_without_the_secret_fails_with_its_name(
    podman_runtime: PodmanRuntime, sample_images: dict[str, str]
) -> None:
    _, outcome = await run(podman_runtime, sample_images, "signed-digest", "sign", {"text": "x"})
    assert outcome.state == "FAILED"
    assert outcome.error_code == "E_NO_KEY"
    assert "SIGNING_KEY" in outcome.reason


async def test_samples_run_concurrently(
    podman_runtime: PodmanRuntime, sample_images: dict[str, str]
) -> None:
    runs = [
        run(podman_runtime, sample_images, "text-transform", "uppercase", {"text": str(i)})
        for i in range(4)
    ] + [run(podman_runtime, sample_images, "text-stats", "stats", {"text": "a b a"})]
    outcomes = [o for _, o in await asyncio.gather(*runs)]
    assert [o.state for o in outcomes] == ["SUCCEEDED"] * 5
    assert [o.output for o in outcomes[:4]] == [{"text": str(i)} for i in range(4)]
