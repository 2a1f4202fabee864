"""The functional API of nnkernels (the contract is API.md; semantics follow torch).

Every op takes numpy arrays or anything ``numpy.asarray`` takes without copying (torch CPU
tensors, buffers), float32 or float64, any strides. Results are new C-contiguous arrays
unless ``out=`` is given. Dimension letters: M/N/K for matrix products, N batch,
C classes/channels.
"""

from . import _C

__all__ = [
    "gemm", "matmul", "linear", "linear_backward",
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
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


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, out=None):
    """``F.conv2d`` (NCHW).

    x: (N, C, H, W) or unbatched (C, H, W); weight: (Cout, C/groups, kh, kw); bias: (Cout,)
    or None; stride, dilation: int or pair; padding: int, pair, "same" (stride 1 only;
    odd totals pad one more at the bottom/right, as torch) or "valid".
    Returns (N, Cout, Ho, Wo) with Ho = (H + 2*ph - dh*(kh-1) - 1) // sh + 1.
    im2col is folded into the GEMM's packing: the column matrix is never built.
    """
    return _C.conv2d(x, weight, bias, stride, padding, dilation, int(groups), out)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of ``F.conv2d``: returns ``(grad_x, grad_weight, grad_bias)``.

    grad_out: (N, Cout, Ho, Wo) (unbatched if x is); shapes of the results: x's, weight's,
    (Cout,). Same padding forms as :func:`conv2d`.
    """
    return _C.conv2d_backward(grad_out, x, weight, stride, padding, dilation, int(groups))


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``F.conv_transpose2d``: x (N, Cin, H, W) or (Cin, H, W); weight (Cin, Cout/groups, kh, kw);
    bias (Cout,) or None. Returns (N, Cout, Ho, Wo),
    Ho = (H - 1)*sh - 2*ph + dh*(kh - 1) + output_padding_h + 1 (backward-data of conv2d)."""
    return _C.conv_transpose2d(x, weight, bias, stride, padding, output_padding, int(groups), dilation)


def conv_transpose2d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1):
    """Gradients of ``F.conv_transpose2d``: returns ``(grad_x, grad_weight, grad_bias)``."""
    return _C.conv_transpose2d_backward(grad_out, x, weight, stride, padding, output_padding, int(groups),
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

# ---------------------------------------------------------------------------------------
# Attention, layer norm, embedding, dropout
# ---------------------------------------------------------------------------------------
