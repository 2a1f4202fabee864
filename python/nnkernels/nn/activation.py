"""Activation layers and Flatten/Unflatten: each forward and backward is one op call."""

import math
import warnings

import numpy as np

from .. import ops
from .module import Module, _is_cuda_array

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax", "Flatten", "Unflatten"]


class ReLU(Module):
    """``nn.ReLU`` (``inplace`` is accepted and ignored: results are new arrays)."""

    _cuda_ok = True

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace
        self._ctx = None

    def forward(self, x):
        y = ops.relu(x)
        self._keep(x)
        return y

    def backward(self, grad):
        return ops.relu_backward(grad, self._saved())

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    """``nn.LeakyReLU(negative_slope=0.01)``."""

    _cuda_ok = True

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.inplace = inplace
        self._ctx = None

    def forward(self, x):
        y = ops.leaky_relu(x, self.negative_slope)
        self._keep(x)
        return y

    def backward(self, grad):
        return ops.leaky_relu_backward(grad, self._saved(), self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(Module):
    """``nn.Sigmoid`` (backward from the output, as torch)."""

    _cuda_ok = True

    def __init__(self):
        super().__init__()
        self._ctx = None

    def forward(self, x):
        y = ops.sigmoid(x)
        self._keep(y)
        return y

    def backward(self, grad):
        return ops.sigmoid_backward(grad, self._saved())


class Tanh(Module):
    """``nn.Tanh`` (backward from the output, as torch)."""

    _cuda_ok = True

    def __init__(self):
        super().__init__()
        self._ctx = None

    def forward(self, x):
        y = ops.tanh(x)
        self._keep(y)
        return y

    def backward(self, grad):
        return ops.tanh_backward(grad, self._saved())


class GELU(Module):
    """``nn.GELU(approximate='none')``; ``approximate='tanh'`` for the tanh form."""

    _cuda_ok = True

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self._ctx = None

    def forward(self, x):
        y = ops.gelu(x, self.approximate)
        self._keep(x)
        return y

    def backward(self, grad):
        return ops.gelu_backward(grad, self._saved(), self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


def _implicit_dim(ndim, name):
    # torch's legacy rule for dim=None (with its deprecation warning).
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                  "Change the call to include dim=X as an argument.", UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """``nn.Softmax(dim=None)`` (dim=None: torch's legacy implicit choice, with its warning)."""

    _cuda_ok = True

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim
        self._ctx = None

    def forward(self, x):
        dim = self.dim if self.dim is not None else _implicit_dim(np.ndim(x), "softmax")
        y = ops.softmax(x, dim)
        self._keep((y, dim))
        return y

    def backward(self, grad):
        y, dim = self._saved()
        return ops.softmax_backward(grad, y, dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """``nn.LogSoftmax(dim=None)``."""

    _cuda_ok = True

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim
        self._ctx = None

    def forward(self, x):
        dim = self.dim if self.dim is not None else _implicit_dim(np.ndim(x), "log_softmax")
        y = ops.log_softmax(x, dim)
        self._keep((y, dim))
        return y

    def backward(self, grad):
        y, dim = self._saved()
        return ops.log_softmax_backward(grad, y, dim)

    def extra_repr(self):
        return f"dim={self.dim}"


def _as_reshapeable(x):
    """x itself when it is a CUDA array (DeviceArray, torch CUDA tensor, CuPy: each has a
    reshape), else numpy.asarray(x)."""
    return x if _is_cuda_array(x) else np.asarray(x)


class Flatten(Module):
    """``nn.Flatten(start_dim=1, end_dim=-1)``: a reshape (a view when it can be)."""

    _cuda_ok = True

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)
        self._ctx = None

    def forward(self, x):
        x = _as_reshapeable(x)
        shape = tuple(x.shape)
        nd = max(len(shape), 1)
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not (0 <= s < nd and 0 <= e < nd):
            raise IndexError(f"{self!r}: dimension out of range for an input of shape {shape}")
        if s > e:
            raise ValueError(f"{self!r}: start_dim comes after end_dim for an input of shape {shape}")
        y = x.reshape(shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:]) if shape else x.reshape(1)
        self._keep(shape)
        return y

    def backward(self, grad):
        return _as_reshapeable(grad).reshape(self._saved())

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """``nn.Unflatten(dim, unflattened_size)``."""

    _cuda_ok = True

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim = int(dim)
        self.unflattened_size = tuple(int(s) for s in unflattened_size)
        self._ctx = None

    def forward(self, x):
        x = _as_reshapeable(x)
        shape = tuple(x.shape)
        d = self.dim + len(shape) if self.dim < 0 else self.dim
        if not 0 <= d < len(shape):
            raise IndexError(f"{self!r}: dimension out of range for an input of shape {shape}")
        try:
            y = x.reshape(shape[:d] + self.unflattened_size + shape[d + 1:])
        except ValueError as e:
            raise ValueError(f"{self!r}: cannot unflatten an input of shape {shape}: {e}") from e
        self._keep(shape)
        return y

    def backward(self, grad):
        return _as_reshapeable(grad).reshape(self._saved())

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
