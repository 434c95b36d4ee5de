#!/usr/bin/env bash
# Make deploy/monitoring/prometheusrule.yaml (a PrometheusRule for the Prometheus Operator) from
# deploy/monitoring/pgmux-rules.yml, the one source of truth: a fixed header, then the rules
# file whole, indented under `spec:` (its `groups:` is the PrometheusRule's spec.groups).
#   scripts/gen-prometheusrule.sh          write the file
#   scripts/gen-prometheusrule.sh -        print it instead (scripts/check-monitoring.sh
#                                          compares that with the committed file)
set -euo pipefail
cd "$(dirname "$0")/.."
src=deploy/monitoring/pgmux-rules.yml
out=deploy/monitoring/prometheusrule.yaml

if grep -q $'\t' "$src"; then
  echo "$src: tabs are not allowed (YAML indentation)" >&2
  exit 1
fi

generate() {
  cat <<'HEADER'
# Generated from pgmux-rules.yml by scripts/gen-prometheusrule.sh: do not edit by hand.
# Edit pgmux-rules.yml, run the script, commit both files. scripts/check-monitoring.sh fails
# when this file is stale.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: pgmux
  labels:
    app.kubernetes.io/name: pgmux
    app.kubernetes.io/component: monitoring
spec:
HEADER
  # Indent every non-empty line by two spaces; empty lines stay empty.
  sed -e 's/^\(.\)/  \1/' "$src"
}

if [ "${1:-}" = "-" ]; then
  generate
else
  generate >"$out.tmp"
  mv "$out.tmp" "$out"
  echo "wrote $out"
fi
