#!/usr/bin/env python3
"""Prove the Dockerfile without a Docker engine: its build stage builds, and its runtime stage
runs as a cluster would run it.

Build stage: reads the first stage (up to the second FROM), applies its WORKDIR and COPY lines
to an empty directory, taking files from the build context the way `docker build` does (the
repository minus what .dockerignore excludes), then runs each of its RUN lines there. The cargo
target directory is the repository's own (CARGO_TARGET_DIR), so dependencies already built are
reused.

Runtime stage: checks its base (debian-slim or distroless), a numeric non-root USER, and that it
EXPOSEs the ports its default config uses; lays out a root file system from its COPY lines
(the binary the build stage built, files from the context) plus the shared libraries the binary
needs (the base image's part), then, in a mount and network namespace of its own, mounts that
root read-only and runs the ENTRYPOINT there under the USER with only the ENV lines' environment
(chroot): it must listen on every IPv4 and IPv6 address, answer /health 200 and /ready 503 (no
database), refuse a login with a proper error, and exit 0 on the STOPSIGNAL.

Usage: scripts/check-dockerfile.py [Dockerfile]   (exit 0 when both stages pass)
"""
import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ignore_patterns():
    path = os.path.join(ROOT, ".dockerignore")
    if not os.path.exists(path):
        return []
    pats = []
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            pats.append(line.strip("/"))
    return pats


def ignored(rel, pats):
    """Docker's rule, simplified: the last matching pattern wins; `!` re-includes; a pattern
    matches a path or any of its parent directories."""
    verdict = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for p in pats:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        if pat.endswith("/**"):
            pat = pat[: -len("/**")]
        if any(fnmatch.fnmatchcase(x, pat) for x in prefixes):
            verdict = not neg
    return verdict


def copy_into(src_rel, dest, pats):
    """COPY one source (file or directory, relative to the context) to dest."""
    src = os.path.join(ROOT, src_rel)
    if not os.path.exists(src) or ignored(os.path.normpath(src_rel), pats):
        raise SystemExit(f"COPY {src_rel}: not in the build context")
    if os.path.isdir(src):
        for dirpath, dirnames, filenames in os.walk(src):
            rel_dir = os.path.relpath(dirpath, ROOT)
            dirnames[:] = [d for d in dirnames if not ignored(os.path.normpath(os.path.join(rel_dir, d)), pats)]
            for f in filenames:
                rel = os.path.normpath(os.path.join(rel_dir, f))
                if ignored(rel, pats):
                    continue
                out = os.path.join(dest, os.path.relpath(os.path.join(dirpath, f), src))
                os.makedirs(os.path.dirname(out), exist_ok=True)
                shutil.copy2(os.path.join(dirpath, f), out)
    else:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(src, dest)


def stages(dockerfile):
    """Each stage's instructions (after its FROM line, which comes first), continuation
    lines joined."""
    lines, cur = [], ""
    for raw in open(dockerfile):
        s = raw.rstrip("\n")
        if not cur and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        lines.append((cur + s).strip())
        cur = ""
    out = []
    for line in lines:
        if line.split(None, 1)[0].upper() == "FROM":
            out.append([])
        out[-1].append(line)
    return out


def build_stage(dockerfile):
    """The instructions of the first stage, continuation lines joined."""
    return stages(dockerfile)[0][1:]


