#!/usr/bin/env bash
# Run every pgmux test on a fresh machine: installs PostgreSQL, PgBouncer and HAProxy (apt-get) when missing,
# then runs unit and integration tests (each integration test binary starts its own Postgres),
# then, with no cargo test filter given, the deploy checks (systemd unit, Kubernetes overlays,
# Prometheus rules and tests, the Grafana dashboard against a real Prometheus, PgBouncer's
# exporter against pgmux); they install what they need (kubectl, kubernetes-validate,
# prometheus, the exporter) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing PostgreSQL (apt-get)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
fi
for tool in psql pgbench; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool after install" >&2; exit 1; }
done
# Debian's PgBouncer: the admin console tests (tests/it/admin.rs) compare SHOW columns with it.
if [ ! -x /usr/sbin/pgbouncer ]; then
  echo "installing PgBouncer (apt-get)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
fi
[ -x /usr/sbin/pgbouncer ] || { echo "missing /usr/sbin/pgbouncer after install" >&2; exit 1; }
# iproute2 (ip, tc): hosts of their own in network namespaces (tests/it/support/netns.rs).
if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
  echo "installing iproute2 (apt-get)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi
# HAProxy (TCP mode): the load balancer in front of a fleet of replicas (tests/it/peers.rs).
if ! command -v haproxy >/dev/null 2>&1; then
  echo "installing HAProxy (apt-get)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi
# The real-driver tests (tests/it/drivers.rs): asyncpg, psycopg, node-postgres, JDBC.
bash tests/drivers/setup.sh
# Tests open many sockets (hundreds of pgbench clients).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo test --locked "$@"

# With no filter: the deploy files and the tools that read pgmux (README, "Deploying"), with
# the binary cargo test built.
if [ "$#" -eq 0 ]; then
  bash scripts/check-systemd.sh target/debug/pgmux
  PGMUX_BIN=target/debug/pgmux bash scripts/check-kubernetes.sh
  bash scripts/check-monitoring.sh
  python3 scripts/test-dashboard.py target/debug/pgmux
  PGMUX_BIN=target/debug/pgmux python3 scripts/test-exporter.py
fi
