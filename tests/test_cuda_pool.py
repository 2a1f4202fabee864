"""CUDA conv_transpose2d (+ backward), max_pool2d and avg_pool2d (+ backwards).

Host-side tests run on every machine: argument checks of the CUDA overloads (with fake CUDA
arrays whose pointers are never dereferenced) raise before any CUDA call, with the CPU path's
exception types and messages. GPU tests (skipped without a usable GPU) compare against torch
on the GPU and against our CPU path.
"""

import numpy as np
import pytest

import nnkernels
from nnkernels import _C, ops

from cuda_support import (AVAILABLE, BUILT, DT, FAKE_PTR, FakeCAI, close, needs_built,  # noqa: F401
                          needs_gpu, no_gpu, no_tf32, tcuda)
from cuda_support import host as to_np


def dev(*shape, dtype="float32"):
    """A DeviceArray view of a made-up device pointer (never dereferenced here)."""
    return _C._cuda_view(FAKE_PTR, list(shape), dtype, 0, False)


def host(*shape, dtype=np.float32):
    return np.ones(shape, dtype)


# ---------------------------------------------------------------------------------------
# Host side: argument checks before any CUDA call
# ---------------------------------------------------------------------------------------

# Each case: (op, builder(mk) -> args, kwargs). mk(*shape, dtype=...) makes an array; the same
# call runs on the CPU path (numpy) and on the CUDA path (fake device arrays) and must raise the
# same exception type with the same message.
CT = "conv_transpose2d"
SAME_ERRORS = {
    "ct_groups": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 3, 3)), dict(groups=4)),
    "ct_in_channels": (CT, lambda mk: (mk(2, 6, 5, 5), mk(5, 2, 3, 3)), {}),
    "ct_output_padding": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 3, 3)), dict(stride=2, output_padding=2)),
    "ct_stride0": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 3, 3)), dict(stride=(1, 0))),
    "ct_padding_neg": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 3, 3)), dict(padding=-1)),
    "ct_stride_type": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 3, 3)), dict(stride=1.5)),
    "ct_stride_len": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 3, 3)), dict(stride=(1, 2, 3))),
    "ct_weight_rank": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 3)), {}),
    "ct_empty_kernel": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 0, 3)), {}),
    "ct_nonpositive": (CT, lambda mk: (mk(2, 6, 1, 1), mk(6, 2, 1, 1)), dict(padding=1)),
    "ct_bias_shape": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 3, 3), mk(3)), dict(groups=2)),
    "ct_bias_dtype": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 3, 3), mk(2, dtype="f8")), {}),
    "ct_weight_dtype": (CT, lambda mk: (mk(2, 6, 5, 5), mk(6, 2, 3, 3, dtype="f8")), {}),
    "ct_x_dtype": (CT, lambda mk: (mk(2, 6, 5, 5, dtype="i4"), mk(6, 2, 3, 3)), {}),
    "ctb_grad_shape": ("conv_transpose2d_backward", lambda mk: (mk(2, 2, 7, 6), mk(2, 6, 5, 5), mk(6, 2, 3, 3)), {}),
    "ctb_grad_dtype": ("conv_transpose2d_backward",
                       lambda mk: (mk(2, 2, 7, 7, dtype="f8"), mk(2, 6, 5, 5), mk(6, 2, 3, 3)), {}),
    "ctb_groups": ("conv_transpose2d_backward", lambda mk: (mk(2, 4, 7, 7), mk(2, 6, 5, 5), mk(6, 2, 3, 3)),
                   dict(groups=4)),
    "mp_rank": ("max_pool2d", lambda mk: (mk(5, 5), 2), {}),
    "mp_kernel0": ("max_pool2d", lambda mk: (mk(1, 2, 5, 5), (2, 0)), {}),
    "mp_half": ("max_pool2d", lambda mk: (mk(1, 2, 5, 5), 2), dict(padding=2)),
    "mp_dilation0": ("max_pool2d", lambda mk: (mk(1, 2, 5, 5), 2), dict(dilation=0)),
    "mp_empty": ("max_pool2d", lambda mk: (mk(1, 2, 3, 3), 2), dict(dilation=3)),
    "mp_zero_channels": ("max_pool2d", lambda mk: (mk(1, 0, 5, 5), 2), {}),
    "mp_stride_type": ("max_pool2d", lambda mk: (mk(1, 2, 5, 5), 2), dict(stride="2")),
    "mp_dtype": ("max_pool2d", lambda mk: (mk(1, 2, 5, 5, dtype="i8"), 2), {}),
    "mpb_same_shape": ("max_pool2d_backward", lambda mk: (mk(1, 2, 2, 2), mk(1, 2, 2, 3, dtype="i8"), (1, 2, 4, 4)),
                       {}),
    "mpb_input_shape_len": ("max_pool2d_backward", lambda mk: (mk(1, 2, 2, 2), mk(1, 2, 2, 2, dtype="i8"), (4, 4)),
                            {}),
    "mpb_input_shape_neg": ("max_pool2d_backward",
                            lambda mk: (mk(1, 2, 2, 2), mk(1, 2, 2, 2, dtype="i8"), (1, 2, -4, 4)), {}),
    "mpb_mismatch": ("max_pool2d_backward", lambda mk: (mk(1, 2, 2, 2), mk(1, 2, 2, 2, dtype="i8"), (1, 3, 4, 4)),
                     {}),
    "mpb_indices_dtype": ("max_pool2d_backward", lambda mk: (mk(1, 2, 2, 2), mk(1, 2, 2, 2), (1, 2, 4, 4)), {}),
    "mpb_grad_dtype": ("max_pool2d_backward",
                       lambda mk: (mk(1, 2, 2, 2, dtype="i4"), mk(1, 2, 2, 2, dtype="i8"), (1, 2, 4, 4)), {}),
    "ap_half": ("avg_pool2d", lambda mk: (mk(1, 2, 5, 5), 3), dict(padding=(2, 1))),
    "ap_kernel_len": ("avg_pool2d", lambda mk: (mk(1, 2, 5, 5), (3, 3, 3)), {}),
    "ap_rank": ("avg_pool2d", lambda mk: (mk(1, 1, 2, 5, 5), 3), {}),
    "apb_grad_shape": ("avg_pool2d_backward", lambda mk: (mk(1, 2, 3, 3), (1, 2, 5, 5), 2), {}),
    "apb_input_rank": ("avg_pool2d_backward", lambda mk: (mk(2, 2), (5, 5), 2), {}),
    "apb_grad_dtype": ("avg_pool2d_backward", lambda mk: (mk(1, 2, 2, 2, dtype="i4"), (1, 2, 5, 5), 2), {}),
}

