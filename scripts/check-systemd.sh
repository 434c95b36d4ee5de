#!/usr/bin/env bash
# The systemd unit (deploy/systemd/pgmux.service) passes `systemd-analyze verify` with no
# warning, pointed at a built pgmux binary (argument; default target/debug/pgmux).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/pgmux}")
[ -x "$bin" ] || { echo "check-systemd: no pgmux binary at $bin (cargo build first)" >&2; exit 1; }
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "installing systemd (apt-get) for systemd-analyze..." >&2
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq systemd >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/pgmux#$bin#g" deploy/systemd/pgmux.service >"$tmp/pgmux.service"
if ! out=$(systemd-analyze verify "$tmp/pgmux.service" 2>&1) || [ -n "$out" ]; then
  echo "check-systemd: deploy/systemd/pgmux.service:" >&2
  echo "$out" >&2
  exit 1
fi
echo "check-systemd: deploy/systemd/pgmux.service verifies"
