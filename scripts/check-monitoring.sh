#!/usr/bin/env bash
# Check deploy/monitoring/ without a running pgmux (a few seconds; the live test is
# scripts/test-dashboard.py):
#  - promtool check rules: the plain rules file, and the rules taken back out of the
#    PrometheusRule;
#  - the PrometheusRule is what scripts/gen-prometheusrule.sh makes from the plain file today,
#    and its spec is the plain file byte for byte (one source of truth);
#  - promtool test rules: the unit tests in deploy/monitoring/tests/;
#  - every alert has for:, a severity label, summary, description and a runbook annotation
#    whose section exists in docs/monitoring.md, and unit tests where it fires and where not;
#  - the dashboard is valid JSON of the expected shape, and every pgmux metric that the rules
#    or the dashboard name is one that pgmux's source registers.
# Installs Debian's prometheus package (for promtool) when promtool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

mon=deploy/monitoring
rules=$mon/pgmux-rules.yml
operator=$mon/prometheusrule.yaml

command -v promtool >/dev/null 2>&1 || bash scripts/install-prometheus.sh
echo "promtool: $(promtool --version 2>&1 | head -1)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
fail() {
  echo "FAIL: $*" >&2
  failed=1
}

echo "== promtool check rules $rules"
promtool check rules "$rules" || fail "promtool check rules $rules"

echo "== $operator is generated from $rules"
bash scripts/gen-prometheusrule.sh - >"$tmp/generated.yaml"
if ! diff -u "$operator" "$tmp/generated.yaml" >"$tmp/stale.diff"; then
  cat "$tmp/stale.diff" >&2
  fail "$operator is stale or edited by hand: run scripts/gen-prometheusrule.sh"
fi

echo "== rules taken out of $operator"
grep -qx 'apiVersion: monitoring.coreos.com/v1' "$operator" || fail "$operator: apiVersion is not monitoring.coreos.com/v1"
grep -qx 'kind: PrometheusRule' "$operator" || fail "$operator: kind is not PrometheusRule"
# Everything under the top-level `spec:`, two spaces of indentation removed; a line under it
# that is not indented by two spaces (another top-level key) is an error.
if awk '
  in_spec && /^[^ ]/ { print "line " NR ": top-level key after spec: " $0 > "/dev/stderr"; bad = 1; exit 1 }
  in_spec { sub(/^  /, ""); print; next }
  /^spec:[ ]*$/ { in_spec = 1 }
  END { if (!in_spec) { print "no spec:" > "/dev/stderr"; exit 1 } }
' "$operator" >"$tmp/operator-rules.yml"; then
  promtool check rules "$tmp/operator-rules.yml" || fail "promtool check rules on the PrometheusRule's spec"
  cmp -s "$tmp/operator-rules.yml" "$rules" || {
    diff -u "$rules" "$tmp/operator-rules.yml" >&2 || true
    fail "the PrometheusRule's spec differs from $rules"
  }
else
  fail "cannot take the rules out of $operator"
fi

