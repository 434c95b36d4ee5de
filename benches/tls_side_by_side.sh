#!/usr/bin/env bash
# Client TLS, side by side: PgBouncer and pgmux, each plaintext and with client_tls_sslmode =
# require, in one compare.py run (PGSSLMODE=prefer: plaintext targets answer 'N').
# Uses the shared bench scripts (pg.sh, pgbouncer.sh, compare.py): BENCH_SCRIPTS, default
# ../shared/bench next to this repository. Knobs passed to compare.py: WORKLOADS (select
# connect), CLIENTS (16 128), MODES (simple), T (8), ROUNDS (3); WORKERS (pgmux's workers,
# default 0). Ports 15542-15548 (below 32768), Postgres' data in $BENCH_DIR (/tmp/pgmux-tlsb).
# PGMUX2: another pgmux binary, measured with client TLS in the same run (target pgmux2_tls).
#   bash benches/tls_side_by_side.sh
#   PGMUX2=/tmp/before/pgmux WORKLOADS=select bash benches/tls_side_by_side.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
B=${BENCH_SCRIPTS:-$(dirname "$REPO")/shared/bench}
W=$(mktemp -d /tmp/pgmux-tls-bench.XXXXXX)
chmod 755 "$W"
export BENCH_DIR=${BENCH_DIR:-/tmp/pgmux-tlsb} PG_PORT=15542 PGB_PORT=15543
PGB_TLS_PORT=15547 MUX_PORT=15544 MUX_TLS_PORT=15546 MUX2_TLS_PORT=15548
(cd "$REPO" && cargo build --release -q)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/server.key" -out "$W/server.crt" \
  -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
chmod 600 "$W/server.key"
cd "$B"
./pg.sh start >/dev/null
./pgbouncer.sh start
# A second PgBouncer with client TLS: the script's config plus three lines ([pgbouncer] is
# its last section).
PGB_DIR="$W/pgb" PGB_PORT=$PGB_TLS_PORT ./pgbouncer.sh start >/dev/null
PGB_DIR="$W/pgb" ./pgbouncer.sh stop >/dev/null
sleep 1
cat >> "$W/pgb/pgbouncer.ini" <<INI
client_tls_sslmode = require
client_tls_cert_file = $W/server.crt
client_tls_key_file = $W/server.key
INI
PGB=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
if [ "$(id -u)" = 0 ]; then
  chown -R postgres "$W"
  su postgres -s /bin/bash -c "ulimit -n \$(ulimit -Hn); $PGB -d $W/pgb/pgbouncer.ini"
else
  "$PGB" -d "$W/pgb/pgbouncer.ini"
fi
mux_config() { # port, extra [general] lines
  printf '[general]\nlisten_addr = "127.0.0.1"\nlisten_port = %s\npool_mode = "transaction"\ndefault_pool_size = 20\nmax_client_conn = 12000\nworkers = %s\n%b[databases.bench]\nhost = "127.0.0.1"\nport = %s\n[users.bench]\npassword = "bench"\n' "$1" "${WORKERS:-0}" "$2" "$PG_PORT"
}
mux_config $MUX_PORT "" > "$W/plain.toml"
TLS_LINES="client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"$W/server.crt\"\nclient_tls_key_file = \"$W/server.key\"\n"
mux_config $MUX_TLS_PORT "$TLS_LINES" > "$W/tls.toml"
mux_config $MUX2_TLS_PORT "$TLS_LINES" > "$W/tls2.toml"
ulimit -n "$(ulimit -Hn)"
setsid "$PGMUX" -c "$W/plain.toml" > "$W/pgmux-plain.log" 2>&1 & P1=$!
setsid "$PGMUX" -c "$W/tls.toml" > "$W/pgmux-tls.log" 2>&1 & P2=$!
MORE=()
if [ -n "${PGMUX2:-}" ]; then
  setsid "$PGMUX2" -c "$W/tls2.toml" > "$W/pgmux2-tls.log" 2>&1 & P3=$!
  MORE+=("pgmux2_tls=$MUX2_TLS_PORT:$P3")
fi
trap 'kill $P1 $P2 ${P3:-} 2>/dev/null; PGB_DIR="$W/pgb" ./pgbouncer.sh stop >/dev/null; ./pgbouncer.sh stop >/dev/null; [ "${KEEP:-0}" = 1 ] || ./pg.sh stop >/dev/null' EXIT
sleep 1
for _ in $(seq 50); do [ -s "$W/pgb/pgbouncer.pid" ] && break; sleep 0.1; done
PGSSLMODE=prefer WORKLOADS="${WORKLOADS:-select connect}" T=${T:-8} ROUNDS=${ROUNDS:-3} \
  CLIENTS="${CLIENTS:-16 128}" MODES="${MODES:-simple}" \
  python3 compare.py "pgbouncer=$PGB_PORT:$(cat "$BENCH_DIR/pgbouncer/pgbouncer.pid")" \
    "pgbouncer_tls=$PGB_TLS_PORT:$(cat "$W/pgb/pgbouncer.pid")" \
    "pgmux=$MUX_PORT:$P1" "pgmux_tls=$MUX_TLS_PORT:$P2" "${MORE[@]}"
