"""The functional API of nnkernels (the contract is API.md; semantics follow torch).

Every op takes numpy arrays or anything ``numpy.asarray`` takes without copying (torch CPU
tensors, buffers), float32 or float64, any strides. Results are new C-contiguous arrays
unless ``out=`` is given. Dimension letters: M/N/K for matrix products, N batch,
C classes/channels.
"""

from . import _C

__all__ = [
    "gemm", "matmul", "linear", "linear_backward",
]

# ---------------------------------------------------------------------------------------
# Matrix products (GEMM engine)
# ---------------------------------------------------------------------------------------


def gemm(a, b, c=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=1.0, out=None):
    """``alpha * op(a) @ op(b) + beta * c`` (``torch.addmm``).

    a: (M, K), or (K, M) with ``trans_a``; b: (K, N), or (N, K) with ``trans_b``;
    c: broadcastable to (M, N), or None. With ``beta == 0`` or ``c`` None, c is not read.
    Returns (M, N).
    """
    return _C.gemm(a, b, c, bool(trans_a), bool(trans_b), float(alpha), float(beta), out)


def matmul(a, b, *, out=None):
    """``torch.matmul``: (..., M, K) @ (..., K, N) -> (..., M, N), batch dims broadcast;
    1-D operands as torch (a vector is a row on the left, a column on the right)."""
    return _C.matmul(a, b, out)


def linear(x, weight, bias=None, *, activation=None, out=None):
    """``F.linear`` with a fused activation: ``act(x @ weight.T + bias)``.

    x: (..., in); weight: (out, in); bias: (out,) or None; activation: None, "relu",
    "gelu", "gelu_tanh", "tanh" or "sigmoid". Returns (..., out), written once.
    """
    return _C.linear(x, weight, bias, activation, out)


def linear_backward(grad_out, x, weight, *, bias=True):
    """Gradients of ``F.linear``: returns ``(grad_x, grad_weight, grad_bias or None)``.

    grad_out: (..., out); x: (..., in); weight: (out, in). grad_bias (out,) when ``bias``.
    """
    return _C.linear_backward(grad_out, x, weight, bool(bias))


# ---------------------------------------------------------------------------------------
# Activations and softmax
# ---------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------
# Convolution and pooling
# ---------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------
# Recurrent networks
# ---------------------------------------------------------------------------------------
# Letters: T steps, B batch, I input size, H hidden size. Weights as torch's modules:
# w_ih (G*H, I), w_hh (G*H, H), b_ih / b_hh (G*H,) with G = 1 (RNN), 4 (LSTM: gates i, f,
# g, o), 3 (GRU: r, z, n). A state given as None is zero. Cells are one fused step; the
# sequence ops run the input projection of all steps as one GEMM, then one GEMM per step
# with W_hh packed once (see csrc/cpu/rnn/rnn.h).

__all__ += [
    "rnn_cell", "rnn", "rnn_backward", "lstm_cell", "lstm", "lstm_backward",
    "gru_cell", "gru", "gru_backward",
]


def _rnn_ndim(a):
    import numpy as np

    return np.ndim(a)


def _add_batch(a, axis):
    """a with a new size-1 batch axis (None stays None)."""
    import numpy as np

    return None if a is None else np.expand_dims(np.asarray(a), axis)


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """``torch.nn.RNNCell``: ``act(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)``, act ``"tanh"``
    or ``"relu"``, one fused step: both products accumulate into one output tile (two
    GEMM calls, the second with beta = 1 and the bias and act in its epilogue), so h' is
    written once.

    x: (B, I) or unbatched (I,); h: (B, H) / (H,) or None (zero). Returns h' (B, H) / (H,).
    """
    if _rnn_ndim(x) == 1:
        return rnn_cell(_add_batch(x, 0), _add_batch(h, 0), w_ih, w_hh, b_ih, b_hh, nonlinearity)[0]
    return _C.rnn_forward("rnn_cell", "rnn", nonlinearity, True, x, h, None, w_ih, w_hh,
                          b_ih, b_hh, False)[0]


