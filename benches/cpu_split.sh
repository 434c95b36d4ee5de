#!/usr/bin/env bash
# Where a transaction's CPU goes, per target, in steady state: pgbench, the pooler (user and
# system), every Postgres process, and the machine's idle time, in µs per transaction, plus
# how many transactions pgbench finds per ppoll() (its loop scans every socket of a thread, so
# the fewer answers a scan finds, the more pgbench spends per transaction).
#
# On a machine where pgbench, the pooler and Postgres share the cores, TPS is about
# cores / (the sum of the columns): this shows which part a difference in TPS comes from.
# Each point starts pgbench, waits for its logins (two progress lines with transactions),
# samples WINDOW seconds, then stops pgbench; logins are never in the figures (at 10,000
# clients they are most of a whole run's pooler CPU). Targets run one after the other, point
# by point, ROUNDS times, each round starting with the next target (the machine drifts: on a
# shared one, compare rounds, not single rows).
#
#   bash benches/cpu_split.sh                                   # 16 128 512 clients
#   CLIENTS=10000 WINDOW=30 WORKERS=0 WORKERS2=1 bash benches/cpu_split.sh
#   PIN=1 CLIENTS=10000 WINDOW=30 bash benches/cpu_split.sh     # pgbench on a core of its own
#
# Knobs: CLIENTS (16 128 512), WINDOW (10 s), ROUNDS (1), MODE (simple), J (pgbench threads,
# 2), WORKERS (pgmux's; 0, the default: 1 on two cores), WORKERS2 / PGMUX2 / EXTRA2: a
# second pgmux (`pgmux2`), EXTRA (more pgmux [general] lines), HAPROXY=1 adds HAProxy in plain TCP mode (the
# floor of one proxy hop; it pools nothing: CLIENTS 250 at most), TARGETS (every one started),
# KEEP=1 leaves Postgres running. PIN=1: pgbench on the last core, Postgres and the
# poolers on the others (as if the clients ran elsewhere; the pooler then shares its cores
# with Postgres only). SYSCALLS=1 also prints the pooler's system calls and context switches
# per transaction (perf). The ppoll column needs perf (`-` without it). Context switches per
# transaction are the whole machine's (/proc/stat), pgbench and Postgres included.
set -euo pipefail
. "$(dirname "$0")/common.sh"
export BENCH_DIR=${BENCH_DIR:-/tmp/pgmux-side} PG_PORT=${PG_PORT:-15532} PGB_PORT=${PGB_PORT:-15533}
MUX_PORT=${MUX_PORT:-15534} HAP_PORT=${HAP_PORT:-15535} MUX2_PORT=${MUX2_PORT:-15536}
CLIENTS=${CLIENTS:-16 128 512} WINDOW=${WINDOW:-10} ROUNDS=${ROUNDS:-1} MODE=${MODE:-simple}
W=$BENCH_DIR/split
mkdir -p "$W"
start_postgres_and_pgbouncer
PM_PID=$(head -1 "$BENCH_DIR/pgdata/postmaster.pid")
start_pgmux_and_pgmux2 0
HAP_PID=
[ "${HAPROXY:-0}" = 1 ] && start_haproxy
PGB=
cleanup() {
  [ -z "$PGB" ] || kill "$PGB" 2>/dev/null || true
  kill "$MUX_PID" $MUX2_PID $HAP_PID 2>/dev/null || true
  ./pgbouncer.sh stop >/dev/null
  [ "${KEEP:-0}" = 1 ] || ./pg.sh stop >/dev/null
}
trap cleanup EXIT
sleep 1
pin_clients "$PGB_PID" "$MUX_PID" $MUX2_PID $HAP_PID
# CPU ticks (user, system) of a process, all its threads (pg_ticks, idle_ticks: common.sh).
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
ctxt() { awk '/^ctxt / {print $2}' /proc/stat; }
progress_lines() { grep -c '^progress' "$1" || true; }
HZ=$(getconf CLK_TCK)
# SYSCALLS=1: the pooler's system calls and scheduler events per transaction, printed after
# the table (perf stat on the pooler's process over the same window; perf attaches a moment
# late, so the counts read a few % low: compare targets, not absolute figures).
SYSCALL_EVENTS=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_futex,sched:sched_switch,sched:sched_wakeup
SYSCALL_LINES=()
echo "$(nproc) cores, pgbench -j ${J:-2} -M $MODE, window ${WINDOW} s${PIN:+, PIN=$PIN}"
echo "| clients | target | tps | pgbench µs/tx | pooler user µs/tx | pooler sys µs/tx | postgres µs/tx | idle µs/tx | tx per ppoll | context switches per tx |"
echo "|---|---|---|---|---|---|---|---|---|---|"
ALL=("pgbouncer:$PGB_PORT:$PGB_PID" "pgmux:$MUX_PORT:$MUX_PID" "pgmux2:$MUX2_PORT:$MUX2_PID"
  "haproxy:$HAP_PORT:$HAP_PID")