DTYPE_CASES = {"ct_bias_dtype", "ct_weight_dtype", "ct_x_dtype", "ctb_grad_dtype", "mp_dtype", "mpb_indices_dtype",
               "mpb_grad_dtype", "apb_grad_dtype"}
NP_DTYPES = {"f4": np.float32, "f8": np.float64, "i4": np.int32, "i8": np.int64}
DEV_DTYPES = {"f4": "float32", "f8": "float64", "i4": "int32", "i8": "int64"}


def mk_host(*shape, dtype="f4"):
    return np.ones(shape, NP_DTYPES[dtype])


def mk_dev(*shape, dtype="f4"):
    if dtype in DEV_DTYPES:
        return dev(*shape, dtype=DEV_DTYPES[dtype])
    return FakeCAI(shape, "<" + dtype)


def _raised(fn, *args, **kw):
    with pytest.raises(Exception) as e:
        fn(*args, **kw)
    return e.value


@needs_built
@pytest.mark.parametrize("case", sorted(SAME_ERRORS))
def test_cuda_errors_match_cpu(case):
    name, build, kw = SAME_ERRORS[case]
    fn = getattr(ops, name)
    cpu = _raised(fn, *build(mk_host), **kw)
    gpu = _raised(fn, *build(mk_dev), **kw)
    assert isinstance(cpu, (ValueError, TypeError)), repr(cpu)
    assert type(gpu) is type(cpu), (repr(gpu), repr(cpu))
    if isinstance(cpu, ValueError) or case in DTYPE_CASES:
        # dtype messages are worded by each path's array parser; both name the argument first
        assert str(gpu).split(":")[0] == str(cpu).split(":")[0], (str(gpu), str(cpu))
    if case not in DTYPE_CASES:
        assert str(gpu) == str(cpu)


