"""MaxPool2d and AvgPool2d (``nn.MaxPool2d`` / ``nn.AvgPool2d``), NCHW."""

import numpy as np

from .. import ops
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d"]


class MaxPool2d(Module):
    """``nn.MaxPool2d(kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
    ceil_mode=False)``. Keeps the argmax indices for backward.
    With ``return_indices``, forward returns ``(y, indices)`` and ``backward(grad_y,
    grad_indices=None)`` ignores the second gradient."""

    _cuda_ok = True

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)
        self._ctx = None

    def forward(self, x):
        try:
            y, idx = ops.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                    self.ceil_mode, return_indices=True)
        except (ValueError, TypeError) as e:
            raise self._input_error(e, x) from e
        self._keep((idx, np.shape(x)))
        return (y, idx) if self.return_indices else y

    def backward(self, grad, grad_indices=None):
        idx, shape = self._saved()
        return ops.max_pool2d_backward(grad, idx, shape)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """``nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None)`` (divisor_override is not supported)."""

    _cuda_ok = True

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        if divisor_override is not None:
            raise NotImplementedError("AvgPool2d: divisor_override is not supported")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = None
        self._ctx = None

    def forward(self, x):
        try:
            y = ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                               self.count_include_pad)
        except (ValueError, TypeError) as e:
            raise self._input_error(e, x) from e
        self._keep(np.shape(x))
        return y

    def backward(self, grad):
        return ops.avg_pool2d_backward(grad, self._saved(), self.kernel_size, self.stride, self.padding,
                                       self.ceil_mode, self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
