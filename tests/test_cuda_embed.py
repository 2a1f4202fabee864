"""CUDA embedding, embedding_backward and dropout (csrc/cuda/embed.cu, bind_cuda.cpp).

Host-side argument checks run everywhere (fake CUDA arrays whose made-up pointers are never
dereferenced: every call stops at a check or at the first CUDA call); the GPU tests compare
against torch on the GPU and against our CPU path (embedding both ways and dropout bitwise),
and are skipped where no GPU is usable.
"""

import numpy as np
import pytest

import nnkernels
from nnkernels import _C, ops

from cuda_support import (AVAILABLE, BUILT, DT, FAKE_PTR, FakeCAI, close, f32, host,  # noqa: F401
                          needs_built, needs_gpu, no_gpu, tcuda)


def i64(*shape):
    return FakeCAI(shape, "<i8", ptr=FAKE_PTR + 0x100000)


def view(shape, dtype, off=0):
    """A DeviceArray viewing memory it does not own (never dereferenced here)."""
    return _C._cuda_view(FAKE_PTR + off, list(shape), dtype, 0, False)


# ---------------------------------------------------------------------------------------
# Host side: argument checks before any CUDA call
# ---------------------------------------------------------------------------------------


@needs_built
def test_embedding_argument_errors():
    with pytest.raises(TypeError, match="indices.*int32 or int64"):
        ops.embedding(FakeCAI((4,), "<f4"), f32(10, 3))
    with pytest.raises(TypeError, match="indices.*int32 or int64"):
        ops.embedding(FakeCAI((4,), "<i2"), f32(10, 3))
    with pytest.raises(TypeError, match="weight"):
        ops.embedding(i64(4), FakeCAI((10, 3), "<i4"))
    with pytest.raises(ValueError, match="weight.*2-D"):
        ops.embedding(i64(4), f32(10))
    with pytest.raises(ValueError, match="weight.*2-D"):
        ops.embedding(i64(4), f32(2, 10, 3))
    with pytest.raises(ValueError, match="host"):       # device ids, host weight
        ops.embedding(i64(4), np.ones((10, 3), np.float32))
    with pytest.raises(ValueError, match="host"):       # host ids, device weight
        ops.embedding(np.zeros(4, np.int64), f32(10, 3))
    with pytest.raises(ValueError, match="indices"):    # strides not a multiple of 8 bytes
        ops.embedding(FakeCAI((4,), "<i8", strides=(12,)), f32(10, 3))
    # DeviceArrays of the wrong element type
    with pytest.raises(TypeError, match="indices.*int32 or int64"):
        ops.embedding(view((4,), "float32"), view((10, 3), "float32", 0x1000))
    with pytest.raises(TypeError, match="indices.*int32 or int64"):
        ops.embedding(view((4,), "bool"), view((10, 3), "float32", 0x1000))
    with pytest.raises(TypeError, match="weight"):
        ops.embedding(view((4,), "int64"), view((10, 3), "int64", 0x1000))


@needs_built
def test_embedding_backward_argument_errors():
    bwd = ops.embedding_backward
    with pytest.raises(TypeError, match="indices.*int32 or int64"):
        bwd(f32(4, 3), FakeCAI((4,), "<f8"), 10)
    with pytest.raises(TypeError, match="grad_out"):
        bwd(FakeCAI((4, 3), "<i8"), i64(4), 10)
    with pytest.raises(TypeError, match="grad_out"):
        bwd(view((4, 3), "bool"), view((4,), "int32", 0x1000), 10)
    with pytest.raises(ValueError, match="num_embeddings"):
        bwd(f32(4, 3), i64(4), -1)
    with pytest.raises(ValueError, match="grad_out.*indices"):
        bwd(f32(5, 3), i64(4), 10)
    with pytest.raises(ValueError, match="grad_out.*indices"):
        bwd(f32(4), i64(4), 10)
    with pytest.raises(ValueError, match="grad_out.*indices"):
        bwd(f32(2, 3, 5), i64(3, 2), 10)
    with pytest.raises(ValueError, match="host"):
        bwd(f32(4, 3), np.zeros(4, np.int64), 10)
    with pytest.raises(ValueError, match="host"):
        bwd(np.zeros((4, 3), np.float32), i64(4), 10)
    with pytest.raises(ValueError, match="overflow"):   # (V, D) bytes overflow int64
        bwd(f32(4, 1 << 40), i64(4), 1 << 40)


@needs_built
@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), float("inf")])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError, match="p must be in"):
        ops.dropout(f32(3, 4), p, seed=1)


@needs_built
def test_dropout_argument_errors():
    with pytest.raises(TypeError, match="x"):
        ops.dropout(FakeCAI((3, 4), "<i4"), 0.5, seed=1)
    with pytest.raises(TypeError, match="x"):
        ops.dropout(view((3, 4), "bool"), 0.5, seed=1)
    with pytest.raises(ValueError, match="x"):
        ops.dropout(FakeCAI((3, 4), "<f4", strides=(6, 2)), 0.5, seed=1)


