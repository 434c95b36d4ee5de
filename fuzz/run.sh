#!/usr/bin/env bash
# Run fuzz targets (cargo-fuzz, nightly), each for SECONDS (default 600), JOBS at a time
# (default 2). New inputs go to fuzz/work/TARGET (not committed); fuzz/corpus/TARGET holds the
# seeds. Crashes land in fuzz/artifacts/TARGET. Logs: fuzz/work/TARGET.log.
#   ./fuzz/run.sh                 # every target
#   SECONDS_=60 ./fuzz/run.sh scram config_file
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(startup_packet frontend_messages backend_messages scram config_file auth_file admin_command hba_file auth_query_row txn_state sql_touch)
secs=${SECONDS_:-600}
jobs=${JOBS:-2}
cargo +nightly fuzz build -O
mkdir -p work
run() {
  local t=$1
  mkdir -p "work/$t"
  cargo +nightly fuzz run -O "$t" "work/$t" "corpus/$t" -- -max_total_time="$secs" \
    > "work/$t.log" 2>&1 && echo "$t: ok ($(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "work/$t.log" | tail -1))" \
    || echo "$t: FAILED, see fuzz/work/$t.log and fuzz/artifacts/$t"
}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
  run "$t" &
done
wait
