"""max_pool2d, avg_pool2d and their backwards against torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnkernels import ops
from conftest import DTYPES, assert_close


def _configs(seed, count):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        stride = None if i % 5 == 0 else tuple(int(v) for v in rng.integers(1, 4, size=2))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        dh, dw = (int(v) for v in rng.integers(1, 4, size=2))
        H = (kh - 1) * dh + 1 + int(rng.integers(0, 7))
        W = (kw - 1) * dw + 1 + int(rng.integers(0, 7))
        out.append(dict(shape=(1 + 2 * (i % 2), 1 + i % 3, H, W), k=(kh, kw), stride=stride, padding=(ph, pw),
                        dilation=(dh, dw), ceil_mode=bool(i % 2)))
    return out


MAX_CONFIGS = _configs(7, 12) + [
    dict(shape=(2, 3, 8, 10), k=(2, 2), stride=None, padding=(0, 0), dilation=(1, 1), ceil_mode=False),
    dict(shape=(2, 3, 9, 11), k=(2, 2), stride=None, padding=(0, 0), dilation=(1, 1), ceil_mode=False),
    dict(shape=(2, 3, 9, 11), k=(2, 2), stride=None, padding=(1, 1), dilation=(1, 1), ceil_mode=True),
    dict(shape=(1, 2, 7, 7), k=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), ceil_mode=True),
]


def _id(c):
    return "{shape}k{k}s{stride}p{padding}d{dilation}c{ceil_mode}".format(**c).replace(" ", "")


def _x(rng, shape, dtype, noncontig):
    if noncontig:
        return rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)[..., ::2]
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("cfg", MAX_CONFIGS, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d(cfg, dtype, rng):
    x = _x(rng, cfg["shape"], dtype, cfg["ceil_mode"])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], ceil_mode=cfg["ceil_mode"])
    xt = torch.tensor(x, requires_grad=True)
    yt, it = F.max_pool2d(xt, cfg["k"], return_indices=True, **kw)
    go = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(go))
    y, idx = ops.max_pool2d(x, cfg["k"], return_indices=True, **kw)
    assert idx.dtype == np.int64 and y.dtype == dtype
    assert np.array_equal(y, yt.detach().numpy())
    assert np.array_equal(idx, it.numpy())
    assert np.array_equal(ops.max_pool2d(x, cfg["k"], **kw), y)
    gx = ops.max_pool2d_backward(go, idx, x.shape)
    assert_close(gx, xt.grad.numpy(), dtype)


def test_max_pool2d_nan_inf_and_unbatched():
    x = np.arange(2 * 6 * 6, dtype=np.float64).reshape(2, 6, 6)
    x[0, 0, 1] = np.nan
    x[0, 3, 3] = np.nan
    x[0, 2, 3] = np.nan
    x[1, :3, :3] = -np.inf
    for k, s, p in [(2, 2, 0), (3, 1, 1), (2, 1, 1), (3, 3, 0)]:
        y, i = ops.max_pool2d(x, k, s, p, return_indices=True)
        yt, it = F.max_pool2d(torch.tensor(x), k, s, p, return_indices=True)
        assert np.array_equal(np.isnan(y), np.isnan(yt.numpy()))
        assert np.array_equal(y[~np.isnan(y)], yt.numpy()[~np.isnan(y)])
        assert np.array_equal(i, it.numpy())


@pytest.mark.parametrize("cfg", MAX_CONFIGS, ids=_id)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool2d(cfg, count_include_pad, dtype, rng):
    x = _x(rng, cfg["shape"], dtype, not cfg["ceil_mode"])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], ceil_mode=cfg["ceil_mode"],
              count_include_pad=count_include_pad)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = F.avg_pool2d(xt, cfg["k"], **kw)
    go = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(go))
    y = ops.avg_pool2d(x, cfg["k"], **kw)
    assert y.dtype == dtype
    assert_close(y, yt.detach().numpy(), dtype)
    gx = ops.avg_pool2d_backward(go.astype(dtype), x.shape, cfg["k"], **kw)
    assert_close(gx, xt.grad.numpy(), dtype)


def test_avg_pool2d_ceil_divisor_edge():
    # ceil_mode windows that hang past the padding: torch divides by the part inside H + pad.
    x = np.arange(1.0, 1 + 5 * 5).reshape(1, 1, 5, 5)
    for k, s, p in [(2, 2, 0), (3, 2, 1), (2, 3, 1), (3, 3, 1)]:
        for cip in (True, False):
            ref = F.avg_pool2d(torch.tensor(x), k, s, p, ceil_mode=True, count_include_pad=cip).numpy()
            assert_close(ops.avg_pool2d(x, k, s, p, ceil_mode=True, count_include_pad=cip), ref, np.float64)


def test_pool_errors():
    x = np.zeros((2, 3, 6, 6))
    with pytest.raises(TypeError):
        ops.max_pool2d(x.astype(np.int32), 2)
    with pytest.raises(ValueError, match="kernel_size"):
        ops.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="stride"):
        ops.max_pool2d(x, 2, stride=0)
    with pytest.raises(ValueError, match="dilation"):
        ops.max_pool2d(x, 2, dilation=0)
    with pytest.raises(ValueError, match="padding"):
        ops.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="padding"):
        ops.avg_pool2d(x, 3, padding=-1)
    with pytest.raises(ValueError):
        ops.max_pool2d(x, 7)
    with pytest.raises(ValueError):
        ops.avg_pool2d(np.zeros((6, 6)), 2)
    y, i = ops.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(IndexError):
        ops.max_pool2d_backward(y, i + 100, x.shape)
    with pytest.raises(ValueError):
        ops.max_pool2d_backward(y, i[:, :, :2], x.shape)
    with pytest.raises(ValueError):
        ops.avg_pool2d_backward(np.zeros((2, 3, 2, 2)), x.shape, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("W", [2, 3, 17, 32, 33, 34, 63, 66])
def test_max_pool_2x2_fast_path(isa, rng, dtype, W):
    """The vectorised 2x2 / stride-2 row kernel: tails, ties, NaN and -inf, indices exact."""
    x = rng.standard_normal((2, 3, 5, W)).astype(dtype)
    x[0, 0, 0, :4] = 1.0                # ties: the first maximum wins
    x[0, 1, 1, 1] = np.nan              # NaN wins its window
    x[1, 2, 2:4, 0:2] = -np.inf         # a window of -inf keeps its first position
    x[1, 0, 0, 0] = np.nan
    x[1, 0, 1, 1] = np.nan              # a later NaN replaces an earlier one
    y, idx = ops.max_pool2d(x, 2, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
