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
