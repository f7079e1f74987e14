#!/usr/bin/env bash
# Start PostgreSQL (127.0.0.1:5432) and NATS with JetStream (127.0.0.1:4222) if they are
# not running. The integration tests talk to both. Exits non-zero, naming the service and
# why, when one cannot be started.
set -euo pipefail

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "== starting PostgreSQL" >&2
  command -v pg_ctlcluster >/dev/null 2>&1 \
    || die "PostgreSQL is not running on 127.0.0.1:5432 and is not installed (no pg_ctlcluster)"
  version=$(ls /etc/postgresql 2>/dev/null | head -n1)
  [[ -n $version ]] || die "PostgreSQL is not running on 127.0.0.1:5432 and has no cluster in /etc/postgresql"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start \
    || die "PostgreSQL $version/main did not start (pg_ctlcluster failed; see /var/log/postgresql)"
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || die "PostgreSQL is not accepting connections on 127.0.0.1:5432"

nats_up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
if ! nats_up; then
  echo "== starting NATS (JetStream)" >&2
  NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
  [[ -x $NATS ]] || die "NATS is not running on 127.0.0.1:4222 and nats-server is not installed (scripts/setup.sh installs it)"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$NATS" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log \
    || die "nats-server did not start (see /var/log/nats-server.log)"
  for _ in $(seq 1 30); do nats_up && break; sleep 0.5; done
fi
nats_up || die "NATS is not accepting connections on 127.0.0.1:4222 (see /var/log/nats-server.log)"
