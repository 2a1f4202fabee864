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

# ---------------------------------------------------------------------------------------
# Attention, layer norm, embedding, dropout
# ---------------------------------------------------------------------------------------
