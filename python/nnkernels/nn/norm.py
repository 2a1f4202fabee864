"""LayerNorm (``nn.LayerNorm``) over ``ops.layer_norm`` / ``ops.layer_norm_backward``."""

import numpy as np

from .. import ops
from .module import Module, Parameter, _check_dtype

__all__ = ["LayerNorm"]


class LayerNorm(Module):
    """``nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
    dtype=float32)``: weight ones, bias zeros (torch's initialisation)."""

    _cuda_ok = True

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None,
                 dtype=None):
        super().__init__()
        dt = _check_dtype(dtype)
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dt))
            self.bias = Parameter(np.zeros(self.normalized_shape, dt)) if bias else None
        else:
            self.weight = None
            self.bias = None
        self._ctx = None
        self._init_device(device)

    def forward(self, x):
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        try:
            y, mean, rstd = ops.layer_norm(x, self.normalized_shape, w, b, self.eps, return_stats=True)
        except (ValueError, TypeError) as e:
            raise self._input_error(e, x) from e
        self._keep((x, mean, rstd))
        return y

    def backward(self, grad):
        x, mean, rstd = self._saved()
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        gx, gw, gb = ops.layer_norm_backward(grad, x, self.normalized_shape, mean, rstd, w, b)
        if self.weight is not None:
            self.weight._accumulate(gw)
        if self.bias is not None:
            self.bias._accumulate(gb)
        return gx

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
