"""Short GPU benchmark of nnkernels' CUDA kernels against torch (cuBLAS, cuDNN, SDPA).

Run by bench/gpu_check.sh on a machine with an NVIDIA GPU; prints a table and writes JSON.
Times are medians over `--reps` runs bracketed by CUDA events on the legacy default stream
(where both torch and nnkernels queue their kernels), after warm-up. TF32 is disabled in
torch for every case (cuBLAS / cuDNN then compute in true float32, as nnkernels does), but
the one GEMM case marked TF32, where both sides use it.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import nnkernels
from nnkernels import ops


def timed(fn, reps):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


def rel(ours, ref):
    o = torch.from_dlpack(ours) if not isinstance(ours, torch.Tensor) else ours
    o, r = o.double(), ref.double()
    return float((o - r).norm() / max(r.norm().item(), 1e-300))


def with_env(name, value):
    """fn -> fn run with the environment variable `name` set to `value` (the CUDA part reads
    its kernel switches at every call)."""
    def wrap(fn):
        def run():
            os.environ[name] = value
            try:
                return fn()
            finally:
                del os.environ[name]
        return run
    return wrap


def cases(quick):
    g = torch.Generator(device="cuda").manual_seed(0)
    rn = lambda *s: torch.randn(*s, device="cuda", generator=g, dtype=torch.float32)
    out = []

    n = 2048 if quick else 4096
    a, b = rn(n, n), rn(n, n)
    out.append((f"gemm f32 n={n} (no TF32)", 2 * n ** 3,
                lambda: ops.matmul(a, b), lambda: torch.matmul(a, b)))
    a64 = rn(64, n)
    out.append((f"gemm f32 64x{n}x{n} (64-row tiles)", 2 * 64 * n * n,
                lambda: ops.matmul(a64, b), lambda: torch.matmul(a64, b)))
    aw, bw_ = rn(64, 3136), rn(3136, 576)  # a conv2d weight gradient's shape (one image)
    out.append(("gemm f32 64x576x3136 (split K)", 2 * 64 * 576 * 3136,
                lambda: ops.matmul(aw, bw_), lambda: torch.matmul(aw, bw_)))
    out.append(("gemm f32 64x576x3136 unsplit", 2 * 64 * 576 * 3136,
                with_env("NNKERNELS_CUDA_SPLIT_K", "0")(lambda: ops.matmul(aw, bw_)), lambda: torch.matmul(aw, bw_)))
    scalar_loads = with_env("NNKERNELS_CUDA_GEMM_VEC", "0")  # the GEMM without 16-byte loads
    out.append((f"gemm f32 n={n} (no TF32) scalar loads", 2 * n ** 3,
                scalar_loads(lambda: ops.matmul(a, b)), lambda: torch.matmul(a, b)))

    def ours_tf32(a=a, b=b):
        nnkernels.cuda.set_allow_tf32(True)
        try:
            return ops.matmul(a, b)
        finally:
            nnkernels.cuda.set_allow_tf32(False)

    def torch_tf32(a=a, b=b):
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            return torch.matmul(a, b)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
    out.append((f"gemm f32 n={n} TF32 (both)", 2 * n ** 3, ours_tf32, torch_tf32))

    quad_kernel = with_env("NNKERNELS_CUDA_ATTN", "quad")  # the forward's older kernel, for comparison
    scalar_tiles = with_env("NNKERNELS_CUDA_ATTN_VEC", "0")  # the tiled kernels' element-wise tile loads

    for causal in (False, True):
        q, k, v = rn(4, 16, 2048, 64), rn(4, 16, 2048, 64), rn(4, 16, 2048, 64)
        flops = 4 * 4 * 16 * 2048 * 2048 * 64 // (2 if causal else 1)
        name = f"flash attn fwd f32 (4,16,2048,64){' causal' if causal else ''}"
        ours_a = lambda q=q, k=k, v=v, c=causal: ops.scaled_dot_product_attention(q, k, v, is_causal=c)
        torch_a = lambda q=q, k=k, v=v, c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c)
        out.append((name, flops, ours_a, torch_a))
        out.append((name + " quad kernel", flops, quad_kernel(ours_a), torch_a))
        if not causal:
            out.append((name + " scalar tile loads", flops, scalar_tiles(ours_a), torch_a))

    # forward + backward, compared on dq (ours: forward with lse, then the backward kernels)
    q, k, v, go = rn(4, 16, 2048, 64), rn(4, 16, 2048, 64), rn(4, 16, 2048, 64), rn(4, 16, 2048, 64)

    def ours_fb(q=q, k=k, v=v, go=go):
        o, lse = ops.scaled_dot_product_attention(q, k, v, return_lse=True)
        return ops.scaled_dot_product_attention_backward(go, q, k, v, o, lse)[0]

    def torch_fb(q=q, k=k, v=v, go=go):
        t = [x.detach().requires_grad_(True) for x in (q, k, v)]
        return torch.autograd.grad(F.scaled_dot_product_attention(*t), t[0], go)[0]
    out.append(("flash attn fwd+bwd f32 (4,16,2048,64)", 3 * 4 * 4 * 16 * 2048 * 2048 * 64, ours_fb, torch_fb))
    out.append(("flash attn fwd+bwd f32 (4,16,2048,64) quad kernels", 3 * 4 * 4 * 16 * 2048 * 2048 * 64,
                quad_kernel(ours_fb), torch_fb))
    out.append(("flash attn fwd+bwd f32 (4,16,2048,64) scalar tile loads", 3 * 4 * 4 * 16 * 2048 * 2048 * 64,
                scalar_tiles(ours_fb), torch_fb))
    # head dim 128 (the tiled backward's D = 128 instance; the quad kernels on an sm_80)
    q2, k2, v2, go2 = rn(2, 16, 2048, 128), rn(2, 16, 2048, 128), rn(2, 16, 2048, 128), rn(2, 16, 2048, 128)
    out.append(("flash attn fwd+bwd f32 (2,16,2048,128)", 3 * 4 * 2 * 16 * 2048 * 2048 * 128,
                lambda: ours_fb(q2, k2, v2, go2), lambda: torch_fb(q2, k2, v2, go2)))

    # recurrent forward, T = 100, (B, I, H) = (64, 512, 512) vs cuDNN: ours with the tiled
    # persistent kernel (default), the fifth session's persistent kernel ("rows") and the
    # per-step path (GEMMs + gate kernels) for comparison
    per_step = with_env("NNKERNELS_CUDA_RNN_PERSISTENT", "0")
    rows_kernel = with_env("NNKERNELS_CUDA_RNN_PERSISTENT", "rows")

    for kind in ("RNN", "LSTM"):
        G = 4 if kind == "LSTM" else 1
        mod = getattr(torch.nn, kind)(512, 512).cuda()
        xs, h0 = rn(100, 64, 512), rn(64, 512)
        wi, wh, bi, bh = (p.detach() for p in mod.parameters())
        hx = (h0[None], h0[None]) if kind == "LSTM" else h0[None]
        if kind == "LSTM":
            ours_r = lambda xs=xs, h0=h0, w=(wi, wh, bi, bh): ops.lstm(xs, h0, h0, *w)[0]
        else:
            ours_r = lambda xs=xs, h0=h0, w=(wi, wh, bi, bh): ops.rnn(xs, h0, *w)[0]

        def torch_r(mod=mod, xs=xs, hx=hx):
            with torch.no_grad():
                return mod(xs, hx)[0]
        flops = 2 * 100 * 64 * (512 + 512) * G * 512
        out.append((f"{kind.lower()} fwd f32 T=100 (64,512,512)", flops, ours_r, torch_r))
        out.append((f"{kind.lower()} fwd f32 T=100 (64,512,512) rows kernel", flops, rows_kernel(ours_r), torch_r))
        out.append((f"{kind.lower()} fwd f32 T=100 (64,512,512) per-step path", flops, per_step(ours_r), torch_r))
    # LSTM forward + backward through time, compared on dx (torch: autograd through cuDNN);
    # ours with the tiled persistent kernels, and the per-step path
    mod = torch.nn.LSTM(512, 512).cuda()
    xs, h0, go = rn(100, 64, 512), rn(64, 512), rn(100, 64, 512)
    wi, wh, bi, bh = (p.detach() for p in mod.parameters())

    def ours_lb():
        o, _, _, cache = ops.lstm(xs, h0, h0, wi, wh, bi, bh, return_cache=True)
        return ops.lstm_backward(go, None, None, xs, h0, h0, wi, wh, o, cache)[0]

    def torch_lb():
        xt = xs.detach().requires_grad_(True)
        o = mod(xt, (h0[None], h0[None]))[0]
        return torch.autograd.grad(o, xt, go)[0]
    flops = 3 * 2 * 100 * 64 * (512 + 512) * 4 * 512
    out.append(("lstm fwd+bwd f32 T=100 (64,512,512)", flops, ours_lb, torch_lb))
    out.append(("lstm fwd+bwd f32 T=100 (64,512,512) per-step path", flops, per_step(ours_lb), torch_lb))

    x = rn(8192, 4096)
    out.append(("softmax f32 (8192, 4096)", None, lambda: ops.softmax(x), lambda: torch.softmax(x, -1)))

    xc, wc, bc = rn(16, 64, 56, 56), rn(64, 64, 3, 3), rn(64)
    out.append(("conv2d fwd f32 (16,64,56x56,64,k3 p1)", 2 * 16 * 64 * 56 * 56 * 64 * 9,
                lambda: ops.conv2d(xc, wc, bc, padding=1), lambda: F.conv2d(xc, wc, bc, padding=1)))
    out.append(("conv2d fwd f32 (16,64,56x56,64,k3 p1) scalar loads", 2 * 16 * 64 * 56 * 56 * 64 * 9,
                scalar_loads(lambda: ops.conv2d(xc, wc, bc, padding=1)), lambda: F.conv2d(xc, wc, bc, padding=1)))
    with_im2col = with_env("NNKERNELS_CUDA_CONV", "im2col")  # columns in memory, then the GEMM
    out.append(("conv2d fwd f32 (16,64,56x56,64,k3 p1) im2col path", 2 * 16 * 64 * 56 * 56 * 64 * 9,
                with_im2col(lambda: ops.conv2d(xc, wc, bc, padding=1)), lambda: F.conv2d(xc, wc, bc, padding=1)))
    # backward, compared on the weight gradient (torch: autograd through cuDNN)
    gc = rn(16, 64, 56, 56)

    def ours_cb():
        return ops.conv2d_backward(gc, xc, wc, padding=1)[1]

    def torch_cb():
        t = [a.detach().requires_grad_(True) for a in (xc, wc)]
        return torch.autograd.grad(F.conv2d(t[0], t[1], padding=1), t, gc)[1]
    out.append(("conv2d bwd f32 (16,64,56x56,64,k3 p1)", 2 * 2 * 16 * 64 * 56 * 56 * 64 * 9, ours_cb, torch_cb))
    out.append(("conv2d bwd f32 (16,64,56x56,64,k3 p1) im2col path", 2 * 2 * 16 * 64 * 56 * 56 * 64 * 9,
                with_im2col(ours_cb), torch_cb))
    # a strided convolution's backward (ResNet's downsampling: the input gradient in 4 phases of
    # the stride), compared on dx; torch computes dx and dW as ours does
    ws = rn(128, 64, 3, 3)
    gs = rn(16, 128, 28, 28)

    def ours_sb():
        return ops.conv2d_backward(gs, xc, ws, stride=2, padding=1)[0]

    def torch_sb():
        t = [a.detach().requires_grad_(True) for a in (xc, ws)]
        return torch.autograd.grad(F.conv2d(t[0], t[1], stride=2, padding=1), t, gs)[0]
    fl = 2 * 2 * 16 * 128 * 28 * 28 * 64 * 9
    out.append(("conv2d bwd f32 (16,64,56x56,128,k3 s2 p1)", fl, ours_sb, torch_sb))
    out.append(("conv2d bwd f32 (16,64,56x56,128,k3 s2 p1) im2col path", fl, with_im2col(ours_sb), torch_sb))

    xl, wl, bl = rn(8192, 1024), rn(1024), rn(1024)
    out.append(("layer_norm f32 (8192, 1024)", None,
                lambda: ops.layer_norm(xl, (1024,), wl, bl), lambda: F.layer_norm(xl, (1024,), wl, bl)))

    xw, ww, bw = rn(4096, 1024), rn(4096, 1024), rn(4096)
    out.append(("linear+gelu f32 (4096,1024)->4096", 2 * 4096 * 1024 * 4096,
                lambda: ops.linear(xw, ww, bw, activation="gelu"),
                lambda: F.gelu(F.linear(xw, ww, bw))))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"nnkernels {nnkernels.__version__}, config cuda: {nnkernels.config()['cuda']}")
    # the tiled persistent RNN kernels' plans (U, Rb, Q, Kc, blocks, shared bytes) for the
    # benchmarked (64, 512, 512) layers on this device, to read their times against
    props = torch.cuda.get_device_properties(0)
    sms, optin = props.multi_processor_count, getattr(props, "shared_memory_per_block_optin", 232448)
    for kind, G in (("rnn", 1), ("lstm", 4)):
        fwd = nnkernels._C._cuda_launch("rnn_plan", "float32", [G, 512, 64, 512, sms, optin])
        bwd = nnkernels._C._cuda_launch("rnn_plan", "float32", [1, G * 512, 64, 512, sms, optin])
        print(f"{kind} (64, 512, 512) tiled plans: forward {fwd}, backward {bwd}")
    rows = []
    for name, flops, ours, ref in cases(args.quick):
        row = dict(case=name)
        try:
            err = rel(ours(), ref())
            t0 = time.time()
            t_ours = timed(ours, args.reps)
            t_ref = timed(ref, args.reps)
            row.update(ours_ms=t_ours, torch_ms=t_ref, ratio=t_ref / t_ours, rel_err=err,
                       ours_tflops=flops / t_ours / 1e9 if flops else None, secs=time.time() - t0)
        except Exception as e:  # report and go on: one broken kernel must not hide the rest
            row.update(error=f"{type(e).__name__}: {e}")
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"| case | nnkernels ms | torch ms | torch/nnk (>1: we are faster) | nnk TFLOP/s | rel err |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['case']} | ERROR | | | | {r['error'][:80]} |")
            continue
        tf = f"{r['ours_tflops']:.1f}" if r["ours_tflops"] else ""
        print(f"| {r['case']} | {r['ours_ms']:.3f} | {r['torch_ms']:.3f} | {r['ratio']:.2f} | {tf} | {r['rel_err']:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), f, indent=1)
    return 0 if all("error" not in r and math.isfinite(r["rel_err"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
