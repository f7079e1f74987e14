#!/usr/bin/env bash
# Set up, then run the demo on embedded defaults (SQLite, no NATS, the jail runtime where it
# runs, else podman; `airlock dev` prints which): an agent is
# registered, a low-risk run succeeds, a risky run waits for a human, is approved and runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
