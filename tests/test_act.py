"""Activations and softmax (forward and backward) against torch.nn.functional / autograd.

References are torch in float64 on the same (float32 or float64) input values. Tolerances
come from conftest.TOL. float32 softmax over long rows carries the rounding of a long float32
sum (torch's own float32 result is off by as much); those checks use the FA-style bound
"within 2x torch-float32's error, or TOL".
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nnkernels
from nnkernels import ops
from conftest import ACT_ULP, DTYPES, TOL, assert_close, rel_err, streaming_forced

# Sizes around every vector width (4, 2, 8, 16 lanes), primes, and one above the threading
# threshold (2 x 16384 elements).
SIZES = list(range(0, 68)) + [97, 127, 1031, 40009]

def gelu_tanh_ref(t):
    """F.gelu(t, approximate="tanh") in the equivalent form t * sigmoid(2u): torch's
    t/2 (1 + tanh u) cancels for t << 0 and in float64 is then less accurate than ours."""
    if t.dtype == torch.float64:
        u = 0.7978845608028654 * (t + 0.044715 * t**3)
        return t * torch.sigmoid(2 * u)
    return F.gelu(t, approximate="tanh")


# name -> (ours forward, torch forward, ours backward, backward takes "x" or "y")
ACTS = {
    "relu": (ops.relu, F.relu, ops.relu_backward, "x"),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.07), lambda t: F.leaky_relu(t, 0.07),
                   lambda g, x: ops.leaky_relu_backward(g, x, 0.07), "x"),
    "sigmoid": (ops.sigmoid, torch.sigmoid, ops.sigmoid_backward, "y"),
    "tanh": (ops.tanh, torch.tanh, ops.tanh_backward, "y"),
    "gelu": (ops.gelu, F.gelu, ops.gelu_backward, "x"),
    "gelu_tanh": (lambda x: ops.gelu(x, approximate="tanh"), lambda t: gelu_tanh_ref(t),
                  lambda g, x: ops.gelu_backward(g, x, approximate="tanh"), "x"),
}


def t64(a):
    return torch.from_numpy(np.array(a, dtype=np.float64))


def torch_grad(tf, x, g):
    """d/dx of sum(tf(x) * g) in float64."""
    xt = t64(x).requires_grad_(True)
    tf(xt).backward(t64(g))
    return xt.grad.numpy()


def torch32_factor(tf, x, g, ref, dtype):
    """FA-style tolerance factor for float32 (g None: forward, else the gradient).

    Two float32 results cancel by nature, as in torch's own float32 kernels: gelu's
    x/2 (1 + erf(x / sqrt 2)) for x << 0 (1 + erf ~ 1e-6 carries erf's absolute error), and
    sigmoid' = (1 - y) y, tanh' = 1 - y^2 from a float32 y near 1. A test drawing only such
    elements (n = 1) sees a relative error far above TOL, so allow 4x torch-float32's error
    against the same float64 reference where that exceeds TOL (4, not 2: the generic kernel
    set has no FMA, and its tanh/erf near +-1 are ~1.5x less accurate than torch's)."""
    if dtype != np.float32:
        return 1.0
    xt = torch.from_numpy(np.array(x, dtype=np.float32)).requires_grad_(True)
    if g is None:
        got = tf(xt).detach().numpy()
    else:
        tf(xt).backward(torch.from_numpy(np.array(g, dtype=np.float32)))
        got = xt.grad.numpy()
    return max(1.0, 4 * rel_err(got, ref) / TOL[np.float32])


def data(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ACTS))
def test_elementwise_forward_backward(isa, rng, name, dtype):
    fwd, tf, bwd, saved = ACTS[name]
    for n in SIZES:
        x = data(rng, n, dtype)
        g = data(rng, n, dtype, 1.0)
        y = fwd(x)
        assert y.dtype == dtype and y.shape == (n,) and y.flags.c_contiguous
        ref = tf(t64(x)).numpy()
        assert_close(y, ref, dtype, torch32_factor(tf, x, None, ref, dtype))
        dx = bwd(g, x if saved == "x" else y)
        assert dx.dtype == dtype and dx.shape == (n,)
        ref = torch_grad(tf, x, g)
        assert_close(dx, ref, dtype, torch32_factor(tf, x, g, ref, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_streaming_stores_same_bits(isa, rng, dtype):
    """Outputs past the last-level cache go out by non-temporal stores (act.cpp): with the
    cache size forced to one byte every size streams, and the results are the same bits."""
    sizes = [0, 1, 15, 16, 17, 255, 1031, 40009, 2 * 16384 + 37, 8 * 16384 + 5]
    cases = [(n, name) for n in sizes for name in ACTS]

    def run():
        out = []
        for n, name in cases:
            fwd, _, bwd, saved = ACTS[name]
            x = data(np.random.default_rng(n), n, dtype)
            g = data(np.random.default_rng(n + 1), n, dtype, 1.0)
            y = fwd(x)
            out += [y, bwd(g, x if saved == "x" else y)]
        return out
    ref = run()
    with streaming_forced():
        got = run()
    for a, e in zip(got, ref):
        assert a.dtype == e.dtype and np.array_equal(a.view(np.uint8), e.view(np.uint8))


@pytest.mark.parametrize("name", list(ACTS))
def test_elementwise_reference_kernel(rng, name):
    """The scalar nnk::ref kernels agree with the vectorised ones."""
    fwd, tf, bwd, saved = ACTS[name]
    act = {"leaky_relu": ("leaky_relu", 0.07)}.get(name, (name, 0.0))
    for dtype in DTYPES:
        x = data(rng, 1031, dtype)
        g = data(rng, 1031, dtype, 1.0)
        y = fwd(x)
        assert_close(nnkernels._C.act_ref(x, *act), y, dtype)
        v = x if saved == "x" else y
        assert_close(nnkernels._C.act_backward_ref(g, v, *act), bwd(g, v), dtype)


def f32_grid(hi, n):
    """About n float32 values in [0, hi], evenly spaced in bit pattern (so every binade down
    to the denormals is sampled as densely as its neighbours)."""
    top = np.float32(hi).view(np.uint32)
    return np.unique(np.linspace(0, top, n).astype(np.uint32)).view(np.float32)


def ulps(ours, ref, dtype):
    """|ours - ref| in ulps of ref (the dtype's ulp; the denormal spacing below the normals)."""
    fi = np.finfo(dtype)
    e = np.floor(np.log2(np.maximum(np.abs(ref), fi.tiny)))
    return np.abs(np.asarray(ours, np.float64) - ref) / 2.0 ** (e - (fi.nmant))


def test_elementwise_accuracy_grid(isa):
    """Max error of sigmoid, tanh, gelu (and gelu's derivative) over dense grids against
    high-precision references: float32 on 2 x 2^20 values in [-20, 20] against torch in
    float64; float64 on 3400 values against mpmath at 40 digits. Bounds: conftest.ACT_ULP."""
    b = ACT_ULP[np.float32]
    pos = f32_grid(20.0, 1 << 20)
    x = np.concatenate([-pos[::-1], pos])
    xd = torch.from_numpy(x.astype(np.float64))
    for name, f, tf in [("sigmoid", ops.sigmoid, torch.sigmoid), ("tanh", ops.tanh, torch.tanh)]:
        assert ulps(f(x), tf(xd).numpy(), np.float32).max() <= b[name], name
    y, r = ops.gelu(x).astype(np.float64), F.gelu(xd).numpy()
    assert ulps(y[x >= 0], r[x >= 0], np.float32).max() <= b["gelu_pos"]
    # x/2 (1 + erf(x / sqrt 2)) cancels for x < 0: absolute error against 2^-24 |x|
    # (or the denormal spacing, where the result is denormal).
    neg = x < 0
    err = np.abs(y - r)[neg] / np.maximum(np.abs(x[neg]) * 2.0**-24, 2.0**-149)
    assert err.max() <= b["gelu_neg"]
    assert np.all(y[neg] <= 0) and np.all(y[x <= -5.55] == 0)  # never the wrong sign; 0 once erf rounds to -1
    xt = xd.clone().requires_grad_(True)
    F.gelu(xt).backward(torch.ones_like(xt))
    dx = ops.gelu_backward(np.ones_like(x), x)
    assert np.abs(dx - xt.grad.numpy()).max() / 2.0**-24 <= b["gelu_grad"]

    import mpmath as mp
    b = ACT_ULP[np.float64]
    xs = np.concatenate([np.linspace(-30, 30, 3001), np.geomspace(1e-8, 1, 200), -np.geomspace(1e-8, 1, 200)])
    with mp.workdps(40):
        v = [mp.mpf(float(t)) for t in xs]
        ref = {"sigmoid": np.array([float(1 / (1 + mp.exp(-t))) for t in v]),
               "tanh": np.array([float(mp.tanh(t)) for t in v]),
               "gelu": np.array([float(t / 2 * mp.erfc(-t / mp.sqrt(2))) for t in v])}
    for name, f in [("sigmoid", ops.sigmoid), ("tanh", ops.tanh)]:
        assert ulps(f(xs), ref[name], np.float64).max() <= b[name], name
    y = ops.gelu(xs)
    assert ulps(y[xs >= 0], ref["gelu"][xs >= 0], np.float64).max() <= b["gelu_pos"]
    neg = xs < 0
    assert (np.abs(y - ref["gelu"])[neg] / (np.abs(xs[neg]) * 2.0**-53)).max() <= b["gelu_neg"]


@pytest.mark.parametrize("name", list(ACTS))
def test_elementwise_special_values(isa, name):
    """+-inf, NaN, huge and tiny inputs behave as in torch (sigmoid(-1000) = 0, tanh(inf) = 1)."""
    fwd, tf, bwd, saved = ACTS[name]
    vals = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 0.624, 0.626, 0.874,
            0.876, 2.74, 2.76, 5.9, 6.1, 20.0, -20.0, 88.0, 89.5, -103.0, -105.0, 709.0, -745.0,
            1000.0, -1000.0, 1e4, -1e4, 3e38, -3e38]
    for dtype in DTYPES:
        x = np.array(vals, dtype=dtype)
        # float64 torch as the reference: torch's vectorised float32 gelu gives NaN at +inf
        # (its scalar path and float64 give inf, as here).
        ref = tf(t64(x)).numpy().astype(dtype)
        np.testing.assert_allclose(fwd(x), ref, rtol=1e-5 if dtype == np.float32 else 1e-13,
                                   atol=1e-37, equal_nan=True)
    if name in ("sigmoid", "tanh"):
        x = np.array([-1000.0, 1000.0, -np.inf, np.inf])
        assert list(fwd(x)) == ([0.0, 1.0, 0.0, 1.0] if name == "sigmoid" else [-1.0, 1.0, -1.0, 1.0])


def softmax_ref(x, axis, log, grad=None):
    tf = F.log_softmax if log else F.softmax
    if grad is None:
        return tf(t64(x), dim=axis).numpy()
    return torch_grad(lambda t: tf(t, dim=axis), x, grad)


def softmax_backward_ref(g, y, axis, log):
    """d/dx of softmax (y*(g - sum g*y)) or log_softmax (g - exp(y)*sum g), in long double."""
    g = np.asarray(g, dtype=np.longdouble)
    y = np.asarray(y, dtype=np.longdouble)
    if log:
        return (g - np.exp(y) * g.sum(axis=axis, keepdims=True)).astype(np.float64)
    return (y * (g - (g * y).sum(axis=axis, keepdims=True))).astype(np.float64)


def check_softmax(x, axis, dtype, scale_torch_err=False):
    """Forward and backward of softmax and log_softmax along axis against torch."""
    g = np.random.default_rng(x.size).standard_normal(x.shape).astype(dtype)
    for log in (False, True):
        f, fb = (ops.log_softmax, ops.log_softmax_backward) if log else (ops.softmax, ops.softmax_backward)
        y = f(x, axis)
        assert y.dtype == dtype and y.shape == x.shape and y.flags.c_contiguous
        ref = softmax_ref(x, axis, log)
        # The backward op takes y (the forward's output) as input: its reference is the same
        # formula evaluated on our y in extended precision, so the check does not depend on
        # how the (ill-conditioned, near one-hot) forward rounded.
        gref = softmax_backward_ref(g, y, axis, log)
        factor = gfactor = 1.0
        if scale_torch_err and dtype == np.float32:
            tf = F.log_softmax if log else F.softmax
            factor = torch32_factor(lambda t: tf(t, dim=axis), x, None, ref, dtype)
            gfactor = torch32_factor(lambda t: tf(t, dim=axis), x, g, gref, dtype)
        assert_close(y, ref, dtype, factor)
        gx = fb(g, y, axis)
        if scale_torch_err and dtype == np.float64:
            # Near one-hot rows make the gradient cancel to ~0: judge the error against the
            # size of the terms that cancel, |y g| + |y sum(g y)| (or |g| for log_softmax).
            yy = np.exp(y) if log else y
            terms = np.abs(g) if log else np.abs(yy * g) + np.abs(yy * (g * yy).sum(axis=axis, keepdims=True))
            err = np.linalg.norm(gx - gref) / max(np.linalg.norm(terms), 1e-300)
            assert err <= TOL[np.float64], f"relative error {err:.3e}"
        else:
            assert_close(gx, gref, dtype, gfactor)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_rows(isa, rng, dtype):
    for n in SIZES[1:]:
        check_softmax(data(rng, (3, n), dtype), -1, dtype, scale_torch_err=True)
    check_softmax(data(rng, (0, 7), dtype), -1, dtype)
    check_softmax(data(rng, (5, 0), dtype), 1, dtype)
    check_softmax(data(rng, (4, 9000), dtype), -1, dtype, scale_torch_err=True)  # threaded
    check_softmax(np.array(1.5, dtype=dtype), 0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 5), (7, 1, 13), (1, 17, 67), (3, 31, 2), (4, 5, 0), (37, 11, 129)])
