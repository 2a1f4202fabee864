"""Losses: ``forward(input, target)`` -> a Python float ("mean"/"sum") or an array ("none");
``backward(grad_out=None)`` -> the gradient with respect to ``input`` (``grad_out`` None
means 1; for "none" it is an array of the loss's shape)."""

import numpy as np

from .. import ops
from .module import Module, _is_cuda_array

__all__ = ["MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction (mean, sum or none)")
    return reduction


class MSELoss(Module):
    """``nn.MSELoss(reduction='mean')``."""

    _cuda_ok = True

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self._ctx = None

    def forward(self, input, target):
        loss = ops.mse_loss(input, target, self.reduction)
        self._keep((input, target))
        return loss

    def backward(self, grad_out=None):
        input, target = self._saved()
        return ops.mse_loss_backward(input, target, self.reduction, grad_out)

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class BCEWithLogitsLoss(Module):
    """``nn.BCEWithLogitsLoss(weight=None, reduction='mean', pos_weight=None)`` (weight and
    pos_weight are not supported)."""

    _cuda_ok = True

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        super().__init__()
        if weight is not None or pos_weight is not None:
            raise NotImplementedError("BCEWithLogitsLoss: weight and pos_weight are not supported")
        if size_average is not None or reduce is not None:
            raise NotImplementedError("BCEWithLogitsLoss: size_average/reduce are deprecated; use reduction")
        self.reduction = _check_reduction(reduction)
        self._ctx = None

    def forward(self, input, target):
        loss = ops.binary_cross_entropy_with_logits(input, target, self.reduction)
        self._keep((input, target))
        return loss

    def backward(self, grad_out=None):
        input, target = self._saved()
        return ops.binary_cross_entropy_with_logits_backward(input, target, self.reduction, grad_out)

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class CrossEntropyLoss(Module):
    """``nn.CrossEntropyLoss(weight=None, ignore_index=-100, reduction='mean',
    label_smoothing=0.0)`` with class-index targets.

    input: (N, C), (C,) or (N, C, d1, ...) (then target (N, d1, ...)); targets equal to
    ``ignore_index`` (any integer) are left out of the loss and the mean, as torch, on the
    host and on CUDA. ``weight`` and ``label_smoothing`` are not supported.
    """

    _cuda_ok = True

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0):
        super().__init__()
        if weight is not None:
            raise NotImplementedError("CrossEntropyLoss: class weights are not supported")
        if label_smoothing != 0.0:
            raise NotImplementedError("CrossEntropyLoss: label_smoothing is not supported")
        if size_average is not None or reduce is not None:
            raise NotImplementedError("CrossEntropyLoss: size_average/reduce are deprecated; use reduction")
        self.reduction = _check_reduction(reduction)
        self.ignore_index = int(ignore_index)
        self._ctx = None

    def _flat(self, x, t):
        """(N, C, d...) logits -> (N*d..., C) (a transposed copy on CUDA) and (N*d...,) targets;
        None when already 2-D or 1-D."""
        shape = tuple(x.shape)
        if len(shape) <= 2:
            return None
        c = shape[1]
        if tuple(t.shape) != (shape[0],) + shape[2:]:
            raise ValueError(f"CrossEntropyLoss: target of shape {tuple(t.shape)} does not match input "
                             f"of shape {shape} (expected {(shape[0],) + shape[2:]})")
        if _is_cuda_array(x):
            nd = len(shape)
            return x.transpose((0,) + tuple(range(2, nd)) + (1,)).reshape(-1, c), t.reshape(-1)
        return np.moveaxis(x, 1, -1).reshape(-1, c), t.reshape(-1)

    def forward(self, input, target):
        cuda = _is_cuda_array(input)
        x = input if cuda else np.asarray(input)
        t = target if cuda or _is_cuda_array(target) else np.asarray(target)
        flat = self._flat(x, t)
        x2, t2 = flat if flat is not None else (x, t)
        loss = ops.cross_entropy(x2, t2, self.reduction, self.ignore_index)
        if self.reduction == "none" and flat is not None:
            loss = loss.reshape(tuple(t.shape))
        self._keep((x, t, flat))
        return loss

    def backward(self, grad_out=None):
        x, t, flat = self._saved()
        x2, t2 = flat if flat is not None else (x, t)
        g = grad_out
        if g is not None and self.reduction == "none" and flat is not None:
            g = (g if _is_cuda_array(g) else np.asarray(g)).reshape(tuple(t2.shape))
        gx = ops.cross_entropy_backward(x2, t2, self.reduction, g, self.ignore_index)
        if flat is not None:
            shape = (x.shape[0],) + tuple(x.shape[2:]) + (x.shape[1],)
            nd = len(shape)
            if _is_cuda_array(gx):
                gx = gx.reshape(shape).transpose((0, nd - 1) + tuple(range(1, nd - 1))).copy()
            else:
                gx = np.ascontiguousarray(np.moveaxis(gx.reshape(shape), -1, 1))
        return gx

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""
