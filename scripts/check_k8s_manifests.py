#!/usr/bin/env python3
"""Checks of rendered Kubernetes manifests (`kubectl kustomize` output), used by
scripts/check-kubernetes.sh.

  check_k8s_manifests.py schema  [-k VERSION]... [--skip GROUP/VERSION/KIND]... FILE...
      Validate every object against the Kubernetes JSON schemas that the PyPI package
      kubernetes-validate ships, in strict mode (an unknown field fails). An object whose kind
      has no schema (a CRD) fails unless listed with --skip; skipped objects are printed.
  check_k8s_manifests.py wiring FILE...
      The links between objects that the API server does not check: Deployment selector vs
      its pod labels, PodDisruptionBudget and Service selectors vs the pods, Service
      targetPorts and probe ports vs container ports, HPA target, the ConfigMaps and Secrets a
      pod references, and for pgmux containers: the config and auth_file paths vs the
      mounts, the probes' endpoints, and terminationGracePeriodSeconds vs preStop +
      shutdown_timeout.
  check_k8s_manifests.py pgmux-files FILE DIR
      Write each pgmux config of FILE (its ConfigMap's pgmux.toml, with auth_file pointed at
      the Secret's userlist.txt written beside it) into DIR, one subdirectory per workload;
      print the config paths.
  check_k8s_manifests.py templates FILE
      Print one line per workload: Kind/name and a digest of its pod template.

Exit 1 when a check fails.
"""
import base64
import hashlib
import json
import os
import posixpath
import re
import sys

import yaml

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def load(files):
    docs = []
    for fname in files:
        with open(fname) as f:
            docs += [(fname, d) for d in yaml.safe_load_all(f) if d]
    return docs


def ident(doc):
    md = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{md.get('name')}"


def gvk(doc):
    return f"{doc.get('apiVersion')}/{doc.get('kind')}"


# ---- schema -------------------------------------------------------------------------------

def cmd_schema(args):
    import kubernetes_validate.utils as kv
    from kubernetes_validate.version import __version__ as kv_version

    versions, skips, files = [], set(), []
    it = iter(args)
    for a in it:
        if a in ("-k", "--kubernetes-version"):
            versions.append(next(it))
        elif a == "--skip":
            skips.add(next(it))
        else:
            files.append(a)
    if not versions or not files:
        print("schema: give -k VERSION and files", file=sys.stderr)
        return 2
    failed = checked = 0
    for fname, doc in load(files):
        name = os.path.basename(fname)
        if gvk(doc) in skips:
            print(f"SKIPPED {name}: {ident(doc)} ({gvk(doc)}): a CRD, no schema to check it against "
                  f"(listed with --skip)")
            continue
        passed = []
        for v in versions:
            try:
                passed.append(kv.validate(doc, v, strict=True))
                checked += 1
            except kv.ValidationError as e:
                failed += 1
                path = ".".join(str(p) for p in e.path) or "(top)"
                print(f"INVALID {name}: {ident(doc)} against Kubernetes {e.version}: {path}: {e.message}")
            except kv.SchemaNotFoundError:
                failed += 1
                print(f"UNKNOWN {name}: {ident(doc)}: no schema for {gvk(doc)} in Kubernetes {v}; "
                      f"if it is a CRD, list it with --skip {gvk(doc)}")
                break
            except kv.VersionNotSupportedError:
                print(f"kubernetes-validate {kv_version} has no schemas for Kubernetes {v}", file=sys.stderr)
                return 2
        if len(passed) == len(versions):
            print(f"ok      {name}: {ident(doc)} ({', '.join(passed)})")
    print(f"schema: {checked} validation(s) passed, {failed} failed "
          f"(kubernetes-validate {kv_version}, Kubernetes {', '.join(versions)}, strict)")
    return 1 if failed else 0


# ---- wiring -------------------------------------------------------------------------------

def selects(selector, labels):
    """Whether a LabelSelector (or a Service's plain map) selects these labels."""
    if selector is None:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        ml, exprs = selector.get("matchLabels") or {}, selector.get("matchExpressions") or []
    else:
        ml, exprs = selector, []
    if not ml and not exprs:
        return False  # an empty selector: everything, which is never what is meant here
    if any(labels.get(k) != v for k, v in ml.items()):
        return False
    for e in exprs:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def pod_of(doc):
    t = (doc.get("spec") or {}).get("template") or {}
    return (t.get("metadata") or {}).get("labels") or {}, t.get("spec") or {}, t.get("metadata") or {}


def all_containers(spec):
    for lst in CONTAINER_LISTS:
        for c in spec.get(lst) or []:
            yield lst, c


def parse_toml(text):
    try:
        import tomllib
    except ImportError:  # Python < 3.11: scripts/check-kubernetes.sh installs tomli
        import tomli as tomllib
    return tomllib.loads(text)


