"""The functional API of nnkernels (the contract is API.md; semantics follow torch).

Every op takes numpy arrays or anything ``numpy.asarray`` takes without copying (torch CPU
tensors, buffers), float32 or float64, any strides. Results are new C-contiguous arrays
unless ``out=`` is given. Dimension letters: M/N/K for matrix products, N batch,
C classes/channels.
"""

from . import _C

__all__ = [
    "gemm", "matmul", "linear", "linear_backward",
    "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax",
    "relu_backward", "leaky_relu_backward", "sigmoid_backward", "tanh_backward", "gelu_backward",
    "softmax_backward", "log_softmax_backward",
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
    return _C.softmax(x, int(axis))


def log_softmax(x, axis=-1):
    """``F.log_softmax`` along ``axis``: ``(x - max) - log(sum(exp(x - max)))``."""
    return _C.log_softmax(x, int(axis))


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
    return _C.softmax_backward(grad, y, int(axis))


def log_softmax_backward(grad, y, axis=-1):
    """Gradient of ``log_softmax`` from its output y: ``grad - exp(y) * sum(grad, axis)``."""
    return _C.log_softmax_backward(grad, y, int(axis))


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------
