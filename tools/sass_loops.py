"""The instruction mix of the loops in compiled CUDA kernels (SASS), without a GPU.

Reads `cuobjdump -sass` output and prints, per kernel, each loop (a backward branch and the
instructions from its target to it) with at least --min-fma FMAs: its instruction count, the
share of FMAs (FFMA / DFMA / HMMA) and the most common opcodes. A kernel bound by instruction
issue (a register-tiled GEMM, say) cannot run faster than that share of the FMA peak, so the
count shows overhead in a main loop before any GPU is at hand. It is a static count: rarely
taken branches inside the loop (edge cases) are counted too; read the SASS for the path an
interior tile takes.

    cuobjdump -sass -arch sm_90 build/.../gemm.cu.o > gemm.sass
    python tools/sass_loops.py gemm.sass [--only gemm_kernel] [--min-fma 16]

`cuobjdump` is not in every CUDA install; the PyPI wheel nvidia-cuda-cuobjdump has it.
"""
import argparse
import collections
import re
import sys

FMA_OPS = ("FFMA", "DFMA", "HMMA")
INSN = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?);")


def loops(insns, min_fma):
    """(start, end, body) of each loop with at least min_fma FMAs."""
    out = []
    for addr, op, rest in insns:
        if op.split(".")[0] != "BRA":
            continue
        m = re.search(r"0x([0-9a-f]+)", rest)
        if not m or int(m.group(1), 16) > addr:
            continue
        lo = int(m.group(1), 16)
        body = [i for i in insns if lo <= i[0] <= addr]
        if sum(i[1].split(".")[0] in FMA_OPS for i in body) >= min_fma:
            out.append((lo, addr, body))
    return out


def report(name, insns, min_fma, file=sys.stdout):
    found = loops(insns, min_fma)
    if not found:
        return
    print(f"{name}: {len(insns)} instructions", file=file)
    for lo, hi, body in found:
        ops = collections.Counter(i[1].split(".")[0] for i in body)
        fma = sum(ops[o] for o in FMA_OPS)
        mem = collections.Counter(i[1] for i in body if i[1].startswith(("LDS", "LDG", "STS", "LDL", "STL")))
        top = ", ".join(f"{o} {n}" for o, n in ops.most_common(10))
        print(f"  loop {lo:#x}-{hi:#x}: {len(body)} instructions, {fma} FMA ({100 * fma / len(body):.0f}%)"
              f" | {top} | memory: {dict(mem)}", file=file)


def parse(lines):
    """Yields (kernel name, [(address, opcode, operands)]) per function of cuobjdump -sass output."""
    name, insns = None, []
    for line in lines:
        m = re.search(r"Function : (\S+)", line)
        if m:
            if name:
                yield name, insns
            name, insns = m.group(1), []
            continue
        m = INSN.match(line)
        if m and name:
            insns.append((int(m.group(1), 16), m.group(3), m.group(4)))
    if name:
        yield name, insns


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sass", help="cuobjdump -sass output ('-' for stdin)")
    ap.add_argument("--only", help="only kernels whose (mangled) name contains this")
    ap.add_argument("--min-fma", type=int, default=16, help="skip loops with fewer FMAs")
    a = ap.parse_args(argv)
    f = sys.stdin if a.sass == "-" else open(a.sass)
    for name, insns in parse(f):
        if a.only and a.only not in name:
            continue
        report(name, insns, a.min_fma)


if __name__ == "__main__":
    main()
