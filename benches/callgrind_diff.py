#!/usr/bin/env python3
"""Per-transaction instructions by function: the second callgrind run of instructions.sh minus
the first, divided by the transactions between them, so start-up and logins drop out.

    python3 benches/callgrind_diff.py pgmux 20000            # exclusive, top 40
    INCLUSIVE=1 TOP=60 python3 benches/callgrind_diff.py pgmux 20000
    EVENT=I1mr python3 benches/callgrind_diff.py pgmux 20000  # another event (CACHE_SIM=1 runs)
"""
import os
import re
import subprocess
import sys

target, tx = sys.argv[1], int(sys.argv[2])
d = os.environ.get("W", "/tmp/pgmux-instr/instr")
inclusive = os.environ.get("INCLUSIVE") == "1"
top = int(os.environ.get("TOP", "40"))
event = os.environ.get("EVENT", "Ir")


def function_name(text):
    """A callgrind_annotate entry's function, without its source file, calls count and object:
    a function appears once per source file its inlined code came from, and those are summed."""
    text = re.sub(r" \([\d,]+x\)", "", text)
    text = re.sub(r" \[[^\]]*\]$", "", text)
    return re.sub(r"^[^:\s]*:(?!:)", "", text, count=1)


def per_function(path):
    args = ["callgrind_annotate", "--auto=no", "--threshold=100", f"--show={event}", f"--sort={event}",
            f"--inclusive={'yes' if inclusive else 'no'}", path]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    totals = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = function_name(m.group(2))
        totals[name] = totals.get(name, 0) + int(m.group(1).replace(",", ""))
    return totals


def callees(path, pattern):
    """What functions matching `pattern` call, inclusive (callgrind_annotate --tree=calling)."""
    args = ["callgrind_annotate", "--auto=no", "--tree=calling", "--inclusive=yes", "--threshold=100", path]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    totals, inside = {}, False
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+([*>])\s+(\S.*)$", line)
        if not m:
            inside = False if not line.strip() else inside
            continue
        name = function_name(m.group(3))
        if m.group(2) == "*":
            inside = re.search(pattern, name) is not None
            if not inside:
                continue
            key = "(self+callees) " + name
        elif inside:
            key = "  > " + name
        else:
            continue
        totals[key] = totals.get(key, 0) + int(m.group(1).replace(",", ""))
    return totals


if os.environ.get("CALLEES"):
    pat = os.environ["CALLEES"]
    a = callees(f"{d}/{target}-n1.callgrind", pat)
    b = callees(f"{d}/{target}.callgrind", pat)
    for k in sorted(set(a) | set(b), key=lambda k: -(b.get(k, 0) - a.get(k, 0))):
        v = (b.get(k, 0) - a.get(k, 0)) / tx
        if abs(v) >= 5:
            print(f"{v:8.0f}  {k[:170]}")
    sys.exit(0)

a = per_function(f"{d}/{target}-n1.callgrind")
b = per_function(f"{d}/{target}.callgrind")
diff = {k: (b.get(k, 0) - a.get(k, 0)) / tx for k in set(a) | set(b)}
total = sum(v for v in diff.values()) if not inclusive else None
if total is not None:
    print(f"total {total:,.1f} {event}/tx")
for k, v in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
    print(f"{v:8.0f}  {k[:170]}")
