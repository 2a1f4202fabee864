"""nnkernels.nn against torch.nn: forward, input and parameter gradients, state dicts,
initialisation, training parity, save/load and bad input."""

import math

import numpy as np
import pytest
import torch

from conftest import DTYPES, assert_close

import nnkernels
from nnkernels import nn

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def _copy_from_torch(ours, theirs):
    sd = {k: v.numpy() for k, v in theirs.state_dict().items()}
    ours.load_state_dict(sd)


def check_layer(ours, theirs, x, rng, dtype, factor=1.0):
    """Forward, input gradient and every parameter's .grad of ours against theirs."""
    theirs = theirs.to(TORCH_DTYPE[dtype])
    if dtype == np.float64:
        ours.double()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    _copy_from_torch(ours, theirs)
    for k, v in theirs.state_dict().items():
        assert ours.state_dict()[k].shape == tuple(v.shape), k
    x = x.astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours(x)
    assert y.dtype == dtype
    assert_close(y, yt.detach().numpy(), dtype, factor)
    g = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(g))
    gx = ours.backward(g)
    assert gx.shape == x.shape and gx.dtype == dtype
    assert_close(gx, xt.grad.numpy(), dtype, factor)
    tparams = dict(theirs.named_parameters())
    assert set(tparams) == {n for n, _ in ours.named_parameters()}
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        assert p.grad.dtype == dtype
        assert_close(p.grad, tparams[name].grad.numpy(), dtype, factor)
    # what forward kept is released
    with pytest.raises(RuntimeError, match="backward"):
        ours.backward(g)


# (our layer, torch layer, input shape)
LAYERS = [
    ("linear", lambda: (nn.Linear(7, 5), torch.nn.Linear(7, 5)), (3, 7)),
    ("linear_nobias_3d", lambda: (nn.Linear(6, 4, bias=False), torch.nn.Linear(6, 4, bias=False)), (2, 3, 6)),
    ("relu", lambda: (nn.ReLU(), torch.nn.ReLU()), (4, 9)),
    ("leaky_relu", lambda: (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)), (4, 9)),
    ("sigmoid", lambda: (nn.Sigmoid(), torch.nn.Sigmoid()), (3, 5, 2)),
    ("tanh", lambda: (nn.Tanh(), torch.nn.Tanh()), (3, 5, 2)),
    ("gelu", lambda: (nn.GELU(), torch.nn.GELU()), (4, 11)),
    ("gelu_tanh", lambda: (nn.GELU("tanh"), torch.nn.GELU("tanh")), (4, 11)),
    ("softmax", lambda: (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)), (3, 7, 2)),
    ("softmax_last", lambda: (nn.Softmax(dim=-1), torch.nn.Softmax(dim=-1)), (5, 13)),
    ("log_softmax", lambda: (nn.LogSoftmax(dim=1), torch.nn.LogSoftmax(dim=1)), (5, 13)),
    ("flatten", lambda: (nn.Flatten(), torch.nn.Flatten()), (2, 3, 4, 5)),
    ("flatten_0_1", lambda: (nn.Flatten(0, 1), torch.nn.Flatten(0, 1)), (2, 3, 4)),
    ("conv", lambda: (nn.Conv2d(3, 6, 3, stride=2, padding=1), torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)),
     (2, 3, 9, 7)),
    ("conv_same_groups", lambda: (nn.Conv2d(4, 6, (3, 2), padding="same", dilation=2, groups=2, bias=False),
                                  torch.nn.Conv2d(4, 6, (3, 2), padding="same", dilation=2, groups=2, bias=False)),
     (2, 4, 8, 7)),
    ("conv_unbatched", lambda: (nn.Conv2d(3, 5, 3, padding="valid"), torch.nn.Conv2d(3, 5, 3, padding="valid")),
     (3, 6, 5)),
    ("conv_transpose", lambda: (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
                                torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)),
     (2, 4, 5, 3)),
    ("conv_transpose_groups", lambda: (nn.ConvTranspose2d(4, 6, 3, groups=2, dilation=2, bias=False),
                                       torch.nn.ConvTranspose2d(4, 6, 3, groups=2, dilation=2, bias=False)),
     (2, 4, 4, 5)),
    ("max_pool", lambda: (nn.MaxPool2d(2), torch.nn.MaxPool2d(2)), (2, 3, 8, 7)),
    ("max_pool_ceil", lambda: (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
                               torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)), (2, 3, 8, 7)),
    ("max_pool_dilated", lambda: (nn.MaxPool2d(2, dilation=2), torch.nn.MaxPool2d(2, dilation=2)), (1, 2, 9, 9)),
    ("avg_pool", lambda: (nn.AvgPool2d(2), torch.nn.AvgPool2d(2)), (2, 3, 8, 7)),
    ("avg_pool_ceil", lambda: (nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
                               torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)), (2, 3, 8, 7)),
    ("sequential_cnn", lambda: (
        nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(4 * 3 * 3, 5), nn.Tanh(), nn.Linear(5, 3)),
        torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                            torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 5), torch.nn.Tanh(),
                            torch.nn.Linear(5, 3))), (3, 2, 6, 7)),
    ("sequential_gen", lambda: (
        nn.Sequential(nn.Linear(5, 8 * 2 * 2), nn.LeakyReLU(0.2), nn.Unflatten(1, (8, 2, 2)),
                      nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), nn.Sigmoid()),
        torch.nn.Sequential(torch.nn.Linear(5, 8 * 2 * 2), torch.nn.LeakyReLU(0.2),
                            torch.nn.Unflatten(1, (8, 2, 2)),
                            torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), torch.nn.Sigmoid())),
     (4, 5)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_matches_torch(name, make, shape, dtype, rng):
    torch.manual_seed(0)
    ours, theirs = make()
    x = rng.standard_normal(shape)
    check_layer(ours, theirs, x, rng, dtype, factor=1.0 if dtype == np.float64 else 4.0)


