"""layer_norm, embedding and dropout against torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nnkernels
from nnkernels import _C, ops

from conftest import DTYPES, TOL, assert_close, streaming_forced

# ---- layer norm ---------------------------------------------------------------------------

LN_SHAPES = [((1, 1), (1,)), ((7, 33), (33,)), ((2, 5, 768), (768,)), ((3, 4, 6), (4, 6)),
             ((0, 17), (17,)), ((65, 31), (31,))]


def torch_ln(x, ns, w, b, eps, g):
    t = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    tw = None if w is None else torch.tensor(np.asarray(w, np.float64), requires_grad=True)
    tb = None if b is None else torch.tensor(np.asarray(b, np.float64), requires_grad=True)
    y = F.layer_norm(t, ns, tw, tb, eps)
    y.backward(torch.tensor(np.asarray(g, np.float64)))
    return (y.detach().numpy(), t.grad.numpy(), None if tw is None else tw.grad.numpy(),
            None if tb is None else tb.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
@pytest.mark.parametrize("shapes", LN_SHAPES, ids=lambda s: str(s[0]))
def test_layer_norm(isa, rng, dtype, affine, shapes):
    xs, ns = shapes
    x = rng.standard_normal(xs).astype(dtype) * 3 + 2
    w = rng.standard_normal(ns).astype(dtype) if affine != "none" else None
    b = rng.standard_normal(ns).astype(dtype) if affine == "both" else None
    y, mean, rstd = ops.layer_norm(x, ns, w, b, 1e-5, return_stats=True)
    lead = xs[: len(xs) - len(ns)]
    assert y.dtype == dtype and mean.shape == lead and rstd.shape == lead
    g = rng.standard_normal(xs).astype(dtype)
    ry, rdx, rdw, rdb = torch_ln(x, ns, w, b, 1e-5, g)
    f = 4.0 if dtype == np.float32 else 10.0
    assert_close(y, ry, dtype, f)
    xd = x.astype(np.float64).reshape(lead + (int(np.prod(ns)),))
    if x.size:
        assert_close(mean, xd.mean(-1), dtype, f)
        assert_close(rstd, 1 / np.sqrt(xd.var(-1) + 1e-5), dtype, f)
    dx, dw, db = ops.layer_norm_backward(g, x, ns, mean, rstd, w, b)
    # dx = rstd (gw - mean(gw) - xhat mean(gw xhat)) cancels (exactly for D = 1): judge the
    # error against the size of its terms.
    gw = (g * (1 if w is None else w)).astype(np.float64).reshape(xd.shape)
    rs = 1 / np.sqrt(xd.var(-1, keepdims=True) + 1e-5)
    xh = (xd - xd.mean(-1, keepdims=True)) * rs
    mag = rs * (np.abs(gw) + np.abs(gw).mean(-1, keepdims=True)
                + (np.abs(xh) + np.abs(xd) * rs) * np.abs(gw * xh).mean(-1, keepdims=True))
    err = np.linalg.norm(dx.reshape(mag.shape) - rdx.reshape(mag.shape))
    assert err <= 10 * f * TOL[dtype] * max(np.linalg.norm(mag), 1e-300)
    assert (dw is None) == (w is None) and (db is None) == (b is None)
    if w is not None:
        # xhat carries rounding of about eps |x| rstd (exactly 0 for D = 1)
        xr = (np.abs(xd) * rs + np.abs(xh)).reshape((-1,) + ns)
        magw = (np.abs(g).astype(np.float64).reshape((-1,) + ns) * xr).sum(0)
        err = np.linalg.norm(dw - rdw)
        assert err <= 10 * f * TOL[dtype] * max(np.linalg.norm(magw), 1e-300)
    if b is not None:
        assert_close(db, rdb, dtype, 10 * f)
    ro = _C.layer_norm_ref(x, list(ns), w, b, 1e-5)
    assert_close(y, ro[0], dtype, f)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_streaming_stores(isa, rng, dtype):
    # Calls whose arrays outgrow the last-level cache write y / dx by non-temporal stores
    # from each row's first vector-aligned element. Pretend the cache is one byte, so every
    # call takes that path (odd D: rows start at every alignment), and compare bit for bit
    # with the ordinary stores, and with torch.
    shapes = [((37, 45), (45,)), ((9, 768), (768,)), ((5, 1), (1,)), ((4, 3, 7), (3, 7)),
              ((33, 16), (16,)), ((6, 67), (67,))]
    for xs, ns in shapes:
        x = rng.standard_normal(xs).astype(dtype) * 2 - 1
        w, b = rng.standard_normal(ns).astype(dtype), rng.standard_normal(ns).astype(dtype)
        g = rng.standard_normal(xs).astype(dtype)

        def run():
            y, m, r = ops.layer_norm(x, ns, w, b, return_stats=True)
            return (y, m, r) + tuple(ops.layer_norm_backward(g, x, ns, m, r, w, b))
        ref = run()
        with streaming_forced():
            got = run()
        for a, e in zip(got, ref):
            assert np.array_equal(a, e)
        ry, rdx, _, _ = torch_ln(x, ns, w, b, 1e-5, g)
        assert_close(got[0], ry, dtype, 4.0 if dtype == np.float32 else 10.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_large_mean(rng, dtype):
    # var = E[x^2] - E[x]^2 would lose every digit here; the two-pass centred sum does not.
    x = (rng.standard_normal((8, 256)) + 1e4).astype(dtype)
    y, mean, rstd = ops.layer_norm(x, 256, return_stats=True)
    ry = F.layer_norm(torch.tensor(x.astype(np.float64)), (256,)).numpy()
    eps = np.finfo(dtype).eps
    assert np.linalg.norm(y - ry) / np.linalg.norm(ry) < 1e4 * eps * 4
    assert np.allclose(rstd, 1 / np.sqrt(x.astype(np.float64).var(-1) + 1e-5), rtol=1e4 * eps * 4)


def test_layer_norm_non_contiguous_and_torch(rng):
    x = torch.randn(6, 40, dtype=torch.float64)[:, ::2]
    w = torch.randn(20, dtype=torch.float64)
    y = ops.layer_norm(x, (20,), w)
    assert_close(y, F.layer_norm(x, (20,), w).numpy(), np.float64, 10)


def test_layer_norm_deterministic(rng):
    x = rng.standard_normal((1000, 96)).astype(np.float32)
    w = rng.standard_normal(96).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    n0 = nnkernels.get_num_threads()
    res = []
    try:
        for n in (1, 2, 2):
            nnkernels.set_num_threads(n)
            y, m, r = ops.layer_norm(x, 96, w, w, return_stats=True)
            res.append((y,) + tuple(ops.layer_norm_backward(g, x, 96, m, r, w, w)))
    finally:
        nnkernels.set_num_threads(n0)
    for other in res[1:]:
        for a, b in zip(res[0], other):
            assert np.array_equal(a, b)


def test_layer_norm_errors(rng):
    x = rng.standard_normal((4, 5))
    with pytest.raises(ValueError, match="normalized_shape"):
        ops.layer_norm(x, 4)
    with pytest.raises(ValueError, match="weight"):
        ops.layer_norm(x, 5, np.ones(4))
    with pytest.raises(TypeError, match="weight"):
        ops.layer_norm(x, 5, np.ones(5, np.float32))
    with pytest.raises(TypeError):
        ops.layer_norm(x.astype(np.int32), 5)
    with pytest.raises(TypeError, match="normalized_shape"):
        ops.layer_norm(x, 5.0)
    y, m, r = ops.layer_norm(x, 5, return_stats=True)
    # the stats passed where the shape goes: a TypeError, not a shape truncated from floats
    with pytest.raises(TypeError, match="normalized_shape"):
        ops.layer_norm_backward(x, x, m, r, 5)
    assert ops.layer_norm(x, np.int64(5)).shape == x.shape
    assert ops.layer_norm(x, (np.int32(5),)).shape == x.shape
    assert ops.layer_norm(x, np.array([5])).shape == x.shape
    assert ops.layer_norm(x, torch.Size([5])).shape == x.shape
    with pytest.raises(ValueError, match="grad_out"):
        ops.layer_norm_backward(x[:3], x, 5, m, r)
    with pytest.raises(ValueError, match="mean"):
        ops.layer_norm_backward(x, x, 5, m[:3], r)


# ---- embedding ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("itype", [np.int32, np.int64])
def test_embedding(rng, dtype, itype):
    V, D = 11, 37
    w = rng.standard_normal((V, D)).astype(dtype)
    idx = rng.integers(0, V, size=(5, 13)).astype(itype)  # duplicates certain
    out = ops.embedding(idx, w)
    assert out.shape == (5, 13, D) and out.dtype == dtype
    tw = torch.tensor(w, requires_grad=True)
    ref = F.embedding(torch.tensor(idx.astype(np.int64)), tw)
    assert np.array_equal(out, ref.detach().numpy())
    g = rng.standard_normal(out.shape).astype(dtype)
    ref.backward(torch.tensor(g))
    dw = ops.embedding_backward(g, idx, V)
    assert dw.shape == (V, D) and dw.dtype == dtype
    assert_close(dw, tw.grad.numpy(), dtype)
    # transposed (non-contiguous) indices and weight
    out = ops.embedding(idx.T, np.asfortranarray(w))
    assert np.array_equal(out, w[idx.T])
    assert ops.embedding(np.zeros((0,), itype), w).shape == (0, D)


def test_embedding_backward_deterministic(rng):
    idx = rng.integers(0, 7, size=5000)
    g = rng.standard_normal((5000, 16)).astype(np.float32)
    n0 = nnkernels.get_num_threads()
    try:
        res = []
        for n in (1, 2):
            nnkernels.set_num_threads(n)
            res.append(ops.embedding_backward(g, idx, 9))
    finally:
        nnkernels.set_num_threads(n0)
    assert np.array_equal(res[0], res[1])
    assert np.all(res[0][7:] == 0)


def test_embedding_errors(rng):
    w = rng.standard_normal((5, 3))
    for bad in (5, -1, 100):
        with pytest.raises(IndexError, match="out of range"):
            ops.embedding(np.array([0, bad, 1]), w)
        with pytest.raises(IndexError):
            ops.embedding_backward(np.ones((3, 3)), np.array([0, bad, 1]), 5)
    with pytest.raises(TypeError, match="indices"):
        ops.embedding(np.array([0.0, 1.0]), w)
    with pytest.raises(TypeError):
        ops.embedding(np.array([0, 1]), w.astype(np.int64))
    with pytest.raises(ValueError):
        ops.embedding(np.array([0, 1]), w[0])
    with pytest.raises(ValueError, match="grad_out"):
        ops.embedding_backward(np.ones((2, 3)), np.array([0, 1, 2]), 5)


# ---- dropout ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_dropout(rng, dtype, p):
    x = rng.standard_normal((512, 777)).astype(dtype)
    y, mask = ops.dropout(x, p, seed=1234)
    assert y.dtype == dtype and mask.dtype == bool and mask.shape == x.shape
    keep = mask.mean()
    assert abs(keep - (1 - p)) < 5 * np.sqrt(p * (1 - p) / x.size) + 1e-12
    if p == 1.0:
        assert np.all(y == 0) and not mask.any()
    elif p == 0.0:
        assert np.array_equal(y, x) and mask.all()
    else:
        assert np.array_equal(y, np.where(mask, x * dtype(1 / (1 - p)), 0).astype(dtype))
        assert_close(y, x * mask / (1 - p), dtype)


def test_dropout_seed_and_threads(rng):
    x = rng.standard_normal(100_003).astype(np.float32)
    n0 = nnkernels.get_num_threads()
    try:
        nnkernels.set_num_threads(1)
        y1, m1 = ops.dropout(x, 0.3, seed=42)
        nnkernels.set_num_threads(2)
        y2, m2 = ops.dropout(x, 0.3, seed=42)
    finally:
        nnkernels.set_num_threads(n0)
    assert np.array_equal(m1, m2) and np.array_equal(y1, y2)
    # the mask of element i depends only on (seed, i): a prefix sees the same decisions
    _, mp = ops.dropout(x[:1001].astype(np.float64), 0.3, seed=42)
    assert np.array_equal(mp, m1[:1001])
    _, m3 = ops.dropout(x, 0.3, seed=43)
    assert not np.array_equal(m1, m3)
    _, ma = ops.dropout(x, 0.3)
    _, mb = ops.dropout(x, 0.3)
    assert not np.array_equal(ma, mb)  # fresh seeds
    # neighbouring elements are not correlated
    c = np.corrcoef(m1[:-1].astype(float), m1[1:].astype(float))[0, 1]
    assert abs(c) < 0.02


def test_dropout_errors(rng):
    x = rng.standard_normal(10)
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="p"):
            ops.dropout(x, p, seed=0)
    with pytest.raises(TypeError):
        ops.dropout(x.astype(np.int32), 0.5, seed=0)
    y, m = ops.dropout(np.zeros((0, 3)), 0.5, seed=0)
    assert y.shape == (0, 3) and m.shape == (0, 3)