def main():
    dockerfile = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "Dockerfile")
    pats = ignore_patterns()
    with tempfile.TemporaryDirectory(prefix="pgmux-docker-") as ctx:
        workdir = ctx
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(ROOT, "target"))
        for line in build_stage(dockerfile):
            word, _, rest = line.partition(" ")
            word = word.upper()
            if word == "WORKDIR":
                workdir = os.path.join(ctx, rest.strip().lstrip("/"))
                os.makedirs(workdir, exist_ok=True)
            elif word == "COPY":
                args = [a for a in shlex.split(rest) if not a.startswith("--")]
                *srcs, dest = args
                base = os.path.join(ctx, dest.lstrip("/")) if dest.startswith("/") else os.path.join(workdir, dest)
                for s in srcs:
                    target = os.path.join(base, os.path.basename(s.rstrip("/"))) if dest.endswith("/") and not os.path.isdir(os.path.join(ROOT, s)) else base
                    copy_into(s, target, pats)
            elif word == "RUN":
                print(f"check-dockerfile: RUN {rest}", file=sys.stderr, flush=True)
                r = subprocess.run(["sh", "-c", rest], cwd=workdir, env=env)
                if r.returncode != 0:
                    raise SystemExit(f"check-dockerfile: `RUN {rest}` failed ({r.returncode}) with only what the Dockerfile copies")
            elif word in ("ENV", "ARG", "LABEL", "USER", "EXPOSE", "SHELL"):
                pass
            else:
                raise SystemExit(f"check-dockerfile: {word} in the build stage is not understood by this check")
    print("check-dockerfile: the build stage builds from what it copies", file=sys.stderr)
    runtime_stage(dockerfile, pats)


def fail(msg):
    raise SystemExit(f"check-dockerfile: runtime stage: {msg}")


