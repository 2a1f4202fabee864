"""Random shapes through the CUDA ops against our CPU path (itself tested against torch in
float64 and float32): GEMM / matmul / linear with transposed, sliced and broadcast
operands, convolutions and pooling with random geometry, the row ops and the losses, and
recurrent layers forward and backward.
Float64 keeps the comparison tight (rounding differs only by summation order). Run on a
GPU, and on the CUDA emulator (tools/emulate_gpu_tests.py --emu)."""

import numpy as np
import pytest

from nnkernels import ops
from cuda_support import close, close_each, host, needs_gpu, tcuda

SEEDS = range(3)
F64 = np.float64


def strided(rng, a):
    """a on the device with a random layout: contiguous, transposed storage, or sliced."""
    kind = rng.integers(0, 3) if a.ndim >= 2 else rng.integers(0, 2) * 2
    if kind == 0:
        return tcuda(a)
    if kind == 1:  # stored transposed: the view has a's shape and reversed strides
        return tcuda(np.ascontiguousarray(a.T)).permute(*reversed(range(a.ndim)))
    return tcuda(np.repeat(a, 2, axis=-1))[..., ::2]  # a column step of 2


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("seed", SEEDS)
def test_gpu_fuzz_gemm_linear(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        M, N, K = (int(v) for v in rng.integers(0, 150, 3))
        ta, tb = bool(rng.integers(0, 2)), bool(rng.integers(0, 2))
        a = rng.standard_normal((K, M) if ta else (M, K))
        b = rng.standard_normal((N, K) if tb else (K, N))
        c = [None, rng.standard_normal((1, N)), rng.standard_normal((M, 1)), rng.standard_normal((M, N))][
            rng.integers(0, 4)]
        alpha, beta = float(rng.standard_normal()), float(rng.standard_normal())
        kw = dict(trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
        ours = ops.gemm(strided(rng, a), strided(rng, b), None if c is None else strided(rng, c), **kw)
        close(ours, ops.gemm(a, b, c, **kw), F64, factor=max(K, 1) ** 0.5)
        # linear with an activation, and its backward
        x, w, bias = rng.standard_normal((M, K)), rng.standard_normal((N, K)), rng.standard_normal(N)
        act = [None, "relu", "gelu", "tanh", "sigmoid"][rng.integers(0, 5)]
        close(ops.linear(strided(rng, x), strided(rng, w), tcuda(bias), activation=act),
              ops.linear(x, w, bias, activation=act), F64, factor=max(K, 1) ** 0.5)
        g = rng.standard_normal((M, N))
        for o, r in zip(ops.linear_backward(strided(rng, g), strided(rng, x), strided(rng, w)),
                        ops.linear_backward(g, x, w)):
            close(o, r, F64, factor=max(M, N, K, 1) ** 0.5)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("seed", SEEDS)
def test_gpu_fuzz_matmul_broadcast(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        nb = int(rng.integers(0, 3))
        batch = [int(v) for v in rng.integers(1, 4, nb)]
        ba = [d if rng.integers(0, 2) else 1 for d in batch][int(rng.integers(0, nb + 1)):]
        bb = [d if rng.integers(0, 2) else 1 for d in batch][int(rng.integers(0, nb + 1)):]
        M, N, K = (int(v) for v in rng.integers(1, 40, 3))
        # a 1-D operand (a vector) only without batch dims of its own
        sa = tuple(ba) + ((M, K) if ba or rng.integers(0, 4) else (K,))
        sb = tuple(bb) + ((K, N) if bb or rng.integers(0, 4) else (K,))
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        close(ops.matmul(strided(rng, a), strided(rng, b)), ops.matmul(a, b), F64, factor=K ** 0.5)


def conv_geometry(rng):
    g = int(rng.choice([1, 1, 2, 3]))
    C, Co = g * int(rng.integers(1, 4)), g * int(rng.integers(1, 4))
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    st = tuple(int(v) for v in rng.integers(1, 3, 2))
    dil = tuple(int(v) for v in rng.integers(1, 3, 2))
    pad = tuple(int(rng.integers(0, k)) for k in (kh, kw))
    H, W = (int(v) for v in rng.integers(max(kh, kw) * 2, 14, 2))
    N = int(rng.integers(1, 3))
    return g, C, Co, kh, kw, st, dil, pad, H, W, N


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("seed", SEEDS)
def test_gpu_fuzz_conv(seed):
    rng = np.random.default_rng(seed)
    for _ in range(6):
        g, C, Co, kh, kw, st, dil, pad, H, W, N = conv_geometry(rng)
        x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((Co, C // g, kh, kw)), rng.standard_normal(Co)
        kw_ = dict(stride=st, padding=pad, dilation=dil, groups=g)
        y = ops.conv2d(x, w, b, **kw_)
        close(ops.conv2d(strided(rng, x), strided(rng, w), tcuda(b), **kw_), y, F64, factor=8)
        gy = rng.standard_normal(y.shape)
        for o, r in zip(ops.conv2d_backward(strided(rng, gy), strided(rng, x), tcuda(w), **kw_),
                        ops.conv2d_backward(gy, x, w, **kw_)):
            close(o, r, F64, factor=16)
        # the transposed convolution with the same geometry (weight (C, Co/g, kh, kw))
        wt = rng.standard_normal((C, Co // g, kh, kw))
        op = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(st, dil))
        kt = dict(stride=st, padding=pad, output_padding=op, groups=g, dilation=dil)
        yt = ops.conv_transpose2d(x, wt, None, **kt)
        close(ops.conv_transpose2d(strided(rng, x), tcuda(wt), None, **kt), yt, F64, factor=8)
        gt = rng.standard_normal(yt.shape)
        for o, r in zip(ops.conv_transpose2d_backward(tcuda(gt), tcuda(x), tcuda(wt), **kt),
                        ops.conv_transpose2d_backward(gt, x, wt, **kt)):
            close(o, r, F64, factor=16)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("seed", SEEDS)
def test_gpu_fuzz_pool(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        st = tuple(int(v) for v in rng.integers(1, 4, 2))
        pad = tuple(int(rng.integers(0, k // 2 + 1)) for k in (kh, kw))
        ceil = bool(rng.integers(0, 2))
        N, C = (int(v) for v in rng.integers(1, 3, 2))
        dil = tuple(int(v) for v in rng.integers(1, 3, 2))
        H, W = (int(rng.integers(d * (k - 1) + 1, 13)) for d, k in zip(dil, (kh, kw)))  # >= 1 output
        x = rng.standard_normal((N, C, H, W))
        y, idx = ops.max_pool2d(x, (kh, kw), st, pad, dil, ceil, return_indices=True)
        yd, idxd = ops.max_pool2d(strided(rng, x), (kh, kw), st, pad, dil, ceil, return_indices=True)
        close(yd, y, F64)
        assert np.array_equal(host(idxd), idx)
        gy = rng.standard_normal(y.shape)
        close(ops.max_pool2d_backward(tcuda(gy), idxd, x.shape), ops.max_pool2d_backward(gy, idx, x.shape), F64)
        cip = bool(rng.integers(0, 2))
        ya = ops.avg_pool2d(x, (kh, kw), st, pad, ceil, cip)
        close(ops.avg_pool2d(strided(rng, x), (kh, kw), st, pad, ceil, cip), ya, F64)
        ga = rng.standard_normal(ya.shape)
        close(ops.avg_pool2d_backward(tcuda(ga), x.shape, (kh, kw), st, pad, ceil, cip),
              ops.avg_pool2d_backward(ga, x.shape, (kh, kw), st, pad, ceil, cip), F64)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("seed", SEEDS)
def test_gpu_fuzz_rows_and_losses(seed):
    rng = np.random.default_rng(seed)
    for _ in range(6):
        shape = tuple(int(v) for v in rng.integers(1, 9, int(rng.integers(1, 4))))
        x = rng.standard_normal(shape) * 3
        axis = int(rng.integers(-len(shape), len(shape)))
        for f, fb in ((ops.softmax, ops.softmax_backward), (ops.log_softmax, ops.log_softmax_backward)):
            y = f(x, axis=axis)
            close(f(strided(rng, x), axis=axis), y, F64)
            g = rng.standard_normal(shape)
            close(fb(tcuda(g), tcuda(y), axis=axis), fb(g, y, axis=axis), F64)
        nd = int(rng.integers(1, len(shape) + 1))
        ns = shape[len(shape) - nd:]
        w, b = rng.standard_normal(ns), rng.standard_normal(ns)
        y, mu, rs = ops.layer_norm(x, ns, w, b, return_stats=True)
        yd, mud, rsd = ops.layer_norm(strided(rng, x), ns, tcuda(w), tcuda(b), return_stats=True)
        for o, r in ((yd, y), (mud, mu), (rsd, rs)):
            close(o, r, F64, factor=4)
        g = rng.standard_normal(shape)
        # dx cancels (it is zero in exact arithmetic over a normalized size of 1): compared on
        # the scale of what flows in
        fl = float(np.linalg.norm(g * w) * np.max(rs))
        for o, r in zip(ops.layer_norm_backward(tcuda(g), tcuda(x), ns, mud, rsd, tcuda(w), tcuda(b)),
                        ops.layer_norm_backward(g, x, ns, mu, rs, w, b)):
            close(o, r, F64, factor=8, floor=fl)
        # losses, every reduction
        Nr, Cl = int(rng.integers(1, 20)), int(rng.integers(1, 9))
        logits, t = rng.standard_normal((Nr, Cl)) * 2, rng.integers(0, Cl, Nr)
        p, tb = rng.standard_normal((Nr, Cl)), rng.random((Nr, Cl))
        for red in ("mean", "sum", "none"):
            go = rng.standard_normal(Nr) if red == "none" else None
            close(ops.cross_entropy(strided(rng, logits), tcuda(t), red), ops.cross_entropy(logits, t, red), F64)
            close(ops.cross_entropy_backward(tcuda(logits), tcuda(t), red, None if go is None else tcuda(go)),
                  ops.cross_entropy_backward(logits, t, red, go), F64)
            close(ops.binary_cross_entropy_with_logits(strided(rng, p), strided(rng, tb), red),
                  ops.binary_cross_entropy_with_logits(p, tb, red), F64)
            close(ops.mse_loss(strided(rng, p), strided(rng, tb), red), ops.mse_loss(p, tb, red), F64)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("seed", SEEDS)
def test_gpu_fuzz_recurrent(seed):
    """Random recurrent layers (every family, T >= 2: the tiled persistent kernels under the
    plan the device's SM count gives) forward with the cache and backward through time, a
    strided w_hh, some final-state gradients given."""
    rng = np.random.default_rng(seed)
    for _ in range(4):
        mode = str(rng.choice(["tanh", "relu", "lstm", "gru"]))
        T, B, I, H = int(rng.integers(2, 6)), int(rng.integers(1, 40)), int(rng.integers(1, 12)), \
            int(rng.integers(1, 70))
        G = {"lstm": 4, "gru": 3}.get(mode, 1)
        x, h0, c0 = rng.standard_normal((T, B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
        wi, wh = rng.standard_normal((G * H, I)) * 0.3, rng.standard_normal((G * H, H)) * 0.3
        bi, bh = rng.standard_normal(G * H), rng.standard_normal(G * H)
        go, ghn, gcn = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
        ghn = ghn if rng.integers(0, 2) else None

        def run(dv, whv):
            if mode == "lstm":
                r = ops.lstm(dv(x), dv(h0), dv(c0), dv(wi), whv, dv(bi), dv(bh), return_cache=True)
                return r[:3] + r[3] + ops.lstm_backward(dv(go), dv(ghn), dv(gcn), dv(x), dv(h0), dv(c0), dv(wi),
                                                        whv, r[0], r[3])
            if mode == "gru":
                r = ops.gru(dv(x), dv(h0), dv(wi), whv, dv(bi), dv(bh), return_cache=True)
                return r[:2] + r[2] + ops.gru_backward(dv(go), dv(ghn), dv(x), dv(h0), dv(wi), whv, r[0], r[2])
            r = ops.rnn(dv(x), dv(h0), dv(wi), whv, dv(bi), dv(bh), nonlinearity=mode)
            return r + ops.rnn_backward(dv(go), dv(ghn), dv(x), dv(h0), dv(wi), whv, r[0], nonlinearity=mode)

        dv = lambda a: None if a is None else tcuda(a)  # noqa: E731
        close_each(run(dv, strided(rng, wh)), run(lambda a: a, wh), F64, factor=16)