@needs_built
def test_cuda_overloads_take_cuda_inputs():
    """Each op with a CUDA first argument reaches its CUDA overload (its own checks), and
    host / device mixes are a ValueError on both routes."""
    with pytest.raises(ValueError, match="host"):
        ops.conv_transpose2d(dev(2, 6, 5, 5), host(6, 2, 3, 3))
    with pytest.raises(ValueError, match="host"):
        ops.conv_transpose2d(dev(2, 6, 5, 5), dev(6, 2, 3, 3), host(2))
    with pytest.raises(ValueError, match="CUDA"):
        ops.conv_transpose2d(host(2, 6, 5, 5), dev(6, 2, 3, 3))
    with pytest.raises(ValueError, match="host"):
        ops.conv_transpose2d_backward(dev(2, 2, 7, 7), host(2, 6, 5, 5), dev(6, 2, 3, 3))
    with pytest.raises(ValueError, match="host"):
        ops.max_pool2d_backward(dev(1, 2, 2, 2), np.zeros((1, 2, 2, 2), np.int64), (1, 2, 4, 4))
    with pytest.raises(ValueError, match="CUDA"):
        ops.max_pool2d_backward(host(1, 2, 2, 2), dev(1, 2, 2, 2, dtype="int64"), (1, 2, 4, 4))
    with pytest.raises(TypeError, match="indices"):
        ops.max_pool2d_backward(dev(1, 2, 2, 2), FakeCAI((1, 2, 2, 2), "<f8"), (1, 2, 4, 4))
    with pytest.raises(TypeError, match="input_shape must be a sequence"):
        _C.avg_pool2d_backward(dev(1, 2, 2, 2), 5, 2, None, 0, False, True)
    with pytest.raises(TypeError, match="x"):
        ops.avg_pool2d(FakeCAI((1, 2, 5, 5), "|b1"), 2)
    # unbatched inputs are checked in their own rank
    with pytest.raises(ValueError, match=r"grad_out \(2, 7, 6\) must have shape \(2, 7, 7\)"):
        ops.conv_transpose2d_backward(dev(2, 7, 6), dev(6, 5, 5), dev(6, 2, 3, 3))
    with pytest.raises(ValueError, match=r"bias \(3,\) must have shape \(4,\)"):
        ops.conv_transpose2d(dev(6, 5, 5), dev(6, 2, 3, 3), dev(3), groups=2)
    with pytest.raises(ValueError, match=r"grad_out \(2, 2, 2\) must have shape \(2, 3, 3\)"):
        ops.avg_pool2d_backward(dev(2, 2, 2), (2, 5, 5), 2, ceil_mode=True)


@needs_built
@no_gpu
def test_cuda_valid_calls_stop_at_first_cuda_call():
    """Valid arguments pass every check and stop at the first CUDA call (no driver here)."""
    calls = [
        lambda: ops.conv_transpose2d(dev(2, 6, 5, 5), dev(6, 2, 3, 3), dev(4), stride=2, output_padding=1, groups=2),
        lambda: ops.conv_transpose2d(FakeCAI((6, 5, 9), strides=(180, 4, 20)), dev(6, 2, 3, 3), dilation=(2, 1)),
        lambda: ops.conv_transpose2d_backward(dev(2, 4, 11, 11), dev(2, 6, 5, 5), dev(6, 2, 3, 3), stride=2,
                                              groups=2),
        lambda: ops.max_pool2d(dev(2, 3, 9, 11), 2, return_indices=True),
        lambda: ops.max_pool2d(dev(3, 9, 11, dtype="float64"), (3, 2), (2, 1), 1, (1, 2), True),
        lambda: ops.max_pool2d_backward(dev(2, 3, 4, 5), dev(2, 3, 4, 5, dtype="int32"), (2, 3, 9, 11)),
        lambda: ops.avg_pool2d(dev(2, 3, 9, 11), 3, 2, 1, ceil_mode=True, count_include_pad=False),
        lambda: ops.avg_pool2d_backward(dev(2, 3, 5, 6), (2, 3, 9, 11), 3, 2, 1, ceil_mode=True),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="CUDA"):
            call()


# ---------------------------------------------------------------------------------------
# GPU: against torch on the GPU and our CPU path
# ---------------------------------------------------------------------------------------

if AVAILABLE:
    import torch
    import torch.nn.functional as F

def strided(rng, shape, dtype):
    """A non-contiguous (every other column) host array and its CUDA view with the same strides."""
    big = rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)
    return big[..., ::2], tcuda(big)[..., ::2]


# x shape, Cout / groups, kernel, conv_transpose2d keywords (odd and prime sizes, groups,
# stride / padding / output_padding / dilation, unbatched, one batch of zero images)
CT_CASES = [
    ((3, 6, 7, 5), 2, (3, 3), dict()),
    ((2, 6, 5, 7), 3, (3, 2), dict(stride=2, padding=1, output_padding=1)),
    ((2, 6, 5, 5), 2, (3, 3), dict(stride=(2, 3), padding=(1, 2), output_padding=(1, 2), groups=2)),
    ((1, 6, 11, 13), 1, (2, 3), dict(dilation=(2, 3), groups=3, output_padding=(1, 2))),
    ((3, 4, 1, 1), 5, (5, 5), dict(stride=3)),
    ((6, 5, 7), 3, (3, 3), dict(stride=2, padding=1, groups=2)),
    ((0, 6, 5, 5), 2, (3, 3), dict(stride=2)),
]


