#!/usr/bin/env python3
"""Check rendered Kubernetes manifests against the restricted Pod Security Standard.

Usage: scripts/check_pss.py FILE...   (multi-document YAML, e.g. `kubectl kustomize` output)

Every pod template (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob,
PodTemplate) is checked against the rules of the "restricted" profile, which includes every
"baseline" rule, as Pod Security Admission enforces them in its latest version
(https://kubernetes.io/docs/concepts/security/pod-security-standards/; the admission code is
k8s.io/pod-security-admission/policy). Containers means containers, initContainers (sidecars
included) and ephemeralContainers. Where admission relaxes a rule for pods in a user namespace
(hostUsers: false), this checker does not: it is stricter there.

Two rules of this project's own are checked too, each marked "pgmux policy": a read-only root
filesystem, and an explicit non-zero runAsUser (runAsNonRoot alone lets an image whose USER is
a name fail at start). The optional "non-root groups" control of the standard is checked as
well.

Each violation is printed as `FILE: Kind/namespace/name: field: problem`; exit 1 if any.
"""
import sys

import yaml

# --- Baseline ------------------------------------------------------------------------------
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",  # 1.27+
    "net.ipv4.tcp_keepalive_time",  # 1.29+
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",  # 1.32+
    "net.ipv4.tcp_wmem",
}
# --- Restricted ----------------------------------------------------------------------------
RESTRICTED_VOLUME_SOURCES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}
RESTRICTED_ADD_CAPABILITIES = {"NET_BIND_SERVICE"}
SECCOMP_RESTRICTED = {"RuntimeDefault", "Localhost"}
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def pod_templates(doc):
    """(path to the pod spec, pod metadata, pod spec) of every pod template in an object."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return [("spec", doc.get("metadata") or {}, spec)]
    if kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job",
                "ReplicationController"):
        t = spec.get("template") or {}
        return [("spec.template.spec", t.get("metadata") or {}, t.get("spec") or {})]
    if kind == "CronJob":
        t = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        return [("spec.jobTemplate.spec.template.spec", t.get("metadata") or {},
                 t.get("spec") or {})]
    if kind == "PodTemplate":
        t = doc.get("template") or {}
        return [("template.spec", t.get("metadata") or {}, t.get("spec") or {})]
    return []


def containers(spec):
    for lst in CONTAINER_LISTS:
        for i, c in enumerate(spec.get(lst) or []):
            yield f"{lst}[{i}]", c


def check_pod(path, meta, spec):
    """Violations, as (field, problem), of one pod template."""
    out = []
    psc = spec.get("securityContext") or {}

    def bad(field, problem):
        out.append((f"{path}.{field}" if field else path, problem))

    # Baseline: HostProcess.
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad("securityContext.windowsOptions.hostProcess", "must be unset or false")
    # Baseline: host namespaces.
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            bad(f, "must be unset or false (host namespaces)")
    # Baseline: sysctls.
    for i, s in enumerate(psc.get("sysctls") or []):
        if s.get("name") not in SAFE_SYSCTLS:
            bad(f"securityContext.sysctls[{i}].name", f"{s.get('name')!r} is not a safe sysctl")
    # Baseline: AppArmor (field and the older annotations).
    if (psc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        bad("securityContext.appArmorProfile.type", "must be RuntimeDefault or Localhost")
    for k, v in (meta.get("annotations") or {}).items():
        if k.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                v == "runtime/default" or str(v).startswith("localhost/")):
            bad(f"metadata.annotations[{k}]", "AppArmor profile must be runtime/default or localhost/*")
    # Baseline: SELinux.
    out += [(f"{path}.{f}", p) for f, p in selinux("securityContext", psc)]
    # Baseline + restricted: seccomp at pod level.
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_RESTRICTED:
        bad("securityContext.seccompProfile.type", f"{pod_seccomp!r}: must be RuntimeDefault or Localhost")
    # Restricted: volume types (hostPath is baseline).
    for i, v in enumerate(spec.get("volumes") or []):
        sources = [k for k in v if k != "name"]
        for s in sources:
            if s not in RESTRICTED_VOLUME_SOURCES:
                bad(f"volumes[{i}].{s}", f"volume {v.get('name')!r}: type {s} is not allowed "
                    f"(only {', '.join(sorted(RESTRICTED_VOLUME_SOURCES))})")
    # Restricted: running as non-root, and not as uid 0.
    pod_nonroot = psc.get("runAsNonRoot")
    if pod_nonroot is False:
        bad("securityContext.runAsNonRoot", "must not be false")
    if psc.get("runAsUser") == 0:
        bad("securityContext.runAsUser", "must not be 0")
    # Optional control "non-root groups".
    for f in ("runAsGroup", "fsGroup"):
        if psc.get(f) == 0:
            bad(f"securityContext.{f}", "must not be 0 (root group)")
    for i, g in enumerate(psc.get("supplementalGroups") or []):
        if g == 0:
            bad(f"securityContext.supplementalGroups[{i}]", "must not be 0 (root group)")

    for cpath, c in containers(spec):
        csc = c.get("securityContext") or {}
        name = c.get("name")

        def cbad(field, problem):
            out.append((f"{path}.{cpath}.{field}", f"container {name!r}: {problem}"))

        if (csc.get("windowsOptions") or {}).get("hostProcess"):
            cbad("securityContext.windowsOptions.hostProcess", "must be unset or false")
        if csc.get("privileged"):
            cbad("securityContext.privileged", "must be unset or false")
        caps = csc.get("capabilities") or {}
        for cap in caps.get("add") or []:
            if cap not in BASELINE_CAPABILITIES:
                cbad("securityContext.capabilities.add", f"{cap} is beyond the baseline set")
            elif cap not in RESTRICTED_ADD_CAPABILITIES:
                cbad("securityContext.capabilities.add", f"{cap}: only NET_BIND_SERVICE may be added")
        if "ALL" not in (caps.get("drop") or []):
            cbad("securityContext.capabilities.drop", "must include ALL")
        for j, p in enumerate(c.get("ports") or []):
            if p.get("hostPort"):
                cbad(f"ports[{j}].hostPort", "must be unset or 0 (host ports)")
        if csc.get("procMount") not in (None, "Default"):
            cbad("securityContext.procMount", "must be unset or Default")
        if (csc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            cbad("securityContext.appArmorProfile.type", "must be RuntimeDefault or Localhost")
        for f, p in selinux("securityContext", csc):
            cbad(f, p)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            for h in ("httpGet", "tcpSocket"):
                if ((c.get(probe) or {}).get(h) or {}).get("host"):
                    cbad(f"{probe}.{h}.host", "must be unset (probe host)")
        for hook in ("postStart", "preStop"):
            for h in ("httpGet", "tcpSocket"):
                if (((c.get("lifecycle") or {}).get(hook) or {}).get(h) or {}).get("host"):
                    cbad(f"lifecycle.{hook}.{h}.host", "must be unset (lifecycle host)")
        # Restricted.
        if csc.get("allowPrivilegeEscalation") is not False:
            cbad("securityContext.allowPrivilegeEscalation", "must be false")
        nonroot = csc.get("runAsNonRoot")
        if nonroot is False:
            cbad("securityContext.runAsNonRoot", "must not be false")
        elif nonroot is None and pod_nonroot is not True:
            cbad("securityContext.runAsNonRoot", "must be true here or in the pod's securityContext")
        if csc.get("runAsUser") == 0:
            cbad("securityContext.runAsUser", "must not be 0")
        seccomp = (csc.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in SECCOMP_RESTRICTED:
            cbad("securityContext.seccompProfile.type", f"{seccomp!r}: must be RuntimeDefault or Localhost")
        elif seccomp is None and pod_seccomp is None:
            cbad("securityContext.seccompProfile.type",
                 "must be RuntimeDefault or Localhost here or in the pod's securityContext")
        if csc.get("runAsGroup") == 0:
            cbad("securityContext.runAsGroup", "must not be 0 (root group)")
        # pgmux policy, beyond the standard.
        if csc.get("readOnlyRootFilesystem") is not True:
            cbad("securityContext.readOnlyRootFilesystem", "must be true (pgmux policy)")
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        if uid is None:
            cbad("securityContext.runAsUser",
                 "must be set to a non-zero uid here or in the pod's securityContext (pgmux policy)")
    return out


def selinux(prefix, sc):
    opts = sc.get("seLinuxOptions")
    if not opts:
        return []
    out = []
    if opts.get("type", "") not in SELINUX_TYPES:
        out.append((f"{prefix}.seLinuxOptions.type", f"{opts.get('type')!r} is not allowed"))
    for f in ("user", "role"):
        if opts.get(f):
            out.append((f"{prefix}.seLinuxOptions.{f}", "must be unset"))
    return out


def main(files):
    if not files:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    n_templates = n_bad = 0
    for fname in files:
        with open(fname) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            md = doc.get("metadata") or {}
            obj = f"{doc.get('kind')}/{md.get('namespace', '-')}/{md.get('name')}"
            for path, meta, spec in pod_templates(doc):
                n_templates += 1
                for field, problem in check_pod(path, meta, spec):
                    n_bad += 1
                    print(f"{fname}: {obj}: {field}: {problem}")
    print(f"check_pss: {n_templates} pod template(s) checked, {n_bad} violation(s) "
          f"of the restricted Pod Security Standard")
    if n_templates == 0:
        print("check_pss: no pod template found: nothing was checked", file=sys.stderr)
        return 1
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
