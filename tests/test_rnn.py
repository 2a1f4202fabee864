"""Recurrent networks (rnn_cell, rnn, lstm_cell, lstm, gru_cell, gru and their backward
ops) against torch modules holding the same weights, and torch autograd for BPTT."""

import numpy as np
import pytest
import torch

import nnkernels
from nnkernels import _C, ops
from conftest import DTYPES, assert_close

KINDS = ["tanh", "relu", "lstm", "gru"]
GATES = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}
TDT = {np.float32: torch.float32, np.float64: torch.float64}


def make_module(kind, I, H, bias, dtype, cell=False):
    torch.manual_seed(1234)
    if kind in ("tanh", "relu"):
        m = (torch.nn.RNNCell if cell else torch.nn.RNN)(I, H, bias=bias, nonlinearity=kind)
    elif kind == "lstm":
        m = (torch.nn.LSTMCell if cell else torch.nn.LSTM)(I, H, bias=bias)
    else:
        m = (torch.nn.GRUCell if cell else torch.nn.GRU)(I, H, bias=bias)
    m = m.to(TDT[dtype])
    with torch.no_grad():  # larger than torch's default init, so the gates saturate a bit
        for p in m.parameters():
            p.mul_(2.0)
    sfx = "" if cell else "_l0"
    w = [getattr(m, "weight_ih" + sfx).detach().numpy(), getattr(m, "weight_hh" + sfx).detach().numpy()]
    b = ([getattr(m, "bias_ih" + sfx).detach().numpy(), getattr(m, "bias_hh" + sfx).detach().numpy()]
         if bias else [None, None])
    return m, w, b


def params_of(m, bias):
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    sfx = "" if isinstance(m, torch.nn.RNNCellBase) else "_l0"
    return [getattr(m, n + sfx) for n in names]


# ---------------------------------------------------------------------------------------
# Cells


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("B,I,H,bias,state", [(1, 5, 13, True, True), (7, 33, 33, False, True),
                                              (3, 16, 32, True, False), (2, 40, 17, False, True),
                                              (4, 1, 70, True, True), (5, 19, 3, True, True)])
def test_cell_forward(isa, rng, dtype, kind, B, I, H, bias, state):
    m, (w_ih, w_hh), (b_ih, b_hh) = make_module(kind, I, H, bias, dtype, cell=True)
    x = rng.standard_normal((B, I)).astype(dtype)
    h = rng.standard_normal((B, H)).astype(dtype) if state else None
    c = rng.standard_normal((B, H)).astype(dtype) if state else None
    with torch.no_grad():
        if kind == "lstm":
            ref = m(torch.from_numpy(x), None if h is None else (torch.from_numpy(h), torch.from_numpy(c)))
            ours = ops.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
            assert_close(ours[0], ref[0].numpy(), dtype, 4)
            assert_close(ours[1], ref[1].numpy(), dtype, 4)
            return
        ref = m(torch.from_numpy(x), None if h is None else torch.from_numpy(h)).numpy()
    if kind == "gru":
        ours = ops.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    else:
        ours = ops.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity=kind)
    assert ours.dtype == dtype and ours.shape == (B, H)
    assert_close(ours, ref, dtype, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_reference_step(rng, kind):
    """The scalar oracle in nnk::ref agrees with the fast cell (float64)."""
    B, I, H = 4, 9, 21
    dtype = np.float64
    _, (w_ih, w_hh), (b_ih, b_hh) = make_module(kind, I, H, True, dtype, cell=True)
    x = rng.standard_normal((B, I))
    h = rng.standard_normal((B, H))
    c = rng.standard_normal((B, H))
    fam = "rnn" if kind in ("tanh", "relu") else kind
    h1, c1 = _C.rnn_step_ref(fam, kind, x, h, c, w_ih, w_hh, b_ih, b_hh)
    if kind == "lstm":
        ours = ops.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
        assert_close(ours[0], h1, dtype)
        assert_close(ours[1], c1, dtype)
    elif kind == "gru":
        assert_close(ops.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh), h1, dtype)
    else:
        assert_close(ops.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, kind), h1, dtype)