def test_softmax_every_axis(isa, rng, dtype, shape):
    x = data(rng, shape, dtype)
    for axis in range(-3, 3):
        check_softmax(x, axis, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_large_logits_and_threads(isa, rng, dtype):
    # Near one-hot rows: softmax's gradient at the max is g - sum g y ~ 0 (cancels in float32
    # for torch too), hence the torch-relative bound.
    check_softmax(data(rng, (6, 333), dtype, 1e4), -1, dtype, scale_torch_err=True)
    check_softmax(data(rng, (5, 33, 41), dtype, 1e4), 1, dtype, scale_torch_err=True)
    x = data(rng, (64, 700, 3), dtype)  # inner > 1, many work items
    check_softmax(x, 1, dtype)
    y = ops.softmax(data(rng, (4, 1000), dtype, 1e4))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


def test_softmax_special_values(isa):
    nan, inf = np.nan, np.inf
    rows = [[inf, 1.0, 2.0], [nan, 1.0, 2.0], [-inf, -inf, -inf], [-inf, 1.0, 2.0],
            [1e4, -1e4, 0.0], [-inf, -inf, 3.0], [inf, inf, 0.0]]
    for dtype in DTYPES:
        x = np.array(rows, dtype=dtype)
        for log in (False, True):
            f = ops.log_softmax if log else ops.softmax
            tf = F.log_softmax if log else F.softmax
            ref = tf(torch.from_numpy(x), dim=-1).numpy()
            np.testing.assert_allclose(f(x, -1), ref, rtol=1e-6, equal_nan=True)
            # the same rows along axis 0 (the inner > 1 path)
            np.testing.assert_allclose(f(x.T, 0), ref.T, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_and_torch_inputs(isa, rng, dtype):
    base = data(rng, (23, 30), dtype)
    views = [base.T, base[::2, 1:], base[::-1, ::-3], base[:, 5]]
    for name, (fwd, tf, bwd, saved) in ACTS.items():
        for v in views:
            g = data(rng, v.shape, dtype)[..., ::-1] if v.ndim == 2 else data(rng, v.shape, dtype)
            ref = tf(t64(v)).numpy()
            assert_close(fwd(v), ref, dtype, torch32_factor(tf, v, None, ref, dtype))
            y = fwd(v)
            ref = torch_grad(tf, v, g)
            assert_close(bwd(g, v if saved == "x" else y), ref, dtype, torch32_factor(tf, v, g, ref, dtype))
        t = torch.from_numpy(base).T
        assert_close(fwd(t), tf(t64(base.T)).numpy(), dtype)
    for v in views:
        for axis in range(-v.ndim, v.ndim):
            check_softmax(v, axis, dtype)
    t = torch.from_numpy(base).T
    assert_close(ops.softmax(t, 0), softmax_ref(base.T, 0, False), dtype)
    assert_close(ops.softmax_backward(t, t, 1), ops.softmax_backward(base.T.copy(), base.T.copy(), 1), dtype)


def test_errors():
    x = np.ones((3, 4))
    x32 = np.ones((3, 4), dtype=np.float32)
    for f in (ops.relu, ops.sigmoid, ops.tanh, ops.gelu, ops.softmax, ops.log_softmax):
        with pytest.raises(TypeError, match="x"):
            f(np.ones((3, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="grad"):
        ops.relu_backward(np.ones(3, dtype=np.int32), np.ones(3))
    # an axis that is not an integer is refused, not truncated
    for f in (ops.softmax, ops.log_softmax):
        with pytest.raises(TypeError, match="axis"):
            f(x, 0.5)
    for fb, name in [(ops.relu_backward, "x"), (ops.sigmoid_backward, "y"), (ops.tanh_backward, "y"),
                     (ops.gelu_backward, "x"), (ops.leaky_relu_backward, "x"),
                     (ops.softmax_backward, "y"), (ops.log_softmax_backward, "y")]:
        with pytest.raises(TypeError, match=name):
            fb(x, x32)
        with pytest.raises(ValueError, match=r"grad \(3, 4\).*\(4, 3\)"):
            fb(x, x.T.copy())
    for f in (ops.softmax, ops.log_softmax):
        for axis in (2, -3):
            with pytest.raises(ValueError, match="axis"):
                f(x, axis)
        with pytest.raises(ValueError, match="axis"):
            f(np.array(1.0), 1)
    with pytest.raises(ValueError, match="axis"):
        ops.softmax_backward(x, x, 5)
    with pytest.raises(ValueError, match="approximate"):
        ops.gelu(x, approximate="erf")
    with pytest.raises(ValueError, match="approximate"):
        ops.gelu_backward(x, x, approximate="fast")


@pytest.mark.parametrize("dtype", DTYPES)
def test_determinism(rng, dtype):
    x = data(rng, 100003, dtype)
    g = data(rng, 100003, dtype)
    s = data(rng, (50, 2001), dtype)
    s3 = data(rng, (20, 300, 70), dtype)
    calls = [lambda: ops.softmax(s), lambda: ops.log_softmax(s3, 1),
             lambda: ops.softmax_backward(s, ops.softmax(s)),
             lambda: ops.log_softmax_backward(s3, s3, 1)]
    for name, (fwd, tf, bwd, saved) in ACTS.items():
        calls += [lambda fwd=fwd: fwd(x), lambda bwd=bwd: bwd(g, x)]
    threads = nnkernels.get_num_threads()
    try:
        nnkernels.set_num_threads(2)
        first = [c() for c in calls]
        assert all(np.array_equal(a, c(), equal_nan=True) for a, c in zip(first, calls))
        nnkernels.set_num_threads(1)
        assert all(np.array_equal(a, c(), equal_nan=True) for a, c in zip(first, calls))
    finally:
        nnkernels.set_num_threads(threads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "tanh", "sigmoid"])
def test_linear_fused_activation(isa, rng, dtype, activation):
    """linear's GEMM epilogue runs the vectorised activation of the selected ISA per tile row."""
    tf = {"gelu": F.gelu, "gelu_tanh": gelu_tanh_ref,
          "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation]
    for m, k, n in [(1, 3, 1), (7, 19, 37), (33, 64, 70)]:
        x, w, b = data(rng, (m, k), dtype, 0.5), data(rng, (n, k), dtype, 0.5), data(rng, n, dtype)
        z = F.linear(t64(x), t64(w), t64(b))
        ref = tf(z).numpy()
        ours = ops.linear(x, w, b, activation=activation)
        if activation == "gelu":
            # x/2 (1 + erf(x/sqrt 2)) cancels for x << 0 (torch's formula, kept): judge the
            # error against the size of the terms before the cancellation, |x|/2 (1 + |erf|).
            zn = z.numpy()
            scale = np.linalg.norm(0.5 * np.abs(zn) * (1 + np.abs(torch.erf(z / 2**0.5).numpy())))
            err = np.linalg.norm(ours.astype(np.float64) - ref) / max(scale, 1e-300)
            assert err <= 4.0 * TOL[dtype], f"relative error {err:.3e}"
        else:
            assert_close(ours, ref, dtype, factor=4.0)
