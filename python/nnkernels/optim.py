"""Optimizers over the fused in-place kernels ``ops.sgd_step_`` / ``ops.adam_step_``:
``step()`` is one kernel call per parameter that has a gradient. Semantics, defaults and
argument checks follow ``torch.optim`` (per-parameter step counts, lazily allocated state,
parameters without a gradient skipped, ``param_groups`` with per-group settings).
"""

import numpy as np

from . import ops
from .nn.module import Module, Parameter, _on_device, _to_device

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]


def _zeros_like(a):
    """Zeros of a's shape and dtype, in a's memory (host or CUDA)."""
    z = np.zeros(a.shape, a.dtype)
    return _to_device(z, "cuda") if _on_device(a) else z


class Optimizer:
    """Base class: ``param_groups`` (list of dicts: "params" plus the settings) and
    ``state`` (per parameter, keyed by the Parameter object)."""

    def __init__(self, params, defaults):
        if isinstance(params, Module):
            raise TypeError("params must be an iterable of Parameters (e.g. model.parameters()), "
                            "not a Module")
        if isinstance(params, Parameter):
            raise TypeError("params must be an iterable of Parameters, not a single Parameter")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        seen = set()
        for g in groups:
            g = dict(g)
            ps = g["params"]
            ps = [ps] if isinstance(ps, Parameter) else list(ps)
            for p in ps:
                if not isinstance(p, Parameter):
                    raise TypeError(f"optimizer can only optimize Parameters, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError("some parameters appear in more than one parameter group")
                seen.add(id(p))
            g["params"] = ps
            for k, v in self.defaults.items():
                g.setdefault(k, v)
            self._check(g)
            self.param_groups.append(g)

    def _check(self, group):
        pass

    def zero_grad(self, set_to_none=True):
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad[...] = 0

    def _state(self, p):
        st = self.state.get(p)
        if st is None:
            st = self.state[p] = {}
        return st

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


class SGD(Optimizer):
    """``torch.optim.SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
    nesterov=False)``; the momentum buffer starts as the first gradient, as torch."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 *, maximize=False):
        if maximize:
            raise NotImplementedError("SGD: maximize is not supported")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check(self, g):
        if g["lr"] < 0.0:
            raise ValueError(f"Invalid learning rate: {g['lr']}")
        if g["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {g['momentum']}")
        if g["weight_decay"] < 0.0:
            raise ValueError(f"Invalid weight_decay value: {g['weight_decay']}")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def step(self):
        for g in self.param_groups:
            lr, mom, damp, wd, nest = g["lr"], g["momentum"], g["dampening"], g["weight_decay"], g["nesterov"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                buf = None
                step = 2
                if mom != 0:
                    st = self._state(p)
                    buf = st.get("momentum_buffer")
                    if buf is not None:  # follows a parameter moved to another device
                        buf = st["momentum_buffer"] = _to_device(buf, p.device)
                    if buf is None or buf.dtype != p.data.dtype:
                        buf = st["momentum_buffer"] = _zeros_like(p.data)
                        step = 1
                ops.sgd_step_(p.data, p.grad, buf, lr=lr, momentum=mom, dampening=damp,
                              weight_decay=wd, nesterov=nest, step=step)


class Adam(Optimizer):
    """``torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)``
    (L2 weight decay added to the gradient, as torch's Adam)."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 *, maximize=False):
        if amsgrad or maximize:
            raise NotImplementedError(f"{type(self).__name__}: amsgrad and maximize are not supported")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _check(self, g):
        b1, b2 = g["betas"]
        if g["lr"] < 0.0:
            raise ValueError(f"Invalid learning rate: {g['lr']}")
        if g["eps"] < 0.0:
            raise ValueError(f"Invalid epsilon value: {g['eps']}")
        if not 0.0 <= b1 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {b1}")
        if not 0.0 <= b2 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {b2}")
        if g["weight_decay"] < 0.0:
            raise ValueError(f"Invalid weight_decay value: {g['weight_decay']}")

    def step(self):
        dec = self._decoupled
        for g in self.param_groups:
            lr, (b1, b2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state.get(p)
                if st is not None:  # follows a parameter moved to another device
                    for k in ("exp_avg", "exp_avg_sq"):
                        st[k] = _to_device(st[k], p.device)
                if st is None or st["exp_avg"].dtype != p.data.dtype:
                    st = self.state[p] = {"step": 0, "exp_avg": _zeros_like(p.data),
                                          "exp_avg_sq": _zeros_like(p.data)}
                st["step"] += 1
                ops.adam_step_(p.data, p.grad, st["exp_avg"], st["exp_avg_sq"], step=st["step"], lr=lr,
                               beta1=b1, beta2=b2, eps=eps, weight_decay=wd, decoupled=dec)


class AdamW(Adam):
    """``torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)``
    (decoupled weight decay)."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize)
