"""The functional API of nnkernels (the contract is API.md; semantics follow torch).

Every op takes numpy arrays or anything ``numpy.asarray`` takes without copying (torch CPU
tensors, buffers), float32 or float64, any strides. Results are new C-contiguous arrays
unless ``out=`` is given. Dimension letters: M/N/K for matrix products, N batch,
C classes/channels.
"""

import operator

from . import _C

__all__ = [
    "gemm", "matmul", "linear", "linear_backward",
    "sgd_step_", "adam_step_",
    "mse_loss", "mse_loss_backward", "cross_entropy", "cross_entropy_backward",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward",
    "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax",
    "relu_backward", "leaky_relu_backward", "sigmoid_backward", "tanh_backward", "gelu_backward",
    "softmax_backward", "log_softmax_backward",
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "scaled_dot_product_attention", "scaled_dot_product_attention_backward",
    "layer_norm", "layer_norm_backward", "embedding", "embedding_backward", "dropout",
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
    return _C.gemm(a, b, c, trans_a, trans_b, alpha, beta, out)


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

# Elementwise ops take x of any shape and return the same shape; backwards take the
# upstream gradient `grad` and the array torch's autograd saves (x, or the forward's output
# y), both of one shape and dtype.


def relu(x):
    """``F.relu``: ``max(0, x)``, NaN propagates. x: any shape."""
    return _C.relu(x)


def leaky_relu(x, negative_slope=0.01):
    """``F.leaky_relu``: ``x if x > 0 else negative_slope * x``. x: any shape."""
    return _C.leaky_relu(x, float(negative_slope))


def sigmoid(x):
    """``torch.sigmoid``: ``1 / (1 + exp(-x))``. x: any shape."""
    return _C.sigmoid(x)


def tanh(x):
    """``torch.tanh``. x: any shape."""
    return _C.tanh(x)


def gelu(x, approximate="none"):
    """``F.gelu``: ``x/2 (1 + erf(x / sqrt 2))``; ``approximate="tanh"``:
    ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``. x: any shape."""
    return _C.gelu(x, approximate)


def softmax(x, axis=-1):
    """``F.softmax`` along ``axis`` (negative counts from the end). x: any shape."""
    return _C.softmax(x, _int(axis, "axis"))


def log_softmax(x, axis=-1):
    """``F.log_softmax`` along ``axis``: ``(x - max) - log(sum(exp(x - max)))``."""
    return _C.log_softmax(x, _int(axis, "axis"))


def relu_backward(grad, x):
    """Gradient of ``relu`` at x: ``grad if x > 0 else 0``. grad, x: same shape."""
    return _C.relu_backward(grad, x)


def leaky_relu_backward(grad, x, negative_slope=0.01):
    """Gradient of ``leaky_relu`` at x: ``grad if x > 0 else negative_slope * grad``."""
    return _C.leaky_relu_backward(grad, x, float(negative_slope))


def sigmoid_backward(grad, y):
    """Gradient of ``sigmoid`` from its output y: ``grad * (1 - y) * y``."""
    return _C.sigmoid_backward(grad, y)


def tanh_backward(grad, y):
    """Gradient of ``tanh`` from its output y: ``grad * (1 - y^2)``."""
    return _C.tanh_backward(grad, y)


def gelu_backward(grad, x, approximate="none"):
    """Gradient of ``gelu`` at x (``approximate`` as in ``gelu``)."""
    return _C.gelu_backward(grad, x, approximate)


def softmax_backward(grad, y, axis=-1):
    """Gradient of ``softmax`` from its output y: ``y * (grad - sum(grad * y, axis))``."""
    return _C.softmax_backward(grad, y, _int(axis, "axis"))


def log_softmax_backward(grad, y, axis=-1):
    """Gradient of ``log_softmax`` from its output y: ``grad - exp(y) * sum(grad, axis)``."""
    return _C.log_softmax_backward(grad, y, _int(axis, "axis"))


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def mse_loss(input, target, reduction="mean"):
    """``F.mse_loss``: ``(input - target)**2``, reduced.

    input, target: the same shape (any), one float dtype. reduction: "mean" or "sum" (a
    Python float; the mean of an empty input is NaN) or "none" (an array of input's shape).
    """
    return _C.mse_loss(input, target, reduction)


def mse_loss_backward(input, target, reduction="mean", grad_out=None):
    """Gradient of ``mse_loss`` with respect to ``input``, times ``grad_out``.

    grad_out: a scalar for "mean"/"sum", an array of input's shape for "none"; None means 1.
    Returns an array of input's shape: ``2 * (input - target) * grad_out`` (``/ numel`` for
    "mean").
    """
    return _C.mse_loss_backward(input, target, reduction, grad_out)


def cross_entropy(logits, target, reduction="mean", ignore_index=-100):
    """``F.cross_entropy`` with class-index targets: ``logsumexp(logits[n]) - logits[n, t_n]``.

    logits: (N, C) float, or (C,) unbatched; target: (N,) int32/int64 class indices in
    [0, C) (``()`` for unbatched), or equal to ``ignore_index`` (any integer, torch's default
    -100): such a target gives loss 0, a zero gradient row, and is left out of the mean
    (a mean over no kept target is NaN, as torch). Any other target is an IndexError.
    reduction: "mean" (over the kept targets), "sum" (Python floats) or "none" ((N,) or ()).
    """
    return _C.cross_entropy(logits, target, reduction, ignore_index)


def cross_entropy_backward(logits, target, reduction="mean", grad_out=None, ignore_index=-100):
    """Gradient of ``cross_entropy`` with respect to ``logits``, times ``grad_out``.

    grad_out: a scalar for "mean"/"sum", an (N,) array (``()`` unbatched) for "none"; None
    means 1. Returns logits' shape: ``(softmax(logits) - onehot(target)) * grad_out``
    (``/ count`` of the kept targets for "mean"); rows whose target is ``ignore_index``
    are zero.
    """
    return _C.cross_entropy_backward(logits, target, reduction, grad_out, ignore_index)


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """``F.binary_cross_entropy_with_logits``:
    ``max(x, 0) - x * t + log1p(exp(-|x|))`` with x = logits, t = target.

    logits, target: the same shape (any), one float dtype. reduction as ``mse_loss``.
    """
    return _C.binary_cross_entropy_with_logits(logits, target, reduction)


def binary_cross_entropy_with_logits_backward(logits, target, reduction="mean", grad_out=None):
    """Gradient of ``binary_cross_entropy_with_logits`` with respect to ``logits``, times
    ``grad_out``: ``(sigmoid(logits) - target) * grad_out`` (``/ numel`` for "mean").

    grad_out: a scalar for "mean"/"sum", an array of logits' shape for "none"; None means 1.
    """
    return _C.binary_cross_entropy_with_logits_backward(logits, target, reduction, grad_out)
# ---------------------------------------------------------------------------------------
# Convolution and pooling
# ---------------------------------------------------------------------------------------


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, out=None):
    """``F.conv2d`` (NCHW).

    x: (N, C, H, W) or unbatched (C, H, W); weight: (Cout, C/groups, kh, kw); bias: (Cout,)
    or None; stride, dilation: int or pair; padding: int, pair, "same" (stride 1 only;
    odd totals pad one more at the bottom/right, as torch) or "valid".
    Returns (N, Cout, Ho, Wo) with Ho = (H + 2*ph - dh*(kh-1) - 1) // sh + 1.
    im2col is folded into the GEMM's packing: the column matrix is never built.
    3x3 stride-1 ungrouped kernels with >= 16 channels on both sides (outputs >= 2 x 2) run
    as Winograd F(2x2, 3x3), unless NNKERNELS_WINOGRAD=0 (README, run-time settings).
    """
    return _C.conv2d(x, weight, bias, stride, padding, dilation, _int(groups, "groups"), out)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of ``F.conv2d``: returns ``(grad_x, grad_weight, grad_bias)``.

    grad_out: (N, Cout, Ho, Wo) (unbatched if x is); shapes of the results: x's, weight's,
    (Cout,). Same padding forms as :func:`conv2d`.
    """
    return _C.conv2d_backward(grad_out, x, weight, stride, padding, dilation, _int(groups, "groups"))


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``F.conv_transpose2d``: x (N, Cin, H, W) or (Cin, H, W); weight (Cin, Cout/groups, kh, kw);
    bias (Cout,) or None. Returns (N, Cout, Ho, Wo),
    Ho = (H - 1)*sh - 2*ph + dh*(kh - 1) + output_padding_h + 1 (backward-data of conv2d)."""
    return _C.conv_transpose2d(x, weight, bias, stride, padding, output_padding, _int(groups, "groups"), dilation)


