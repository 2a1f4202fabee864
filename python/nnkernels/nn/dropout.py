"""Dropout (``nn.Dropout``): ``ops.dropout`` in training mode, the identity in eval mode."""

import numpy as np

from .. import ops
from . import module as _module
from .module import Module, _is_cuda_array

__all__ = ["Dropout"]


class Dropout(Module):
    """``nn.Dropout(p=0.5)``: in training mode zeroes each element with probability p and
    scales the rest by 1/(1-p); the mask is drawn from ``nn.manual_seed``'s generator.
    ``inplace`` is accepted and ignored."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace
        self._ctx = None

    _cuda_ok = True

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._keep(False)
            return x
        seed = int(_module._generator().integers(0, 2**63 - 1))
        y, mask = ops.dropout(x, self.p, seed=seed)
        self._keep(mask)
        return y

    def backward(self, grad):
        mask = self._saved()
        if mask is False:
            return grad
        if _is_cuda_array(grad):
            from .. import _C
            return _C._cuda_dropout_backward(grad, mask, self.p)
        grad = np.asarray(grad)
        scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        return np.multiply(grad, mask, dtype=grad.dtype) * grad.dtype.type(scale)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"
