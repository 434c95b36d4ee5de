#!/usr/bin/env python3
"""The layering check CI runs: each top-level module of src/ may name (crate::x) only modules
of a lower layer, so there is no import cycle and nothing reaches up. docs/architecture.md
describes the layers; change both together."""
import os
import re
import sys

# Bottom first. A module may use modules of lower layers only.
LAYERS = [
    ["proto", "sql", "auth", "error", "boxed", "systemd"],
    ["config", "prepared"],
    ["net"],
    ["server"],
    ["pool"],
    ["cancel", "clients"],
    ["shared"],
    ["snapshot", "reload"],
    ["admin", "stats_log"],
    ["metrics"],
    ["client"],
    ["app"],
]
LEVEL = {m: i for i, layer in enumerate(LAYERS) for m in layer}
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def names(text):
    """Top-level modules a file names: crate::x, and use crate::{x, y::z}."""
    found = set(re.findall(r"\bcrate::([a-z_]+)", text))
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text, re.S):
        found |= set(re.findall(r"(?:^|,)\s*([a-z_]+)", group))
    return found


def main():
    problems = []
    seen = set()
    for dirpath, _, files in os.walk(SRC):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, SRC)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if top in ("lib", "main"):
                continue
            seen.add(top)
            if top not in LEVEL:
                problems.append(f"src/{rel}: module `{top}` is in no layer of {__file__}")
                continue
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            for dep in sorted(names(text) - {top}):
                if dep not in LEVEL:
                    continue
                if LEVEL[dep] >= LEVEL[top]:
                    problems.append(
                        f"src/{rel}: `{top}` (layer {LEVEL[top]}) uses `{dep}` "
                        f"(layer {LEVEL[dep]}): a module may use only lower layers"
                    )
    for m in sorted(set(LEVEL) - seen):
        problems.append(f"layer list names `{m}`, which src/ does not have")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"layers: {len(seen)} modules, none uses a layer above its own")


if __name__ == "__main__":
    main()
