"""The demo behind the README's first command, driven through the real `airlock` CLI.

1. start `airlock dev` (SQLite, no NATS, sandbox runtime auto: the jail where it runs, else
   podman) in the background; its banner names the runtime;
2. build two sample agents on the offline base image and register them;
3. a low-risk run (text-transform) is auto-approved and succeeds;
4. a risky run (url-fetch, network egress: risk high) waits for a human; an approver (not
   the submitter) approves it; it runs and fetches a page served on this host (at one of
   this host's own addresses, which both the jail's and podman's egress reach);
5. a workflow of three sample agents (sample_agents/workflows/page-digest.yaml: fetch the
   page, count its title's words, sign its SHA-256 with a secret key): its plan (risk high,
   for the fetch's egress) is approved once by bob, then its steps run in order, each
   receiving the previous outputs by reference;
6. print the results, then stop (or keep running with --keep for the web UI).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ("text-transform", "url-fetch", "text-stats", "signed-digest")
AIRLOCK = str(Path(sys.executable).parent / "airlock")


def step(text: str) -> None:
    print(f"\n\033[1m▶ {text}\033[0m", flush=True)


def airlock(*args: str, token: str, address: str, capture: bool = False) -> str:
    shown = " ".join(a if len(a) < 80 else a[:77] + "..." for a in args)
    print(f"$ airlock {shown}", flush=True)
    env = {**os.environ, "AIRLOCK_TOKEN": token, "AIRLOCK_ADDRESS": address}
    out = subprocess.run([AIRLOCK, *args], env=env, check=True, text=True,
                         stdout=subprocess.PIPE if capture else None)
    return (out.stdout or "").strip()


def serve_page() -> int:
    """A tiny web page on this host for the url-fetch agent to fetch (no internet here)."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><head><title>Hello from the host</title></head><body>hi</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Page)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def host_address() -> str:
    """An address of this host that a sandbox granted egress reaches: the first global IPv4
    address of an interface (the jail's slirp4netns refuses the host's loopback, and podman's
    host.containers.internal name exists only in podman's containers)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "inet":
            return fields[3].split("/")[0]
    return "host.containers.internal"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT / "airlock-data" / "demo"))
    ap.add_argument("--keep", action="store_true", help="keep airlock dev running afterwards")
    args = ap.parse_args()
    data = Path(args.data_dir)
    shutil.rmtree(data, ignore_errors=True)  # a fresh demo every time
    data.mkdir(parents=True)

    step("starting `airlock dev` (control plane + executor; SQLite; sandbox runtime auto)")
    env = {**os.environ, "AIRLOCK_GRPC_LISTEN": os.environ.get("AIRLOCK_GRPC_LISTEN", "127.0.0.1:0"),
           "AIRLOCK_HTTP_LISTEN": os.environ.get("AIRLOCK_HTTP_LISTEN", "127.0.0.1:8080"),
           # The signed-digest agent's key, as the executor hands it to the sandbox.
           "AIRLOCK_SECRET_SIGNING_KEY": os.environ.get("AIRLOCK_SECRET_SIGNING_KEY",
                                                        "demo-signing-key")}
    dev = subprocess.Popen([AIRLOCK, "dev", "--data-dir", str(data)], env=env, text=True,
                           stdout=subprocess.PIPE)
    assert dev.stdout is not None
    banner, address = [], ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = dev.stdout.readline()
        if not line:
            print("error: airlock dev exited; see the messages above", file=sys.stderr)
            return 1
        banner.append(line.rstrip())
        if m := re.search(r"gRPC:\s+(\S+)", line):
            address = m.group(1)
        if "data:" in line:
            break
    print("\n".join(banner))
    admin = (data / "admin.token").read_text().strip()
    try:
        step("building sample agents on the offline base image")
        for name in AGENTS:
            airlock("agent", "build", f"sample_agents/{name}", "--base-image",
                    "localhost/airlock/base:bookworm", token=admin, address=address)
        step("registering them (admin)")
        for name in AGENTS:
            airlock("agent", "register", f"sample_agents/{name}", token=admin, address=address)
        airlock("agents", "list", token=admin, address=address)

        step("API keys: alice submits, bob approves")
        alice = airlock("keys", "create", "--owner", "alice", "--role", "submitter",
                        token=admin, address=address, capture=True)
        bob = airlock("keys", "create", "--owner", "bob", "--role", "approver",
                      token=admin, address=address, capture=True)

        step("a low-risk run: auto-approved, runs at once")
        airlock("runs", "submit", "text-transform", "uppercase", "--input",
                json.dumps({"text": "hello from a sandbox"}), "--wait", token=alice, address=address)

        port = serve_page()
        step("a risky run: url-fetch with network egress (risk high) needs one approval")
        run_id = airlock("runs", "submit", "url-fetch", "fetch", "--network", "--input",
                         json.dumps({"url": f"http://{host_address()}:{port}/"}),
                         token=alice, address=address, capture=True)
        airlock("runs", "get", run_id, token=alice, address=address)
        step("bob sees it waiting and approves it")
        airlock("approvals", "list", token=bob, address=address)
        airlock("approvals", "approve", run_id, "--reason", "fetching our own test page",
                token=bob, address=address)
        airlock("runs", "watch", run_id, token=alice, address=address)
        airlock("runs", "result", run_id, token=alice, address=address)

        step("a workflow: fetch the page, count its title's words, sign its SHA-256")
        flow = (ROOT / "sample_agents" / "workflows" / "page-digest.yaml").read_text()
        flow = flow.replace("http://example.com/", f"http://{host_address()}:{port}/")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(flow)
        wf_id = airlock("workflows", "submit", f.name, token=alice, address=address, capture=True)
        os.unlink(f.name)
        airlock("workflows", "get", wf_id, token=alice, address=address)
        step("bob approves the plan once (its highest risk: the fetch's egress)")
        airlock("workflows", "approve", wf_id, "--reason", "our own page; signing is fine",
                token=bob, address=address)
        airlock("workflows", "watch", wf_id, token=alice, address=address)
        airlock("workflows", "get", wf_id, token=alice, address=address)
        step("done")
        if args.keep:
            print(f"airlock dev keeps running (admin token in {data / 'admin.token'}); Ctrl-C stops it")
            dev.wait()
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
            dev.wait(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