def test_max_pool_return_indices(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    m = nn.MaxPool2d(2, return_indices=True)
    y, idx = m(x)
    yt, it = torch.nn.MaxPool2d(2, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(idx, it.numpy())
    np.testing.assert_array_equal(y, yt.numpy())
    assert m.backward(np.ones_like(y), None).shape == x.shape


def test_conv_transpose_output_size(rng):
    torch.manual_seed(1)
    t = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double()
    m = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, dtype=np.float64)
    _copy_from_torch(m, t)
    x = rng.standard_normal((1, 3, 4, 4))
    y = m(x, output_size=(8, 8))
    yt = t(torch.tensor(x), output_size=(8, 8))
    assert y.shape == (1, 2, 8, 8)
    assert_close(y, yt.detach().numpy(), np.float64)
    with pytest.raises(ValueError, match="output size"):
        m(x, output_size=(10, 10))


def test_softmax_implicit_dim_warns_like_torch(rng):
    x = rng.standard_normal((3, 4))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = nn.Softmax()(x)
    assert_close(y, torch.softmax(torch.tensor(x), 1).numpy(), np.float64)


# ------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_torch(reduction, dtype, rng):
    x = rng.standard_normal((6, 5)).astype(dtype)
    cases = [
        (nn.MSELoss(reduction), torch.nn.MSELoss(reduction=reduction), rng.standard_normal((6, 5)).astype(dtype)),
        (nn.BCEWithLogitsLoss(reduction=reduction), torch.nn.BCEWithLogitsLoss(reduction=reduction),
         rng.random((6, 5)).astype(dtype)),
        (nn.CrossEntropyLoss(reduction=reduction), torch.nn.CrossEntropyLoss(reduction=reduction),
         rng.integers(0, 5, 6)),
    ]
    for ours, theirs, t in cases:
        xt = torch.tensor(x, requires_grad=True)
        lt = theirs(xt, torch.tensor(t))
        loss = ours(x, t)
        if reduction == "none":
            assert_close(loss, lt.detach().numpy(), dtype)
            g = rng.standard_normal(loss.shape).astype(dtype)
            lt.backward(torch.tensor(g))
            gx = ours.backward(g)
        else:
            assert isinstance(loss, float)
            assert abs(loss - lt.item()) <= 4 * np.finfo(dtype).eps * max(1.0, abs(lt.item()))
            lt.backward()
            gx = ours.backward()
        assert_close(gx, xt.grad.numpy(), dtype)
        with pytest.raises(RuntimeError):
            ours.backward()


@pytest.mark.parametrize("ignore", [-100, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_spatial_and_ignore_index(reduction, ignore, rng):
    x = rng.standard_normal((3, 5, 4, 2))
    t = rng.integers(0, 5, (3, 4, 2))
    t[0, 1, 0] = ignore
    t[2, 3, 1] = ignore
    for tt in (t, np.where(t == ignore, 1, t)):  # with and without ignored targets
        xt = torch.tensor(x, requires_grad=True)
        lt = torch.nn.CrossEntropyLoss(reduction=reduction, ignore_index=ignore)(xt, torch.tensor(tt))
        ours = nn.CrossEntropyLoss(reduction=reduction, ignore_index=ignore)
        loss = ours(x, tt)
        if reduction == "none":
            assert_close(loss, lt.detach().numpy(), np.float64)
            g = rng.standard_normal(loss.shape)
            lt.backward(torch.tensor(g))
            gx = ours.backward(g)
        else:
            assert abs(loss - lt.item()) <= 1e-12 * abs(lt.item())
            lt.backward()
            gx = ours.backward()
        assert_close(gx, xt.grad.numpy(), np.float64)


# ------------------------------------------------------------------------ initialisation


def test_default_init_and_dtype():
    nn.manual_seed(0)
    for m, fan_in in [(nn.Linear(50, 40), 50), (nn.Conv2d(6, 8, (3, 5), groups=2), 3 * 15),
                      (nn.ConvTranspose2d(6, 8, 3, groups=2), 4 * 9)]:
        bound = 1 / math.sqrt(fan_in)
        for p in m.parameters():
            assert p.dtype == np.float32 and p.data.flags.c_contiguous and p.grad is None
            assert np.abs(p.data).max() <= bound
        # kaiming_uniform(a=sqrt(5)): uniform on the whole interval, variance bound^2 / 3
        w = m.weight.data.astype(np.float64)
        assert np.abs(w).max() > 0.8 * bound
        assert abs(w.var() / (bound ** 2 / 3) - 1) < 0.25
    assert nn.Linear(3, 2, dtype=np.float64).weight.dtype == np.float64
    with pytest.raises(TypeError):
        nn.Linear(3, 2, dtype=np.int32)
    # torch's shapes
    t = torch.nn.ConvTranspose2d(6, 8, 3, groups=2)
    m = nn.ConvTranspose2d(6, 8, 3, groups=2)
    assert {k: tuple(v.shape) for k, v in t.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


def test_manual_seed_reproducible():
    nn.manual_seed(3)
    a = nn.Linear(4, 3).weight.data.copy()
    nn.manual_seed(3)
    np.testing.assert_array_equal(a, nn.Linear(4, 3).weight.data)


def test_double_float_and_state_dict_cast():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert m.double() is m
    assert all(p.dtype == np.float64 for p in m.parameters())
    x = np.ones((2, 3))
    assert m(x).dtype == np.float64
    m.float()
    assert all(p.dtype == np.float32 for p in m.parameters())
    # load_state_dict casts float64 values to float32 parameters, as torch
    sd = {k: v.astype(np.float64) + 0.1 for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, sd[k].astype(np.float32))


def test_repr_train_eval_zero_grad():
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    r = repr(m)
    assert "(0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)" in r
    assert "(3): Linear(in_features=4, out_features=2, bias=True)" in r
    assert repr(torch.nn.Linear(4, 2)) == repr(nn.Linear(4, 2))
    assert m.training and all(c.training for c in m.children())
    m.eval()
    assert not m.training and not any(c.training for c in m.children())
    m.train()
    assert all(c.training for c in m.modules())
    assert [n for n, _ in m.named_parameters()] == ["0.weight", "3.weight", "3.bias"]
    x = np.ones((2, 1, 1, 1), np.float32)
    m.backward(np.ones_like(m(x)))
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_gradients_accumulate(rng):
    m = nn.Linear(3, 2, dtype=np.float64)
    x = rng.standard_normal((4, 3))
    g = rng.standard_normal((4, 2))
    m(x)
    m.backward(g)
    first = m.weight.grad.copy()
    m(x)
    m.backward(g)
    np.testing.assert_allclose(m.weight.grad, 2 * first, rtol=1e-14)


# ------------------------------------------------------------------------ training parity


def _mlp_pair(dtype):
    torch.manual_seed(0)
    t = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).to(TORCH_DTYPE[dtype])
    m = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4)).to(dtype)
    _copy_from_torch(m, t)
    return m, t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd_momentum", "sgd_nesterov"])
def test_mlp_training_matches_torch(opt, dtype, rng):
    m, t = _mlp_pair(dtype)
    make = {
        "adam": lambda ps, lib: lib.Adam(ps, lr=1e-2),
        "adamw": lambda ps, lib: lib.AdamW(ps, lr=1e-2, weight_decay=0.1),
        "sgd_momentum": lambda ps, lib: lib.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3),
        "sgd_nesterov": lambda ps, lib: lib.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    }[opt]
    ours_opt = make(m.parameters(), nnkernels.optim)
    torch_opt = make(t.parameters(), torch.optim)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(20):
        x = rng.standard_normal((32, 10)).astype(dtype)
        y = rng.integers(0, 4, 32)
        torch_opt.zero_grad()
        lt = torch.nn.functional.cross_entropy(t(torch.tensor(x)), torch.tensor(y))
        lt.backward()
        torch_opt.step()
        ours_opt.zero_grad()
        loss = loss_fn(m(x), y)
        m.backward(loss_fn.backward())
        ours_opt.step()
        assert abs(loss - lt.item()) <= 1e-4 * abs(lt.item())
    factor = 100.0 if dtype == np.float64 else 200.0  # 20 steps of rounding growth
    tsd = t.state_dict()
    for k, v in m.state_dict().items():
        assert_close(v, tsd[k].numpy(), dtype, factor)


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path, rng):
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5, dtype=np.float64))
    path = tmp_path / "model.weights"  # no .npz suffix: written exactly where asked
    m.save(path)
    assert path.exists()
    m2 = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5, dtype=np.float64))
    m2.load(path)
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(m[0](x), m2[0](x))
    # torch reads it back too
    with np.load(path) as f:
        t = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(12, 5))
        t.load_state_dict({k: torch.tensor(f[k]) for k in f.files})