def runtime_stage(dockerfile, pats):
    import json
    import re
    import tomllib

    st = stages(dockerfile)
    if len(st) != 2:
        fail(f"expected a build stage and a runtime stage, found {len(st)} stages")
    build, run = st
    build_workdir = "/"
    for line in build:
        word, _, rest = line.partition(" ")
        if word.upper() == "WORKDIR":
            build_workdir = rest.strip()
    base = run[0].split()[1]
    if not (re.match(r"debian:[a-z0-9.]+-slim$", base) or base.startswith("gcr.io/distroless/cc")):
        fail(f"base image {base}: want debian-slim or distroless cc")
    env, user, expose, entry, cmd, stop = {}, None, set(), None, [], "SIGTERM"
    with tempfile.TemporaryDirectory(prefix="pgmux-rootfs-") as root:
        os.chmod(root, 0o755)
        for line in run[1:]:
            word, _, rest = line.partition(" ")
            word = word.upper()
            if word == "COPY":
                args = shlex.split(rest)
                frm = [a for a in args if a.startswith("--from=")]
                *srcs, dest = [a for a in args if not a.startswith("--")]
                for src in srcs:
                    target = os.path.join(root, dest.lstrip("/"))
                    if dest.endswith("/"):
                        target = os.path.join(target, os.path.basename(src))
                    if frm:
                        # A path of the build stage: under its WORKDIR, the cargo target is ours.
                        rel = os.path.relpath(src, build_workdir)
                        if rel.startswith(".."):
                            fail(f"COPY --from: {src} is outside the build stage's WORKDIR")
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        shutil.copy2(os.path.join(ROOT, rel), target)
                    else:
                        copy_into(src, target, pats)
            elif word == "ENV":
                for kv in shlex.split(rest):
                    k, _, v = kv.partition("=")
                    env[k] = v
            elif word == "USER":
                user = rest.strip()
            elif word == "EXPOSE":
                expose |= {int(p.split("/")[0]) for p in rest.split()}
            elif word == "ENTRYPOINT":
                entry = json.loads(rest)
            elif word == "CMD":
                cmd = json.loads(rest)
            elif word == "STOPSIGNAL":
                stop = rest.strip()
            elif word in ("LABEL", "WORKDIR"):
                pass
            else:
                fail(f"{word} is not understood by this check (a RUN would need the base image)")
        if not user or not re.match(r"^[1-9][0-9]*(:[0-9]+)?$", user):
            fail(f"USER {user!r}: want a numeric non-root uid (Kubernetes' runAsNonRoot checks it)")
        if not entry:
            fail("no ENTRYPOINT")
        conf_path = env.get("PGMUX_CONFIG")
        if not conf_path or not os.path.exists(os.path.join(root, conf_path.lstrip("/"))):
            fail(f"PGMUX_CONFIG={conf_path!r} is not a file the image has")
        conf = tomllib.load(open(os.path.join(root, conf_path.lstrip("/")), "rb"))
        port = conf["general"]["listen_port"]
        mport = int(conf.get("metrics", {}).get("listen", ":0").rsplit(":", 1)[1])
        if conf["general"].get("listen_addr") != "*" or not conf.get("metrics", {}).get("listen", "").startswith("*:"):
            fail("the default config must listen on every address, clients and /metrics")
        if {port, mport} - expose:
            fail(f"EXPOSE {sorted(expose)} lacks the config's ports {port} and {mport}")
        # The base image's part: the loader and the libraries the binary links.
        binary = os.path.join(root, entry[0].lstrip("/"))
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        for lib in re.findall(r"(/\S+)", out):
            dst = os.path.join(root, lib.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.realpath(lib), dst)
        for d in ("lib64", "tmp", "proc", "dev"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        spec = json.dumps({"root": root, "argv": entry + cmd, "env": env, "user": user,
                           "ports": [port, mport], "stop": stop})
        r = subprocess.run(["unshare", "--mount", "--net", "--fork", sys.executable,
                            os.path.abspath(__file__), "--inside", spec])
        if r.returncode != 0:
            fail("the image's entrypoint did not run as a cluster would run it (see above)")
    print("check-dockerfile: the runtime stage runs read-only, as a non-root user, on every address",
          file=sys.stderr)


def inside(spec):
    """In fresh mount and network namespaces: run the image's entrypoint and probe it."""
    import json
    import signal
    import socket
    import time
    import urllib.error
    import urllib.request

    s = json.loads(spec)
    root = s["root"]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "--bind", root, root], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", root], check=True)
    uid, _, gid = s["user"].partition(":")
    p = subprocess.Popen([shutil.which("chroot"), f"--userspec={uid}:{gid or uid}", root] + s["argv"],
                         env=s["env"], stderr=subprocess.PIPE, text=True)
    port, mport = s["ports"]

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}{path}", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", mport), timeout=1).close()
                break
            except OSError:
                if p.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"pgmux did not start in the image:\n{p.stderr.read()}")
                time.sleep(0.1)
        listening = open("/proc/net/tcp").read() + open("/proc/net/tcp6").read()
        for want in (f"00000000:{port:04X}", f"00000000000000000000000000000000:{port:04X}",
                     f"00000000:{mport:04X}", f"00000000000000000000000000000000:{mport:04X}"):
            if want not in listening:
                raise SystemExit(f"not listening on {want} (every IPv4 and IPv6 address)")
        if get("/health") != 200:
            raise SystemExit("/health is not 200")
        if get("/ready") != 503:
            raise SystemExit("/ready is not 503 with no database to reach")
        # A login by an unknown user: the SCRAM exchange, then an ErrorResponse.
        c = socket.create_connection(("::1", port), timeout=5)
        body = b"user\0nobody\0database\0app\0\0"
        c.sendall((len(body) + 8).to_bytes(4, "big") + (196608).to_bytes(4, "big") + body)
        first = c.recv(1)
        c.close()
        if first not in (b"R", b"E"):
            raise SystemExit(f"a login got {first!r}, not an authentication request or error")
        p.send_signal(getattr(signal, s["stop"]))
        rc = p.wait(timeout=15)
        log = p.stderr.read()
        if rc != 0:
            raise SystemExit(f"exit status {rc} after {s['stop']}:\n{log}")
        if "Read-only file system" in log or "Permission denied" in log:
            raise SystemExit(f"pgmux tried to write:\n{log}")
    finally:
        if p.poll() is None:
            p.kill()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--inside":
        inside(sys.argv[2])
    else:
        main()