# ---------------------------------------------------------------------------------------
# Sequences: forward and every gradient


def run_ours(kind, x, h0, c0, w, b, go, gh, gc, bias):
    """Forward then backward; returns (out, h_n, c_n, grads) with grads in torch's order
    x, h0, (c0), w_ih, w_hh, (b_ih, b_hh)."""
    if kind == "lstm":
        out, h_n, c_n, cache = ops.lstm(x, h0, c0, *w, *b, return_cache=True)
        g = ops.lstm_backward(go, gh, gc, x, h0, c0, *w, out, cache, bias=bias)
    elif kind == "gru":
        out, h_n, cache = ops.gru(x, h0, *w, *b, return_cache=True)
        c_n = None
        g = ops.gru_backward(go, gh, x, h0, *w, out, cache, bias=bias)
    else:
        out, h_n = ops.rnn(x, h0, *w, *b, nonlinearity=kind)
        c_n = None
        g = ops.rnn_backward(go, gh, x, h0, *w, out, bias=bias, nonlinearity=kind)
    g = [a for a in g if a is not None]
    return out, h_n, c_n, g


def check_sequence(kind, rng, dtype, T, B, I, H, bias, state, factor=8):
    m, w, b = make_module(kind, I, H, bias, dtype)
    tdt = TDT[dtype]
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype)
    go = rng.standard_normal((T, B, H)).astype(dtype)
    gh = rng.standard_normal((B, H)).astype(dtype)
    gc = rng.standard_normal((B, H)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h0[None] if state else np.zeros((1, B, H), dtype), requires_grad=True)
    ct = torch.tensor(c0[None] if state else np.zeros((1, B, H), dtype), requires_grad=True)
    if kind == "lstm":
        out_t, (hn_t, cn_t) = m(xt, (ht, ct))
        loss = (out_t * torch.from_numpy(go)).sum() + (hn_t[0] * torch.from_numpy(gh)).sum() \
            + (cn_t[0] * torch.from_numpy(gc)).sum()
        leaves = [xt, ht, ct]
    else:
        out_t, hn_t = m(xt, ht)
        loss = (out_t * torch.from_numpy(go)).sum() + (hn_t[0] * torch.from_numpy(gh)).sum()
        leaves = [xt, ht]
    assert out_t.dtype == tdt
    ref_grads = torch.autograd.grad(loss, leaves + params_of(m, bias))
    out, h_n, c_n, grads = run_ours(kind, x, h0 if state else None, c0 if state else None,
                                    w, b, go, gh, gc, bias)
    assert out.shape == (T, B, H) and out.dtype == dtype
    assert_close(out, out_t.detach().numpy(), dtype, factor)
    assert_close(h_n, hn_t[0].detach().numpy(), dtype, factor)
    if kind == "lstm":
        assert_close(c_n, cn_t[0].detach().numpy(), dtype, factor)
    assert len(grads) == len(ref_grads)
    for ours, ref in zip(grads, ref_grads):
        ref = ref.numpy()
        if ref.ndim == 3 and ref.shape[0] == 1 and ours.ndim == 2:
            ref = ref[0]  # h0 / c0
        assert ours.dtype == dtype
        assert_close(ours, ref, dtype, 4 * factor)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T,B,I,H,bias,state", [
    (1, 1, 5, 13, True, True),
    (1, 3, 8, 21, False, False),
    (6, 5, 9, 33, False, True),
    (4, 3, 16, 13, True, False),
])
def test_sequence(isa, rng, dtype, kind, T, B, I, H, bias, state):
    check_sequence(kind, rng, dtype, T, B, I, H, bias, state)


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_threaded_rows(rng, kind):
    """Batch large enough for one row block per thread in each step (best ISA)."""
    n = nnkernels.get_num_threads()
    nnkernels.set_num_threads(2)
    try:
        check_sequence(kind, rng, np.float32, 7, 31, 20, 45, True, True, factor=16)
        check_sequence(kind, rng, np.float64, 3, 17, 8, 70, True, True)
    finally:
        nnkernels.set_num_threads(n)