for c in $CLIENTS; do
  for r in $(seq "$ROUNDS"); do
    # Each round starts with the next target: whoever runs first or last is not always the same.
    for k in "${!ALL[@]}"; do
      t=${ALL[$(((k + r - 1) % ${#ALL[@]}))]}
      IFS=: read -r name port pid <<< "$t"
      [ -n "$pid" ] || continue
      [[ " ${TARGETS:-pgbouncer pgmux pgmux2 haproxy} " == *" $name "* ]] || continue
      out=$W/$name.$c.out
      # -T: longer than any login phase; pgbench is stopped after the window.
      PGPASSWORD=bench $CLIENT_CORES pgbench -h 127.0.0.1 -p "$port" -U bench -n -S -M "$MODE" \
        -c "$c" -j "${J:-2}" -T 3600 -P 1 bench > "$out" 2>&1 &
      PGB=$!
      until [ "$(awk '/^progress/ && $4 > 0' "$out" | wc -l)" -ge 2 ]; do
        kill -0 "$PGB" 2>/dev/null || { tail -3 "$out" >&2; exit 1; }
        sleep 0.5
      done
      n0=$(progress_lines "$out")
      read -r bu0 bs0 <<< "$(ticks "$PGB")"
      read -r pu0 ps0 <<< "$(ticks "$pid")"
      g0=$(pg_ticks) i0=$(idle_ticks) x0=$(ctxt) t0=$(date +%s.%N)
      sys=$W/$name.$c.$r.syscalls
      SYSP=
      if [ "${SYSCALLS:-0}" = 1 ]; then
        perf stat -x, -o "$sys" -e "$SYSCALL_EVENTS" -p "$pid" -- sleep "$WINDOW" &
        SYSP=$!
      fi
      polls=$(pgbench_ppolls "$PGB" "$WINDOW")
      [ -z "$SYSP" ] || wait "$SYSP" || true
      read -r bu1 bs1 <<< "$(ticks "$PGB")"
      read -r pu1 ps1 <<< "$(ticks "$pid")"
      g1=$(pg_ticks) i1=$(idle_ticks) x1=$(ctxt) t1=$(date +%s.%N)
      n1=$(progress_lines "$out")
      kill "$PGB"; wait "$PGB" 2>/dev/null || true; PGB=
      # Transactions in the window: the mean TPS of the progress lines printed during it
      # (one a second) times its length.
      awk -v a="$n0" -v b="$n1" -v e="$(echo "$t1 - $t0" | bc)" -v hz="$HZ" -v c="$c" -v name="$name" -v polls="${polls:-}" \
        -v bt=$((bu1 + bs1 - bu0 - bs0)) -v pu=$((pu1 - pu0)) -v ps=$((ps1 - ps0)) \
        -v g=$((g1 - g0)) -v i=$((i1 - i0)) -v x=$((x1 - x0)) '
        /^progress/ { k++; if (k > a && k <= b) { s += $4; m++ } }
        END {
          tps = m ? s / m : 0; tx = tps * e
          if (tx <= 0) { printf "| %d | %s | - | | | | | | | |\n", c, name; exit }
          f = 1e6 / hz / tx
          printf "| %d | %s | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %s | %.2f |\n", c, name, tps,
            bt * f, pu * f, ps * f, g * f, i * f, (polls > 0 ? sprintf("%.1f", tx / polls) : "-"), x / tx
          print tx > "'"$W/tx"'"
        }' "$out"
      if [ "${SYSCALLS:-0}" = 1 ] && [ -s "$W/tx" ]; then
        SYSCALL_LINES+=("$(awk -F, -v tx="$(cat "$W/tx")" -v c="$c" -v name="$name" '
          /^[0-9]/ { n = $3; sub(/.*:(sys_enter_)?/, "", n); s = s sprintf(" %s %.3f", n, $1 / tx) }
          END { printf "%d %s:%s", c, name, s }' "$sys")")
      fi
      rm -f "$W/tx"
      sleep 2
    done
  done
done
if [ "${#SYSCALL_LINES[@]}" -gt 0 ]; then
  echo
  echo "Per transaction, the pooler's (perf stat -e $SYSCALL_EVENTS):"
  printf '%s\n' "${SYSCALL_LINES[@]}"
fi
