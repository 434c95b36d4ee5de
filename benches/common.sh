# Sourced by the benchmarks that run pgmux beside PgBouncer (side_by_side.sh, many_clients.sh,
# instructions.sh): where things are, and pgmux configured as ../shared/bench/pgbouncer.sh
# configures PgBouncer. BENCH_SCRIPTS: the shared bench scripts (default ../shared/bench next
# to this repository).
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${BENCH_SCRIPTS:-$(dirname "$REPO")/shared/bench}

# pgmux's config, printed: listening on port $1 in front of Postgres on $PG_PORT, `workers =
# $2`, then extra [general] lines ($3, `\n` between them). Transaction mode, pool_size 20,
# SCRAM and room for 15,000 clients, as PgBouncer in pgbouncer.sh.
pgmux_config() {
  cat <<TOML
[general]
listen_addr = "127.0.0.1"
listen_port = $1
pool_mode = "transaction"
default_pool_size = 20
max_client_conn = 15000
query_wait_timeout = 120
auth_type = "scram-sha-256"
workers = $2
$(printf '%b' "${3:-}")
[databases.bench]
host = "127.0.0.1"
port = $PG_PORT
dbname = "bench"
[users.bench]
password = "bench"
TOML
}

# Start pgmux on $MUX_PORT (`workers = ${WORKERS:-$1}`, EXTRA's lines) and, when EXTRA2, PGMUX2
# or WORKERS2 is set, a second one on $MUX2_PORT (that binary, those workers, EXTRA2's lines
# instead of EXTRA's); configs and logs in $W. Sets MUX_PID and MUX2_PID (empty without it).
start_pgmux_and_pgmux2() {
  local workers=${WORKERS:-$1}
  pgmux_config "$MUX_PORT" "$workers" "${EXTRA:-}" > "$W/pgmux.toml"
  "$REPO/target/release/pgmux" -c "$W/pgmux.toml" > "$W/pgmux.log" 2>&1 &
  MUX_PID=$! MUX2_PID=
  if [ -n "${EXTRA2:-}${PGMUX2:-}${WORKERS2:-}" ]; then
    pgmux_config "$MUX2_PORT" "${WORKERS2:-$workers}" "${EXTRA2:-${EXTRA:-}}" > "$W/pgmux2.toml"
    "${PGMUX2:-$REPO/target/release/pgmux}" -c "$W/pgmux2.toml" > "$W/pgmux2.log" 2>&1 &
    MUX2_PID=$!
  fi
}

# Build pgmux, raise the open-files limit, start Postgres and PgBouncer, and set PGB_PID. The
# working directory becomes the shared bench scripts'.
start_postgres_and_pgbouncer() {
  (cd "$REPO" && cargo build --release -q)
  ulimit -n "$(ulimit -Hn)"
  cd "$B"
  ./pg.sh start >/dev/null
  ./pgbouncer.sh start >/dev/null
  PGB_PID=$(cat "$BENCH_DIR/pgbouncer/pgbouncer.pid")
}

# Start Debian's HAProxy (installed if missing) in plain TCP mode, one thread, on $HAP_PORT
# straight to Postgres: the cost of one proxy hop that parses nothing, the floor for any
# pooler. It pools nothing (a server connection per client, and pg.sh allows 300). Sets
# HAP_PID; its config and log in $W.
start_haproxy() {
  command -v haproxy >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
  cat > "$W/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen pg
  bind 127.0.0.1:$HAP_PORT
  server pg 127.0.0.1:$PG_PORT
CFG
  haproxy -f "$W/haproxy.cfg" > "$W/haproxy.log" 2>&1 &
  HAP_PID=$!
}