def rnn(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One-layer ``torch.nn.RNN`` (``batch_first=False``): returns ``(output, h_n)``.

    x: (T, B, I); h0: (B, H) or None (zero); output (T, B, H), h_n (B, H). T = 0 gives an
    empty output and h_n = h0. Unbatched: x (T, I), h0 (H,) or None: output (T, H), h_n (H,).
    For the backward, keep ``output`` (``rnn_backward`` needs nothing else).
    """
    if _rnn_ndim(x) == 2:
        h_given_2d = h0 is not None and _rnn_ndim(h0) == 2
        out, h_n = rnn(_add_batch(x, 1), h0 if h_given_2d else _add_batch(h0, 0), w_ih, w_hh,
                       b_ih, b_hh, nonlinearity)
        return out[:, 0], (h_n if h_given_2d else h_n[0])
    out, h_n, _, _, _ = _C.rnn_forward("rnn", "rnn", nonlinearity, False, x, h0, None, w_ih,
                                       w_hh, b_ih, b_hh, False)
    return out, h_n


def rnn_backward(grad_output, grad_h_n, x, h0, w_ih, w_hh, output, *, bias=True,
                 nonlinearity="tanh"):
    """Backpropagation through time for :func:`rnn` (batched layout).

    grad_output: (T, B, H) or None (zero); grad_h_n: (B, H) or None (zero); x, h0, w_ih,
    w_hh, nonlinearity: as given to the forward; output: the forward's output (T, B, H)
    (it holds every h_t, all the backward needs). Returns ``(grad_x, grad_h0, grad_w_ih,
    grad_w_hh, grad_b_ih, grad_b_hh)``; the bias gradients are None when ``bias`` is
    False. For :func:`rnn_cell` use T = 1 (``x[None]``, ``output = h'[None]``).
    """
    dx, dh0, _, dwi, dwh, dbi, dbh = _C.rnn_backward(
        "rnn_backward", "rnn", nonlinearity, grad_output, grad_h_n, None, x, h0, None, w_ih,
        w_hh, output, None, None, bool(bias))
    return dx, dh0, dwi, dwh, dbi, dbh


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.nn.LSTMCell``: returns ``(h', c')`` (gates i, f, g, o).

    x: (B, I) or unbatched (I,); h, c: (B, H) / (H,) or None (zero); w_ih (4H, I),
    w_hh (4H, H).
    """
    if _rnn_ndim(x) == 1:
        h1, c1 = lstm_cell(_add_batch(x, 0), _add_batch(h, 0), _add_batch(c, 0), w_ih, w_hh,
                           b_ih, b_hh)
        return h1[0], c1[0]
    r = _C.rnn_forward("lstm_cell", "lstm", None, True, x, h, c, w_ih, w_hh, b_ih, b_hh, False)
    return r[0], r[2]


def lstm(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, return_cache=False):
    """One-layer ``torch.nn.LSTM`` (gates i, f, g, o): returns ``(output, h_n, c_n)``.

    x: (T, B, I); h0, c0: (B, H) or None (zero); w_ih (4H, I), w_hh (4H, H); output
    (T, B, H), h_n and c_n (B, H). Unbatched: x (T, I), h0 / c0 (H,) or None.
    ``return_cache=True`` (batched only) returns ``(output, h_n, c_n, cache)`` with
    cache = ``(gates, cells)``: gates (T, B, 4H) the activated i, f, g, o of every step,
    cells (T, B, H) every c_t; :func:`lstm_backward` needs it.
    """
    if _rnn_ndim(x) == 2 and not return_cache:
        h2 = h0 is not None and _rnn_ndim(h0) == 2
        c2 = c0 is not None and _rnn_ndim(c0) == 2
        out, h_n, c_n = lstm(_add_batch(x, 1), h0 if h2 else _add_batch(h0, 0),
                             c0 if c2 else _add_batch(c0, 0), w_ih, w_hh, b_ih, b_hh)
        return out[:, 0], (h_n if h2 else h_n[0]), (c_n if c2 else c_n[0])
    out, h_n, c_n, gates, cells = _C.rnn_forward("lstm", "lstm", None, False, x, h0, c0, w_ih,
                                                 w_hh, b_ih, b_hh, bool(return_cache))
    if return_cache:
        return out, h_n, c_n, (gates, cells)
    return out, h_n, c_n


def lstm_backward(grad_output, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, output, cache, *,
                  bias=True):
    """Backpropagation through time for :func:`lstm` (batched layout).

    grad_output (T, B, H), grad_h_n, grad_c_n (B, H): each may be None (zero); x, h0, c0,
    w_ih, w_hh: as given to the forward; output and cache: from
    ``lstm(..., return_cache=True)``. Returns ``(grad_x, grad_h0, grad_c0, grad_w_ih,
    grad_w_hh, grad_b_ih, grad_b_hh)`` (bias gradients None when ``bias`` is False).
    """
    if cache is None:
        raise ValueError("lstm_backward: cache is None; call lstm(..., return_cache=True)")
    gates, cells = cache
    return _C.rnn_backward("lstm_backward", "lstm", None, grad_output, grad_h_n, grad_c_n, x,
                           h0, c0, w_ih, w_hh, output, gates, cells, bool(bias))


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.nn.GRUCell`` (gates r, z, n; b_hn inside ``r * (...)``): returns h'.

    x: (B, I) or unbatched (I,); h: (B, H) / (H,) or None (zero); w_ih (3H, I), w_hh (3H, H).
    """
    if _rnn_ndim(x) == 1:
        return gru_cell(_add_batch(x, 0), _add_batch(h, 0), w_ih, w_hh, b_ih, b_hh)[0]
    return _C.rnn_forward("gru_cell", "gru", None, True, x, h, None, w_ih, w_hh, b_ih, b_hh,
                          False)[0]


def gru(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, return_cache=False):
    """One-layer ``torch.nn.GRU`` (gates r, z, n): returns ``(output, h_n)``.

    x: (T, B, I); h0: (B, H) or None (zero); w_ih (3H, I), w_hh (3H, H); output (T, B, H),
    h_n (B, H). Unbatched: x (T, I), h0 (H,) or None. ``return_cache=True`` (batched only)
    returns ``(output, h_n, cache)`` with cache = ``(gates, hn)``: gates (T, B, 3H) the
    activated r, z, n of every step, hn (T, B, H) the hidden part of the n gate
    ``h_{t-1} @ W_hn.T + b_hn``; :func:`gru_backward` needs it.
    """
    if _rnn_ndim(x) == 2 and not return_cache:
        h2 = h0 is not None and _rnn_ndim(h0) == 2
        out, h_n = gru(_add_batch(x, 1), h0 if h2 else _add_batch(h0, 0), w_ih, w_hh, b_ih, b_hh)
        return out[:, 0], (h_n if h2 else h_n[0])
    out, h_n, _, gates, hn = _C.rnn_forward("gru", "gru", None, False, x, h0, None, w_ih, w_hh,
                                            b_ih, b_hh, bool(return_cache))
    if return_cache:
        return out, h_n, (gates, hn)
    return out, h_n


def gru_backward(grad_output, grad_h_n, x, h0, w_ih, w_hh, output, cache, *, bias=True):
    """Backpropagation through time for :func:`gru` (batched layout).

    grad_output (T, B, H), grad_h_n (B, H): each may be None (zero); x, h0, w_ih, w_hh: as
    given to the forward; output and cache: from ``gru(..., return_cache=True)``. Returns
    ``(grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)`` (bias gradients
    None when ``bias`` is False).
    """
    if cache is None:
        raise ValueError("gru_backward: cache is None; call gru(..., return_cache=True)")
    gates, hn = cache
    dx, dh0, _, dwi, dwh, dbi, dbh = _C.rnn_backward(
        "gru_backward", "gru", None, grad_output, grad_h_n, None, x, h0, None, w_ih, w_hh,
        output, gates, hn, bool(bias))
    return dx, dh0, dwi, dwh, dbi, dbh

# ---------------------------------------------------------------------------------------
# Attention, layer norm, embedding, dropout
# ---------------------------------------------------------------------------------------