@needs_built
@no_gpu
def test_no_driver_is_runtimeerror():
    # Valid arguments get past every check and stop at the first CUDA call.
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.embedding(i64(2, 3), f32(10, 4))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.embedding(FakeCAI((3, 2), "<i4", strides=(4, 12)), FakeCAI((10, 4), "<f8", strides=(8, 80)))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.embedding(view((0,), "int64"), view((0, 4), "float32", 0x1000))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.embedding_backward(f32(2, 3, 4), i64(2, 3), 10)
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.embedding_backward(view((5, 4), "float64"), view((5,), "int32", 0x1000), 0)
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.dropout(f32(3, 4), 0.3, seed=7)
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.dropout(view((0, 4), "float64"), 1.0)


# ---------------------------------------------------------------------------------------
# GPU: against torch on the GPU and against the CPU path
# ---------------------------------------------------------------------------------------

if AVAILABLE:
    import torch
    import torch.nn.functional as F

IT = [np.int32, np.int64]


def bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), "not bitwise equal"


# ids shape, V, D
EMB_CASES = [((7,), 5, 3), ((3, 5), 17, 33), ((2, 3, 4), 1000, 64), ((), 4, 7),
             ((0,), 9, 4), ((2, 0, 3), 9, 4), ((40,), 1, 5), ((6, 5), 11, 0), ((513,), 3, 129)]


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("itype", IT)
@pytest.mark.parametrize("shape,V,D", EMB_CASES)
def test_gpu_embedding(rng, dtype, itype, shape, V, D):
    ids = np.asarray(rng.integers(0, V, size=shape), dtype=itype)  # small V: many duplicates
    w = rng.standard_normal((V, D)).astype(dtype)
    out = ops.embedding(tcuda(ids), tcuda(w))
    assert isinstance(out, nnkernels.cuda.DeviceArray) and out.shape == shape + (D,)
    ref = F.embedding(tcuda(ids).long(), tcuda(w))
    bits_equal(host(out), host(ref))                    # a gather: exact
    bits_equal(host(out), ops.embedding(ids, w))        # the CPU path
    # non-contiguous ids (every other element of a wider array, and a transpose) and weight
    ids2 = np.repeat(ids[..., None], 2, axis=-1) if ids.ndim else ids
    t_ids = tcuda(ids2)[..., 0] if ids.ndim else tcuda(ids)
    wt = tcuda(np.ascontiguousarray(w.T)).T              # (V, D) with strides (1, V)
    bits_equal(host(ops.embedding(t_ids, wt)), ops.embedding(ids, w))
    if ids.ndim >= 2:
        it = tcuda(np.ascontiguousarray(np.swapaxes(ids, 0, 1))).transpose(0, 1)
        bits_equal(host(ops.embedding(it, tcuda(w))), ops.embedding(ids, w))
    ws = tcuda(np.repeat(w, 2, axis=1))[:, ::2]          # column stride 2
    bits_equal(host(ops.embedding(tcuda(ids), ws)), ops.embedding(ids, w))


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("itype", IT)
@pytest.mark.parametrize("shape,V,D", EMB_CASES)
def test_gpu_embedding_backward(rng, dtype, itype, shape, V, D):
    ids = np.asarray(rng.integers(0, V, size=shape), dtype=itype)
    g = rng.standard_normal(shape + (D,)).astype(dtype)
    dw = ops.embedding_backward(tcuda(g), tcuda(ids), V)
    assert isinstance(dw, nnkernels.cuda.DeviceArray) and dw.shape == (V, D)
    # the CPU path: the same additions in the same order, so the same bits
    cpu = ops.embedding_backward(g, ids, V)
    bits_equal(host(dw), cpu)
    # run to run: bitwise the same
    bits_equal(host(ops.embedding_backward(tcuda(g), tcuda(ids), V)), host(dw))
    # torch autograd (its own summation order: a tolerance)
    wt = torch.zeros((V, D), dtype=torch.float64 if dtype == np.float64 else torch.float32,
                     device="cuda", requires_grad=True)
    F.embedding(tcuda(ids).long(), wt).backward(tcuda(g))
    close(dw, wt.grad if wt.grad is not None else torch.zeros_like(wt), dtype, factor=4)
    # non-contiguous ids and grad_out; V larger than any id (rows nobody names are 0)
    if ids.ndim:
        t_ids = tcuda(np.repeat(ids[..., None], 3, axis=-1))[..., 1]
        t_g = tcuda(np.repeat(g, 2, axis=-1))[..., ::2]
        bits_equal(host(ops.embedding_backward(t_g, t_ids, V + 3)), ops.embedding_backward(g, ids, V + 3))


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_embedding_backward_hot_ids(rng, dtype):
    # Many duplicates of few ids and a large V with most rows unused: order-sensitive sums.
    N, V, D = 20000, 70000, 9
    ids = rng.choice(np.array([3, 69999, 12345], np.int64), size=N)
    ids[::7] = rng.integers(0, V, size=len(ids[::7]))
    g = (rng.standard_normal((N, D)) * np.exp(rng.standard_normal((N, 1)) * 4)).astype(dtype)
    dw = host(ops.embedding_backward(tcuda(g), tcuda(ids), V))
    bits_equal(dw, ops.embedding_backward(g, ids, V))
    for _ in range(3):
        bits_equal(host(ops.embedding_backward(tcuda(g), tcuda(ids), V)), dw)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("itype", IT)
