#!/usr/bin/env bash
# Set up a fresh machine of this kind for Airlock: system packages, the Python environment,
# the web UI build and the offline base image. Idempotent; later runs take seconds.
#   scripts/setup.sh            everything the demo needs
#   scripts/setup.sh --test     plus what the tests need (chromium, docker-compose, buf)
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0; [[ "${1:-}" == "--test" ]] && WITH_TEST=1

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

# -- system packages (Debian) ------------------------------------------------------------
need=()
for pair in podman:podman runc:runc debootstrap:debootstrap bwrap:bubblewrap \
            slirp4netns:slirp4netns newuidmap:uidmap fuse-overlayfs:fuse-overlayfs \
            nats-server:nats-server; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if (( WITH_TEST )); then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
fi
if (( ${#need[@]} )); then
  log "installing Debian packages: ${need[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: these packages are missing and installing them needs root: ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# -- Python environment --------------------------------------------------------------------
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.airlock-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  log "installing the airlock package and its development tools"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
if (( WITH_TEST )) && ! .venv/bin/python -c "import playwright" 2>/dev/null; then
  .venv/bin/pip install -q "playwright>=1.49"
fi

# -- web UI (served by `airlock serve` from server/webui) -----------------------------------
if [[ -f ui/build.sh ]]; then
  if [[ ! -f server/webui/index.html || -n $(find ui/src proto ui/package.json -newer server/webui/index.html -print -quit 2>/dev/null) ]]; then
    log "building the web UI"
    bash ui/build.sh
  fi
fi

# -- offline base image for agents (no registry is reachable here) --------------------------
if ! podman image exists localhost/airlock/base:bookworm 2>/dev/null; then
  log "making the offline base image (debootstrap; about 30 s)"
  .venv/bin/airlock base-image
fi
log "setup done"
