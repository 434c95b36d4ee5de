#!/usr/bin/env bash
# Install what the real-driver tests (tests/it/drivers.rs) need, on a fresh Debian 12 machine:
#   - asyncpg and psycopg 3 in a venv at target/driver-venv (the tests run its python);
#   - node-postgres (npm package `pg`, pinned in package.json/package-lock.json) in
#     tests/drivers/node_modules;
#   - Debian's PostgreSQL JDBC driver (/usr/share/java/postgresql.jar), HikariCP and slf4j
#     (/usr/share/java/HikariCP.jar, slf4j-*.jar), and a headless JDK when `java` is missing.
# Idempotent and quiet: each step is skipped at once when what it installs is already there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/driver-venv"

# Run a command with its output kept aside, shown only when it fails.
quiet() {
  local log rc=0
  log="$(mktemp)"
  "$@" >"$log" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] || { cat "$log" >&2; echo "setup.sh: failed ($rc): $*" >&2; }
  rm -f "$log"
  return "$rc"
}

# Debian packages: the JDBC driver, a JDK when `java` is missing (single-file source launch
# needs java 11+), and Node.js/npm when missing.
apt_pkgs=()
command -v npm >/dev/null 2>&1 || apt_pkgs+=(nodejs npm)
[ -f /usr/share/java/postgresql.jar ] || apt_pkgs+=(libpostgresql-jdbc-java)
# HikariCP (and the slf4j it logs through): the rolling-restart drill (tests/it/fleet.rs).
[ -f /usr/share/java/HikariCP.jar ] || apt_pkgs+=(libhikaricp-java)
[ -f /usr/share/java/slf4j-nop.jar ] || apt_pkgs+=(libslf4j-java)
command -v java >/dev/null 2>&1 || apt_pkgs+=(default-jdk-headless)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  echo "installing ${apt_pkgs[*]} (apt-get)..." >&2
  quiet apt-get update
  quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y "${apt_pkgs[@]}"
fi
for jar in postgresql HikariCP slf4j-api slf4j-nop; do
  [ -f "/usr/share/java/$jar.jar" ] || { echo "missing /usr/share/java/$jar.jar" >&2; exit 1; }
done
command -v java >/dev/null 2>&1 || { echo "missing java" >&2; exit 1; }

# Python: asyncpg and psycopg 3 (binary wheels), the versions in requirements.txt (a copy in
# the venv tells that it is up to date).
if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt" ||
  ! "$venv/bin/python" -c 'import asyncpg, psycopg' >/dev/null 2>&1; then
  echo "installing asyncpg and psycopg into $venv (pip)..." >&2
  rm -rf "$venv"
  quiet python3 -m venv "$venv"
  quiet "$venv/bin/python" -m pip install --disable-pip-version-check \
    -r "$here/requirements.txt"
  "$venv/bin/python" -c 'import asyncpg, psycopg'
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi

# Node: node-postgres, exactly the versions in package-lock.json (a copy in node_modules tells
# that it is up to date).
if ! cmp -s "$here/package-lock.json" "$here/node_modules/.pgmux-package-lock.json" ||
  ! (cd "$here" && node -e 'require("pg")') >/dev/null 2>&1; then
  echo "installing node-postgres into $here/node_modules (npm ci)..." >&2
  quiet npm ci --prefix "$here" --no-audit --no-fund
  (cd "$here" && node -e 'require("pg")')
  cp "$here/package-lock.json" "$here/node_modules/.pgmux-package-lock.json"
fi
