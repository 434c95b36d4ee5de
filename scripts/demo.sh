#!/usr/bin/env bash
# Demo on a fresh machine: start a throwaway PostgreSQL, pgmux in front of it (transaction mode,
# pool of 20), run pgbench through pgmux and print the result; everything is stopped at the end.
# Env: CLIENTS (default 100), SECONDS_ (default 10), MODE (simple|extended, default simple).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-100}
DURATION=${SECONDS_:-10}
MODE=${MODE:-simple}

if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing PostgreSQL (apt-get)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
fi
BIN=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- sh -c "$*"; else sh -c "$*"; fi; }

echo "== building pgmux (release)"
cargo build --release --locked -q

DIR=$(mktemp -d /tmp/pgmux-demo.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres "$DIR"
PG_PORT=$(free_port); MUX_PORT=$(free_port)
cleanup() {
  [ -n "${MUX_PID:-}" ] && kill "$MUX_PID" 2>/dev/null || true
  as_pg "$BIN/pg_ctl -D $DIR/data -m fast stop" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

echo "== starting PostgreSQL on 127.0.0.1:$PG_PORT"
as_pg "$BIN/initdb -D $DIR/data -U postgres -A trust --nosync" >/dev/null
cat >> "$DIR/data/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = 100
fsync = off
synchronous_commit = off
password_encryption = 'scram-sha-256'
CONF
printf 'local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n' > "$DIR/data/pg_hba.conf"
as_pg "$BIN/pg_ctl -D $DIR/data -l $DIR/postgres.log -w start" >/dev/null
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAtX -c "CREATE ROLE app LOGIN PASSWORD 'app_pw'" postgres
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAtX -c "CREATE DATABASE appdb OWNER app" postgres
PGPASSWORD=app_pw pgbench -h 127.0.0.1 -p "$PG_PORT" -U app -i -s 5 -q appdb >/dev/null 2>&1

cat > "$DIR/pgmux.toml" <<TOML
[general]
listen_addr = "127.0.0.1"
listen_port = $MUX_PORT
pool_mode = "transaction"
max_client_conn = 10000
default_pool_size = 20
auth_type = "scram-sha-256"

[databases.appdb]
host = "127.0.0.1"
port = $PG_PORT

[users.app]
password = "app_pw"
TOML
echo "== starting pgmux on 127.0.0.1:$MUX_PORT (config $DIR/pgmux.toml)"
./target/release/pgmux check-config "$DIR/pgmux.toml"
RUST_LOG=warn ./target/release/pgmux --config "$DIR/pgmux.toml" &
MUX_PID=$!
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$MUX_PORT) 2>/dev/null && break; sleep 0.1; done

echo "== psql through pgmux"
PGPASSWORD=app_pw psql -h 127.0.0.1 -p "$MUX_PORT" -U app -X -c "SELECT version(), current_database()" appdb

echo "== pgbench -S -M $MODE, $CLIENTS clients through a pool of 20, ${DURATION}s"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PGPASSWORD=app_pw pgbench -h 127.0.0.1 -p "$MUX_PORT" -U app -n -S -M "$MODE" -c "$CLIENTS" -j 2 -T "$DURATION" appdb
