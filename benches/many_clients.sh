#!/usr/bin/env bash
# 10,000 pgbench clients (CLIENTS) through PgBouncer and through pgmux, one after the other on
# the same Postgres: TPS, p50/p99 latency (pgbench's per-transaction log, sampled), failures,
# the time to log every client in, and the pooler's CPU per transaction (logins included).
# Ports and set-up as benches/side_by_side.sh (which it calls with KEEP=1 for Postgres).
#   bash benches/many_clients.sh                  # 10,000 clients, -T 90, select-only, simple
#   CLIENTS=5000 T=60 WORKERS=0 bash benches/many_clients.sh
# pgbench's sampled per-transaction logs stay in $BENCH_DIR/many/logs-TARGET (client id,
# transaction number, latency in µs, script, epoch seconds and µs: pgbench's --log format).
# Knobs: CLIENTS (10000), T (90), MODE (simple), WORKERS (pgmux's, default 0 as in the
# config), PGMUX (its binary; default target/release/pgmux), TARGETS
# ("pgbouncer pgmux", plus pgmux2 when set), KEEP=1 leaves Postgres running; PGMUX2 /
# WORKERS2: a second pgmux (target `pgmux2`, port MUX2_PORT) with another binary or workers,
#   WORKERS=0 WORKERS2=1 T=150 bash benches/many_clients.sh
# CLIENT_SHARES=N runs pgbench in a cgroup (v1 cpu controller) of cpu.shares N against every
# other process's 1024: a client that does not take a full share of the cores the pooler and
# Postgres run on (as clients on other machines would not), see benches/interleaved.sh.
set -euo pipefail
. "$(dirname "$0")/common.sh"
export BENCH_DIR=${BENCH_DIR:-/tmp/pgmux-side} PG_PORT=${PG_PORT:-15532} PGB_PORT=${PGB_PORT:-15533}
MUX_PORT=${MUX_PORT:-15534}
CLIENTS=${CLIENTS:-10000} T=${T:-90} MODE=${MODE:-simple}
# Logins count against -T: it must outlast them (10,000 SCRAM logins take 30-50 s here).
W=$BENCH_DIR/many
mkdir -p "$W"
start_postgres_and_pgbouncer
MUX2_PORT=${MUX2_PORT:-15536}
start_pgmux_and_pgmux2 0
trap 'kill $MUX_PID $MUX2_PID 2>/dev/null; ./pgbouncer.sh stop >/dev/null; [ "${KEEP:-0}" = 1 ] || ./pg.sh stop >/dev/null' EXIT
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
client_shares
echo "| target | clients | tps | p50 ms | p99 ms | failed | login s | pooler cpu us/tx |"
echo "|---|---|---|---|---|---|---|---|"
for t in "pgbouncer:$PGB_PORT:$PGB_PID" "pgmux:$MUX_PORT:$MUX_PID" "pgmux2:$MUX2_PORT:$MUX2_PID"; do
  IFS=: read -r name port pid <<< "$t"
  [ -n "$pid" ] || continue
  [[ " ${TARGETS:-pgbouncer pgmux pgmux2} " == *" $name "* ]] || continue
  rm -f "$W"/log.*
  c0=$(ticks "$pid")
  out=$(cd "$W" && PGPASSWORD=bench "${CLIENT_GROUP[@]}" pgbench -h 127.0.0.1 -p "$port" -U bench -n -S -M "$MODE" \
    -c "$CLIENTS" -j 2 -T "$T" -l --sampling-rate=0.05 --log-prefix=log bench 2>&1 || true)
  c1=$(ticks "$pid")
  tx=$(echo "$out" | awk '/actually processed/ {split($NF, a, "/"); print a[1]}')
  tps=$(echo "$out" | awk '/^tps/ {printf "%d", $3}')
  failed=$(echo "$out" | awk '/number of failed transactions/ {print $5}')
  login=$(echo "$out" | awk '/initial connection time/ {printf "%.1f", $5 / 1000; exit}')
  pct=$(cat "$W"/log.* 2>/dev/null | awk '{print $3}' | sort -n | awk '{a[NR] = $1} END {
    if (NR) printf "%.1f %.1f", a[int(NR * 0.5)] / 1000, a[int(NR * 0.99)] / 1000; else print "- -"}')
  cpu=$(awk -v c="$((c1 - c0))" -v tx="${tx:-0}" 'BEGIN {if (tx > 0) printf "%.1f", c * 10000 / tx; else print "-"}')
  echo "| $name | $CLIENTS | ${tps:--} | ${pct% *} | ${pct#* } | ${failed:--} | ${login:--} | $cpu |"
  # pgbench's sampled per-transaction logs, kept per target for a closer look.
  rm -rf "$W/logs-$name" && mkdir -p "$W/logs-$name" && mv "$W"/log.* "$W/logs-$name/" 2>/dev/null || true
  [ -n "$tx" ] || echo "$out" | tail -5 >&2
done
