#!/usr/bin/env bash
# pgmux against PgBouncer, side by side in one run: the tables of issue 14.
#
# Starts a throwaway Postgres (pg.sh), PgBouncer (pgbouncer.sh: transaction mode, pool_size 20,
# SCRAM) and pgmux configured the same way, then runs compare.py (pgbench, interleaved point by
# point, pooler CPU µs per transaction and RSS from /proc), and optionally idle_clients.py for
# the RSS per idle logged-in client. Everything on ports below 32768. Not run by CI.
#
#   bash benches/side_by_side.sh                     # select-only, simple/extended/prepared, 16 128 512
#   WORKLOADS="tpcb connect" bash benches/side_by_side.sh
#   CLIENTS=10000 MODES=simple T=30 bash benches/side_by_side.sh
#   IDLE=10000 SKIP_PGBENCH=1 bash benches/side_by_side.sh
#
# Knobs: WORKLOADS (select), MODES (simple extended prepared), CLIENTS (16 128 512), T (8),
# ROUNDS (1), IDLE (0: no idle-client run; N: N idle clients against each pooler), WORKERS
# (pgmux's workers; 0, the default: 1 on two cores), EXTRA (more pgmux [general] lines),
# KEEP=1 leaves Postgres running for the next run, PERF=1 records `perf record -g` of every
# pooler over the run ($BENCH_DIR/pgmux/perf-TARGET.data; `perf report -i FILE --sort dso`
# gives its user-space share, the kernel's being [kernel.kallsyms]).
# HAPROXY=1 adds Debian's HAProxy in plain TCP mode (one thread) straight to Postgres: the
# cost of one proxy hop that parses nothing, the floor for any pooler. It pools nothing (a
# server connection per client, and pg.sh allows 300), so keep CLIENTS at 250 or below.
# EXTRA2 / PGMUX2 / WORKERS2: a second pgmux (target `pgmux2`, port MUX2_PORT) with these
# [general] lines instead of EXTRA, another binary, or other workers, measured in the same
# run: the cost of a setting or of a change, e.g.
#   EXTRA2='track_session_settings = false' MODES="simple extended" bash benches/side_by_side.sh
#   PGMUX2=/tmp/before/target/release/pgmux bash benches/side_by_side.sh
#   WORKERS2=1 MODES="simple extended" bash benches/side_by_side.sh
# PGMUX: pgmux's binary (default target/release/pgmux, built first; scripts/pgo-build.sh's is
# target/pgo/release/pgmux).
# BENCH_SCRIPTS: the shared bench scripts (default ../shared/bench next to this repository).
set -euo pipefail
. "$(dirname "$0")/common.sh"
export BENCH_DIR=${BENCH_DIR:-/tmp/pgmux-side}
export PG_PORT=${PG_PORT:-15532} PGB_PORT=${PGB_PORT:-15533}
MUX_PORT=${MUX_PORT:-15534} HAP_PORT=${HAP_PORT:-15535} MUX2_PORT=${MUX2_PORT:-15536}
W=$BENCH_DIR/pgmux
mkdir -p "$W"
start_postgres_and_pgbouncer
start_pgmux_and_pgmux2 0
# Every target of the run, as compare.py takes them (NAME=PORT:PID).
TARGETS=("pgbouncer=$PGB_PORT:$PGB_PID" "pgmux=$MUX_PORT:$MUX_PID")
[ -z "$MUX2_PID" ] || TARGETS+=("pgmux2=$MUX2_PORT:$MUX2_PID")
if [ "${HAPROXY:-0}" = 1 ]; then
  start_haproxy
  TARGETS+=("haproxy=$HAP_PORT:$HAP_PID")
fi
cleanup() {
  kill "$MUX_PID" ${HAP_PID:-} ${MUX2_PID:-} 2>/dev/null || true
  # perf may exit non-zero on SIGINT: || true, or set -e ends the cleanup here.
  for p in ${PERF_PIDS[@]+"${PERF_PIDS[@]}"}; do kill -INT "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  ./pgbouncer.sh stop >/dev/null
  [ "${KEEP:-0}" = 1 ] || ./pg.sh stop >/dev/null
}
trap cleanup EXIT
for _ in $(seq 100); do
  PGPASSWORD=bench psql -h 127.0.0.1 -p "$MUX_PORT" -U bench -d bench -Atc 'select 1' >/dev/null 2>&1 && break
  sleep 0.1
done
echo "postgres :$PG_PORT, pgbouncer :$PGB_PORT pid $PGB_PID ($(pgbouncer --version 2>/dev/null | head -1 || /usr/sbin/pgbouncer --version | head -1)), pgmux :$MUX_PORT pid $MUX_PID, $(nproc) cores"

PERF_PIDS=()
if [ "${PERF:-0}" = 1 ]; then
  for t in "${TARGETS[@]}"; do
    perf record -g -o "$W/perf-${t%%=*}.data" -p "${t##*:}" >/dev/null 2>&1 &
    PERF_PIDS+=($!)
  done
fi
if [ "${SKIP_PGBENCH:-0}" != 1 ]; then
  WORKLOADS="${WORKLOADS:-select}" MODES="${MODES:-simple extended prepared}" \
    CLIENTS="${CLIENTS:-16 128 512}" T="${T:-8}" ROUNDS="${ROUNDS:-1}" \
    python3 compare.py "${TARGETS[@]}"
fi
if [ "${IDLE:-0}" -gt 0 ]; then
  echo "## idle logged-in clients: $IDLE"
  echo "pgbouncer: $(python3 idle_clients.py "$PGB_PORT" "$PGB_PID" "$IDLE" | tail -1)"
  echo "pgmux:     $(python3 idle_clients.py "$MUX_PORT" "$MUX_PID" "$IDLE" | tail -1)"
  [ -z "${MUX2_PID:-}" ] || echo "pgmux2:    $(python3 idle_clients.py "$MUX2_PORT" "$MUX2_PID" "$IDLE" | tail -1)"
fi