def conv_transpose2d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1):
    """Gradients of ``F.conv_transpose2d``: returns ``(grad_x, grad_weight, grad_bias)``."""
    return _C.conv_transpose2d_backward(grad_out, x, weight, stride, padding, output_padding, _int(groups, "groups"),
                                        dilation)


def im2col(x, kernel_size, dilation=1, padding=0, stride=1):
    """``F.unfold``: x (N, C, H, W) or (C, H, W) -> (N, C*kh*kw, L) (or (C*kh*kw, L)),
    L = Ho*Wo sliding blocks, rows ordered (c, i, j)."""
    return _C.im2col(x, kernel_size, dilation, padding, stride)


def col2im(cols, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """``F.fold``: cols (N, C*kh*kw, L) or (C*kh*kw, L) -> (N, C, H, W) (or (C, H, W)),
    overlapping blocks summed; output_size = (H, W)."""
    return _C.col2im(cols, output_size, kernel_size, dilation, padding, stride)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, return_indices=False):
    """``F.max_pool2d``: x (N, C, H, W) or (C, H, W) -> (N, C, Ho, Wo); stride defaults to
    kernel_size; a window holding a NaN gives NaN. With ``return_indices``, also the int64
    indices of the maxima, flat within each H*W plane (as torch)."""
    return _C.max_pool2d(x, kernel_size, stride, padding, dilation, bool(ceil_mode), bool(return_indices))