# ------------------------------------------------------------------------------ bad input


def _snapshot(m):
    return {k: v.copy() for k, v in m.state_dict().items()}


def _unchanged(m, snap):
    sd = m.state_dict()
    assert sd.keys() == snap.keys()
    for k in sd:
        np.testing.assert_array_equal(sd[k], snap[k])


def test_wrong_in_features_and_channels(rng):
    lin = nn.Linear(5, 3)
    snap = _snapshot(lin)
    with pytest.raises(ValueError, match=r"Linear\(in_features=5.*\(4, 6\)"):
        lin(rng.standard_normal((4, 6)).astype(np.float32))
    _unchanged(lin, snap)
    with pytest.raises(RuntimeError, match="before|without a preceding forward"):
        lin.backward(np.ones((4, 3), np.float32))
    conv = nn.Conv2d(3, 4, 3)
    snap = _snapshot(conv)
    with pytest.raises(ValueError, match=r"Conv2d\(3, 4.*\(2, 2, 5, 5\)"):
        conv(rng.standard_normal((2, 2, 5, 5)).astype(np.float32))
    _unchanged(conv, snap)
    convt = nn.ConvTranspose2d(3, 4, 3)
    with pytest.raises(ValueError, match="ConvTranspose2d"):
        convt(rng.standard_normal((2, 5, 5, 5)).astype(np.float32))
    # a failed forward keeps the previous forward's state for backward
    x = rng.standard_normal((2, 5)).astype(np.float32)
    lin(x)
    with pytest.raises(ValueError):
        lin(rng.standard_normal((2, 7)).astype(np.float32))
    assert lin.backward(np.ones((2, 3), np.float32)).shape == (2, 5)