@pytest.mark.parametrize("kind", KINDS)
def test_thread_count_agrees(rng, kind):
    T, B, I, H = 5, 24, 10, 40
    _, w, b = make_module(kind, I, H, True, np.float64)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    n = nnkernels.get_num_threads()
    res = []
    try:
        for nt in (1, 2):
            nnkernels.set_num_threads(nt)
            res.append(run_ours(kind, x, h0, h0, w, b, x[..., :1] * np.ones(H), h0, h0, True))
    finally:
        nnkernels.set_num_threads(n)
    assert_close(res[0][0], res[1][0], np.float64)
    for a, c in zip(res[0][3], res[1][3]):
        assert_close(a, c, np.float64)


# ---------------------------------------------------------------------------------------
# Edge cases: T = 0, unbatched, strided and torch inputs


@pytest.mark.parametrize("kind", KINDS)
def test_empty_sequence(rng, kind):
    B, I, H = 3, 4, 5
    _, w, b = make_module(kind, I, H, True, np.float64)
    x = np.zeros((0, B, I))
    h0 = rng.standard_normal((B, H))
    c0 = rng.standard_normal((B, H))
    out, h_n, c_n, grads = run_ours(kind, x, h0, c0, w, b, np.zeros((0, B, H)), h0, c0, True)
    assert out.shape == (0, B, H)
    np.testing.assert_array_equal(h_n, h0)
    if kind == "lstm":
        np.testing.assert_array_equal(c_n, c0)
    assert grads[0].shape == (0, B, I)
    np.testing.assert_array_equal(grads[1], h0)  # grad_h0 = grad_h_n
    for g in grads[-4:]:
        assert not g.any()


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched(rng, kind):
    T, I, H = 4, 6, 11
    dtype = np.float64
    m, w, b = make_module(kind, I, H, True, dtype)
    mc, wc, bc = make_module(kind, I, H, True, dtype, cell=True)
    x = rng.standard_normal((T, I))
    h0 = rng.standard_normal(H)
    with torch.no_grad():
        if kind == "lstm":
            c0 = rng.standard_normal(H)
            ref_o, (ref_h, ref_c) = m(torch.from_numpy(x), (torch.from_numpy(h0[None]), torch.from_numpy(c0[None])))
            out, h_n, c_n = ops.lstm(x, h0, c0, *w, *b)
            assert_close(c_n, ref_c[0].numpy(), dtype)
            rh, rc = mc(torch.from_numpy(x[0]), (torch.from_numpy(h0), torch.from_numpy(c0)))
            h1, c1 = ops.lstm_cell(x[0], h0, c0, *wc, *bc)
            assert h1.shape == (H,)
            assert_close(h1, rh.numpy(), dtype)
            assert_close(c1, rc.numpy(), dtype)
        else:
            ref_o, ref_h = m(torch.from_numpy(x), torch.from_numpy(h0[None]))
            if kind == "gru":
                out, h_n = ops.gru(x, h0, *w, *b)
                h1 = ops.gru_cell(x[0], h0, *wc, *bc)
            else:
                out, h_n = ops.rnn(x, h0, *w, *b, nonlinearity=kind)
                h1 = ops.rnn_cell(x[0], h0, *wc, *bc, nonlinearity=kind)
            assert h1.shape == (H,)
            assert_close(h1, mc(torch.from_numpy(x[0]), torch.from_numpy(h0)).numpy(), dtype)
    assert out.shape == (T, H) and h_n.shape == (H,)
    assert_close(out, ref_o.numpy(), dtype)
    assert_close(h_n, ref_h[0].numpy(), dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_strided_and_torch_inputs(rng, kind):
    T, B, I, H = 3, 4, 7, 9
    dtype = np.float64
    m, w, b = make_module(kind, I, H, True, dtype)
    x = rng.standard_normal((B, T, 2 * I)).transpose(1, 0, 2)[:, :, ::2]  # non-contiguous
    h0 = np.asfortranarray(rng.standard_normal((B, H)))
    w_f = [np.asfortranarray(a) for a in w]
    b_s = [np.repeat(a, 2)[::2] for a in b]
    with torch.no_grad():
        if kind == "lstm":
            ref = m(torch.from_numpy(np.ascontiguousarray(x)), (torch.from_numpy(h0[None]),) * 2)[0]
            ours = ops.lstm(torch.from_numpy(x.copy()), h0, h0, *w_f, *b_s)[0]
        elif kind == "gru":
            ref = m(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(h0[None]))[0]
            ours = ops.gru(x, torch.from_numpy(h0), *w_f, *b_s)[0]
        else:
            ref = m(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(h0[None]))[0]
            ours = ops.rnn(x, h0, *[torch.from_numpy(a) for a in w_f], *b_s, nonlinearity=kind)[0]
    assert_close(ours, ref.numpy(), dtype)


# ---------------------------------------------------------------------------------------
# Errors


def test_errors(rng):
    T, B, I, H = 2, 3, 4, 5
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    w_ih, w_hh = rng.standard_normal((H, I)), rng.standard_normal((H, H))
    w4_ih, w4_hh = rng.standard_normal((4 * H, I)), rng.standard_normal((4 * H, H))
    w3_ih, w3_hh = rng.standard_normal((3 * H, I)), rng.standard_normal((3 * H, H))
    with pytest.raises(ValueError, match="nonlinearity"):
        ops.rnn(x, h0, w_ih, w_hh, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity"):
        ops.rnn_cell(x[0], h0, w_ih, w_hh, nonlinearity=None)
    with pytest.raises(ValueError, match=r"w_ih.*\(5, 4\)"):
        ops.rnn(x, h0, rng.standard_normal((H, I + 1)), w_hh)
    with pytest.raises(ValueError, match=r"w_hh.*\(4\*H, H\)"):
        ops.lstm(x, h0, h0, w4_ih, w3_hh)  # 3H rows where LSTM needs 4H
    with pytest.raises(ValueError, match=r"w_hh.*\(3\*H, H\)"):
        ops.gru(x, h0, w3_ih, w4_hh)
    with pytest.raises(ValueError, match="w_ih"):
        ops.gru(x, h0, w4_ih, w3_hh)
    with pytest.raises(ValueError, match=r"h0 \(3, 6\)"):
        ops.rnn(x, rng.standard_normal((B, H + 1)), w_ih, w_hh)
    with pytest.raises(ValueError, match=r"c0 \(2, 5\)"):
        ops.lstm(x, h0, rng.standard_normal((B - 1, H)), w4_ih, w4_hh)
    with pytest.raises(ValueError, match=r"\bc \(2, 5\)"):
        ops.lstm_cell(x[0], h0, rng.standard_normal((B - 1, H)), w4_ih, w4_hh)
    with pytest.raises(ValueError, match="b_hh"):
        ops.rnn(x, h0, w_ih, w_hh, np.zeros(H), np.zeros(H + 1))
    with pytest.raises(ValueError, match="x"):
        ops.rnn(x[None], h0, w_ih, w_hh)
    with pytest.raises(TypeError, match="w_hh"):
        ops.rnn(x, h0, w_ih, w_hh.astype(np.float32))
    with pytest.raises(TypeError, match="h0"):
        ops.rnn(x, h0.astype(np.float32), w_ih, w_hh)
    with pytest.raises(TypeError, match="x"):
        ops.rnn(x.astype(np.int64), h0, w_ih, w_hh)
    with pytest.raises(ValueError, match="cache"):
        ops.lstm_backward(None, None, None, x, h0, h0, w4_ih, w4_hh, np.zeros((T, B, H)), None)
    out, _ = ops.rnn(x, h0, w_ih, w_hh)
    with pytest.raises(ValueError, match="grad_output"):
        ops.rnn_backward(out[:1], None, x, h0, w_ih, w_hh, out)
    with pytest.raises(ValueError, match="output"):
        ops.rnn_backward(None, None, x, h0, w_ih, w_hh, out[:1])


@pytest.mark.parametrize("kind", KINDS)
def test_one_bias_and_strided_backward(rng, kind):
    """b_ih alone (b_hh None) equals b_hh = 0; backward takes torch tensors and strided
    gradients."""
    T, B, I, H = 3, 2, 5, 6
    dtype = np.float64
    _, w, b = make_module(kind, I, H, True, dtype)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    go = rng.standard_normal((B, T, 2 * H)).transpose(1, 0, 2)[:, :, 1::2]
    zero = np.zeros_like(b[1])
    a = run_ours(kind, x, h0, h0, w, [b[0], None], go, h0, h0, True)
    r = run_ours(kind, x, h0, h0, w, [b[0], zero], np.ascontiguousarray(go), h0, h0, True)
    assert_close(a[0], r[0], dtype)
    tw = [torch.from_numpy(v) for v in w]
    c = run_ours(kind, torch.from_numpy(x), torch.from_numpy(h0), torch.from_numpy(h0), tw,
                 [torch.from_numpy(b[0]), torch.from_numpy(zero)], torch.from_numpy(go), h0, h0, True)
    for ga, gr, gc in zip(a[3], r[3], c[3]):
        assert_close(ga, gr, dtype)
        assert_close(gc, gr, dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T,B,I,H", [(3, 0, 4, 5), (3, 2, 4, 0)])
def test_zero_sizes(rng, kind, T, B, I, H):
    G = GATES[kind]
    w = [rng.standard_normal((G * H, I)), rng.standard_normal((G * H, H))]
    b = [rng.standard_normal(G * H), rng.standard_normal(G * H)]
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    out, h_n, c_n, grads = run_ours(kind, x, h0, h0, w, b, np.ones((T, B, H)), h0, h0, True)
    assert out.shape == (T, B, H) and h_n.shape == (B, H)
    assert [g.shape for g in grads[-4:]] == [(G * H, I), (G * H, H), (G * H,), (G * H,)]
    assert grads[0].shape == (T, B, I) and not grads[0].any()
    for g in grads[-4:]:
        assert not g.any()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T,H", [(1, 250), (3, 250), (3, 820)])
def test_thread_split_bitwise(rng, kind, T, H):
    """Steps large enough for two threads (best ISA): results are bitwise equal to one
    thread's, and match torch. T = 1 is a cell (hidden units split per step); T = 3 with
    H = 250 splits the batch rows (9 + 10, no barrier per step: at most 12 MFLOP per thread
    and step), with H = 820 the hidden units (RNN step 2 B H H = 25.5 MFLOP)."""
    B, I = 19, 23  # H = 250: RNN step 2 B H H = 2.4 MFLOP: two parts of >= 1 MFLOP
    _, w, b = make_module(kind, I, H, True, np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    go = rng.standard_normal((T, B, H)).astype(np.float32)
    n = nnkernels.get_num_threads()
    res = []
    try:
        for nt in (1, 2):
            nnkernels.set_num_threads(nt)
            res.append(run_ours(kind, x, h0, h0, w, b, go, h0, h0, True))
    finally:
        nnkernels.set_num_threads(n)
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])
    for a, c in zip(res[0][3], res[1][3]):
        np.testing.assert_array_equal(a, c)
    check_sequence(kind, rng, np.float32, T, B, I, H, True, True, factor=16)