def max_pool2d_backward(grad_out, indices, input_shape):
    """Gradient of ``F.max_pool2d`` w.r.t. x: grad_out scattered (summed) to ``indices``;
    returns an array of ``input_shape``."""
    return _C.max_pool2d_backward(grad_out, indices, tuple(input_shape))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """``F.avg_pool2d``: x (N, C, H, W) or (C, H, W) -> (N, C, Ho, Wo); divisors as torch
    (count_include_pad counts padding, but never the part of a ceil_mode window past it)."""
    return _C.avg_pool2d(x, kernel_size, stride, padding, bool(ceil_mode), bool(count_include_pad))


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    """Gradient of ``F.avg_pool2d`` w.r.t. x; returns an array of ``input_shape``."""
    return _C.avg_pool2d_backward(grad_out, tuple(input_shape), kernel_size, stride, padding, bool(ceil_mode),
                                  bool(count_include_pad))

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
    """The rank of a host input for the unbatched forms below; CUDA arrays give -1: the
    CUDA binding reads unbatched inputs itself (and shapes its results as this path does)."""
    import numpy as np

    if _C._cuda_is_device(a):
        return -1
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


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, scale=None,
                                 enable_gqa=False, *, return_lse=False):
    """``F.scaled_dot_product_attention`` (no dropout), FlashAttention style: the L x S
    score matrix is never stored.

    q: (..., L, E), k: (..., S, E), v: (..., S, Ev); the batch dims broadcast (k and v must
    share theirs). enable_gqa: the head dim (-3) of k and v may divide q's (query head h
    uses key/value head h // (Hq // Hkv); K and V are indexed, never copied).
    attn_mask: bool (True takes part) or float of q's dtype (added to the scores),
    broadcastable to (..., L, S); not with ``is_causal``. is_causal: query i sees keys
    j <= i (top-left aligned, as torch). scale: default 1 / sqrt(E).
    Returns out (..., L, Ev), or (out, lse) with lse (..., L) the log-sum-exp of the scaled,
    masked scores. A row whose keys are all masked out gives 0 and lse -inf.
    """
    return _C.scaled_dot_product_attention(q, k, v, attn_mask, bool(is_causal),
                                           None if scale is None else float(scale),
                                           bool(enable_gqa), bool(return_lse))


def scaled_dot_product_attention_backward(grad_out, q, k, v, out, lse, attn_mask=None,
                                          is_causal=False, scale=None, enable_gqa=False):
    """Gradients of ``scaled_dot_product_attention`` -> (dq, dk, dv), shaped as q, k, v.

    out, lse: the forward's results (``return_lse=True``); grad_out: out's shape. P is
    recomputed from lse (FlashAttention-2): no L x S buffer; deterministic.
    """
    return _C.scaled_dot_product_attention_backward(
        grad_out, q, k, v, out, lse, attn_mask, bool(is_causal),
        None if scale is None else float(scale), bool(enable_gqa))