def test_gpu_embedding_out_of_range(rng, itype):
    V, D = 10, 4
    w = rng.standard_normal((V, D)).astype(np.float32)
    for bad, at in [(-1, (1, 2)), (V, (2, 0)), (1 << 30, (0, 0))]:
        ids = rng.integers(0, V, size=(3, 4)).astype(itype)
        ids[at] = bad
        ids[2, 3] = -5                                   # a later bad one is not the one named
        with pytest.raises(IndexError) as cpu:
            ops.embedding(ids, w)
        with pytest.raises(IndexError) as gpu:
            ops.embedding(tcuda(ids), tcuda(w))
        assert str(gpu.value) == str(cpu.value)
        assert f"at flat position {at[0] * 4 + at[1]}" in str(gpu.value)
        # through a transposed view the C-order position is that of the view
        t = tcuda(np.ascontiguousarray(ids.T)).T
        with pytest.raises(IndexError) as gpu_t:
            ops.embedding(t, tcuda(w))
        assert str(gpu_t.value) == str(cpu.value)
        g = rng.standard_normal((3, 4, D)).astype(np.float32)
        with pytest.raises(IndexError) as cpu_b:
            ops.embedding_backward(g, ids, V)
        with pytest.raises(IndexError) as gpu_b:
            ops.embedding_backward(tcuda(g), tcuda(ids), V)
        assert str(gpu_b.value) == str(cpu_b.value)
    with pytest.raises(IndexError, match="flat position 0"):
        ops.embedding_backward(tcuda(np.ones((2, 3), np.float32)), tcuda(np.zeros(2, itype)), 0)


SEEDS = [0, 1, 12345, 2**63 + 5, 2**64 - 1]


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (5, 13), (3, 4, 5), (4099,), (2, 0, 3)])
def test_gpu_dropout(rng, dtype, p, shape):
    x = rng.standard_normal(shape).astype(dtype)
    for seed in SEEDS:
        y, mask = ops.dropout(tcuda(x), p, seed=seed)
        assert isinstance(y, nnkernels.cuda.DeviceArray) and y.shape == shape
        assert isinstance(mask, nnkernels.cuda.DeviceArray) and mask.shape == shape
        assert mask.dtype == np.bool_ and torch.from_dlpack(mask).dtype == torch.bool
        yc, mc = ops.dropout(x, p, seed=seed)
        bits_equal(host(mask), mc)                       # the CPU path's mask, bit for bit
        bits_equal(host(y), yc)                          # and its y
        xt = tcuda(x)
        scale = 1.0 / (1.0 - p) if p < 1 else 0.0
        ref = torch.where(torch.from_dlpack(mask), xt * scale, torch.zeros_like(xt))
        close(y, ref, dtype)                             # y = x * mask / (1 - p), as F.dropout
        if p == 0.0:
            assert host(mask).all()
        if p == 1.0:
            assert not host(mask).any() and not host(y).any()


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_dropout_strided_and_rate(rng, dtype):
    x = rng.standard_normal((64, 300)).astype(dtype)
    xt = tcuda(np.ascontiguousarray(x.T)).T              # transposed view: C-order positions of x
    xs = tcuda(np.repeat(x, 2, axis=1))[:, 1::2]          # sliced view
    for seed in SEEDS:
        yc, mc = ops.dropout(x, 0.3, seed=seed)
        for v in (xt, xs):
            y, m = ops.dropout(v, 0.3, seed=seed)
            bits_equal(host(m), mc)
            bits_equal(host(y), yc)
    # the kept fraction is about 1 - p (n = 2^20, 6 standard deviations)
    n = 1 << 20
    _, m = ops.dropout(tcuda(np.ones(n, dtype)), 0.3, seed=42)
    assert abs(host(m).mean() - 0.7) < 6 * np.sqrt(0.21 / n)
    # different seeds give different masks; the same seed the same one
    _, m1 = ops.dropout(tcuda(np.ones(1000, dtype)), 0.5, seed=1)
    _, m2 = ops.dropout(tcuda(np.ones(1000, dtype)), 0.5, seed=2)
    _, m1b = ops.dropout(tcuda(np.ones(1000, dtype)), 0.5, seed=1)
    assert not np.array_equal(host(m1), host(m2))
    bits_equal(host(m1), host(m1b))


@needs_gpu
@pytest.mark.cuda
def test_gpu_dropout_nan_inf():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 1.0, np.nan, 3.0], np.float32)
    for seed in SEEDS:
        for p in (0.0, 0.5, 1.0):
            y, m = ops.dropout(tcuda(x), p, seed=seed)
            yc, mc = ops.dropout(x, p, seed=seed)
            bits_equal(host(m), mc)
            bits_equal(host(y), yc)
