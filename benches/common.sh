# Sourced by the benchmarks that run pgmux beside PgBouncer (side_by_side.sh, many_clients.sh,
# cpu_split.sh, interleaved.sh, instructions.sh; scripts/pgo-build.sh for pgmux_config): where
# things are, pgmux configured as ../shared/bench/pgbouncer.sh configures PgBouncer, and the
# helpers they share.
# BENCH_SCRIPTS: the shared bench scripts (default ../shared/bench next to this repository).
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${BENCH_SCRIPTS:-$(dirname "$REPO")/shared/bench}
# The binaries may be given relative to where the benchmark was started: the scripts cd.
# PGMUX defaults to the release build; PGMUX2 stays unset unless given (it starts pgmux2).
PGMUX=$(realpath -m "${PGMUX:-$REPO/target/release/pgmux}")
[ -z "${PGMUX2:-}" ] || PGMUX2=$(realpath "$PGMUX2")

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

# Start pgmux (the binary PGMUX, default target/release/pgmux) on $MUX_PORT (`workers =
# ${WORKERS:-$1}`, EXTRA's lines) and, when EXTRA2, PGMUX2
# or WORKERS2 is set, a second one on $MUX2_PORT (that binary, those workers, EXTRA2's lines
# instead of EXTRA's); configs and logs in $W. Sets MUX_PID and MUX2_PID (empty without it).
# Each pooler starts in a session of its own (setsid), as PgBouncer (-d) and Postgres (pg_ctl)
# do: with the kernel's autogroup (sched_autogroup_enabled, on by default) a session is a
# scheduling group that gets a fair share of the CPU as a whole, so a pooler left in the
# script's session shares one group's share with the pgbench processes the script starts
# (tpcb-like, 16 clients: 3.2 involuntary context switches per transaction against 1.9 in a
# session of its own, and 0.88x PgBouncer's TPS against 1.02x). SAME_SESSION2=1 leaves pgmux2
# in the script's session, to measure that.
start_pgmux_and_pgmux2() {
  local workers=${WORKERS:-$1}
  pgmux_config "$MUX_PORT" "$workers" "${EXTRA:-}" > "$W/pgmux.toml"
  setsid "$PGMUX" -c "$W/pgmux.toml" > "$W/pgmux.log" 2>&1 &
  MUX_PID=$! MUX2_PID=
  if [ -n "${EXTRA2:-}${PGMUX2:-}${WORKERS2:-}" ]; then
    pgmux_config "$MUX2_PORT" "${WORKERS2:-$workers}" "${EXTRA2:-${EXTRA:-}}" > "$W/pgmux2.toml"
    local session=(setsid)
    [ "${SAME_SESSION2:-0}" != 1 ] || session=()
    ${session[@]+"${session[@]}"} "${PGMUX2:-$REPO/target/release/pgmux}" -c "$W/pgmux2.toml" > "$W/pgmux2.log" 2>&1 &
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
# HAP_PID; its config and log in $W. A session of its own, as the poolers.
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
  setsid haproxy -f "$W/haproxy.cfg" > "$W/haproxy.log" 2>&1 &
  HAP_PID=$!
}

# PIN=1: Postgres (the postmaster $PM_PID and its backends) and the processes given as
# arguments on every core but the last; sets CLIENT_CORES, the prefix that starts a client on
# the last one (empty without PIN).
pin_clients() {
  local last=$(($(nproc) - 1)) p
  CLIENT_CORES=
  [ "${PIN:-0}" = 1 ] || return 0
  [ "$last" -gt 0 ] || { echo "PIN=1 needs two cores" >&2; exit 1; }
  # Backends inherit the postmaster's affinity; the poolers' threads are set one by one.
  for p in "$PM_PID" $(ps -o pid= --ppid "$PM_PID") "$@"; do
    taskset -a -p -c "0-$((last - 1))" "$p" >/dev/null
  done
  CLIENT_CORES="taskset -c $last"
}

# CPU ticks (user + system) of every Postgres process: the postmaster $PM_PID and its children.
pg_ticks() {
  for p in "$PM_PID" $(ps -o pid= --ppid "$PM_PID"); do
    awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true
  done | awk '{s += $1} END {print s}'
}

# The whole machine's idle ticks (idle and iowait).
idle_ticks() { awk '/^cpu / {print $5 + $6}' /proc/stat; }

# CLIENT_SHARES=N: a cgroup (v1 cpu controller) of cpu.shares N, against 1024 for every other
# process, for the clients: they get less of a core the pooler or Postgres want, as clients on
# other machines would take none. Sets CLIENT_GROUP, the prefix that starts a client in it
# (empty without CLIENT_SHARES): a shell joins the cgroup, then becomes the command.
client_shares() {
  CLIENT_GROUP=()
  [ -n "${CLIENT_SHARES:-}" ] || return 0
  [ -w /sys/fs/cgroup/cpu ] || { echo "CLIENT_SHARES needs cgroup v1's cpu controller" >&2; exit 1; }
  local cg=/sys/fs/cgroup/cpu/pgmux-bench-clients
  mkdir -p "$cg"
  echo "$CLIENT_SHARES" > "$cg/cpu.shares"
  CLIENT_GROUP=(sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg")
}

# Sleep $2 seconds while counting pgbench $1's ppoll calls (perf); prints the count, or
# nothing without perf. A pgbench loop is one ppoll over every socket of a thread: the
# transactions per ppoll say how many answers each costly scan found.
pgbench_ppolls() {
  if command -v perf >/dev/null; then
    perf stat -x, -e syscalls:sys_enter_ppoll -p "$1" -- sleep "$2" 2>&1 \
      | awk -F, '/sys_enter_ppoll/ {print $1}'
  else
    sleep "$2"
  fi
}