@pytest.mark.parametrize("layer", [nn.Linear(2, 2), nn.ReLU(), nn.Sigmoid(), nn.Conv2d(1, 1, 1),
                                   nn.ConvTranspose2d(1, 1, 1), nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Flatten(),
                                   nn.Softmax(1), nn.MSELoss(), nn.CrossEntropyLoss(), nn.BCEWithLogitsLoss(),
                                   nn.Sequential(nn.Linear(2, 2))], ids=lambda m: type(m).__name__)
def test_backward_before_forward(layer):
    with pytest.raises(RuntimeError, match="without a preceding forward"):
        layer.backward(np.ones((1, 2), np.float32))


def test_load_state_dict_errors_leave_model_unchanged():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    snap = _snapshot(m)
    good = {k: np.zeros_like(v) for k, v in snap.items()}

    missing = dict(good)
    del missing["2.bias"]
    with pytest.raises(RuntimeError, match=r"missing.*'2\.bias'"):
        m.load_state_dict(missing)
    _unchanged(m, snap)

    extra = dict(good, **{"3.weight": np.zeros((2, 2))})
    with pytest.raises(RuntimeError, match=r"unexpected.*'3\.weight'"):
        m.load_state_dict(extra)
    _unchanged(m, snap)

    wrong = dict(good, **{"0.weight": np.zeros((3, 4))})
    with pytest.raises(RuntimeError, match=r"size mismatch for '0\.weight'"):
        m.load_state_dict(wrong)
    _unchanged(m, snap)

    # non-strict: loads what matches, reports the rest
    missing_keys, unexpected = m.load_state_dict(extra, strict=False)
    assert missing_keys == [] and unexpected == ["3.weight"]
    assert not np.any(m[0].weight.data)


def test_constructor_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(nn.ReLU(), 3)
