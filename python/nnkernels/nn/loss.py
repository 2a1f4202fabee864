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
    ``ignore_index`` are left out of the loss and the mean, as torch. ``weight`` and
    ``label_smoothing`` are not supported.
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

    @staticmethod
    def _flatten(x, t):
        """(N, C, d...) -> (N*d..., C) logits and (N*d...,) targets; None when already 2-D."""
        if x.ndim <= 2:
            return None
        c = x.shape[1]
        if t.shape != (x.shape[0],) + x.shape[2:]:
            raise ValueError(f"CrossEntropyLoss: target of shape {t.shape} does not match input "
                             f"of shape {x.shape} (expected {(x.shape[0],) + x.shape[2:]})")
        return np.moveaxis(x, 1, -1).reshape(-1, c), t.reshape(-1)

    def _forward_cuda(self, x, t):
        """CUDA inputs: (C,), (N, C) or (N, C, d1, ...) logits (the last as a transposed copy
        (N * d1 * ..., C)) with class-index targets. Targets equal to an ignore_index outside
        [0, C) (the default -100) are not left out here but rejected by the op, as
        out-of-range classes; one inside [0, C) is not supported on CUDA."""
        shape = tuple(x.shape)
        c = shape[1] if len(shape) > 1 else (shape[0] if shape else 0)
        if 0 <= self.ignore_index < c:
            raise NotImplementedError("CrossEntropyLoss: an ignore_index inside [0, C) is not on CUDA yet")
        flat = None
        if len(shape) > 2:
            if tuple(t.shape) != (shape[0],) + shape[2:]:
                raise ValueError(f"CrossEntropyLoss: target of shape {tuple(t.shape)} does not match input "
                                 f"of shape {shape} (expected {(shape[0],) + shape[2:]})")
            nd = len(shape)
            flat = (x.transpose((0,) + tuple(range(2, nd)) + (1,)).reshape(-1, c), t.reshape(-1))
        x2, t2 = flat if flat is not None else (x, t)
        loss = ops.cross_entropy(x2, t2, self.reduction)
        if self.reduction == "none" and flat is not None:
            loss = loss.reshape(tuple(t.shape))
        self._keep((x, t, flat, None))
        return loss

    def forward(self, input, target):
        if _is_cuda_array(input):
            return self._forward_cuda(input, target)
        x = np.asarray(input)
        t = np.asarray(target)
        flat = self._flatten(x, t)
        x2, t2 = flat if flat is not None else (x, t)
        keep = None
        if t2.dtype.kind in "iu" and np.any(t2 == self.ignore_index):
            # Leave the ignored targets out: the loss of the kept rows, the mean over them.
            if x2.ndim == 1:
                x2, t2 = x2[None], t2.reshape(1)
                flat = (x2, t2)
            keep = t2 != self.ignore_index
            full = np.zeros(t2.shape, dtype=x.dtype)
            full[keep] = ops.cross_entropy(x2[keep], t2[keep], "none")
            n = int(keep.sum())
            if self.reduction == "sum":
                loss = float(full.sum())
            elif self.reduction == "mean":
                loss = float(full.sum() / n) if n else float("nan")
            else:
                loss = full
        else:
            loss = ops.cross_entropy(x2, t2, self.reduction)
        if self.reduction == "none" and flat is not None:
            loss = np.asarray(loss).reshape(t.shape)
        self._keep((x, t, flat, keep))
        return loss

    def backward(self, grad_out=None):
        x, t, flat, keep = self._saved()
        x2, t2 = flat if flat is not None else (x, t)
        if keep is None:
            g = grad_out
            if g is not None and self.reduction == "none" and flat is not None:
                g = (g if _is_cuda_array(g) else np.asarray(g)).reshape(tuple(t2.shape))
            gx = ops.cross_entropy_backward(x2, t2, self.reduction, g)
        else:
            n = int(keep.sum())
            if self.reduction == "none":
                g = np.ones(t2.shape, x.dtype) if grad_out is None else np.asarray(grad_out, x.dtype).reshape(t2.shape)
            else:
                s = 1.0 if grad_out is None else float(grad_out)
                g = np.full(t2.shape, s / n if (self.reduction == "mean" and n) else s, dtype=x.dtype)
            g = np.where(keep, g, 0).astype(x.dtype)
            gx = ops.cross_entropy_backward(x2, np.where(keep, t2, 0).astype(t2.dtype), "none", g)
        if flat is not None:
            if x.ndim <= 2:
                gx = gx.reshape(x.shape)
            else:
                shape = (x.shape[0],) + tuple(x.shape[2:]) + (x.shape[1],)
                if _is_cuda_array(gx):
                    nd = len(shape)
                    gx = gx.reshape(shape).transpose((0, nd - 1) + tuple(range(1, nd - 1))).copy()
                else:
                    gx = np.ascontiguousarray(np.moveaxis(gx.reshape(shape), -1, 1))
        return gx

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""
