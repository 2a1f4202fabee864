"""Resolve git conflict blocks by keeping both sides: order 'theirs-first' or 'ours-first' per block."""
import sys
path, orders = sys.argv[1], sys.argv[2].split(",")
out, mode, ours, theirs, k = [], None, [], [], 0
for line in open(path).read().split("\n"):
    if line.startswith("<<<<<<< "):
        mode, ours, theirs = "ours", [], []
    elif line == "=======" and mode == "ours":
        mode = "theirs"
    elif line.startswith(">>>>>>> ") and mode == "theirs":
        o = orders[min(k, len(orders) - 1)]
        out += (theirs + ours) if o == "theirs-first" else (ours + theirs)
        mode, k = None, k + 1
    elif mode == "ours":
        ours.append(line)
    elif mode == "theirs":
        theirs.append(line)
    else:
        out.append(line)
open(path, "w").write("\n".join(out))