echo "== promtool test rules $mon/tests/*.yml"
promtool test rules "$mon"/tests/*.yml || fail "promtool test rules"

echo "== alerts, runbooks, tests, dashboard"
python3 - "$rules" "$mon/tests" docs/monitoring.md "$mon/grafana-dashboard.json" src <<'PY' || fail "lint"
import json, pathlib, re, sys

rules_path, tests_dir, doc_path, dash_path, src_dir = sys.argv[1:]
errors = []
rules_text = pathlib.Path(rules_path).read_text()

# Rule blocks: from one "- alert:"/"- record:" line to the next (the file keeps that style).
blocks = re.split(r"(?m)^(?=[ \t]*- (?:alert|record):)", rules_text)[1:]
alerts = {}
records = []
for b in blocks:
    m = re.match(r"\s*- (alert|record):\s*(\S+)", b)
    kind, name = m.groups()
    if kind == "record":
        records.append(name)
        continue
    alerts[name] = b
    for key, pat in [("for:", r"(?m)^\s+for:\s*\S+"), ("severity label", r"(?m)^\s+severity:\s*(critical|warning|info)\s*$"),
                     ("summary", r"(?m)^\s+summary:\s*\S"), ("description", r"(?m)^\s+description:\s*\S"),
                     ("runbook", r"(?m)^\s+runbook:\s*\S")]:
        if not re.search(pat, b):
            errors.append(f"alert {name}: no {key}")

# Runbook anchors: GitHub's slug of a heading in docs/monitoring.md.
def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")

doc = pathlib.Path(doc_path)
anchors = {slug(h) for h in re.findall(r"(?m)^#+\s+(.*)$", doc.read_text())} if doc.exists() else set()
if not doc.exists():
    errors.append(f"{doc_path} missing")
for name, b in alerts.items():
    m = re.search(r'(?m)^\s+runbook:\s*"?([^"\s]+)"?', b)
    if not m:
        continue
    target = m.group(1)
    path, _, anchor = target.partition("#")
    if path != "docs/monitoring.md":
        errors.append(f"alert {name}: runbook {target} is not in docs/monitoring.md")
    elif anchor not in anchors:
        errors.append(f"alert {name}: runbook anchor #{anchor} is no heading of docs/monitoring.md")

# Unit tests: each alert needs an eval with exp_alerts: [] and one with alerts listed.
tests_text = "\n".join(p.read_text() for p in sorted(pathlib.Path(tests_dir).glob("*.yml")))
firing, quiet = set(), set()
for m in re.finditer(r"(?m)^\s+alertname:\s*(\S+)\s*\n\s+exp_alerts:(.*)$", tests_text):
    (quiet if m.group(2).strip() == "[]" else firing).add(m.group(1))
for name in alerts:
    if name not in firing:
        errors.append(f"alert {name}: no unit test where it fires")
    if name not in quiet:
        errors.append(f"alert {name}: no unit test where it does not fire")
for name in (firing | quiet) - set(alerts):
    errors.append(f"unit tests name alert {name}, which the rules do not have")

# The dashboard.
dash = json.loads(pathlib.Path(dash_path).read_text())
if dash.get("schemaVersion", 0) < 36:
    errors.append(f"dashboard: schemaVersion {dash.get('schemaVersion')} is old (want >= 36)")
tvars = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
ds = tvars.get("datasource")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    errors.append("dashboard: no template variable datasource of type datasource, query prometheus")
for name in ("database", "user"):
    v = tvars.get(name)
    if not v or v.get("type") != "query" or "label_values(" not in str(v.get("query")):
        errors.append(f"dashboard: no template variable {name} from label_values")
    elif v.get("datasource", {}).get("uid") != "${datasource}":
        errors.append(f"dashboard: variable {name} does not use ${{datasource}}")

def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))

ids = set()
exprs = []
for p in walk(dash.get("panels", [])):
    if p.get("id") in ids:
        errors.append(f"dashboard: panel id {p.get('id')} used twice")
    ids.add(p.get("id"))
    if "gridPos" not in p:
        errors.append(f"dashboard: panel {p.get('title')!r} has no gridPos")
    if p.get("type") == "row":
        continue
    if p.get("datasource", {}).get("uid") != "${datasource}":
        errors.append(f"dashboard: panel {p.get('title')!r} does not use ${{datasource}}")
    targets = p.get("targets", [])
    if not targets:
        errors.append(f"dashboard: panel {p.get('title')!r} has no targets")
    refs = [t.get("refId") for t in targets]
    if len(set(refs)) != len(refs):
        errors.append(f"dashboard: panel {p.get('title')!r} repeats a refId")
    for t in targets:
        if not t.get("expr"):
            errors.append(f"dashboard: panel {p.get('title')!r} target {t.get('refId')} has no expr")
        else:
            exprs.append(t["expr"])
        if t.get("datasource", {}).get("uid") not in (None, "${datasource}"):
            errors.append(f"dashboard: panel {p.get('title')!r} target {t.get('refId')} names another data source")
    if p.get("type") == "heatmap" and any(t.get("format") != "heatmap" for t in targets):
        errors.append(f"dashboard: heatmap {p.get('title')!r}: targets need format heatmap")

# Every pgmux metric the rules or the dashboard name is registered in pgmux's source.
known = set()
for f in pathlib.Path(src_dir).rglob("*.rs"):
    known.update(re.findall(r'"(pgmux_[a-z0-9_]+)"', f.read_text()))
used = set(re.findall(r"(?<![\w:])pgmux_[a-z0-9_]+", rules_text + "\n" + "\n".join(exprs)))
for v in tvars.values():
    used.update(re.findall(r"(?<![\w:])pgmux_[a-z0-9_]+", str(v.get("query", ""))))
for name in sorted(used):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if name not in known and base not in known:
        errors.append(f"metric {name} is not registered anywhere in {src_dir}/")

for e in errors:
    print("  " + e, file=sys.stderr)
print(f"  {len(alerts)} alerts, {len(records)} recording rules, {len(exprs)} dashboard queries, "
      f"{len(used)} pgmux metric names checked; {len(errors)} problems")
sys.exit(1 if errors else 0)
PY

if [ "$failed" != 0 ]; then
  echo "check-monitoring: FAILED" >&2
  exit 1
fi
echo "check-monitoring: OK"
