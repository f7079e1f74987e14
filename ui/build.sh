#!/usr/bin/env bash
# Build the approvers' UI into server/webui/ (served by `airlock serve` on the HTTP port).
# Needs Node >= 20.19 and npm; used by setup and CI.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm run gen     # TypeScript from ../proto (buf generate + protoc-gen-es)
npm run build   # type-check, then vite build -> ../server/webui
