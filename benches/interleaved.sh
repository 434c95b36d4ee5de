#!/usr/bin/env bash
# Many clients, every target measured in short windows taken in turn, many times over, from
# one login phase each: the machine's drift (Postgres alone moved by 40% per transaction from
# one 5-minute point to the next in cpu_split.sh at 10,000 clients) falls on every target
# alike, and twenty windows cost what two rounds of cpu_split.sh cost there.
#
# Each target gets its own pgbench, logged in once (one after the other, never two login
# phases at once), then stopped (SIGSTOP). A round resumes one pgbench at a time, skips WARM
# seconds (the queue the previous target's clients left at their pooler drains; parked
# clients unpark), measures WINDOW seconds and stops it again. Per window: TPS (pgbench's
# progress lines, time-stamped, inside the window) and CPU µs per transaction of pgbench, the
# pooler, every Postgres process and the idle machine, as cpu_split.sh. Printed: every
# window, then per target the median of its windows and of its TPS ratio to the first
# target's window in the same round.
#
#   bash benches/interleaved.sh                              # 10,000 clients, PgBouncer and pgmux
#   CLIENTS=2000 ROUNDS=10 WORKERS2=1 bash benches/interleaved.sh
#
# Knobs: CLIENTS (10000), ROUNDS (10), WINDOW (8 s), WARM (4 s), MODE (simple), WORKERS
# (pgmux's, 0), PGMUX (pgmux's binary; default target/release/pgmux), WORKERS2 / PGMUX2 /
# EXTRA2: a second pgmux (`pgmux2`), MODE2: pgmux2's pgbench -M (default MODE;
# `MODE=prepared MODE2=extended TARGETS="pgmux pgmux2"` sets -M prepared, which PgBouncer 1.18
# cannot run, beside pgmux's own extended), TARGETS (the ones started), PIN=1: pgbench on the
# last core, Postgres and the poolers on the others (what the poolers give when the clients'
# own CPU is out of the picture, as in cpu_split.sh);
# CLIENT_SHARES=N: the pgbench processes in a cgroup (v1 cpu controller) of cpu.shares N
# against every other process's 1024, so they get less of a shared core when others want it.
# The `queued µs/tx` column is the time the pooler's threads spent runnable but waiting for a
# core (/proc/PID/task/*/schedstat): what the pooler loses to the processes it shares the
# cores with.
# Latency: pgbench logs a sample of its transactions (-l, SAMPLE of them, default 0.1); a
# window's p50 and p99 are over the transactions that started in it at least TAIL seconds
# (default 3) before its stop. One still running at the stop has its stop counted in its
# latency, but it ran for more than TAIL seconds anyway, so it ranks where it belongs as long
# as the p99 is below TAIL (a p99 at TAIL or above is printed as `>TAIL`). The medians
# table gives each target's median window p50 and p99 and the median p99 ratio to the first
# target's in the same round.
set -euo pipefail
. "$(dirname "$0")/common.sh"
export BENCH_DIR=${BENCH_DIR:-/tmp/pgmux-side} PG_PORT=${PG_PORT:-15532} PGB_PORT=${PGB_PORT:-15533}
MUX_PORT=${MUX_PORT:-15534} MUX2_PORT=${MUX2_PORT:-15536}
CLIENTS=${CLIENTS:-10000} ROUNDS=${ROUNDS:-10} WINDOW=${WINDOW:-8} WARM=${WARM:-4}
MODE=${MODE:-simple} SAMPLE=${SAMPLE:-0.1} TAIL=${TAIL:-3}
W=$BENCH_DIR/interleaved
mkdir -p "$W"
start_postgres_and_pgbouncer
PM_PID=$(head -1 "$BENCH_DIR/pgdata/postmaster.pid")
start_pgmux_and_pgmux2 0
BENCHES=()
cleanup() {
  for p in "${BENCHES[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null || true; done
  kill "$MUX_PID" $MUX2_PID 2>/dev/null || true
  ./pgbouncer.sh stop >/dev/null
  ./pg.sh stop >/dev/null
}
trap cleanup EXIT
sleep 1
pin_clients "$PGB_PID" "$MUX_PID" $MUX2_PID
client_shares
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Nanoseconds the process's threads have waited runnable for a core.
queued() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%.0f", s}'; }
HZ=$(getconf CLK_TCK)

