"""nn.RNN / nn.LSTM / nn.GRU against torch.nn's: forward outputs and final states, input
and state gradients, every parameter's .grad, state-dict keys, init, unbatched input,
dropout between layers and bad input."""

import math

import numpy as np
import pytest
import torch

from conftest import DTYPES, assert_close
from test_nn import TORCH_DTYPE

from nnkernels import nn

T, B, I, H = 5, 3, 4, 7

KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def _pair(kind, *args, **kw):
    torch.manual_seed(0)
    if kind.startswith("rnn"):
        nl = kind[4:]
        return nn.RNN(*args, nonlinearity=nl, **kw), torch.nn.RNN(*args, nonlinearity=nl, **kw)
    ours, theirs = {"lstm": (nn.LSTM, torch.nn.LSTM), "gru": (nn.GRU, torch.nn.GRU)}[kind]
    return ours(*args, **kw), theirs(*args, **kw)


def _ours(kind, *args, **kw):
    if kind.startswith("rnn"):
        return nn.RNN(*args, nonlinearity=kind[4:], **kw)
    return {"lstm": nn.LSTM, "gru": nn.GRU}[kind](*args, **kw)


def _prepare(m, t, dtype):
    t = t.to(TORCH_DTYPE[dtype])
    if dtype == np.float64:
        m.double()
    assert list(m.state_dict()) == list(t.state_dict())
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in t.named_parameters()]
    m.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    for k, v in t.state_dict().items():
        assert m.state_dict()[k].shape == tuple(v.shape) and m.state_dict()[k].dtype == dtype
    return t


def _states(kind, shape, rng, dtype):
    n = 2 if kind == "lstm" else 1
    return [rng.standard_normal(shape).astype(dtype) for _ in range(n)]


def _pack(kind, s):
    """Our/torch state argument from a list of arrays (or tensors)."""
    if s is None:
        return None
    return tuple(s) if kind == "lstm" else s[0]


def _unpack(kind, s):
    return list(s) if kind == "lstm" else [s]


def _compare(kind, m, t, x, s0, rng, dtype, grad_states=True, factor=1.0):
    """Forward, backward with random upstream gradients, all gradients, against torch."""
    xt = torch.tensor(x, requires_grad=True)
    st = None if s0 is None else [torch.tensor(s, requires_grad=True) for s in s0]
    yt, snt = t(xt, _pack(kind, st))
    y, sn = m(x, _pack(kind, s0))
    assert y.dtype == dtype and y.shape == tuple(yt.shape)
    assert_close(y, yt.detach().numpy(), dtype, factor)
    for a, b in zip(_unpack(kind, sn), _unpack(kind, snt)):
        assert a.shape == tuple(b.shape) and a.dtype == dtype
        assert_close(a, b.detach().numpy(), dtype, factor)

    gy = rng.standard_normal(y.shape).astype(dtype)
    loss = (yt * torch.tensor(gy)).sum()
    gs = None
    if grad_states:
        gs = [rng.standard_normal(a.shape).astype(dtype) for a in _unpack(kind, sn)]
        for b, g in zip(_unpack(kind, snt), gs):
            loss = loss + (b * torch.tensor(g)).sum()
    loss.backward()
    gx, gs0 = m.backward(gy, _pack(kind, gs))
    assert gx.shape == x.shape and gx.dtype == dtype
    assert_close(gx, xt.grad.numpy(), dtype, factor)
    if s0 is None:
        assert gs0 is None
    else:
        for a, b in zip(_unpack(kind, gs0), st):
            assert a.shape == tuple(b.shape) and a.dtype == dtype
            assert_close(a, b.grad.numpy(), dtype, factor)
    tparams = dict(t.named_parameters())
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.dtype == dtype, name
        assert_close(p.grad, tparams[name].grad.numpy(), dtype, factor)
    with pytest.raises(RuntimeError, match="backward"):
        m.backward(gy)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_state", [False, True], ids=["h0None", "h0"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["TBI", "BTI"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_against_torch(kind, num_layers, batch_first, bias, with_state, dtype, rng):
    m, t = _pair(kind, I, H, num_layers=num_layers, bias=bias, batch_first=batch_first)
    t = _prepare(m, t, dtype)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    s0 = _states(kind, (num_layers, B, H), rng, dtype) if with_state else None
    _compare(kind, m, t, x, s0, rng, dtype, factor=1.0 if dtype == np.float64 else 2.0)


@pytest.mark.parametrize("kind", KINDS)
def test_no_state_gradient_and_odd_sizes(kind, rng):
    """grad_h_n = None (only the output's gradient), B = 1, T = 11, I = 1."""
    m, t = _pair(kind, 1, 5, num_layers=3)
    t = _prepare(m, t, np.float64)
    x = rng.standard_normal((11, 1, 1))
    _compare(kind, m, t, x, _states(kind, (3, 1, 5), rng, np.float64), rng, np.float64, grad_states=False)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_unbatched(kind, batch_first, rng):
    m, t = _pair(kind, I, H, num_layers=2, batch_first=batch_first)
    t = _prepare(m, t, np.float64)
    x = rng.standard_normal((T, I))
    _compare(kind, m, t, x, _states(kind, (2, H), rng, np.float64), rng, np.float64)
    _compare(kind, m, t, x, None, rng, np.float64)