def _ct_id(c):
    return "x{}o{}k{}{}".format(c[0], c[1], c[2], "".join(f"-{k}{v}" for k, v in c[3].items())).replace(" ", "")


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("case", CT_CASES, ids=_ct_id)
@pytest.mark.parametrize("noncontig", [False, True])
def test_gpu_conv_transpose2d(rng, dtype, case, noncontig, no_tf32):
    xshape, cog, k, kw = case
    groups = kw.get("groups", 1)
    cin = xshape[-3]
    if noncontig:
        x, xd = strided(rng, xshape, dtype)
    else:
        x = rng.standard_normal(xshape).astype(dtype)
        xd = tcuda(x)
    w = rng.standard_normal((cin, cog) + k).astype(dtype)
    b = rng.standard_normal(cog * groups).astype(dtype)
    ref_cpu = ops.conv_transpose2d(x, w, b, **kw)
    ours = ops.conv_transpose2d(xd, tcuda(w), tcuda(b), **kw)
    assert isinstance(ours, nnkernels.cuda.DeviceArray) and ours.shape == ref_cpu.shape
    close(ours, ref_cpu, dtype, factor=8)
    close(ours, F.conv_transpose2d(tcuda(x), tcuda(w), tcuda(b), **kw), dtype, factor=8)
    close(ops.conv_transpose2d(xd, tcuda(w), None, **kw), ops.conv_transpose2d(x, w, None, **kw), dtype, factor=8)
    again = ops.conv_transpose2d(xd, tcuda(w), tcuda(b), **kw)
    assert np.array_equal(to_np(again), to_np(ours))  # deterministic

    gy = rng.standard_normal(ref_cpu.shape).astype(dtype)
    grads = ops.conv_transpose2d_backward(tcuda(gy), xd, tcuda(w), **kw)
    for o, r in zip(grads, ops.conv_transpose2d_backward(gy, x, w, **kw)):  # our CPU path
        close(o, r, dtype, factor=8)
    t = [tcuda(a).requires_grad_(True) for a in (x, w, b)]
    F.conv_transpose2d(*t, **kw).backward(tcuda(gy))  # torch autograd
    for o, r in zip(grads, t):
        close(o, r.grad, dtype, factor=8)
    again = ops.conv_transpose2d_backward(tcuda(gy), xd, tcuda(w), **kw)
    for o, r in zip(again, grads):
        assert np.array_equal(to_np(o), to_np(r))


# x shape, kernel, stride, padding, dilation, ceil_mode
POOL_CASES = [
    ((2, 3, 8, 10), (2, 2), None, 0, 1, False),
    ((2, 3, 9, 11), (2, 2), None, 0, 1, False),
    ((2, 3, 9, 11), (2, 2), None, 1, 1, True),
    ((1, 5, 13, 7), (3, 3), 2, 1, 1, True),
    ((3, 2, 17, 19), (3, 2), (2, 3), (1, 1), (1, 2), True),
    ((2, 3, 11, 13), (3, 3), 1, 1, 2, False),
    ((4, 37, 10, 10), (2, 2), None, 0, 1, False),
    ((2, 3, 64, 67), (2, 2), None, 0, 1, False),
    ((5, 23, 29), (4, 3), (3, 2), (2, 1), 1, True),
    ((1, 1, 1, 1), (1, 1), None, 0, 1, False),
]


def _pool_id(c):
    return "x{}k{}s{}p{}d{}c{}".format(*c).replace(" ", "")


