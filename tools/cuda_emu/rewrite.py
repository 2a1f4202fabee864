"""Rewrite a .cu file for the CUDA emulator (tools/cuda_emu): kernel launches
`kernel<T><<<grid, block[, smem[, stream]]>>>(args);` become
`::nnk_emu::launch("kernel<T>", __FILE__, __LINE__, ::nnk_emu::Cfg(grid, block...),
[&](auto&... a) { kernel<T>(a...); }, args);`
and `extern __shared__ ... T name[];` becomes a pointer to the block's dynamic shared memory.
Line numbers are kept (a #line directive names the original file).

    python rewrite.py in.cu out.cpp
"""
import re
import sys


def find_close(s, i, open_ch, close_ch):
    """Index of the bracket closing the one at s[i]."""
    depth = 0
    while i < len(s):
        c = s[i]
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced " + open_ch)


def kernel_start(s, end):
    """Start of the kernel expression ending just before s[end] (name, ::, template args)."""
    i = end
    while i > 0 and s[i - 1].isspace():
        i -= 1
    while True:
        if i > 0 and s[i - 1] == ">":
            depth = 0
            while True:
                i -= 1
                if s[i] == ">":
                    depth += 1
                elif s[i] == "<":
                    depth -= 1
                    if depth == 0:
                        break
        j = i
        while j > 0 and (s[j - 1].isalnum() or s[j - 1] == "_"):
            j -= 1
        if j == i:
            raise ValueError("no kernel name before <<<")
        i = j
        if s[i - 2:i] == "::":
            i -= 2
            continue
        return i


def rewrite(src):
    out, pos = [], 0
    while True:
        k = src.find("<<<", pos)
        if k < 0:
            out.append(src[pos:])
            break
        start = kernel_start(src, k)
        kernel = src[start:k].strip()
        e = src.find(">>>", k)
        cfg = src[k + 3:e]
        p = e + 3
        while src[p].isspace():
            p += 1
        assert src[p] == "(", "launch without arguments"
        close = find_close(src, p, "(", ")")
        args = src[p + 1:close]
        out.append(src[pos:start])
        call = f'::nnk_emu::launch("{kernel}", __FILE__, __LINE__, ::nnk_emu::Cfg({cfg}), '
        call += f"[&](auto&... nnk_a) {{ {kernel}(nnk_a...); }}"
        call += (", " + args if args.strip() else "") + ")"
        out.append(call)
        pos = close + 1
    text = "".join(out)
    text = re.sub(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:\s]+?)\s+(\w+)\s*\[\s*\]\s*;",
                  r"\1* \2 = reinterpret_cast<\1*>(::nnk_emu::cur.dyn_smem);", text)
    assert "<<<" not in text and "extern __shared__" not in text
    return text


def main():
    src_path, dst_path = sys.argv[1], sys.argv[2]
    with open(src_path) as f:
        src = f.read()
    with open(dst_path, "w") as f:
        f.write(f'#line 1 "{src_path}"\n' + rewrite(src))


if __name__ == "__main__":
    main()