def volume_files(spec, container, configmaps, secrets):
    """{absolute path: (kind, object name, key)} of the files a container's mounts show."""
    vols = {v.get("name"): v for v in spec.get("volumes") or []}
    files = {}
    for m in container.get("volumeMounts") or []:
        v = vols.get(m.get("name")) or {}
        sources = []
        if "configMap" in v:
            sources.append(("ConfigMap", v["configMap"]))
        if "secret" in v:
            sources.append(("Secret", {"name": v["secret"].get("secretName"), **v["secret"]}))
        for s in (v.get("projected") or {}).get("sources") or []:
            if "configMap" in s:
                sources.append(("ConfigMap", s["configMap"]))
            if "secret" in s:
                sources.append(("Secret", s["secret"]))
        for kind, src in sources:
            obj = (configmaps if kind == "ConfigMap" else secrets).get(src.get("name"))
            keys = (list((obj or {}).get("data") or {}) + list((obj or {}).get("stringData") or {}))
            items = src.get("items") or [{"key": k, "path": k} for k in keys]
            for it in items:
                if m.get("subPath"):  # one file (or directory) of the volume at mountPath
                    if it["path"] == m["subPath"]:
                        files[m.get("mountPath")] = (kind, src.get("name"), it["key"])
                else:
                    files[posixpath.join(m.get("mountPath", ""), it["path"])] = (kind, src.get("name"), it["key"])
    return files