# Log every target's clients in, one target at a time, and stop each pgbench once it runs.
NAMES=() PIDS=() OUTS=()
for t in "pgbouncer:$PGB_PORT:$PGB_PID" "pgmux:$MUX_PORT:$MUX_PID" "pgmux2:$MUX2_PORT:$MUX2_PID"; do
  IFS=: read -r name port pid <<< "$t"
  [ -n "$pid" ] || continue
  [[ " ${TARGETS:-pgbouncer pgmux pgmux2} " == *" $name "* ]] || continue
  out=$W/$name.out mode=$MODE
  [ "$name" != pgmux2 ] || mode=${MODE2:-$MODE}
  rm -f "$W/lat-$name".*
  PGPASSWORD=bench "${CLIENT_GROUP[@]}" $CLIENT_CORES pgbench -h 127.0.0.1 -p "$port" -U bench -n -S -M "$mode" -c "$CLIENTS" \
    -j 2 -T 36000 -P 1 --progress-timestamp -l --sampling-rate="$SAMPLE" --log-prefix="$W/lat-$name" \
    bench > "$out" 2>&1 &
  b=$!
  BENCHES+=("$b")
  until [ "$(awk '/^progress/ && $4 > 0' "$out" | wc -l)" -ge 2 ]; do
    kill -0 "$b" 2>/dev/null || { tail -3 "$out" >&2; exit 1; }
    sleep 0.5
  done
  kill -STOP "$b"
  NAMES+=("$name") PIDS+=("$pid") OUTS+=("$out")
  sleep "$WARM"
done