@pytest.mark.parametrize("kind", KINDS)
def test_noncontiguous_and_torch_input(kind, rng):
    m, t = _pair(kind, I, H, num_layers=2, batch_first=True)
    t = _prepare(m, t, np.float64)
    x = rng.standard_normal((T, 2 * B, I))[:, ::2].transpose(1, 0, 2)  # (B, T, I), strided
    assert not x.flags.c_contiguous
    _compare(kind, m, t, x, None, rng, np.float64)
    y, _ = m(torch.tensor(np.ascontiguousarray(x)))
    np.testing.assert_array_equal(y, m(np.ascontiguousarray(x))[0])


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_accumulate(kind, rng):
    m = _ours(kind, I, H, num_layers=2, dtype=np.float64)
    x = rng.standard_normal((T, B, I))
    y, _ = m(x)
    gy = rng.standard_normal(y.shape)
    m.backward(gy)
    first = {n: p.grad.copy() for n, p in m.named_parameters()}
    m(x)
    m.backward(gy)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * first[n], rtol=1e-13, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_sequence(kind, rng):
    m = _ours(kind, I, H, num_layers=2, dtype=np.float64)
    x = np.zeros((0, B, I))
    s0 = _states(kind, (2, B, H), rng, np.float64)
    y, sn = m(x, _pack(kind, s0))
    assert y.shape == (0, B, H)
    for a, b in zip(_unpack(kind, sn), s0):
        np.testing.assert_array_equal(a, b)
    gx, gs0 = m.backward(y, _pack(kind, s0))
    assert gx.shape == x.shape
    for a, b in zip(_unpack(kind, gs0), s0):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_init_and_keys(kind):
    gates = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[kind]
    nn.manual_seed(0)
    m, t = _pair(kind, 6, 40, num_layers=2)
    assert list(m.state_dict()) == list(t.state_dict())
    bound = 1 / math.sqrt(40)
    for name, p in m.named_parameters():
        assert p.dtype == np.float32
        assert p.shape == tuple(dict(t.named_parameters())[name].shape)
        assert np.abs(p.data).max() <= bound
        assert np.abs(p.data).max() > 0.9 * bound
    every = np.concatenate([p.data.ravel() for p in m.parameters()])
    assert abs(every.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert abs(every.mean()) < 0.05 * bound
    assert m.weight_ih_l0.shape == (gates * 40, 6) and m.weight_ih_l1.shape == (gates * 40, 40)
    assert repr(m).startswith(type(m).__name__ + "(6, 40")
    _, t2 = _pair(kind, 6, 40, bias=False)
    m2, _ = _pair(kind, 6, 40, bias=False)
    assert list(m2.state_dict()) == list(t2.state_dict()) == ["weight_ih_l0", "weight_hh_l0"]


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_between_layers(kind, rng):
    # p = 1: deterministic, so torch's training-mode result is reproduced exactly
    m, t = _pair(kind, I, H, num_layers=3, dropout=1.0)
    t = _prepare(m, t, np.float64)
    _compare(kind, m, t, rng.standard_normal((T, B, I)), None, rng, np.float64)
    # eval mode: no dropout
    m, t = _pair(kind, I, H, num_layers=2, dropout=0.5)
    t = _prepare(m, t, np.float64)
    m.eval()
    t.eval()
    _compare(kind, m, t, rng.standard_normal((T, B, I)), None, rng, np.float64)
    # p = 0.5 in training: a fixed mask (same seed) makes it a smooth function; check the
    # input gradient against a central difference
    m.train()
    x = rng.standard_normal((T, B, I))
    d = rng.standard_normal(x.shape)

    def f(xx):
        nn.manual_seed(3)
        y, _ = m(xx)
        return y

    y = f(x)
    gy = rng.standard_normal(y.shape)
    gx, _ = m.backward(gy)
    m.eval()
    assert not np.allclose(y, m(x)[0])
    m.train()
    eps = 1e-6
    num = ((f(x + eps * d) * gy).sum() - (f(x - eps * d) * gy).sum()) / (2 * eps)
    assert abs(num - (gx * d).sum()) < 1e-6 * max(1.0, abs(num))
    nn.manual_seed(3)
    np.testing.assert_array_equal(f(x), y)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input(kind, rng):
    cls = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
    with pytest.raises(ValueError):
        cls(I, H, bidirectional=True)
    with pytest.raises(ValueError):
        cls(I, H, num_layers=0)
    with pytest.raises(ValueError):
        cls(I, H, dropout=1.5)
    m, _ = _pair(kind, I, H, num_layers=2)
    with pytest.raises(RuntimeError, match="backward"):
        m.backward(np.zeros((T, B, H), np.float32))
    before = m.state_dict()
    with pytest.raises(ValueError, match="input_size"):
        m(np.zeros((T, B, I + 1), np.float32))
    with pytest.raises(ValueError):
        m(np.zeros((T, B, 2, I), np.float32))
    bad_state = [np.zeros((1, B, H), np.float32)] * (2 if kind == "lstm" else 1)
    with pytest.raises(ValueError, match="h0"):
        m(np.zeros((T, B, I), np.float32), _pack(kind, bad_state))
    with pytest.raises(RuntimeError, match="backward"):
        m.backward(np.zeros((T, B, H), np.float32))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_rnn_bad_nonlinearity_and_lstm_state():
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError):
        nn.LSTM(I, H, proj_size=2)
    with pytest.raises(ValueError):
        nn.LSTM(I, H)(np.zeros((T, B, I), np.float32), np.zeros((1, B, H), np.float32))
