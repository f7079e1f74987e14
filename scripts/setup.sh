#!/usr/bin/env bash
# Set up a fresh machine of this kind for Airlock: system packages, the Python environment,
# the web UI build and the offline base image; then start one real sandbox with each runtime
# that runs here (the jail, then podman) exactly as the executor would (`airlock
# sandbox-check`). Idempotent; later runs take seconds.
#   scripts/setup.sh            everything the demo needs
#   scripts/setup.sh --test     plus what the tests need (chromium, docker-compose, playwright)
#   scripts/setup.sh --check    install nothing: name what is missing (exit 1), then run the
#                               sandbox check if the Python environment exists
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-}
WITH_TEST=0; [[ $MODE == --test ]] && WITH_TEST=1
CHECK_ONLY=0; [[ $MODE == --check ]] && CHECK_ONLY=1

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# -- what the code runs: a program on PATH (or an absolute file) and its Debian package ------
# Files are checked as files, not with `command -v`: podman looks for catatonit at that path,
# the compiler for libc.a, the jail's seccomp binding for libseccomp.so.2.
LIBDIR=/usr/lib/$(uname -m)-linux-gnu
REQUIRED=(
  bwrap:bubblewrap                                  # the jail runtime's namespaces
  slirp4netns:slirp4netns                           # the jail's network for runs granted egress
  cc:gcc                                            # builds the jail supervisor (executor/runtime/jail_core)
  $LIBDIR/libc.a:libc6-dev                          # ... statically, so it needs no loader
  $LIBDIR/libseccomp.so.2:libseccomp2               # the jail's seccomp filter (ctypes binding)
  podman:podman                                     # image mounts for the jail; the fallback runtime
  runc:runc                                         # its OCI runtime (podman --runtime runc)
  conmon:conmon                                     # podman's container monitor
  /usr/libexec/podman/catatonit:catatonit           # `podman run --init`; podman only recommends it
  /usr/lib/cni/bridge:containernetworking-plugins   # --network=bridge (runs granted egress)
  iptables:iptables                                 # the CNI bridge's NAT rules
  debootstrap:debootstrap                           # `airlock base-image`
  tar:tar                                           # `airlock base-image` (rootfs cache)
  nats-server:nats-server                           # scripts/services.sh: the event stream
)
TEST_REQUIRED=(
  chromium:chromium                                 # tests/ui: the approvers' UI in a browser
  docker-compose:docker-compose                     # tests/deploy: compose file checks
  pg_isready:postgresql-client                      # scripts/services.sh
)

missing_from() {  # print "name:package" of each entry that is absent
  local entry name
  for entry in "$@"; do
    name=${entry%%:*}
    if [[ $name == /* ]]; then
      [[ -e $name ]] || echo "$entry"
    else
      command -v "$name" >/dev/null 2>&1 || echo "$entry"
    fi
  done
}

wanted=("${REQUIRED[@]}")
(( WITH_TEST )) && wanted+=("${TEST_REQUIRED[@]}")
mapfile -t absent < <(missing_from "${wanted[@]}")
describe() { local e; for e in "$@"; do printf '%s (Debian package %s), ' "${e%%:*}" "${e#*:}"; done; }

if (( ${#absent[@]} )); then
  if (( CHECK_ONLY )); then
    list=$(describe "${absent[@]}")
    die "missing: ${list%, }; scripts/setup.sh installs them"
  fi
  packages=()
  for e in "${absent[@]}"; do packages+=("${e#*:}"); done
  log "installing Debian packages: ${packages[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    list=$(describe "${absent[@]}")
    die "missing: ${list%, }; installing them needs root"
  fi
  apt-get update -qq
  # --no-install-recommends: everything needed is listed above, recommendations included.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" fuse-overlayfs uidmap >/dev/null
  mapfile -t absent < <(missing_from "${wanted[@]}")
  if (( ${#absent[@]} )); then
    list=$(describe "${absent[@]}")
    die "still missing after apt-get install: ${list%, }"
  fi
fi

if (( ! CHECK_ONLY )); then
  # -- Python environment ------------------------------------------------------------------
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

  # -- web UI (served by `airlock serve` from server/webui) ---------------------------------
  if [[ -f ui/build.sh ]]; then
    if [[ ! -f server/webui/index.html || -n $(find ui/src proto ui/package.json -newer server/webui/index.html -print -quit 2>/dev/null) ]]; then
      log "building the web UI"
      bash ui/build.sh
    fi
    [[ -f server/webui/index.html ]] || die "the web UI build did not produce server/webui/index.html"
  fi

  # -- offline base image for agents (no registry is reachable here) ------------------------
  if ! podman image exists localhost/airlock/base:bookworm 2>/dev/null; then
    log "making the offline base image (debootstrap; about 30 s)"
    .venv/bin/airlock base-image
  fi
fi

# -- one real sandbox per runtime, started exactly as the executor starts runs -------------
# Same runtime code and options (the jail: its supervisor build, seccomp filter, cgroup and
# bubblewrap; podman: every limit, --init, the work-dir tmpfs and binds): a host that cannot
# run sandboxes stops here, with the reason, instead of at the first run. `auto` picks the
# jail where it works, so a jail failure is reported even though podman could stand in.
if [[ -x .venv/bin/airlock ]]; then
  log "starting one real sandbox per runtime as the executor would (airlock sandbox-check)"
  for runtime in jail podman; do
    if ! .venv/bin/airlock sandbox-check --runtime "$runtime"; then
      die "this machine cannot run $runtime sandboxes (reason above); runs would fail to start"
    fi
  done
elif (( CHECK_ONLY )); then
  die "no .venv/bin/airlock: run scripts/setup.sh to create the Python environment"
fi
log "setup done"
