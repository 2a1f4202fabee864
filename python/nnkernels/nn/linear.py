"""Linear (``nn.Linear``) and Identity."""

import math

from .. import ops
from .module import Module, Parameter, _check_dtype, _parse_device, _uniform

__all__ = ["Linear", "Identity"]


class Linear(Module):
    """``nn.Linear(in_features, out_features, bias=True, dtype=float32)``: ``x @ W.T + b``.

    weight (out_features, in_features), bias (out_features,); both U(-1/sqrt(in), 1/sqrt(in))
    as torch's default (kaiming_uniform with a = sqrt(5)). x: (..., in_features).
    """

    _cuda_ok = True

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        _parse_device(device)
        dt = _check_dtype(dtype)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if self.in_features < 0 or self.out_features < 0:
            raise ValueError(f"Linear: feature counts must be >= 0, got {in_features}, {out_features}")
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        self.weight = Parameter(_uniform((self.out_features, self.in_features), bound, dt))
        self.bias = Parameter(_uniform((self.out_features,), bound, dt)) if bias else None
        self._ctx = None
        self._init_device(device)

    def forward(self, x):
        try:
            y = ops.linear(x, self.weight.data, None if self.bias is None else self.bias.data)
        except (ValueError, TypeError) as e:
            raise self._input_error(e, x) from e
        self._keep(x)
        return y

    def backward(self, grad):
        x = self._saved()
        gx, gw, gb = ops.linear_backward(grad, x, self.weight.data, bias=self.bias is not None)
        self.weight._accumulate(gw)
        if gb is not None:
            self.bias._accumulate(gb)
        return gx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    """``nn.Identity``: returns its input; backward returns the gradient."""

    _cuda_ok = True

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x

    def backward(self, grad):
        return grad
