#!/usr/bin/env bash
# Install Debian's prometheus package (prometheus and promtool) when promtool or prometheus is
# missing, without leaving a Prometheus service running: the package's postinst would start
# one where a service manager runs, so a policy-rc.d that denies starts is put in place for
# the install (if none is there), and a service that started anyway is stopped.
# Used by scripts/check-monitoring.sh and scripts/test-dashboard.py. Needs root.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && [ -x /usr/bin/prometheus ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "promtool/prometheus missing: install Debian's prometheus package (needs root)" >&2
  exit 1
fi

echo "installing Debian's prometheus package (apt-get)..." >&2
policy=/usr/sbin/policy-rc.d
made_policy=0
restore() {
  if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
}
trap restore EXIT
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, from pgmux scripts/install-prometheus.sh: start no service\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  made_policy=1
fi

apt-get -o DPkg::Lock::Timeout=600 update -qq
# --no-install-recommends: no prometheus-node-exporter (another service).
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
  --no-install-recommends prometheus >/dev/null

# Belt and braces: where systemd runs, stop and disable the packaged service if it started.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl stop prometheus.service 2>/dev/null || true
  systemctl disable prometheus.service 2>/dev/null || true
fi

command -v promtool >/dev/null 2>&1 || { echo "promtool missing after install" >&2; exit 1; }
[ -x /usr/bin/prometheus ] || { echo "/usr/bin/prometheus missing after install" >&2; exit 1; }
echo "installed: $(prometheus --version 2>&1 | head -1)" >&2
