"""Losses (mse_loss, cross_entropy, binary_cross_entropy_with_logits) and their backwards
against torch: forward values for every reduction, gradients through autograd (grad_out
None, scalar, array), every ISA, float32 and float64, odd and empty shapes, strided
inputs, NaN, large logits, errors and determinism across thread counts."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nnkernels
from nnkernels import _C, ops

from conftest import DTYPES, TOL, assert_close

REDUCTIONS = ["none", "mean", "sum"]
ELEM_SHAPES = [(), (1,), (7,), (13, 17), (2, 3, 5), (257, 263)]  # the last spans several chunks
CE_SHAPES = [(1, 1), (1, 2), (7, 2), (31, 7), (13, 1000), (97, 1000), (5,)]  # (C,): unbatched

TORCH_FWD = {
    "mse": F.mse_loss,
    "bce": F.binary_cross_entropy_with_logits,
    "ce": F.cross_entropy,
}
OPS = {
    "mse": (ops.mse_loss, ops.mse_loss_backward),
    "bce": (ops.binary_cross_entropy_with_logits, ops.binary_cross_entropy_with_logits_backward),
    "ce": (ops.cross_entropy, ops.cross_entropy_backward),
}


def make_inputs(kind, shape, dtype, rng, scale=3.0, index_dtype=np.int64):
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    if kind == "mse":
        t = rng.standard_normal(shape).astype(dtype)
    elif kind == "bce":
        t = rng.random(shape).astype(dtype)
    else:
        C = shape[-1]
        t = rng.integers(0, C, size=shape[:-1]).astype(index_dtype)
    return x, t


def as_np(a, dtype=np.float64):
    """A float64 numpy copy of an array, number or torch tensor."""
    if isinstance(a, torch.Tensor):
        a = a.numpy()
    return np.array(a, dtype=dtype)


def torch_view(a):
    """A non-contiguous torch tensor equal to a."""
    a = np.asarray(a)
    return torch.from_numpy(np.stack([a, a], -1))[..., 0]


def torch_target(kind, t):
    tt = torch.from_numpy(np.array(t))
    return tt.long() if kind == "ce" else tt.double()


def torch_forward(kind, x, t, reduction):
    """torch in float64 on the same data (the exact reference for both dtypes)."""
    xt = torch.from_numpy(as_np(x))
    return TORCH_FWD[kind](xt, torch_target(kind, t), reduction=reduction).numpy()


def torch_backward(kind, x, t, reduction, grad_out):
    """torch autograd in float64 on the same data."""
    xt = torch.from_numpy(as_np(x)).requires_grad_(True)
    loss = TORCH_FWD[kind](xt, torch_target(kind, t), reduction=reduction)
    if grad_out is None:
        g = torch.ones_like(loss)
    else:
        g = torch.from_numpy(as_np(grad_out))
    loss.backward(g)
    return xt.grad.numpy()


def check_forward(kind, x, t, reduction, dtype, factor=1.0):
    ours = OPS[kind][0](x, t, reduction)
    ref = torch_forward(kind, x, t, reduction)
    if reduction == "none":
        assert isinstance(ours, np.ndarray) and ours.dtype == dtype
        assert ours.flags.c_contiguous
        assert_close(ours, ref, dtype, factor)
    else:
        assert type(ours) is float
        assert_close(np.array([ours]), np.array([float(ref)]), dtype, factor)


def grad_scale(kind, x, t, reduction, grad_out):
    """Magnitude of the terms that make each gradient entry (float64): the float32 bound is
    relative to it, since d/dx = (a - b) g cancels (sigmoid(x) - t, softmax - onehot)."""
    x = np.asarray(x, dtype=np.float64)
    count = x.shape[0] if (kind == "ce" and x.ndim == 2) else (1 if kind == "ce" else x.size)
    if reduction == "none":
        g = np.ones(loss_shape(kind, x.shape)) if grad_out is None else as_np(grad_out)
    else:
        g = np.full(loss_shape(kind, x.shape), 1.0 if grad_out is None else float(as_np(grad_out)))
        if reduction == "mean":
            g = g / max(count, 1)
    g = np.abs(g)
    if kind == "mse":
        return 2 * (np.abs(x) + np.abs(np.asarray(t, np.float64))) * g
    if kind == "bce":
        with np.errstate(over="ignore"):
            return (1 / (1 + np.exp(-x)) + np.abs(np.asarray(t, np.float64))) * g
    p = torch.softmax(torch.from_numpy(x), -1).numpy()
    onehot = np.arange(x.shape[-1]) == np.asarray(t)[..., None]
    return (p + onehot) * g[..., None]


def check_backward(kind, x, t, reduction, dtype, grad_out=None, factor=1.0):
    ours = OPS[kind][1](x, t, reduction, grad_out)
    ref = torch_backward(kind, x, t, reduction, grad_out)
    assert isinstance(ours, np.ndarray) and ours.dtype == dtype and ours.shape == np.shape(x)
    if dtype == np.float64:
        assert_close(ours, ref, dtype, factor)
        return
    assert np.array_equal(np.isnan(ours), np.isnan(ref)), "NaN positions differ"
    keep = ~np.isnan(ref)
    err = np.linalg.norm(np.where(keep, ours - ref, 0))
    scale = np.linalg.norm(np.where(keep, grad_scale(kind, x, t, reduction, grad_out), 0))
    assert err <= factor * TOL[np.float32] * max(scale, 1e-300), f"error {err:.3e} vs scale {scale:.3e}"


def loss_shape(kind, shape):
    return shape[:-1] if kind == "ce" else shape


# ---- values against torch ------------------------------------------------------------------


@pytest.mark.parametrize("shape", ELEM_SHAPES)
@pytest.mark.parametrize("kind", ["mse", "bce"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_forward_backward(isa, kind, shape, reduction, dtype, rng):
    x, t = make_inputs(kind, shape, dtype, rng)
    check_forward(kind, x, t, reduction, dtype)
    check_backward(kind, x, t, reduction, dtype)


@pytest.mark.parametrize("shape", CE_SHAPES)
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_forward_backward(isa, shape, index_dtype, reduction, dtype, rng):
    x, t = make_inputs("ce", shape, dtype, rng, index_dtype=index_dtype)
    check_forward("ce", x, t, reduction, dtype)
    check_backward("ce", x, t, reduction, dtype)


@pytest.mark.parametrize("kind", ["mse", "bce", "ce"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_out_forms(isa, kind, reduction, dtype, rng):
    shape = (11, 37)
    x, t = make_inputs(kind, shape, dtype, rng)
    if reduction == "none":
        g = rng.standard_normal(loss_shape(kind, shape)).astype(dtype)
        forms = [g, torch.from_numpy(g), np.asfortranarray(g) if g.ndim == 2 else g[::-1].copy()[::-1]]
        for form in forms:
            check_backward(kind, x, t, reduction, dtype, grad_out=form)
    else:
        for form in [0.37, -2, np.float64(1.5), np.array(0.25, dtype=dtype), torch.tensor(-0.75)]:
            check_backward(kind, x, t, reduction, dtype, grad_out=form)


@pytest.mark.parametrize("kind", ["mse", "bce", "ce"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_and_torch_inputs(isa, kind, dtype, rng):
    if kind == "ce":
        base = (rng.standard_normal((40, 29)) * 3).astype(dtype)
        x = base.T[::2]                            # (15, 40), both strides non-unit
        t = rng.integers(0, 40, size=30)[::2]      # (15,), stride 2
        t = t.astype(np.int32)
    else:
        x = (rng.standard_normal((13, 22)) * 3).astype(dtype)[:, ::-2]
        t = (rng.random((22, 13)) if kind == "bce" else rng.standard_normal((22, 13))).astype(dtype).T[:, 1::2]
    assert not x.flags.c_contiguous
    for reduction in REDUCTIONS:
        check_forward(kind, x, t, reduction, dtype)
        g = None
        if reduction == "none":
            gbase = rng.standard_normal(loss_shape(kind, x.shape) + (2,)).astype(dtype)
            g = gbase[..., 0]                      # non-contiguous grad_out
        check_backward(kind, x, t, reduction, dtype, grad_out=g)
        # torch tensors passed directly (strided views as well)
        ours = OPS[kind][0](torch_view(x), torch_view(t), reduction)
        ref = OPS[kind][0](x, t, reduction)
        np.testing.assert_array_equal(ours, ref)
        ours_g = OPS[kind][1](torch_view(x), torch_view(t), reduction,
                              None if g is None else torch_view(g))
        np.testing.assert_array_equal(ours_g, OPS[kind][1](x, t, reduction, g))


@pytest.mark.parametrize("kind", ["mse", "bce", "ce"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty(isa, kind, dtype):
    shapes = [(0, 5), (0, 1000)] if kind == "ce" else [(0,), (3, 0, 4)]
    for shape in shapes:
        x = np.zeros(shape, dtype)
        t = np.zeros(loss_shape(kind, shape), np.int64) if kind == "ce" else np.zeros(shape, dtype)
        fwd, bwd = OPS[kind]
        assert np.isnan(fwd(x, t, "mean"))
        assert fwd(x, t, "sum") == 0.0
        out = fwd(x, t, "none")
        assert out.shape == loss_shape(kind, shape) and out.dtype == dtype
        for reduction in REDUCTIONS:
            g = bwd(x, t, reduction)
            assert g.shape == shape and g.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_logits(isa, dtype, rng):
    # |logits| ~ 1e4: exp overflows unless the loss is computed in its stable form.
    x, t = make_inputs("ce", (9, 6), dtype, rng, scale=1e4)
    for reduction in REDUCTIONS:
        assert np.all(np.isfinite(ops.cross_entropy(x, t, reduction)))
        check_forward("ce", x, t, reduction, dtype)
        check_backward("ce", x, t, reduction, dtype)
    x, t = make_inputs("bce", (50,), dtype, rng, scale=1e4)
    for reduction in REDUCTIONS:
        assert np.all(np.isfinite(ops.binary_cross_entropy_with_logits(x, t, reduction)))
        check_forward("bce", x, t, reduction, dtype)
        check_backward("bce", x, t, reduction, dtype)


@pytest.mark.parametrize("kind", ["mse", "bce", "ce"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates(isa, kind, dtype, rng):
    shape = (6, 70)
    x, t = make_inputs(kind, shape, dtype, rng)
    x[2, 33] = np.nan
    x[4, 0] = np.nan
    if kind != "ce":
        t[1, 5] = np.nan
    for reduction in REDUCTIONS:
        ours = OPS[kind][0](x, t, reduction)
        if reduction == "none":
            check_forward(kind, x, t, reduction, dtype)
        else:
            assert np.isnan(ours)
        g = rng.standard_normal(loss_shape(kind, shape)) if reduction == "none" else None
        check_backward(kind, x, t, reduction, dtype, grad_out=None if g is None else g.astype(dtype))


@pytest.mark.parametrize("kind", ["mse", "bce", "ce"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference_kernels(isa, kind, dtype, rng):
    shape = (67, 301)
    x, t = make_inputs(kind, shape, dtype, rng)
    for reduction in REDUCTIONS:
        ours = OPS[kind][0](x, t, reduction)
        ref = _C.loss_ref(kind, x, t, reduction)
        assert_close(np.atleast_1d(ours), np.atleast_1d(ref), dtype)
        assert_close(OPS[kind][1](x, t, reduction, None), _C.loss_ref_backward(kind, x, t, reduction, None), dtype)


# ---- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mse", "bce", "ce"])
def test_deterministic_across_threads(isa, kind, rng):
    shape = (400, 1000) if kind == "ce" else (300007,)
    x, t = make_inputs(kind, shape, np.float32, rng)
    g = rng.standard_normal(loss_shape(kind, shape)).astype(np.float32)
    fwd, bwd = OPS[kind]
    before = nnkernels.get_num_threads()
    results = []
    try:
        for threads in [1, 2, 3, 2]:
            nnkernels.set_num_threads(threads)
            results.append((fwd(x, t, "mean"), fwd(x, t, "sum"), fwd(x, t, "none"),
                            bwd(x, t, "mean", 0.5), bwd(x, t, "none", g)))
    finally:
        nnkernels.set_num_threads(before)
    for r in results[1:]:
        assert r[0] == results[0][0] and r[1] == results[0][1]
        for a, b in zip(r[2:], results[0][2:]):
            assert np.array_equal(a, b)


# ---- errors ---------------------------------------------------------------------------------


def test_shape_mismatch():
    a, b = np.zeros((3, 4)), np.zeros((4, 3))
    for fn in [ops.mse_loss, ops.binary_cross_entropy_with_logits]:
        with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
            fn(a, b)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        ops.mse_loss_backward(a, b)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4,\)"):
        ops.cross_entropy(a, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 1\)"):
        ops.cross_entropy_backward(a, np.zeros((3, 1), np.int64))
    with pytest.raises(ValueError):
        ops.cross_entropy(np.zeros(4), np.zeros(1, np.int64))  # unbatched needs a 0-d target


def test_logits_rank():
    with pytest.raises(ValueError, match="logits"):
        ops.cross_entropy(np.zeros((2, 3, 4)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="logits"):
        ops.cross_entropy(np.float64(1.0), np.int64(0))


def test_unbatched_cross_entropy(rng):
    x = rng.standard_normal(9)
    t = np.int64(4)
    out = ops.cross_entropy(x, t, "none")
    assert out.shape == ()
    ref = F.cross_entropy(torch.from_numpy(x), torch.tensor(4), reduction="none")
    assert_close(out, ref.numpy(), np.float64)
    g = ops.cross_entropy_backward(x, t, "none", np.array(0.5))
    assert g.shape == (9,)
    with pytest.raises(ValueError):
        ops.cross_entropy_backward(x, t, "none", np.ones(1))


def test_dtype_errors():
    x = np.zeros((3, 4))
    with pytest.raises(TypeError, match="target.*float64"):
        ops.cross_entropy(x, np.zeros(3))
    with pytest.raises(TypeError, match="target.*bool"):
        ops.cross_entropy(x, np.zeros(3, bool))
    with pytest.raises(TypeError, match="logits.*int64"):
        ops.cross_entropy(np.zeros((3, 4), np.int64), np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="logits.*int32"):
        ops.binary_cross_entropy_with_logits(np.zeros(3, np.int32), np.zeros(3))
    with pytest.raises(TypeError, match="input.*int64"):
        ops.mse_loss(np.zeros(3, np.int64), np.zeros(3))
    with pytest.raises(TypeError, match="target"):
        ops.mse_loss(np.zeros(3, np.float32), np.zeros(3))
    with pytest.raises(TypeError, match="grad_out"):
        ops.mse_loss_backward(np.zeros(3), np.zeros(3), "none", np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="grad_out"):
        ops.mse_loss_backward(np.zeros(3), np.zeros(3), "mean", "x")


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("bad", [-1, 4, -101, 2**31 - 1])
def test_target_out_of_range(index_dtype, bad):
    x = np.zeros((3, 4))
    t = np.array([0, bad, 1], dtype=index_dtype)
    for reduction in REDUCTIONS:
        with pytest.raises(IndexError, match=str(bad)):
            ops.cross_entropy(x, t, reduction)
        with pytest.raises(IndexError):
            ops.cross_entropy_backward(x, t, reduction)
        # -100 is torch's default ignore_index; with another one it is out of range
        t2 = np.array([0, -100, 1], dtype=index_dtype)
        with pytest.raises(IndexError, match="-100"):
            ops.cross_entropy(x, t2, reduction, ignore_index=3)
        with pytest.raises(IndexError, match="-100"):
            ops.cross_entropy_backward(x, t2, reduction, ignore_index=bad)
    with pytest.raises(IndexError):
        ops.cross_entropy(np.zeros((2, 0)), np.zeros(2, index_dtype))  # no class at all
    with pytest.raises(TypeError):
        ops.cross_entropy(x, t, "mean", ignore_index=1.5)


# ---- ignore_index -------------------------------------------------------------------------

IGNORE_CASES = [  # (shape, ignore_index, fraction of targets set to it)
    ((1, 1), -100, 1.0), ((7, 2), -100, 0.5), ((31, 7), 3, 0.3), ((13, 1000), 999, 0.2),
    ((97, 1000), 0, 0.5), ((53, 11), 2**40, 0.4), ((17, 5), -100, 1.0), ((0, 5), -100, 0.0),
    ((5,), -100, 1.0), ((5,), 2, 0.0), ((5,), 2, 1.0),
]


def ignore_inputs(shape, ignore, frac, dtype, index_dtype, rng):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    C = shape[-1]
    t = rng.integers(0, C, size=shape[:-1])
    if index_dtype == np.int32 and not (-2**31 <= ignore < 2**31):
        frac = 0.0  # no int32 target can equal it: nothing is ignored (it must not be truncated)
    t = np.where(rng.random(t.shape) < frac, ignore, t) if frac < 1 else np.full(t.shape, ignore)
    return x, np.asarray(t).astype(index_dtype)


@pytest.mark.parametrize("case", IGNORE_CASES, ids=lambda c: f"{c[0]}-ign{c[1]}-f{c[2]}")
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_ignore_index(isa, case, index_dtype, reduction, dtype, rng):
    """Targets equal to ignore_index: loss 0, zero gradient row, left out of the mean (NaN
    when every target is ignored), as torch (float64, the exact reference) and the oracle."""
    shape, ignore, frac = case
    x, t = ignore_inputs(shape, ignore, frac, dtype, index_dtype, rng)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    ref = F.cross_entropy(xt, torch.from_numpy(t.astype(np.int64)), reduction=reduction, ignore_index=ignore)
    g = rng.standard_normal(t.shape).astype(dtype) if reduction == "none" else np.array(-1.75, dtype)
    ref.backward(torch.from_numpy(g.astype(np.float64)))
    ours = ops.cross_entropy(x, t, reduction, ignore_index=ignore)
    oracle = _C.loss_ref("ce", x, t, reduction, ignore_index=ignore)
    for got in (ours, oracle):
        if reduction == "none":
            assert got.dtype == dtype and got.shape == t.shape
            assert_close(got, ref.detach().numpy(), dtype)
            assert np.all(got[t == ignore] == 0)
        else:
            assert type(got) is float
            assert_close(np.array([got]), np.array([ref.item()]), dtype)
    kept = int(np.sum(t != ignore))
    if reduction == "mean":
        assert np.isnan(ours) == (kept == 0)
    gx = ops.cross_entropy_backward(x, t, reduction, g, ignore_index=ignore)
    gx_oracle = _C.loss_ref_backward("ce", x, t, reduction, g, ignore_index=ignore)
    assert np.all(gx[t == ignore] == 0) and np.all(gx_oracle[t == ignore] == 0)
    # float32: relative to the terms each entry is made of, (softmax + onehot) |g| / count
    gs = np.abs(g.astype(np.float64)) / (max(kept, 1) if reduction == "mean" else 1)
    p = torch.softmax(torch.from_numpy(x.astype(np.float64)), -1).numpy()
    terms = (p + (np.arange(shape[-1]) == t[..., None])) * (gs[..., None] if reduction == "none" else gs)
    tol = TOL[dtype] * max(np.linalg.norm(terms), 1e-300)
    for got in (gx, gx_oracle):
        assert got.dtype == dtype and got.shape == x.shape
        assert np.linalg.norm(got - xt.grad.numpy()) <= tol


def test_reduction_errors():
    a = np.zeros(3)
    for fn, t in [(ops.mse_loss, a), (ops.binary_cross_entropy_with_logits, a),
                  (ops.cross_entropy, np.zeros(1, np.int64))]:
        x = a if fn is not ops.cross_entropy else np.zeros((1, 3))
        for bad in ["avg", "", None, 1]:
            with pytest.raises(ValueError, match="reduction"):
                fn(x, t, bad)
    with pytest.raises(ValueError, match="reduction"):
        ops.cross_entropy_backward(np.zeros((1, 3)), np.zeros(1, np.int64), "Mean")


def test_grad_out_shape_errors():
    x, y = np.zeros((3, 4)), np.ones((3, 4))
    for bwd in [ops.mse_loss_backward, ops.binary_cross_entropy_with_logits_backward]:
        with pytest.raises(ValueError, match="grad_out"):
            bwd(x, y, "none", np.ones((4, 3)))
        with pytest.raises(ValueError, match="grad_out"):
            bwd(x, y, "none", np.ones(()))
        for red in ["mean", "sum"]:
            with pytest.raises(ValueError, match="grad_out"):
                bwd(x, y, red, np.ones(1))
            with pytest.raises(ValueError, match="grad_out"):
                bwd(x, y, red, np.ones((3, 4)))
    t = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="grad_out"):
        ops.cross_entropy_backward(x, t, "none", np.ones((3, 4)))
    with pytest.raises(ValueError, match="grad_out"):
        ops.cross_entropy_backward(x, t, "mean", np.ones(3))
