#!/usr/bin/env bash
# Set up, start PostgreSQL and NATS if needed, check generated code and lint, run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k approvals).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test || { echo "error: scripts/setup.sh --test failed (see above): the tests cannot run" >&2; exit 1; }
bash scripts/services.sh || { echo "error: PostgreSQL or NATS could not be started (see above): the tests need both" >&2; exit 1; }

echo "== generated protobuf code is current" >&2
.venv/bin/python proto/generate.py --check
echo "== buf lint" >&2
npm --prefix ui run --silent lint:proto   # buf pinned in ui/package.json
echo "== buf breaking against the last landed main (proto/BREAKING_BASE)" >&2
bash scripts/buf_breaking.sh
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy server executor agents airlock/cli
echo "== import contracts (pyproject.toml [tool.importlinter])" >&2
.venv/bin/lint-imports --no-cache

echo "== pytest" >&2
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "error: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit $rc
