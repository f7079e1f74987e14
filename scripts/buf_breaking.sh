#!/usr/bin/env bash
# buf breaking: the .proto files of this tree (or of the directory given) against those of the
# last landed main, the commit named in proto/BREAKING_BASE. Needs that commit in the clone
# (CI: a full clone, e.g. actions/checkout with fetch-depth: 0).
set -euo pipefail
cd "$(dirname "$0")/.."
base=$(tr -d '[:space:]' < proto/BREAKING_BASE)
if ! commit=$(git rev-parse --verify --quiet "${base}^{commit}"); then
  echo "error: proto/BREAKING_BASE names ${base}, which this clone does not have;" \
       "fetch the history (git fetch --unshallow) and run again" >&2
  exit 1
fi
exec ui/node_modules/.bin/buf breaking "${1:-proto}" --against ".git#ref=${commit},subdir=proto"
