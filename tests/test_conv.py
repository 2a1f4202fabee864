"""conv2d, conv2d_backward, conv_transpose2d(_backward), im2col, col2im against torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nnkernels
from nnkernels import ops
from conftest import DTYPES, assert_close

# torch's own notice about its even-kernel "same" padding (its implementation detail).
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def _random_configs(seed, count):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        kh, kw = (int(v) for v in rng.integers(1, 8, size=2))
        sh, sw = (int(v) for v in rng.integers(1, 4, size=2))
        dh, dw = (int(v) for v in rng.integers(1, 4, size=2))
        ph, pw = int(rng.integers(0, 4)), int(rng.integers(0, 4))
        kind = ["1", "2", "dw"][i % 3]
        if kind == "dw":
            groups = int(rng.integers(1, 5))
            cin, cout = groups, groups * int(rng.integers(1, 3))
        else:
            groups = int(kind)
            cin, cout = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
        ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        H = max(ekh - 2 * ph, 1) + int(rng.integers(0, 6))
        W = max(ekw - 2 * pw, 1) + int(rng.integers(0, 6))
        N = [1, 3][i % 2]
        out.append(dict(N=N, C=cin, H=H, W=W, Cout=cout, k=(kh, kw), stride=(sh, sw),
                        padding=(ph, pw), dilation=(dh, dw), groups=groups, noncontig=i % 4 == 1))
    return out


CONFIGS = _random_configs(20240611, 14) + [
    # K = C*kh*kw above the K block (several packing blocks, p0 != 0), 1x1 pointwise paths.
    dict(N=2, C=70, H=9, W=8, Cout=5, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=3, C=6, H=7, W=5, Cout=4, k=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=2, noncontig=True),
    dict(N=1, C=5, H=6, W=7, Cout=3, k=(1, 1), stride=(2, 1), padding=(1, 0), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=1, C=2, H=67, W=66, Cout=3, k=(3, 2), stride=(1, 1), padding="same", dilation=(1, 2), groups=1, noncontig=False),
    dict(N=2, C=3, H=8, W=9, Cout=2, k=(4, 2), stride=(1, 1), padding="same", dilation=(1, 1), groups=1, noncontig=False),
    dict(N=2, C=3, H=8, W=9, Cout=2, k=(3, 3), stride=(2, 1), padding="valid", dilation=(1, 1), groups=1, noncontig=False),
    # Depthwise (direct kernels, forward and backward): rows of several vectors plus a
    # tail, channel multiplier 2, stride 2 with dilation, a wide kernel.
    dict(N=3, C=5, H=12, W=37, Cout=10, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=5, noncontig=False),
    dict(N=2, C=4, H=9, W=40, Cout=4, k=(5, 3), stride=(2, 2), padding=(2, 1), dilation=(1, 2), groups=4, noncontig=True),
    dict(N=1, C=3, H=6, W=70, Cout=3, k=(1, 9), stride=(1, 3), padding=(0, 4), dilation=(1, 1), groups=3, noncontig=False),
]


def _cfg_id(c):
    return "N{N}C{C}H{H}W{W}o{Cout}k{k}s{stride}p{padding}d{dilation}g{groups}{nc}".format(
        nc="nc" if c["noncontig"] else "", **c).replace(" ", "")


def _make_x(rng, shape, noncontig):
    if not noncontig:
        return rng.standard_normal(shape)
    # A transposed view (spatial axes swapped) of a larger array with a step.
    n, c, h, w = shape
    base = rng.standard_normal((n, c, w, 2 * h))
    return base[:, :, :, ::2].swapaxes(2, 3)


def _torch_conv(x, w, b, go, cfg):
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    wt = torch.tensor(np.asarray(w, np.float64), requires_grad=True)
    bt = torch.tensor(np.asarray(b, np.float64), requires_grad=True)
    y = F.conv2d(xt, wt, bt, stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                 groups=cfg["groups"])
    if go is None:
        return y.detach().numpy(), None
    y.backward(torch.tensor(go))
    return y.detach().numpy(), (xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy())


def _out_shape(cfg):
    x = torch.zeros(cfg["N"], cfg["C"], cfg["H"], cfg["W"])
    w = torch.zeros(cfg["Cout"], cfg["C"] // cfg["groups"], *cfg["k"])
    return tuple(F.conv2d(x, w, stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                          groups=cfg["groups"]).shape)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_cfg_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_forward_backward(cfg, dtype, isa, rng):
    _check_against_torch(cfg, dtype, rng)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conv2d_threads_and_batch_split(threads, rng):
    """Batch split over threads (even and uneven) and per-image threading agree with torch."""
    old = nnkernels.get_num_threads()
    nnkernels.set_num_threads(threads)
    try:
        for n in (1, 2, 3, 6):
            cfg = dict(N=n, C=4, H=11, W=10, Cout=5, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1),
                       groups=1, noncontig=False)
            x = rng.standard_normal((n, 4, 11, 10))
            w = rng.standard_normal((5, 4, 3, 3))
            b = rng.standard_normal(5)
            go = rng.standard_normal((n, 5, 11, 10))
            ref_y, (rgx, rgw, rgb) = _torch_conv(x, w, b, go, cfg)
            y = ops.conv2d(x, w, b, padding=1)
            assert_close(y, ref_y, np.float64)
            assert np.array_equal(y, ops.conv2d(x, w, b, padding=1))  # deterministic
            gx, gw, gb = ops.conv2d_backward(go, x, w, padding=1)
            assert_close(gx, rgx, np.float64)
            assert_close(gw, rgw, np.float64)
            assert_close(gb, rgb, np.float64)
    finally:
        nnkernels.set_num_threads(old)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_unbatched_torch_tensors_and_out(dtype, rng):
    x = torch.tensor(rng.standard_normal((3, 9, 8)).astype(dtype))
    w = torch.tensor(rng.standard_normal((4, 3, 3, 2)).astype(dtype))
    y = ops.conv2d(x, w, None, stride=(2, 1), padding=(1, 0))
    ref = F.conv2d(x.double(), w.double(), None, stride=(2, 1), padding=(1, 0)).numpy()
    assert y.shape == ref.shape
    assert_close(y, ref, dtype)
    out = np.empty(ref.shape, dtype)
    assert ops.conv2d(x, w, stride=(2, 1), padding=(1, 0), out=out) is out
    assert_close(out, ref, dtype)
    xt = x.detach().double().clone().requires_grad_()
    wt = w.detach().double().clone().requires_grad_()
    go = rng.standard_normal(ref.shape)
    F.conv2d(xt, wt, stride=(2, 1), padding=(1, 0)).backward(torch.tensor(go))
    gx, gw, gb = ops.conv2d_backward(go.astype(dtype), x, w, stride=(2, 1), padding=(1, 0))
    assert gx.shape == (3, 9, 8)
    assert_close(gx, xt.grad.numpy(), dtype)
    assert_close(gw, wt.grad.numpy(), dtype)
    assert_close(gb, go.sum(axis=(1, 2)), dtype)


def test_conv2d_zero_sizes(rng):
    w = rng.standard_normal((4, 3, 3, 3))
    y = ops.conv2d(np.zeros((0, 3, 5, 5)), w, padding=1)
    assert y.shape == (0, 4, 5, 5)
    gx, gw, gb = ops.conv2d_backward(np.zeros((0, 4, 5, 5)), np.zeros((0, 3, 5, 5)), w, padding=1)
    assert gx.shape == (0, 3, 5, 5) and np.all(gw == 0) and np.all(gb == 0)
    b = rng.standard_normal(4)
    y = ops.conv2d(np.zeros((2, 0, 5, 5)), np.zeros((4, 0, 3, 3)), b)
    assert y.shape == (2, 4, 3, 3)
    assert np.array_equal(y, np.broadcast_to(b[:, None, None], (2, 4, 3, 3)))


def test_conv2d_reference_kernel(rng):
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    ref = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=(2, 1), padding=(1, 2),
                   dilation=(1, 2), groups=2).numpy()
    assert_close(nnkernels._C.conv2d_ref(x, w, b, (2, 1), (1, 2), (1, 2), 2), ref, np.float64)


def test_conv2d_nan_inf_propagate():
    x = np.ones((1, 1, 4, 4))
    x[0, 0, 1, 1] = np.nan
    w = np.ones((1, 1, 2, 2))
    y = ops.conv2d(x, w)
    ref = F.conv2d(torch.tensor(x), torch.tensor(w)).numpy()
    assert np.array_equal(np.isnan(y), np.isnan(ref))


def test_conv2d_errors():
    x = np.zeros((2, 4, 8, 8))
    w = np.zeros((6, 4, 3, 3))
    with pytest.raises(TypeError):
        ops.conv2d(x.astype(np.int32), w)
    with pytest.raises(TypeError):
        ops.conv2d(x.astype(np.float32), w)
    with pytest.raises(ValueError, match="input channels"):
        ops.conv2d(x, np.zeros((6, 3, 3, 3)))
    with pytest.raises(TypeError, match="groups"):
        ops.conv2d(x, np.zeros((6, 2, 3, 3)), groups=2.0)
    with pytest.raises(ValueError, match="groups"):
        ops.conv2d(x, np.zeros((6, 1, 3, 3)), groups=3)
    with pytest.raises(ValueError, match="groups"):
        ops.conv2d(x, np.zeros((5, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="larger"):
        ops.conv2d(x, np.zeros((6, 4, 9, 3)))
    with pytest.raises(ValueError, match="larger"):
        ops.conv2d(x, np.zeros((6, 4, 3, 3)), dilation=4)
    with pytest.raises(ValueError, match="stride"):
        ops.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="dilation"):
        ops.conv2d(x, w, dilation=(1, 0))
    with pytest.raises(ValueError, match="padding"):
        ops.conv2d(x, w, padding=-1)
    with pytest.raises(ValueError, match="same"):
        ops.conv2d(x, w, padding="same", stride=2)
    with pytest.raises(ValueError, match="padding"):
        ops.conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match="bias"):
        ops.conv2d(x, w, np.zeros(5))
    with pytest.raises(ValueError, match="x"):
        ops.conv2d(np.zeros((4, 8)), w)
    with pytest.raises(ValueError, match="weight"):
        ops.conv2d(x, np.zeros((6, 4, 3)))
    with pytest.raises(ValueError, match="grad_out"):
        ops.conv2d_backward(np.zeros((2, 6, 5, 5)), x, w)
    with pytest.raises(ValueError):
        ops.conv2d(x, w, out=np.zeros((2, 6, 5, 5)))


TRANSPOSED = [
    dict(N=2, C=4, H=5, W=6, Cout=6, k=(3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1), dilation=(1, 1), groups=1),
    dict(N=1, C=4, H=4, W=3, Cout=2, k=(4, 2), stride=(3, 1), padding=(2, 0), output_padding=(2, 0), dilation=(1, 2), groups=2),
    dict(N=3, C=3, H=6, W=5, Cout=3, k=(5, 3), stride=(1, 2), padding=(0, 2), output_padding=(1, 1), dilation=(2, 3), groups=3),
    dict(N=1, C=5, H=7, W=7, Cout=3, k=(1, 1), stride=(1, 1), padding=(0, 0), output_padding=(0, 0), dilation=(1, 1), groups=1),
]


@pytest.mark.parametrize("cfg", TRANSPOSED, ids=lambda c: "N{N}C{C}o{Cout}k{k}s{stride}g{groups}".format(**c).replace(" ", ""))
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose2d(cfg, dtype, isa, rng):
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)
    w = rng.standard_normal((cfg["C"], cfg["Cout"] // cfg["groups"], *cfg["k"])).astype(dtype)
    b = rng.standard_normal(cfg["Cout"]).astype(dtype)
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"],
              groups=cfg["groups"], dilation=cfg["dilation"])
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    yt = F.conv_transpose2d(xt, wt, bt, **kw)
    go = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(go))
    y = ops.conv_transpose2d(x, w, b, **kw)
    assert_close(y, yt.detach().numpy(), dtype)
    gx, gw, gb = ops.conv_transpose2d_backward(go.astype(dtype), x, w, **kw)
    assert_close(gx, xt.grad.numpy(), dtype)
    assert_close(gw, wt.grad.numpy(), dtype)
    assert_close(gb, bt.grad.numpy(), dtype)


def test_conv_transpose2d_unbatched_and_errors(rng):
    x = rng.standard_normal((4, 3, 5))
    w = rng.standard_normal((4, 2, 3, 3))
    ref = F.conv_transpose2d(torch.tensor(x), torch.tensor(w), stride=2).numpy()
    assert_close(ops.conv_transpose2d(x, w, stride=2), ref, np.float64)
    with pytest.raises(ValueError, match="output_padding"):
        ops.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="input channels"):
        ops.conv_transpose2d(x, rng.standard_normal((3, 2, 3, 3)))
    with pytest.raises(ValueError, match="stride"):
        ops.conv_transpose2d(x, w, stride=0)
    with pytest.raises(TypeError):
        ops.conv_transpose2d(x.astype(np.float32), w)


UNFOLD = [
    dict(k=(3, 3), dilation=(1, 1), padding=(1, 1), stride=(1, 1)),
    dict(k=(2, 5), dilation=(2, 1), padding=(0, 2), stride=(3, 2)),
    dict(k=(1, 1), dilation=(1, 1), padding=(0, 0), stride=(1, 1)),
    dict(k=(4, 3), dilation=(1, 3), padding=(3, 0), stride=(1, 3)),
]


@pytest.mark.parametrize("cfg", UNFOLD, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_col2im(cfg, dtype, rng):
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)[:, :, :, ::-1]
    kw = dict(dilation=cfg["dilation"], padding=cfg["padding"], stride=cfg["stride"])
    ref = F.unfold(torch.tensor(x.copy()), cfg["k"], **kw).numpy()
    cols = ops.im2col(x, cfg["k"], **kw)
    assert cols.dtype == dtype
    assert np.array_equal(cols, ref)
    c = rng.standard_normal(ref.shape).astype(dtype)
    ref_fold = F.fold(torch.tensor(c, dtype=torch.float64), (9, 10), cfg["k"], **kw).numpy()
    assert_close(ops.col2im(c, (9, 10), cfg["k"], **kw), ref_fold, dtype)
    # unbatched
    assert np.array_equal(ops.im2col(x[0], cfg["k"], **kw), ref[0])
    assert_close(ops.col2im(c[0], (9, 10), cfg["k"], **kw), ref_fold[0], dtype)


def test_im2col_col2im_errors():
    with pytest.raises(ValueError):
        ops.im2col(np.zeros((1, 2, 3, 3)), 5)
    with pytest.raises(ValueError):
        ops.im2col(np.zeros((1, 2, 3, 3)), 0)
    with pytest.raises(ValueError):
        ops.col2im(np.zeros((1, 8, 5)), (3, 3), 2)  # 5 blocks, (3, 3) with k 2 gives 4
    with pytest.raises(ValueError):
        ops.col2im(np.zeros((1, 7, 4)), (3, 3), 2)
    with pytest.raises(TypeError):
        ops.im2col(np.zeros((1, 2, 3, 3), np.int64), 2)


# Small images (output plane <= 256 pixels, batch >= 2): the batch (or a chunk of images) is
# one GEMM over all output pixels, packed by table gathers from a zero-padded copy.
SMALL = [
    dict(N=64, C=1, H=8, W=8, Cout=32, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=5, C=32, H=4, W=4, Cout=64, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=3, C=6, H=9, W=7, Cout=4, k=(3, 2), stride=(2, 3), padding=(2, 1), dilation=(2, 1), groups=2, noncontig=True),
    dict(N=2, C=4, H=5, W=6, Cout=6, k=(2, 3), stride=(1, 2), padding=(0, 3), dilation=(3, 2), groups=2, noncontig=False),
    dict(N=4, C=3, H=3, W=3, Cout=5, k=(3, 3), stride=(1, 1), padding=(3, 3), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=3, C=5, H=6, W=6, Cout=7, k=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=2, C=2, H=16, W=16, Cout=3, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),  # L = 256
    dict(N=2, C=2, H=17, W=16, Cout=3, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),  # L = 272: per image
    # Kg * L near 2^18 per image: chunks of 3 images (7 = 3 + 3 + 1; backward-weight accumulates over chunks).
    dict(N=7, C=130, H=16, W=16, Cout=3, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),
]


def _check_against_torch(cfg, dtype, rng):
    """conv2d and conv2d_backward of cfg against torch (forward, all three gradients);
    returns the float64 upstream gradient, the weight used and torch's input gradient."""
    x = _make_x(rng, (cfg["N"], cfg["C"], cfg["H"], cfg["W"]), cfg["noncontig"]).astype(dtype)
    w = rng.standard_normal((cfg["Cout"], cfg["C"] // cfg["groups"], *cfg["k"])).astype(dtype)
    b = rng.standard_normal(cfg["Cout"]).astype(dtype)
    go = rng.standard_normal(_out_shape(cfg))
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    ref_y, (ref_gx, ref_gw, ref_gb) = _torch_conv(x, w, b, go, cfg)
    y = ops.conv2d(x, w, b, **kw)
    assert y.dtype == dtype and y.flags.c_contiguous
    assert_close(y, ref_y, dtype)
    gx, gw, gb = ops.conv2d_backward(go.astype(dtype), x, w, **kw)
    assert gx.dtype == gw.dtype == gb.dtype == dtype
    assert_close(gx, ref_gx, dtype)
    assert_close(gw, ref_gw, dtype)
    assert_close(gb, ref_gb, dtype)
    return go, w, ref_gx


@pytest.mark.parametrize("cfg", SMALL, ids=_cfg_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_small_images(cfg, dtype, isa, rng):
    go, w, ref_gx = _check_against_torch(cfg, dtype, rng)
    # conv_transpose2d runs backward-data of the same geometry.
    if cfg["padding"] != "same":
        yt = ops.conv_transpose2d(go.astype(dtype), w, None, stride=cfg["stride"], padding=cfg["padding"],
                                  groups=cfg["groups"], dilation=cfg["dilation"],
                                  output_padding=tuple(int(v) for v in np.subtract(
                                      (cfg["H"], cfg["W"]), _transposed_size(cfg))))
        assert_close(yt, ref_gx, dtype)


def _transposed_size(cfg):
    out = _out_shape(cfg)[2:]
    return tuple((o - 1) * s - 2 * p + d * (k - 1) + 1
                 for o, s, p, d, k in zip(out, cfg["stride"], cfg["padding"], cfg["dilation"], cfg["k"]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_small_images_threads_bitwise(dtype, rng):
    """The small-image path gives the same bits for 1, 2 and 3 threads."""
    x = rng.standard_normal((9, 12, 5, 6)).astype(dtype)
    w = rng.standard_normal((10, 6, 3, 3)).astype(dtype)
    b = rng.standard_normal(10).astype(dtype)
    go = rng.standard_normal((9, 10, 5, 6)).astype(dtype)
    old = nnkernels.get_num_threads()
    res = []
    try:
        for t in (1, 2, 3):
            nnkernels.set_num_threads(t)
            res.append((ops.conv2d(x, w, b, padding=1, groups=2),) +
                       tuple(ops.conv2d_backward(go, x, w, padding=1, groups=2)))
    finally:
        nnkernels.set_num_threads(old)
    for r in res[1:]:
        for a, e in zip(r, res[0]):
            assert np.array_equal(a, e)


# Convolutions through the vectorised shift packer (forward, backward-data as a forward
# convolution of dY, backward-weight through its transposed form): output widths
# that are not multiples of the vector length, narrower than a panel (several output rows
# per vector, up to the lane-by-lane fallback), padding wider than the image, dilation,
# groups, "valid" outputs (Wo != W), strides (stride phases), batches of 1 and many (images
# split over threads, images batched into one GEMM), channel counts on both sides of the
# backward-data choice.
SHIFT = [
    dict(N=2, C=16, H=13, W=37, Cout=12, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=3, C=9, H=12, W=17, Cout=9, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=True),
    dict(N=1, C=10, H=9, W=8, Cout=11, k=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=2, C=8, H=11, W=10, Cout=8, k=(3, 5), stride=(1, 1), padding=(4, 6), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=2, C=12, H=20, W=23, Cout=10, k=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=2, C=16, H=15, W=19, Cout=8, k=(3, 2), stride=(1, 1), padding=(2, 1), dilation=(2, 3), groups=2, noncontig=False),
    dict(N=5, C=3, H=11, W=33, Cout=32, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=2, C=20, H=9, W=31, Cout=6, k=(2, 4), stride=(1, 1), padding="same", dilation=(1, 1), groups=1, noncontig=False),
    dict(N=1, C=70, H=6, W=29, Cout=17, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=1, C=8, H=8, W=8, Cout=9, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),
    # Wo = 9 against an input row of 11: a 16-lane vector meets 3 output rows (lane by lane).
    dict(N=1, C=8, H=12, W=11, Cout=8, k=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=2, C=24, H=16, W=12, Cout=9, k=(5, 5), stride=(1, 1), padding=(1, 2), dilation=(1, 1), groups=3, noncontig=True),
    # Strided: the image split into its stride phases (odd sizes: phases of unequal extent).
    dict(N=2, C=3, H=37, W=41, Cout=10, k=(7, 7), stride=(2, 2), padding=(3, 3), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=1, C=5, H=30, W=41, Cout=7, k=(3, 2), stride=(3, 2), padding=(2, 1), dilation=(2, 3), groups=1, noncontig=True),
    dict(N=1, C=4, H=20, W=19, Cout=6, k=(1, 1), stride=(2, 2), padding=(0, 0), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=3, C=6, H=33, W=35, Cout=8, k=(4, 4), stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=2, noncontig=False),
    # Small planes, batch split evenly: several images side by side in one GEMM (panels
    # straddle images), strided and grouped too.
    dict(N=6, C=10, H=12, W=13, Cout=7, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, noncontig=False),
    dict(N=4, C=3, H=29, W=31, Cout=5, k=(5, 5), stride=(2, 2), padding=(2, 2), dilation=(1, 1), groups=1, noncontig=True),
    dict(N=4, C=16, H=11, W=14, Cout=12, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=2, noncontig=False),
]


@pytest.mark.parametrize("cfg", SHIFT, ids=_cfg_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_shift_packer(cfg, dtype, isa, rng):
    _check_against_torch(cfg, dtype, rng)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conv2d_shift_packer_threads(threads, rng):
    """Images split over threads (partial weight-gradient sums) agree with torch and are
    reproducible for a given thread count."""
    cfg = dict(N=7, C=12, H=10, W=21, Cout=14, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1),
               groups=1, noncontig=False)
    x = rng.standard_normal((7, 12, 10, 21))
    w = rng.standard_normal((14, 12, 3, 3))
    b = rng.standard_normal(14)
    go = rng.standard_normal((7, 14, 10, 21))
    ref_y, (rgx, rgw, rgb) = _torch_conv(x, w, b, go, cfg)
    old = nnkernels.get_num_threads()
    nnkernels.set_num_threads(threads)
    try:
        y = ops.conv2d(x, w, b, padding=1)
        grads = ops.conv2d_backward(go, x, w, padding=1)
        again = ops.conv2d_backward(go, x, w, padding=1)
    finally:
        nnkernels.set_num_threads(old)
    assert_close(y, ref_y, np.float64)
    for ours, ref, rep in zip(grads, (rgx, rgw, rgb), again):
        assert_close(ours, ref, np.float64)
        assert np.array_equal(ours, rep)


def _wino(N, C, H, W, Cout, padding=(1, 1), noncontig=False):
    """A config inside the Winograd path's geometry: 3x3, stride 1, dilation 1, one group."""
    return dict(N=N, C=C, H=H, W=W, Cout=Cout, k=(3, 3), stride=(1, 1), padding=padding,
                dilation=(1, 1), groups=1, noncontig=noncontig)


# Winograd F(2x2, 3x3) (3x3, stride 1, dilation 1, one group, >= 16 channels on both sides,
# outputs of at least 2 x 2): forward, backward-data and backward-weight. Odd output sizes
# (half tiles at the right and bottom edges), padding 0..2 and asymmetric pairs
# (backward-data reads dY with the padding 2 - p, negative included), tile blocks straddling
# rows and images, more channels than one K block (C = 520 > KC = 512), non-contiguous inputs.
WINOGRAD = [
    _wino(3, 16, 9, 11, 16),
    _wino(1, 17, 13, 7, 23, padding=(0, 2), noncontig=True),
    _wino(2, 24, 4, 5, 19, padding=(0, 0)),
    _wino(2, 16, 2, 3, 31),
    # Outputs with a side of 1 stay on the im2col paths (same checks).
    _wino(2, 16, 1, 5, 17),
    _wino(5, 32, 14, 14, 40, padding=(2, 1)),
    _wino(2, 20, 8, 37, 16, padding="same"),
    _wino(1, 520, 5, 6, 16),
    _wino(1, 16, 6, 5, 520),
]


def _winograd_random(seed, count):
    """Random shapes inside the Winograd path's range: 16-40 channels, outputs of 2-21 pixels
    a side (odd ones end in half tiles), padding pairs 0..2, batches 1-3."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        ph, pw = (int(v) for v in rng.integers(0, 3, size=2))
        H = int(rng.integers(max(4 - 2 * ph, 1), 20))
        W = int(rng.integers(max(4 - 2 * pw, 1), 20))
        out.append(_wino(int(rng.integers(1, 4)), int(rng.integers(16, 41)), H, W,
                         int(rng.integers(16, 41)), padding=(ph, pw), noncontig=i % 3 == 0))
    return out


WINOGRAD += _winograd_random(20261128, 10)


@pytest.mark.parametrize("cfg", WINOGRAD, ids=_cfg_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_winograd(cfg, dtype, isa, rng):
    go, w, ref_gx = _check_against_torch(cfg, dtype, rng)
    if cfg["padding"] != "same":  # conv_transpose2d: backward-data of the same geometry
        yt = ops.conv_transpose2d(go.astype(dtype), w, None, padding=cfg["padding"])
        assert_close(yt, ref_gx, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_winograd_threads_bitwise(dtype, rng):
    """The Winograd forward and backward-data give the same bits for 1, 2 and 3 threads
    (blocks of tiles are owned by one thread each, whichever it is); the weight gradient
    sums per-thread parts, so its bits are reproducible for a given thread count."""
    x = rng.standard_normal((3, 16, 13, 10)).astype(dtype)
    w = rng.standard_normal((18, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(18).astype(dtype)
    go = rng.standard_normal((3, 18, 13, 10)).astype(dtype)
    old = nnkernels.get_num_threads()
    res = []
    try:
        for t in (1, 2, 3):
            nnkernels.set_num_threads(t)
            gx, gw, _ = ops.conv2d_backward(go, x, w, padding=1)
            assert np.array_equal(gw, ops.conv2d_backward(go, x, w, padding=1)[1])
            res.append((ops.conv2d(x, w, b, padding=1), gx, gw))
    finally:
        nnkernels.set_num_threads(old)
    for r in res[1:]:
        assert np.array_equal(r[0], res[0][0]) and np.array_equal(r[1], res[0][1])
        assert_close(r[2], res[0][2], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_winograd_nonfinite_as_torch(dtype, rng):
    """Infinities and NaN in x, w or dY: the Winograd transforms would turn inf - inf into
    NaN where the direct sum gives +-inf, so such calls are recomputed by the direct method:
    the NaN and +-inf positions (and signs) are torch's."""
    x = rng.standard_normal((2, 16, 8, 9)).astype(dtype)
    w = rng.standard_normal((17, 16, 3, 3)).astype(dtype)
    go = rng.standard_normal((2, 17, 8, 9)).astype(dtype)
    x[0, 3, 4, 4] = np.inf
    x[1, 5, 0, 7] = -np.inf
    x[1, 2, 6, 1] = np.nan
    go[0, 4, 2, 3] = np.inf
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    wt = torch.tensor(w.astype(np.float64), requires_grad=True)
    yr = F.conv2d(xt, wt, padding=1)
    yr.backward(torch.tensor(go.astype(np.float64)))
    y = ops.conv2d(x, w, padding=1)
    gx, gw, _ = ops.conv2d_backward(go, x, w, padding=1)
    for ours, ref in ((y, yr.detach().numpy()), (gx, xt.grad.numpy()), (gw, wt.grad.numpy())):
        assert np.array_equal(np.isnan(ours), np.isnan(ref))
        assert np.array_equal(np.isposinf(ours), np.isposinf(ref))
        assert np.array_equal(np.isneginf(ours), np.isneginf(ref))
        fin = np.isfinite(ref)
        assert_close(np.where(fin, ours, 0), np.where(fin, ref, 0), dtype)
    # Inf in the weight only.
    w2 = w.copy()
    w2[3, 1, 1, 1] = -np.inf
    x2 = np.abs(rng.standard_normal((1, 16, 6, 6))).astype(dtype) + 0.5
    y2 = ops.conv2d(x2, w2, padding=1)
    r2 = F.conv2d(torch.tensor(x2.astype(np.float64)), torch.tensor(w2.astype(np.float64)), padding=1).numpy()
    assert np.array_equal(np.isneginf(y2), np.isneginf(r2)) and np.isneginf(r2).any()
    assert np.array_equal(np.isnan(y2), np.isnan(r2))


def test_conv2d_winograd_matches_im2col_path(rng, tmp_path):
    """NNKERNELS_WINOGRAD=0 (read at import) runs the same shapes through the im2col paths;
    both agree with each other to float32 rounding."""
    import os
    import subprocess
    import sys
    x = rng.standard_normal((2, 16, 10, 9)).astype(np.float32)
    w = rng.standard_normal((17, 16, 3, 3)).astype(np.float32)
    go = rng.standard_normal((2, 17, 10, 9)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, w=w, go=go)
    code = ("import sys, numpy as np; from nnkernels import ops; d = np.load(sys.argv[1]);"
            "np.savez(sys.argv[2], y=ops.conv2d(d['x'], d['w'], padding=1),"
            " gx=ops.conv2d_backward(d['go'], d['x'], d['w'], padding=1)[0])")
    env = dict(os.environ, NNKERNELS_WINOGRAD="0")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   env=env, check=True)
    direct = np.load(tmp_path / "out.npz")
    y = ops.conv2d(x, w, padding=1)
    gx = ops.conv2d_backward(go, x, w, padding=1)[0]
    assert not np.array_equal(y, direct["y"])  # the two paths really differ ...
    assert_close(y, direct["y"], np.float32)   # ... by rounding only
    assert_close(gx, direct["gx"], np.float32)