def _nan_windows(x):
    """NaNs (two in one window) and a block of -inf in the first plane of x (in place)."""
    flat = x.reshape(-1, x.shape[-2], x.shape[-1])
    H, W = flat.shape[-2:]
    flat[0, 0, 0] = np.nan
    if H > 3 and W > 3:
        flat[0, 1, 1] = np.nan
        flat[0, H - 1, W - 2] = np.nan
        flat[-1, H // 2:H // 2 + 3, W // 2:W // 2 + 3] = -np.inf
    return x


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
@pytest.mark.parametrize("variant", ["plain", "noncontig", "nan"])
def test_gpu_max_pool2d(rng, dtype, case, variant):
    shape, k, s, p, d, ceil = case
    kw = dict(stride=s, padding=p, dilation=d, ceil_mode=ceil)
    if variant == "noncontig":
        x, xd = strided(rng, shape, dtype)
    else:
        x = rng.standard_normal(shape).astype(dtype)
        if variant == "nan":
            _nan_windows(x)
        xd = tcuda(x)
    y, idx = ops.max_pool2d(xd, k, return_indices=True, **kw)
    y_cpu, idx_cpu = ops.max_pool2d(x, k, return_indices=True, **kw)
    assert isinstance(idx, nnkernels.cuda.DeviceArray) and idx.dtype == np.int64
    np.testing.assert_array_equal(to_np(y), y_cpu)  # NaN positions equal too
    np.testing.assert_array_equal(to_np(idx), idx_cpu)
    np.testing.assert_array_equal(to_np(ops.max_pool2d(xd, k, **kw)), y_cpu)
    xt = tcuda(x).requires_grad_(True)
    yt, it = F.max_pool2d(xt, k, return_indices=True, **kw)
    np.testing.assert_array_equal(to_np(y), to_np(yt))
    np.testing.assert_array_equal(to_np(idx), to_np(it))

    go = rng.standard_normal(y_cpu.shape).astype(dtype)
    gx = ops.max_pool2d_backward(tcuda(go), idx, x.shape)
    # the same sums in the same order as the CPU path: bitwise equal
    np.testing.assert_array_equal(to_np(gx), ops.max_pool2d_backward(go, idx_cpu, x.shape))
    yt.backward(tcuda(go))
    close(gx, xt.grad, dtype)
    gx32 = ops.max_pool2d_backward(tcuda(go), tcuda(idx_cpu.astype(np.int32)), x.shape)  # int32 indices
    np.testing.assert_array_equal(to_np(gx32), to_np(gx))
    go_nc, go_ncd = strided(rng, y_cpu.shape, dtype)  # non-contiguous grad_out
    np.testing.assert_array_equal(to_np(ops.max_pool2d_backward(go_ncd, idx, x.shape)),
                                  ops.max_pool2d_backward(go_nc, idx_cpu, x.shape))


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_max_pool2d_backward_bad_indices(rng, dtype):
    go = tcuda(rng.standard_normal((2, 3, 4, 4)).astype(dtype))
    for bad in (-1, 81):
        idx = np.zeros((2, 3, 4, 4), np.int64)
        idx[1, 2, 3, 1] = bad
        with pytest.raises(IndexError, match="outside"):
            ops.max_pool2d_backward(go, tcuda(idx), (2, 3, 9, 9))
    # repeated indices (overlapping windows) sum in output order
    idx = np.full((2, 3, 4, 4), 5, np.int64)
    g = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    np.testing.assert_array_equal(to_np(ops.max_pool2d_backward(tcuda(g), tcuda(idx), (2, 3, 9, 9))),
                                  ops.max_pool2d_backward(g, idx, (2, 3, 9, 9)))


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[4] == 1], ids=_pool_id)
@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("noncontig", [False, True])
def test_gpu_avg_pool2d(rng, dtype, case, cip, noncontig):
    shape, k, s, p, _, ceil = case
    kw = dict(stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip)
    if noncontig:
        x, xd = strided(rng, shape, dtype)
    else:
        x = rng.standard_normal(shape).astype(dtype)
        xd = tcuda(x)
    y = ops.avg_pool2d(xd, k, **kw)
    y_cpu = ops.avg_pool2d(x, k, **kw)
    close(y, y_cpu, dtype)
    xt = tcuda(x).requires_grad_(True)
    yt = F.avg_pool2d(xt, k, **kw)
    close(y, yt, dtype)
    np.testing.assert_array_equal(to_np(ops.avg_pool2d(xd, k, **kw)), to_np(y))  # deterministic

    go = rng.standard_normal(y_cpu.shape).astype(dtype)
    god = tcuda(go)
    if noncontig:
        go, god = strided(rng, y_cpu.shape, dtype)
    gx = ops.avg_pool2d_backward(god, x.shape, k, **kw)
    close(gx, ops.avg_pool2d_backward(go, x.shape, k, **kw), dtype)
    yt.backward(tcuda(go))
    close(gx, xt.grad, dtype)
    np.testing.assert_array_equal(to_np(ops.avg_pool2d_backward(god, x.shape, k, **kw)), to_np(gx))