def data_of(obj, key):
    if key in (obj.get("stringData") or {}):
        return obj["stringData"][key]
    raw = (obj.get("data") or {}).get(key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode() if obj.get("kind") == "Secret" else raw


def env_value(container, name):
    for e in container.get("env") or []:
        if e.get("name") == name:
            return e.get("value")
    return None


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def is_pgmux(container):
    image = container.get("image", "")
    return re.search(r"(^|/)pgmux(:|@|$)", image) is not None


def cmd_wiring(files):
    docs = load(files)
    problems, notes = [], []
    by_kind = {}
    for fname, d in docs:
        by_kind.setdefault(d.get("kind"), []).append((fname, d))
    configmaps = {d["metadata"]["name"]: d for _, d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"]: d for _, d in by_kind.get("Secret", [])}
    workloads = [(f, d) for k in WORKLOADS for f, d in by_kind.get(k, [])]
    hpas = by_kind.get("HorizontalPodAutoscaler", [])

    def bad(fname, doc, msg):
        problems.append(f"{fname}: {ident(doc)}: {msg}")

    for fname, w in workloads:
        labels, spec, meta = pod_of(w)
        sel = (w.get("spec") or {}).get("selector")
        if w.get("kind") != "Job" and not selects(sel, labels):
            bad(fname, w, f"spec.selector {json.dumps(sel)} does not select its own pod labels {json.dumps(labels)}")
        # ConfigMaps and Secrets the pod refers to must be in the render (a generator renamed
        # or a typo would leave the pod stuck in ContainerCreating).
        refs = []
        for v in spec.get("volumes") or []:
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"].get("name"), f"volume {v.get('name')}"))
            if "secret" in v:
                refs.append(("Secret", v["secret"].get("secretName"), f"volume {v.get('name')}"))
            for s in (v.get("projected") or {}).get("sources") or []:
                for k, kind in (("configMap", "ConfigMap"), ("secret", "Secret")):
                    if k in s:
                        refs.append((kind, s[k].get("name"), f"volume {v.get('name')}"))
        for _, c in all_containers(spec):
            for ef in c.get("envFrom") or []:
                for k, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if k in ef and not ef[k].get("optional"):
                        refs.append((kind, ef[k].get("name"), f"container {c.get('name')} envFrom"))
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                for k, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if k in vf and not vf[k].get("optional"):
                        refs.append((kind, vf[k].get("name"), f"container {c.get('name')} env {e.get('name')}"))
        for kind, name, where in refs:
            if name not in (configmaps if kind == "ConfigMap" else secrets):
                bad(fname, w, f"{where} refers to {kind} {name!r}, which is not in the rendered output")
        # Probes on named ports must name a port of the same container.
        for lst, c in all_containers(spec):
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                for h in ("httpGet", "tcpSocket", "grpc"):
                    port = ((c.get(probe) or {}).get(h) or {}).get("port")
                    if isinstance(port, str) and port_number(c, port) is None:
                        bad(fname, w, f"container {c.get('name')}: {probe} port {port!r} is not one of its ports")
        # pgmux: the files it reads are where the pod mounts them, and the shutdown timing.
        for lst, c in all_containers(spec):
            if not is_pgmux(c):
                continue
            where = f"pgmux container {c.get('name')!r}"
            if lst == "initContainers" and c.get("restartPolicy") != "Always":
                bad(fname, w, f"{where} is an init container without restartPolicy: Always "
                    "(it would have to exit before the app starts)")
            mounted = volume_files(spec, c, configmaps, secrets)
            conf_path = env_value(c, "PGMUX_CONFIG") or "/etc/pgmux/pgmux.toml"
            if conf_path not in mounted:
                bad(fname, w, f"{where}: its config {conf_path} (PGMUX_CONFIG) is not a mounted file; "
                    f"mounted: {sorted(mounted) or 'none'}")
                continue
            kind, oname, key = mounted[conf_path]
            obj = (configmaps if kind == "ConfigMap" else secrets).get(oname)
            text = data_of(obj, key) if obj else None
            if text is None:
                bad(fname, w, f"{where}: {kind} {oname!r} has no key {key!r}")
                continue
            try:
                conf = parse_toml(text)
            except Exception as e:  # noqa: BLE001 - report any parse failure
                bad(fname, w, f"{where}: {conf_path} does not parse as TOML: {e}")
                continue
            general = conf.get("general") or {}
            auth_file = general.get("auth_file")
            if auth_file:
                if auth_file not in mounted:
                    bad(fname, w, f"{where}: auth_file {auth_file} is not a mounted file; "
                        f"mounted: {sorted(mounted)}")
                elif mounted[auth_file][0] != "Secret":
                    bad(fname, w, f"{where}: auth_file {auth_file} comes from a {mounted[auth_file][0]}, not a Secret")
            mounts_ro = all(m.get("readOnly") for m in c.get("volumeMounts") or [])
            if not mounts_ro:
                bad(fname, w, f"{where}: every volumeMount must be readOnly: true")
            metrics = (conf.get("metrics") or {}).get("listen")
            mport = int(str(metrics).rsplit(":", 1)[1]) if metrics else None
            if metrics and not str(metrics).startswith(("*:", "0.0.0.0:", "[::]:")):
                bad(fname, w, f"{where}: [metrics] listen = {metrics!r}: the kubelet probes the pod IP, "
                    "so it must listen on all addresses")
            for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health"),
                                ("startupProbe", "/ready")):
                hg = (c.get(probe) or {}).get("httpGet")
                if hg is None:
                    if probe != "startupProbe" or lst == "initContainers":
                        bad(fname, w, f"{where}: no {probe} (httpGet {path})")
                    continue
                if hg.get("path") != path:
                    bad(fname, w, f"{where}: {probe} path {hg.get('path')!r}, expected {path}")
                if mport is not None and port_number(c, hg.get("port")) != mport:
                    bad(fname, w, f"{where}: {probe} port {hg.get('port')!r} is not the metrics port {mport}")
            # Listening beyond loopback (other pods connect, through a Service): declare the port.
            loopback = str(general.get("listen_addr", "127.0.0.1")) in ("127.0.0.1", "localhost", "::1")
            ports = {p.get("containerPort") for p in c.get("ports") or []}
            if not loopback and general.get("listen_port", 6432) not in ports:
                bad(fname, w, f"{where}: listen_port {general.get('listen_port', 6432)} is not a container port")
            grace = spec.get("terminationGracePeriodSeconds", 30)
            pre = (c.get("lifecycle") or {}).get("preStop") or {}
            pre_s = (pre.get("sleep") or {}).get("seconds", 0)
            cmd = (pre.get("exec") or {}).get("command") or []
            if len(cmd) == 2 and posixpath.basename(cmd[0]) == "sleep":
                pre_s = float(cmd[1])
            shutdown = general.get("shutdown_timeout", 30)
            if shutdown == 0:
                bad(fname, w, f"{where}: shutdown_timeout = 0 waits for clients without limit; "
                    "the kubelet kills pgmux at terminationGracePeriodSeconds anyway")
            elif not grace > pre_s + shutdown:
                bad(fname, w, f"{where}: terminationGracePeriodSeconds {grace} must exceed preStop "
                    f"{pre_s} + shutdown_timeout {shutdown} = {pre_s + shutdown}")
            else:
                notes.append(f"{ident(w)}: grace {grace} s > preStop {pre_s} s + shutdown_timeout {shutdown} s")

    # Services: selector picks pods; each targetPort names a port of those pods.
    for fname, s in by_kind.get("Service", []):
        sel = (s.get("spec") or {}).get("selector")
        picked = [w for _, w in workloads if selects(sel, pod_of(w)[0])]
        if not picked:
            bad(fname, s, f"selector {json.dumps(sel)} selects no workload's pods")
            continue
        for p in (s.get("spec") or {}).get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            for w in picked:
                _, spec, _ = pod_of(w)
                found = False
                for lst, c in all_containers(spec):
                    if lst == "initContainers" and c.get("restartPolicy") != "Always":
                        continue
                    for cp in c.get("ports") or []:
                        if (isinstance(target, str) and cp.get("name") == target) or \
                                (isinstance(target, int) and cp.get("containerPort") == target):
                            found = True
                if not found:
                    bad(fname, s, f"port {p.get('name')!r}: targetPort {target!r} is not a container port of {ident(w)}")
                else:
                    notes.append(f"{ident(s)} port {p.get('name')} -> {ident(w)} port {target}")

    # PodDisruptionBudgets: the selector picks a workload's pods, which has 2+ replicas.
    for fname, pdb in by_kind.get("PodDisruptionBudget", []):
        sel = (pdb.get("spec") or {}).get("selector")
        picked = [w for _, w in workloads if selects(sel, pod_of(w)[0])]
        if not picked:
            bad(fname, pdb, f"selector {json.dumps(sel)} selects no workload's pods: it protects nothing")
            continue
        for w in picked:
            notes.append(f"{ident(pdb)} selects {ident(w)}")
            reps = (w.get("spec") or {}).get("replicas")
            hpa_min = [h["spec"].get("minReplicas", 1) for _, h in hpas
                       if h["spec"]["scaleTargetRef"].get("name") == w["metadata"]["name"]
                       and h["spec"]["scaleTargetRef"].get("kind") == w.get("kind")]
            n = hpa_min[0] if hpa_min else (1 if reps is None else reps)
            if n < 2:
                bad(fname, pdb, f"{ident(w)} can run with {n} replica(s): the budget cannot keep one serving")

    # HPAs: target exists; it owns the replica count.
    for fname, h in hpas:
        ref = h["spec"]["scaleTargetRef"]
        target = [w for _, w in workloads if w.get("kind") == ref.get("kind")
                  and w["metadata"]["name"] == ref.get("name")]
        if not target:
            bad(fname, h, f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not in the rendered output")
        elif "replicas" in target[0]["spec"]:
            bad(fname, h, f"{ident(target[0])} sets spec.replicas: every apply would reset the HPA's count")
        if h["spec"].get("minReplicas", 1) > h["spec"]["maxReplicas"]:
            bad(fname, h, "minReplicas > maxReplicas")

    for n in notes:
        print(f"ok      {n}")
    for p in problems:
        print(f"FAIL    {p}")
    print(f"wiring: {len(problems)} problem(s)")
    return 1 if problems else 0


# ---- pgmux-files --------------------------------------------------------------------------

def cmd_pgmux_files(args):
    fname, out_dir = args
    docs = [d for _, d in load([fname])]
    configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
    for w in docs:
        if w.get("kind") not in WORKLOADS:
            continue
        _, spec, _ = pod_of(w)
        for _, c in all_containers(spec):
            if not is_pgmux(c):
                continue
            mounted = volume_files(spec, c, configmaps, secrets)
            conf_path = env_value(c, "PGMUX_CONFIG") or "/etc/pgmux/pgmux.toml"
            d = os.path.join(out_dir, f"{w['kind']}-{w['metadata']['name']}-{c['name']}")
            os.makedirs(d, exist_ok=True)
            # Every mounted file, at its path under d; the config's absolute paths to them
            # rewritten to point there.
            text = None
            for path, (kind, oname, key) in mounted.items():
                obj = (configmaps if kind == "ConfigMap" else secrets).get(oname)
                content = data_of(obj, key) if obj else None
                if content is None:
                    continue
                local = os.path.join(d, path.lstrip("/"))
                os.makedirs(os.path.dirname(local), exist_ok=True)
                with open(local, "w") as f:
                    f.write(content)
                if path == conf_path:
                    text = content
            if text is None:
                continue
            for path in mounted:
                text = text.replace(f'"{path}"', json.dumps(os.path.join(d, path.lstrip("/"))))
            local_conf = os.path.join(d, conf_path.lstrip("/"))
            with open(local_conf, "w") as f:
                f.write(text)
            print(local_conf)
    return 0


# ---- templates ----------------------------------------------------------------------------

def cmd_templates(args):
    for _, w in load(args):
        if w.get("kind") in WORKLOADS:
            t = (w.get("spec") or {}).get("template")
            digest = hashlib.sha256(json.dumps(t, sort_keys=True).encode()).hexdigest()[:16]
            print(f"{ident(w)} {digest}")
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "schema":
        return cmd_schema(args)
    if cmd == "wiring":
        return cmd_wiring(args)
    if cmd == "pgmux-files" and len(args) == 2:
        return cmd_pgmux_files(args)
    if cmd == "templates":
        return cmd_templates(args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
