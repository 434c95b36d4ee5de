#!/usr/bin/env python3
"""Prove the Dockerfile's build stage without a Docker engine.

Reads the first stage of the Dockerfile (up to the second FROM), applies its WORKDIR and
COPY lines to an empty directory, taking files from the build context the way `docker build`
does (the repository minus what .dockerignore excludes), then runs each of its RUN lines there.
The cargo target directory is the repository's own (CARGO_TARGET_DIR), so dependencies
already built are reused.

Usage: scripts/check-dockerfile.py [Dockerfile]   (exit 0 when the build stage builds)
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


def build_stage(dockerfile):
    """The instructions of the first stage, continuation lines joined."""
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
    stage, froms = [], 0
    for line in lines:
        word = line.split(None, 1)[0].upper()
        if word == "FROM":
            froms += 1
            if froms == 2:
                break
            continue
        stage.append(line)
    return stage


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


if __name__ == "__main__":
    main()