def _int(value, name):
    """An integer argument (any type with __index__); a float is a TypeError naming it."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None


def _norm_shape(normalized_shape):
    # Integers only (as torch): a float or an array of floats here is a misplaced argument,
    # not a shape to truncate.
    try:
        return [operator.index(normalized_shape)]
    except TypeError:
        pass
    try:
        return [operator.index(s) for s in normalized_shape]
    except TypeError:
        raise TypeError("normalized_shape must be an int or a sequence of ints, got "
                        f"{type(normalized_shape).__name__}") from None


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, return_stats=False):
    """``F.layer_norm``: normalise over the trailing dims ``normalized_shape`` (D values):
    ``y = (x - mean) * rstd * weight + bias``, ``rstd = 1 / sqrt(var + eps)`` (biased var).

    x: (..., *normalized_shape); weight, bias: normalized_shape or None. Returns y (x's
    shape), or (y, mean, rstd) with mean and rstd of shape x.shape[:-len(normalized_shape)].
    """
    return _C.layer_norm(x, _norm_shape(normalized_shape), weight, bias, float(eps),
                         bool(return_stats))


def layer_norm_backward(grad_out, x, normalized_shape, mean, rstd, weight=None, bias=None):
    """Gradients of ``layer_norm`` -> (dx, dweight or None, dbias or None).

    mean, rstd: the forward's statistics (``return_stats=True``). dweight is computed when
    weight is given, dbias when bias is given (bias's values are not read).
    """
    return _C.layer_norm_backward(grad_out, x, _norm_shape(normalized_shape), mean, rstd,
                                  weight, bias)


def embedding(indices, weight):
    """``F.embedding``: ``weight[indices]``.

    indices: int32/int64, any shape, values in [0, V) (IndexError otherwise, before anything
    is written); weight: (V, D). Returns indices.shape + (D,).
    """
    return _C.embedding(indices, weight)


def embedding_backward(grad_out, indices, num_embeddings):
    """Gradient of ``embedding`` with respect to weight: (num_embeddings, D), the rows of
    grad_out (indices.shape + (D,)) summed per index (duplicates accumulate, in order)."""
    return _C.embedding_backward(grad_out, indices, _int(num_embeddings, "num_embeddings"))


def dropout(x, p=0.5, *, seed=None):
    """``F.dropout`` in training mode -> (y, mask): ``y = x * mask / (1 - p)``, mask bool.

    Each element is kept with probability 1 - p, decided by Philox 4x32-10 keyed by ``seed``
    with the element's flat index as counter: the same seed gives the same mask whatever the
    thread count. seed: an int (taken mod 2**64), or None for a fresh one (os.urandom).
    p outside [0, 1]: ValueError.
    """
    if seed is None:
        import os
        seed = int.from_bytes(os.urandom(8), "little")
    return _C.dropout(x, float(p), _int(seed, "seed") % (1 << 64))


# ---------------------------------------------------------------------------------------
# Optimizer steps (in place)
# ---------------------------------------------------------------------------------------


def sgd_step_(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0,
              weight_decay=0.0, nesterov=False, step=1):
    """One ``torch.optim.SGD`` step, in place on ``param`` (and ``momentum_buffer``).

    param, momentum_buffer: writeable C-contiguous arrays of one shape and dtype (updated
    in place); grad: same shape, any strides, never modified. ``step`` is 1-based: at step 1
    the buffer is set to the gradient, as torch does. A buffer is required when
    ``momentum != 0``. Returns ``param``.
    """
    _C.sgd_step_(param, grad, momentum_buffer, float(lr), float(momentum), float(dampening),
                 float(weight_decay), bool(nesterov), _int(step, "step"))
    return param


def adam_step_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
               eps=1e-8, weight_decay=0.0, decoupled=False):
    """One ``torch.optim.Adam`` step (``decoupled=True``: ``AdamW``), in place.

    param, exp_avg, exp_avg_sq: writeable C-contiguous arrays of one shape and dtype;
    grad: same shape, never modified. ``step`` is the 1-based count used for bias
    correction (``step < 1``: ValueError). Returns ``param``.
    """
    _C.adam_step_(param, grad, exp_avg, exp_avg_sq, _int(step, "step"), float(lr), float(beta1),
                  float(beta2), float(eps), float(weight_decay), bool(decoupled))
    return param
