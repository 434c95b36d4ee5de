#!/usr/bin/env bash
# User-space instructions per transaction, counted by valgrind (callgrind): within a few
# percent from run to run (how many events one wake-up finds), whatever else the machine does,
# where timed figures on this shared machine swing by twenty. Kernel work is not counted (strace -c gives
# the system calls).
#
# Each target runs under callgrind twice, with pgbench -t N1 and -t N2 transactions per
# client; (instructions of the second - of the first) / (clients x (N2 - N1)) is the cost of
# one transaction without the logins and start-up.
#
#   bash benches/instructions.sh                         # pgmux and PgBouncer, select-only
#   MODE=extended CLIENTS=8 bash benches/instructions.sh
#   TARGETS="pgmux" PGMUX=/path/to/other/pgmux bash benches/instructions.sh
#
# The profile of each target's second run is kept in $BENCH_DIR/instr/TARGET.callgrind, the
# first's in TARGET-n1.callgrind (start-up and logins are in both). Per function, per
# transaction, without them: python3 benches/callgrind_diff.py TARGET CLIENTS*(N2-N1).
#
# Knobs: MODE (simple), CLIENTS (4), N1 (200), N2 (1200), TARGETS ("pgbouncer pgmux"),
# WORKERS (pgmux's workers; default 0), PGMUX (the binary; default target/release/pgmux),
# EXTRA (more pgmux [general] lines; a section header may follow, e.g.
# EXTRA='[fleet]\nname = "bench"\nmax_servers = 40' for the fleet budget's cost), CACHE_SIM=1
# (callgrind's cache simulation: first-level instruction and data misses and last-level ones too,
# in a cache of this machine's sizes with nothing else running in it).
set -euo pipefail
. "$(dirname "$0")/common.sh"
export BENCH_DIR=${BENCH_DIR:-/tmp/pgmux-instr}
export PG_PORT=${PG_PORT:-15552}
PORT=${PORT:-15553}
MODE=${MODE:-simple} CLIENTS=${CLIENTS:-4} N1=${N1:-200} N2=${N2:-1200}
W=$BENCH_DIR/instr
mkdir -p "$W"
[ "$PGMUX" != "$REPO/target/release/pgmux" ] || (cd "$REPO" && cargo build --release -q)
(cd "$B" && ./pg.sh start >/dev/null)
trap '(cd "$B" && ./pg.sh stop >/dev/null)' EXIT
chmod 777 "$W"

pgmux_config "$PORT" "${WORKERS:-0}" "${EXTRA:-}" > "$W/pgmux.toml"
cat > "$W/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $W/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 20000
logfile = $W/pgbouncer-own.log
INI
echo '"bench" "bench"' > "$W/userlist.txt"
chown -R postgres "$W"

# Instructions pgmux or PgBouncer ran while pgbench did N transactions per client.
count() { # target n
  rm -f "$W"/callgrind.out.*
  local cmd
  case $1 in
  pgmux) cmd="$PGMUX -c $W/pgmux.toml" ;;
  pgbouncer) cmd="$(command -v pgbouncer || echo /usr/sbin/pgbouncer) $W/pgbouncer.ini" ;;
  esac
  runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.out.%p" \
    ${CACHE_SIM:+--cache-sim=yes} \
    $cmd > "$W/$1.out" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do
    PGPASSWORD=bench psql -h 127.0.0.1 -p "$PORT" -U bench -d bench -Atc 'select 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  PGPASSWORD=bench pgbench -h 127.0.0.1 -p "$PORT" -U bench -n -S -M "$MODE" -c "$CLIENTS" -j 1 \
    -t "$2" bench >/dev/null 2>&1
  pkill -INT -f "valgrind.*callgrind.*$PORT|callgrind.*$W" 2>/dev/null || true
  pkill -INT -f "$W/(pgmux.toml|pgbouncer.ini)" 2>/dev/null || true
  wait $pid 2>/dev/null || true
  # Every thread's file (pgmux's workers each write one with --separate-threads=no: one file).
  # The events, summed over the files: Ir (and with CACHE_SIM: Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw).
  cat "$W"/callgrind.out.* | awk '/^summary:/ {for (i = 2; i <= NF; i++) s[i] += $i; n = NF}
    END {for (i = 2; i <= n; i++) printf "%.0f ", s[i]; print ""}'
}

echo "user-space instructions per transaction (callgrind), select-only, -M $MODE, $CLIENTS clients, -t $N2 minus -t $N1"
for t in ${TARGETS:-pgbouncer pgmux}; do
  a=$(count "$t" "$N1")
  cat "$W"/callgrind.out.* > "$W/$t-n1.callgrind" 2>/dev/null || true
  b=$(count "$t" "$N2")
  cat "$W"/callgrind.out.* > "$W/$t.callgrind" 2>/dev/null || true
  per=$(python3 -c 'import sys; a, b, n = sys.argv[1].split(), sys.argv[2].split(), int(sys.argv[3])
d = [(int(y) - int(x)) / n for x, y in zip(a, b)]
print("%d instructions/tx" % d[0] + ("" if len(d) < 9 else
      ", misses per tx (simulated): I1 %.0f, D1 %.0f, LL %.1f" % (d[3], d[4] + d[5], d[6] + d[7] + d[8])))' \
    "$a" "$b" $((CLIENTS * (N2 - N1))))
  echo "$t: $per"
done