echo "$(nproc) cores, $CLIENTS clients, pgbench -j 2 -M $MODE${MODE2:+ (pgmux2: -M $MODE2)}, $ROUNDS rounds of ${WINDOW} s windows (after ${WARM} s)${PIN:+, PIN=$PIN}${CLIENT_SHARES:+, pgbench at cpu.shares $CLIENT_SHARES}"
echo "| round | target | tps | pgbench µs/tx | pooler µs/tx | postgres µs/tx | idle µs/tx | tx per ppoll | queued µs/tx |"
echo "|---|---|---|---|---|---|---|---|---|"
: > "$W/windows"
: > "$W/spans"
for r in $(seq "$ROUNDS"); do
  # Each round starts with the next target.
  for k in "${!NAMES[@]}"; do
    i=$(((k + r - 1) % ${#NAMES[@]}))
    name=${NAMES[$i]} pid=${PIDS[$i]} out=${OUTS[$i]} b=${BENCHES[$i]}
    kill -CONT "$b"
    sleep "$WARM"
    b0=$(ticks "$b") p0=$(ticks "$pid") q0=$(queued "$pid") g0=$(pg_ticks) i0=$(idle_ticks) t0=$(date +%s.%N)
    polls=$(pgbench_ppolls "$b" "$WINDOW")
    b1=$(ticks "$b") p1=$(ticks "$pid") q1=$(queued "$pid") g1=$(pg_ticks) i1=$(idle_ticks) t1=$(date +%s.%N)
    kill -STOP "$b"
    echo "$r $name $t0 $t1" >> "$W/spans"
    # A progress line covers the second before its time stamp: those wholly inside the window.
    awk -v t0="$t0" -v t1="$t1" -v hz="$HZ" -v r="$r" -v name="$name" \
      -v polls="${polls:-}" -v q=$((q1 - q0)) -v bt=$((b1 - b0)) -v pt=$((p1 - p0)) -v g=$((g1 - g0)) -v idle=$((i1 - i0)) '
      /^progress/ && $2 - 1 >= t0 && $2 <= t1 { s += $4; m++ }
      END {
        tps = m ? s / m : 0; tx = tps * (t1 - t0)
        if (tx <= 0) { printf "| %d | %s | - | | | | | | |\n", r, name; exit }
        f = 1e6 / hz / tx; pp = polls > 0 ? tx / polls : 0; qt = q / 1e3 / tx
        printf "| %d | %s | %d | %.1f | %.1f | %.1f | %.1f | %s | %.1f |\n", r, name, tps, bt * f, pt * f, g * f, idle * f, (pp ? sprintf("%.1f", pp) : "-"), qt
        printf "%d %s %f %f %f %f %f %f %f\n", r, name, tps, bt * f, pt * f, g * f, idle * f, pp, qt >> "'"$W/windows"'"
      }' "$out"
  done
done
echo
echo "Medians over the rounds (ratio: to ${NAMES[0]}'s window of the same round):"
echo "| target | tps | ratio | p50 ms | p99 ms | p99 ratio | pgbench µs/tx | pooler µs/tx | postgres µs/tx | idle µs/tx | tx per ppoll | queued µs/tx |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
# pgbench writes its log through stdio: what a stopped pgbench still buffers (the last few
# dozen lines) is not in the files yet, which takes nothing from the windows but the last one.
python3 - "$W" "$TAIL" "${NAMES[0]}" "${NAMES[@]}" <<'PY'
import bisect, glob, statistics, sys
w, tail, first, names = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
rows = [l.split() for l in open(f"{w}/windows")]
by = {(r[0], r[1]): [float(x) for x in r[2:]] for r in rows}
def pct(v, q):
    return v[min(len(v) - 1, int(len(v) * q))]
# Per window: p50 and p99 (ms) of the sampled transactions that started in [t0, t1 - tail].
txs = {}
for n in names:
    txs[n] = sorted(
        (int(p[4]) + int(p[5]) / 1e6 - int(p[2]) / 1e6, int(p[2]) / 1e3)
        for f in glob.glob(f"{w}/lat-{n}.*") for p in map(str.split, open(f)) if len(p) >= 6)
p50w, p99w = {}, {}
for r, n, t0, t1 in (l.split() for l in open(f"{w}/spans")):
    v = txs[n]
    lo = bisect.bisect_left(v, (float(t0),))
    hi = bisect.bisect_right(v, (float(t1) - tail, float("inf")))
    ms = sorted(m for _, m in v[lo:hi])
    if ms:
        p50w[(r, n)], p99w[(r, n)] = pct(ms, 0.5), pct(ms, 0.99)
for n in names:
    mine = [(k[0], v) for k, v in by.items() if k[1] == n]
    if not mine:
        continue
    med = [statistics.median(v[j] for _, v in mine) for j in range(7)]
    ratios = [v[0] / by[(r, first)][0] for r, v in mine if (r, first) in by]
    ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
    pp = f"{med[5]:.1f}" if med[5] else "-"
    p50s = [p50w[(r, n)] for r, _ in mine if (r, n) in p50w]
    p99s = {r: p99w[(r, n)] for r, _ in mine if (r, n) in p99w}
    p50 = f"{statistics.median(p50s):.1f}" if p50s else "-"
    p99 = statistics.median(p99s.values()) if p99s else None
    p99t = "-" if p99 is None else (f">{tail * 1e3:.0f}" if p99 >= tail * 1e3 else f"{p99:.1f}")
    pr = [p99s[r] / p99w[(r, first)] for r in p99s if (r, first) in p99w]
    prt = f"{statistics.median(pr):.2f}" if pr else "-"
    print(f"| {n} | {med[0]:.0f} | {ratio} | {p50} | {p99t} | {prt} | {med[1]:.1f} | {med[2]:.1f} | {med[3]:.1f} | {med[4]:.1f} | {pp} | {med[6]:.1f} |")
PY
