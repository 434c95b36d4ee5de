#!/usr/bin/env bash
# A profile-guided release build of pgmux (PGO): an instrumented build is trained with pgbench
# through a throwaway Postgres, then the release build is compiled with that profile, so the
# relay's hot path is laid out together and its branches as they run. The result is
# target/pgo/release/pgmux; `cargo build --release` stays as it was.
#
#   bash scripts/pgo-build.sh
#
# Why: per transaction pgmux runs more code than fits in the first-level instruction cache;
# the profile lays the hot path out together (benches/instructions.sh with CACHE_SIM=1 counts
# the simulated misses, benches/interleaved.sh times the binaries side by side).
#
# Needs, and installs when missing: PostgreSQL with pgbench (apt-get), and llvm-profdata of
# rustc's LLVM version (rustup's llvm-tools component, else Debian's `llvm-N`).
# The Dockerfile builds the image's binary with it.
# Knobs: PGO_PORT (Postgres on PGO_PORT, pgmux on PGO_PORT+1; default 15570), PGO_SECONDS
# (each training run; default 4), PGO_DIR (work directory; default target/pgo-train), PGO=0
# (no profile: a plain release build, in the same place). CARGO_TARGET_DIR moves target/.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TARGET=$(realpath -m "${CARGO_TARGET_DIR:-$REPO/target}")
PORT=${PGO_PORT:-15570}
MUX_PORT=$((PORT + 1))
SECONDS_EACH=${PGO_SECONDS:-4}
WORK=$(realpath -m "${PGO_DIR:-$TARGET/pgo-train}")

if [ "${PGO:-1}" = 0 ]; then
  echo "== PGO=0: a release build without a profile (target/pgo)" >&2
  CARGO_TARGET_DIR=$TARGET/pgo cargo build --release --locked -q --bin pgmux
  echo "$TARGET/pgo/release/pgmux"
  exit 0
fi

apt_install() {
  echo "installing $* (apt-get)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# llvm-profdata that reads what rustc's LLVM writes: the same major version.
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
find_profdata() {
  local p
  for p in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata "llvm-profdata-$major" llvm-profdata; do
    if command -v "$p" >/dev/null 2>&1 && "$p" --version 2>/dev/null | grep -q "LLVM version $major\."; then
      echo "$p"
      return
    fi
  done
}
profdata=$(find_profdata)
if [ -z "$profdata" ] && command -v rustup >/dev/null 2>&1 &&
  rustup component add llvm-tools >&2; then
  profdata=$(find_profdata)
fi
if [ -z "$profdata" ]; then
  apt_install "llvm-$major"
  profdata=llvm-profdata-$major
  command -v "$profdata" >/dev/null || { echo "no llvm-profdata for LLVM $major" >&2; exit 1; }
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ] || ! command -v pgbench >/dev/null 2>&1; then
  apt_install postgresql postgresql-contrib
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

# 1. The instrumented build.
rm -rf "$WORK"
mkdir -p "$WORK/raw"
echo "== instrumented build (target/pgo-gen)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$WORK/raw" CARGO_TARGET_DIR=$TARGET/pgo-gen \
  cargo build --release --locked -q --bin pgmux

# 2. Training: a throwaway Postgres (as the postgres user when run as root: initdb refuses
# root), pgmux in front of it as the benchmarks run it, pgbench's workloads through it.
# From /: the postgres user may not enter the directory this runs in.
as_pg=(env -C /)
if [ "$(id -u)" = 0 ]; then
  as_pg=(env -C / runuser -u postgres --)
  chown postgres "$WORK"
fi
"${as_pg[@]}" "$bindir/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w \
  -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
pgmux_pid=
stop() {
  [ -z "$pgmux_pid" ] || kill -QUIT "$pgmux_pid" 2>/dev/null || true
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
}
trap stop EXIT
psql -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE ROLE bench LOGIN PASSWORD 'bench'" postgres
psql -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE DATABASE bench OWNER bench" postgres
pgbench -h 127.0.0.1 -p "$PORT" -U bench -i -s 1 -q bench >/dev/null 2>&1

# The benchmarks' pgmux config (benches/common.sh): transaction mode, pool 20, SCRAM.
. benches/common.sh
PG_PORT=$PORT pgmux_config "$MUX_PORT" 0 > "$WORK/pgmux.toml"
echo "== training: pgbench through the instrumented pgmux" >&2
LLVM_PROFILE_FILE="$WORK/raw/pgmux-%p-%m.profraw" "$TARGET/pgo-gen/release/pgmux" -c "$WORK/pgmux.toml" \
  > "$WORK/pgmux.log" 2>&1 &
pgmux_pid=$!
for _ in $(seq 100); do
  PGPASSWORD=bench psql -h 127.0.0.1 -p "$MUX_PORT" -U bench -Atc 'select 1' bench >/dev/null 2>&1 && break
  sleep 0.1
done
run() {
  PGPASSWORD=bench pgbench -h 127.0.0.1 -p "$MUX_PORT" -U bench -n -j 2 -T "$SECONDS_EACH" "$@" bench \
    | sed -n 's/^tps = \([0-9]*\).*/  '"$*"': \1 tps/p' >&2
}
for mode in simple extended prepared; do
  run -S -M "$mode" -c 16
  run -S -M "$mode" -c 256
done
run -M prepared -c 16
run -S -C -c 16
kill -QUIT "$pgmux_pid"
wait "$pgmux_pid" || true
pgmux_pid=

# 3. The profile, and the build that uses it.
ls "$WORK"/raw/*.profraw >/dev/null
"$profdata" merge -o "$WORK/pgmux.profdata" "$WORK"/raw/*.profraw
echo "== profile-guided build (target/pgo)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$WORK/pgmux.profdata" CARGO_TARGET_DIR=$TARGET/pgo \
  cargo build --release --locked -q --bin pgmux
echo "$TARGET/pgo/release/pgmux"
