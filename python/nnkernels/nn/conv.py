"""Conv2d and ConvTranspose2d (``nn.Conv2d`` / ``nn.ConvTranspose2d``), NCHW."""

import math

import numpy as np

from .. import ops
from .module import Module, Parameter, _check_dtype, _parse_device, _uniform

__all__ = ["Conv2d", "ConvTranspose2d"]


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {v!r}")
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _conv_repr(m, extra_output_padding=False):
    s = f"{m.in_channels}, {m.out_channels}, kernel_size={m.kernel_size}, stride={m.stride}"
    if m.padding != (0, 0):
        s += f", padding={m.padding!r}"
    if m.dilation != (1, 1):
        s += f", dilation={m.dilation}"
    if extra_output_padding and m.output_padding != (0, 0):
        s += f", output_padding={m.output_padding}"
    if m.groups != 1:
        s += f", groups={m.groups}"
    if m.bias is None:
        s += ", bias=False"
    return s


class _ConvBase(Module):
    _cuda_ok = True

    def _setup(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
               padding_mode, device):
        _parse_device(device)
        if padding_mode != "zeros":
            raise NotImplementedError(f"{type(self).__name__}: padding_mode={padding_mode!r} is not "
                                      "supported (only 'zeros')")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.groups = int(groups)
        if self.groups <= 0:
            raise ValueError("groups must be a positive integer")
        if self.in_channels % self.groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if self.out_channels % self.groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        self.padding_mode = padding_mode
        self._ctx = None


class Conv2d(_ConvBase):
    """``nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
    groups=1, bias=True, padding_mode='zeros', dtype=float32)``.

    weight (out, in/groups, kh, kw), bias (out,), both U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
    fan_in = in/groups * kh * kw (torch's default). padding: int, pair, "same" or "valid".
    x: (N, C, H, W) or (C, H, W).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        dt = _check_dtype(dtype)
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                    padding_mode, device)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of ('valid', 'same')")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding")
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        self.weight = Parameter(_uniform((self.out_channels, self.in_channels // self.groups, kh, kw), bound, dt))
        self.bias = Parameter(_uniform((self.out_channels,), bound, dt)) if bias else None
        self._init_device(device)

    def forward(self, x):
        try:
            y = ops.conv2d(x, self.weight.data, None if self.bias is None else self.bias.data,
                           self.stride, self.padding, self.dilation, self.groups)
        except (ValueError, TypeError) as e:
            raise self._input_error(e, x) from e
        self._keep(x)
        return y

    def backward(self, grad):
        x = self._saved()
        gx, gw, gb = ops.conv2d_backward(grad, x, self.weight.data, self.stride, self.padding,
                                         self.dilation, self.groups)
        self.weight._accumulate(gw)
        if self.bias is not None:
            self.bias._accumulate(gb)
        return gx

    def extra_repr(self):
        return _conv_repr(self)


class ConvTranspose2d(_ConvBase):
    """``nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    output_padding=0, groups=1, bias=True, dilation=1, padding_mode='zeros', dtype=float32)``.

    weight (in, out/groups, kh, kw), bias (out,); torch's default initialisation (fan_in
    = out/groups * kh * kw, as torch computes it from the weight's shape).
    ``forward(x, output_size=None)``: output_size picks output_padding as torch does.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        dt = _check_dtype(dtype)
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                    padding_mode, device)
        if isinstance(padding, str):
            raise ValueError("ConvTranspose2d: padding must be an int or a pair")
        self.padding = _pair(padding, "padding")
        self.output_padding = _pair(output_padding, "output_padding")
        kh, kw = self.kernel_size
        fan_in = self.out_channels // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        self.weight = Parameter(_uniform((self.in_channels, self.out_channels // self.groups, kh, kw), bound, dt))
        self.bias = Parameter(_uniform((self.out_channels,), bound, dt)) if bias else None
        self._init_device(device)

    def _output_padding(self, x, output_size):
        if output_size is None:
            return self.output_padding
        size = tuple(int(s) for s in output_size)[-2:]
        if len(size) != 2:
            raise ValueError(f"ConvTranspose2d: output_size must have 2 or 4 elements, got {output_size!r}")
        shape = np.shape(x)
        out = []
        for d in range(2):
            n_in = shape[len(shape) - 2 + d]
            lo = ((n_in - 1) * self.stride[d] - 2 * self.padding[d]
                  + self.dilation[d] * (self.kernel_size[d] - 1) + 1)
            hi = lo + self.stride[d] - 1
            if not lo <= size[d] <= hi:
                raise ValueError(f"requested an output size of {size}, but valid sizes range from "
                                 f"{lo} to {hi} (for an input of {shape[-2:]})")
            out.append(size[d] - lo)
        return tuple(out)

    def forward(self, x, output_size=None):
        op = self._output_padding(x, output_size)
        try:
            y = ops.conv_transpose2d(x, self.weight.data, None if self.bias is None else self.bias.data,
                                     self.stride, self.padding, op, self.groups, self.dilation)
        except (ValueError, TypeError) as e:
            raise self._input_error(e, x) from e
        self._keep((x, op))
        return y

    def backward(self, grad):
        x, op = self._saved()
        gx, gw, gb = ops.conv_transpose2d_backward(grad, x, self.weight.data, self.stride, self.padding,
                                                   op, self.groups, self.dilation)
        self.weight._accumulate(gw)
        if self.bias is not None:
            self.bias._accumulate(gb)
        return gx

    def extra_repr(self):
        return _conv_repr(self, extra_output_padding=True)
