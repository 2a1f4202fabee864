"""Benchmark cases: for each, the data and a zero-argument callable per library.

A case is rebuilt from its spec ``(kind, kwargs)`` alone, so the numpy worker subprocess
(which never imports torch or nnkernels) can measure exactly the same numpy call.
Kernels are measured with preallocated ``out=`` where the API has one (for every library
alike); ops without ``out=`` are measured with fresh allocation (for every library alike).
"""

import functools
import math
import os
import operator

import numpy as np


class Missing(Exception):
    """nnkernels.ops lacks the function a case needs (not merged yet)."""


def _ops():
    import nnkernels.ops
    return nnkernels.ops


def _op(name):
    ops = _ops()
    f = getattr(ops, name, None)
    if f is None:
        raise Missing(name)
    return f


def _torch():
    import torch
    return torch


def _short(dtype):
    return {"float32": "f32", "float64": "f64"}[dtype]


class Case:
    """family, name, shape (text), dtype, metric ('flop' | 'bytes' | 'call'), amount (FLOPs or
    bytes per call), blas (numpy calls BLAS: also measured in the best-kernel subprocess)."""

    kind = None
    blas = False
    metric = "flop"

    def __init__(self, **kw):
        self.kw = kw
        self.dtype = kw.get("dtype", "float32")
        self._data = None

    @property
    def spec(self):
        return [self.kind, self.kw]

    @property
    def data(self):
        if self._data is None:
            self._data = self.make_data(np.random.default_rng(0))
        return self._data

    def release(self):
        self._data = None

    def label(self):
        return f"{self.family} {self.name}"

    # Subclasses: make_data(rng) -> dict, nnk(), numpy() (or None), torch() (or None).
    def numpy(self):
        return None

    def torch(self):
        return None


def _randn(rng, shape, dtype):
    return rng.standard_normal(shape, dtype=np.dtype(dtype).type)


class Gemm(Case):
    """C (M, N) = A (M, K) @ B (K, N) into a preallocated C (out= for every library)."""

    kind = "gemm"
    family = "gemm"
    blas = True

    def __init__(self, m, n, k, dtype="float32"):
        super().__init__(m=m, n=n, k=k, dtype=dtype)
        self.m, self.n, self.k = m, n, k
        self.name = f"n={m}" if m == n == k else f"M={m} N={n} K={k}"
        self.shape = f"{m}x{k} @ {k}x{n}"
        self.amount = 2.0 * m * n * k
        self.square = m == n == k

    def make_data(self, rng):
        return {"a": _randn(rng, (self.m, self.k), self.dtype),
                "b": _randn(rng, (self.k, self.n), self.dtype),
                "c": np.empty((self.m, self.n), dtype=self.dtype)}

    def nnk(self):
        d = self.data
        return functools.partial(_op("gemm"), d["a"], d["b"], out=d["c"])

    def numpy(self):
        d = self.data
        return functools.partial(np.matmul, d["a"], d["b"], out=d["c"])

    def torch(self):
        torch = _torch()
        d = self.data
        a, b = torch.from_numpy(d["a"]), torch.from_numpy(d["b"])
        c = torch.from_numpy(np.empty_like(d["c"]))
        return functools.partial(torch.mm, a, b, out=c)


class Overhead(Case):
    """Call overhead: gemm on 8x8 with a fresh result, against numpy's ``a @ b``."""

    kind = "overhead"
    family = "gemm"
    blas = True
    metric = "call"

    def __init__(self, n=8, dtype="float32"):
        super().__init__(n=n, dtype=dtype)
        self.n = n
        self.name = f"call overhead {n}x{n}"
        self.shape = f"{n}x{n} @ {n}x{n}"
        self.amount = 2.0 * n ** 3

    def make_data(self, rng):
        return {"a": _randn(rng, (self.n, self.n), self.dtype),
                "b": _randn(rng, (self.n, self.n), self.dtype)}

    def nnk(self):
        return functools.partial(_op("gemm"), self.data["a"], self.data["b"])

    def numpy(self):
        return functools.partial(operator.matmul, self.data["a"], self.data["b"])

    def torch(self):
        torch = _torch()
        return functools.partial(torch.mm, torch.from_numpy(self.data["a"]),
                                 torch.from_numpy(self.data["b"]))


class Linear(Case):
    """linear(x, w, b, activation='relu') vs F.relu(F.linear(x, w, b)); fresh results."""

    kind = "linear"
    family = "linear"
    blas = True

    def __init__(self, batch, fin, fout, dtype="float32"):
        super().__init__(batch=batch, fin=fin, fout=fout, dtype=dtype)
        self.batch, self.fin, self.fout = batch, fin, fout
        self.name = "fwd relu"
        self.shape = f"x {batch}x{fin}, w {fout}x{fin}"
        self.amount = 2.0 * batch * fin * fout

    def make_data(self, rng):
        return {"x": _randn(rng, (self.batch, self.fin), self.dtype),
                "w": _randn(rng, (self.fout, self.fin), self.dtype) * (1.0 / math.sqrt(self.fin)),
                "b": _randn(rng, (self.fout,), self.dtype)}

    def nnk(self):
        d = self.data
        return functools.partial(_op("linear"), d["x"], d["w"], d["b"], activation="relu")

    def numpy(self):
        d = self.data
        x, w, b = d["x"], d["w"], d["b"]
        return lambda: np.maximum(x @ w.T + b, 0)

    def torch(self):
        torch = _torch()
        F = torch.nn.functional
        d = self.data
        x, w, b = (torch.from_numpy(d[k]) for k in ("x", "w", "b"))
        return lambda: F.relu(F.linear(x, w, b))


class LinearBackward(Case):
    """linear_backward(grad_out, x, w) -> (grad_x, grad_w, grad_b) vs torch autograd of
    F.linear (the graph is built once; only the backward is timed)."""

    kind = "linear_backward"
    family = "linear"
    blas = True

    def __init__(self, batch, fin, fout, dtype="float32"):
        super().__init__(batch=batch, fin=fin, fout=fout, dtype=dtype)
        self.batch, self.fin, self.fout = batch, fin, fout
        self.name = "backward"
        self.shape = f"x {batch}x{fin}, w {fout}x{fin}"
        self.amount = 4.0 * batch * fin * fout + batch * fout

    def make_data(self, rng):
        return {"x": _randn(rng, (self.batch, self.fin), self.dtype),
                "w": _randn(rng, (self.fout, self.fin), self.dtype) * (1.0 / math.sqrt(self.fin)),
                "b": _randn(rng, (self.fout,), self.dtype),
                "go": _randn(rng, (self.batch, self.fout), self.dtype)}

    def nnk(self):
        d = self.data
        return functools.partial(_op("linear_backward"), d["go"], d["x"], d["w"], bias=True)

    def numpy(self):
        d = self.data
        go, x, w = d["go"], d["x"], d["w"]
        return lambda: (go @ w, go.T @ x, go.sum(0))

    def torch(self):
        torch = _torch()
        F = torch.nn.functional
        d = self.data
        x, w, b = (torch.from_numpy(d[k].copy()).requires_grad_() for k in ("x", "w", "b"))
        go = torch.from_numpy(d["go"])
        y = F.linear(x, w, b)
        return lambda: torch.autograd.grad(y, (x, w, b), go, retain_graph=True)


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_log_softmax(x):
    s = x - x.max(-1, keepdims=True)
    return s - np.log(np.exp(s).sum(-1, keepdims=True))


# name -> (numpy callable or None, torch expression builder)
_ACTS = {
    "relu": (lambda x: np.maximum(x, 0), lambda torch: torch.relu),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda torch: torch.sigmoid),
    "tanh": (np.tanh, lambda torch: torch.tanh),
    "gelu": (None, lambda torch: torch.nn.functional.gelu),
    "softmax": (_np_softmax, lambda torch: lambda t: torch.softmax(t, -1)),
    "log_softmax": (_np_log_softmax, lambda torch: lambda t: torch.log_softmax(t, -1)),
}


class Act(Case):
    """An activation / softmax on a (rows, cols) float array, fresh result (no out= in the
    API). Memory-bound: bytes that must move = read x + write y."""

    kind = "act"
    family = "act"
    metric = "bytes"

    def __init__(self, op, rows, cols, dtype="float32"):
        super().__init__(op=op, rows=rows, cols=cols, dtype=dtype)
        self.op, self.rows, self.cols = op, rows, cols
        self.name = op
        self.shape = f"{rows}x{cols}"
        self.amount = 2.0 * rows * cols * np.dtype(dtype).itemsize

    def make_data(self, rng):
        return {"x": _randn(rng, (self.rows, self.cols), self.dtype)}

    def nnk(self):
        f = _op(self.op)
        x = self.data["x"]
        if self.op in ("softmax", "log_softmax"):
            return functools.partial(f, x, axis=-1)
        return functools.partial(f, x)

    def numpy(self):
        f = _ACTS[self.op][0]
        return None if f is None else functools.partial(f, self.data["x"])

    def torch(self):
        torch = _torch()
        return functools.partial(_ACTS[self.op][1](torch), torch.from_numpy(self.data["x"]))


# name -> (what the backward op takes besides grad: "x" or "y" = the forward's output,
#          torch's autograd kernel for it (what loss.backward() runs))
_ACT_BWD = {
    "relu": ("x", lambda torch: lambda g, x: torch.ops.aten.threshold_backward(g, x, 0)),
    "sigmoid": ("y", lambda torch: torch.ops.aten.sigmoid_backward),
    "tanh": ("y", lambda torch: torch.ops.aten.tanh_backward),
    "gelu": ("x", lambda torch: torch.ops.aten.gelu_backward),
    "softmax": ("y", lambda torch: lambda g, y: torch.ops.aten._softmax_backward_data(g, y, -1, y.dtype)),
    "log_softmax": ("y", lambda torch: lambda g, y: torch.ops.aten._log_softmax_backward_data(g, y, -1, y.dtype)),
}


class ActBackward(Case):
    """The backward of an activation / softmax on (rows, cols), fresh result: nnkernels'
    <op>_backward(grad, x or y) vs the aten kernel torch's autograd runs for it. Bytes that
    must move = read grad + read x (or y) + write dx."""

    kind = "act_backward"
    family = "act"
    metric = "bytes"

    def __init__(self, op, rows, cols, dtype="float32"):
        super().__init__(op=op, rows=rows, cols=cols, dtype=dtype)
        self.op, self.rows, self.cols = op, rows, cols
        self.name = f"{op}_backward"
        self.shape = f"{rows}x{cols}"
        self.amount = 3.0 * rows * cols * np.dtype(dtype).itemsize

    def make_data(self, rng):
        x = _randn(rng, (self.rows, self.cols), self.dtype)
        g = _randn(rng, (self.rows, self.cols), self.dtype)
        v = x
        if _ACT_BWD[self.op][0] == "y":
            v = _op(self.op)(x, axis=-1) if "softmax" in self.op else _op(self.op)(x)
        return {"g": g, "v": v}

    def nnk(self):
        f = _op(f"{self.op}_backward")
        d = self.data
        if "softmax" in self.op:
            return functools.partial(f, d["g"], d["v"], -1)
        return functools.partial(f, d["g"], d["v"])

    def torch(self):
        torch = _torch()
        d = self.data
        return functools.partial(_ACT_BWD[self.op][1](torch), torch.from_numpy(d["g"]),
                                 torch.from_numpy(d["v"]))


class CrossEntropy(Case):
    """cross_entropy(logits (N, C), target (N,) int64), mean; bytes = read logits + targets."""

    kind = "cross_entropy"
    family = "loss"
    metric = "bytes"

    def __init__(self, n, c, dtype="float32"):
        super().__init__(n=n, c=c, dtype=dtype)
        self.n, self.c = n, c
        self.name = "cross_entropy"
        self.shape = f"{n}x{c}"
        self.amount = float(n * c * np.dtype(dtype).itemsize + n * 8)

    def make_data(self, rng):
        return {"logits": _randn(rng, (self.n, self.c), self.dtype),
                "target": rng.integers(0, self.c, size=self.n, dtype=np.int64)}

    def nnk(self):
        return functools.partial(_op("cross_entropy"), self.data["logits"], self.data["target"])

    def numpy(self):
        x, t = self.data["logits"], self.data["target"]
        rows = np.arange(x.shape[0])

        def f():
            m = x.max(-1)
            lse = m + np.log(np.exp(x - m[:, None]).sum(-1))
            return float(np.mean(lse - x[rows, t]))
        return f

    def torch(self):
        torch = _torch()
        x, t = torch.from_numpy(self.data["logits"]), torch.from_numpy(self.data["target"])
        return functools.partial(torch.nn.functional.cross_entropy, x, t)


class Mse(Case):
    """mse_loss(input, target), mean; bytes = read both."""

    kind = "mse"
    family = "loss"
    metric = "bytes"

    def __init__(self, numel, dtype="float32"):
        super().__init__(numel=numel, dtype=dtype)
        self.numel = numel
        self.name = "mse_loss"
        self.shape = f"{numel}"
        self.amount = 2.0 * numel * np.dtype(dtype).itemsize

    def make_data(self, rng):
        return {"a": _randn(rng, (self.numel,), self.dtype),
                "b": _randn(rng, (self.numel,), self.dtype)}

    def nnk(self):
        return functools.partial(_op("mse_loss"), self.data["a"], self.data["b"])

    def numpy(self):
        a, b = self.data["a"], self.data["b"]
        return lambda: float(np.mean(np.square(a - b)))

    def torch(self):
        torch = _torch()
        a, b = torch.from_numpy(self.data["a"]), torch.from_numpy(self.data["b"])
        return functools.partial(torch.nn.functional.mse_loss, a, b)


# ---------------------------------------------------------------------------------------
# Convolution and pooling (issue 3)
# ---------------------------------------------------------------------------------------


def _conv_out(h, k, stride, padding):
    return (h + 2 * padding - (k - 1) - 1) // stride + 1


def _conv_shape(n, c, h, cout, k, stride, padding, groups):
    txt = f"{n}x{c}x{h}x{h}" + ("" if groups == c == cout else f" Co{cout}") + f" k{k}"
    if stride != 1:
        txt += f" s{stride}"
    if padding:
        txt += f" p{padding}"
    if groups != 1 and groups != c:
        txt += f" g{groups}"
    return txt


class _Conv(Case):
    """conv2d on x (N, C, H, H), weight (Cout, C/groups, k, k), bias (Cout,), square stride
    and padding. FLOPs of the forward: 2 * N * Cout * Ho * Wo * (C/groups) * k * k."""

    family = "conv"

    def __init__(self, n, c, h, cout, k, stride=1, padding=0, groups=1, dtype="float32"):
        super().__init__(n=n, c=c, h=h, cout=cout, k=k, stride=stride, padding=padding,
                         groups=groups, dtype=dtype)
        self.n, self.c, self.h, self.cout, self.k = n, c, h, cout, k
        self.stride, self.padding, self.groups = stride, padding, groups
        self.ho = _conv_out(h, k, stride, padding)
        self.depthwise = groups > 1 and groups == c == cout
        self.shape = _conv_shape(n, c, h, cout, k, stride, padding, groups)
        self.fwd_flop = 2.0 * n * cout * self.ho * self.ho * (c // groups) * k * k
        # nnkernels' Winograd path (csrc/cpu/conv/conv.cpp, use_winograd): rates stay in direct FLOPs.
        self.winograd = (k == 3 and stride == 1 and groups == 1 and min(c, cout) >= 16 and self.ho >= 2
                         and os.environ.get("NNKERNELS_WINOGRAD") != "0")

    def materialised_bytes(self):
        """The column matrix an im2col + GEMM convolution would build for the whole batch:
        (C * k * k) x (Ho * Wo) per image (all groups together)."""
        return float(self.n * self.c * self.k * self.k * self.ho * self.ho *
                     np.dtype(self.dtype).itemsize)

    def make_data(self, rng):
        fan_in = (self.c // self.groups) * self.k * self.k
        return {"x": _randn(rng, (self.n, self.c, self.h, self.h), self.dtype),
                "w": _randn(rng, (self.cout, self.c // self.groups, self.k, self.k), self.dtype)
                * (1.0 / math.sqrt(fan_in)),
                "b": _randn(rng, (self.cout,), self.dtype),
                "go": _randn(rng, (self.n, self.cout, self.ho, self.ho), self.dtype)}

    def _args(self):
        return (self.stride, self.padding, 1, self.groups)


class ConvForward(_Conv):
    """conv2d(x, w, b) vs F.conv2d (fresh result for both; no numpy peer)."""

    kind = "conv_fwd"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.name = "fwd depthwise" if self.depthwise else "fwd"
        self.amount = self.fwd_flop

    def nnk(self):
        d = self.data
        return functools.partial(_op("conv2d"), d["x"], d["w"], d["b"], *self._args())

    def torch(self):
        torch = _torch()
        d = self.data
        x, w, b = (torch.from_numpy(d[k]) for k in ("x", "w", "b"))
        return functools.partial(torch.nn.functional.conv2d, x, w, b, *self._args())


class ConvForwardBackward(_Conv):
    """conv2d forward, then all three gradients: conv2d + conv2d_backward vs F.conv2d and
    torch.autograd.grad w.r.t. (x, w, b) (the graph is rebuilt every call). FLOPs: 3 x the
    forward's (forward, grad_x and grad_w are one GEMM-sized product each)."""

    kind = "conv_fwd_bwd"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.name = "fwd+bwd depthwise" if self.depthwise else "fwd+bwd"
        self.amount = 3.0 * self.fwd_flop

    def nnk(self):
        conv, back = _op("conv2d"), _op("conv2d_backward")
        d = self.data
        x, w, b, go = d["x"], d["w"], d["b"], d["go"]
        args = self._args()

        def f():
            conv(x, w, b, *args)
            return back(go, x, w, *args)
        return f

    def torch(self):
        torch = _torch()
        F = torch.nn.functional
        d = self.data
        x, w, b = (torch.from_numpy(d[k].copy()).requires_grad_() for k in ("x", "w", "b"))
        go = torch.from_numpy(d["go"])
        args = self._args()

        def f():
            y = F.conv2d(x, w, b, *args)
            return torch.autograd.grad(y, (x, w, b), go)
        return f


class MaxPool(Case):
    """max_pool2d(x, k) (stride k) on (N, C, H, W); bytes = read x + write the result."""

    kind = "max_pool"
    family = "conv"
    metric = "bytes"

    def __init__(self, n, c, h, k=2, dtype="float32"):
        super().__init__(n=n, c=c, h=h, k=k, dtype=dtype)
        self.n, self.c, self.h, self.k = n, c, h, k
        self.name = f"max_pool2d {k}x{k}"
        self.shape = f"{n}x{c}x{h}x{h}"
        ho = h // k
        self.amount = float((n * c * h * h + n * c * ho * ho) * np.dtype(dtype).itemsize)

    def make_data(self, rng):
        return {"x": _randn(rng, (self.n, self.c, self.h, self.h), self.dtype)}

    def nnk(self):
        return functools.partial(_op("max_pool2d"), self.data["x"], self.k)

    def numpy(self):
        x, k = self.data["x"], self.k
        ho = self.h // k
        xs = x[:, :, :ho * k, :ho * k].reshape(self.n, self.c, ho, k, ho, k)
        return lambda: xs.max(axis=(3, 5))

    def torch(self):
        torch = _torch()
        return functools.partial(torch.nn.functional.max_pool2d, torch.from_numpy(self.data["x"]),
                                 self.k)


# ---------------------------------------------------------------------------------------
# Recurrent networks (issue 4)
# ---------------------------------------------------------------------------------------

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _rnn_data(rng, mode, t, b, i, h, dtype, seq=True):
    g = _GATES[mode]
    s = 1.0 / math.sqrt(h)
    d = {"x": _randn(rng, (t, b, i) if seq else (b, i), dtype),
         "h0": _randn(rng, (b, h), dtype),
         "w_ih": _randn(rng, (g * h, i), dtype) * s, "w_hh": _randn(rng, (g * h, h), dtype) * s,
         "b_ih": _randn(rng, (g * h,), dtype) * s, "b_hh": _randn(rng, (g * h,), dtype) * s}
    if seq:
        d["go"] = _randn(rng, (t, b, h), dtype)
    if mode == "lstm":
        d["c0"] = _randn(rng, (b, h), dtype)
    return d


def _torch_module(torch, cls, d, i, h):
    """torch.nn.<cls>(i, h) (one layer) holding the case's weights."""
    mod = getattr(torch.nn, cls)(i, h, dtype=torch.from_numpy(d["w_ih"]).dtype)
    sfx = "" if cls.endswith("Cell") else "_l0"
    with torch.no_grad():
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            kind, part = name.split("_")
            getattr(mod, f"{'weight' if kind == 'w' else 'bias'}_{part}{sfx}").copy_(
                torch.from_numpy(d[name]))
    return mod


class RnnCell(Case):
    """rnn_cell (tanh) one step vs nn.RNNCell (under no_grad) and numpy's
    tanh(x W_ih^T + b_ih + h W_hh^T + b_hh). FLOPs: 2 * B * (I + H) * H."""

    kind = "rnn_cell"
    family = "rnn"
    blas = True

    def __init__(self, b, i, h, dtype="float32"):
        super().__init__(b=b, i=i, h=h, dtype=dtype)
        self.b, self.i, self.h = b, i, h
        self.name = "rnn_cell step"
        self.shape = f"B{b} I{i} H{h}"
        self.amount = 2.0 * b * (i + h) * h

    def make_data(self, rng):
        return _rnn_data(rng, "rnn", 1, self.b, self.i, self.h, self.dtype, seq=False)

    def nnk(self):
        d = self.data
        return functools.partial(_op("rnn_cell"), d["x"], d["h0"], d["w_ih"], d["w_hh"],
                                 d["b_ih"], d["b_hh"])

    def numpy(self):
        d = self.data
        x, h, wi, wh, bi, bh = (d[k] for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"))
        return lambda: np.tanh(x @ wi.T + bi + h @ wh.T + bh)

    def torch(self):
        torch = _torch()
        d = self.data
        mod = _torch_module(torch, "RNNCell", d, self.i, self.h)
        x, h = torch.from_numpy(d["x"]), torch.from_numpy(d["h0"])

        def f():
            with torch.no_grad():
                return mod(x, h)
        return f


class RnnSeq(Case):
    """One-layer rnn (tanh) / lstm / gru over T steps of x (T, B, I), initial state given, vs
    nn.RNN / nn.LSTM / nn.GRU. Forward: torch under no_grad. Forward + backward: the
    forward (with return_cache=True for lstm / gru) then rnn_backward / lstm_backward /
    gru_backward for a gradient of the output (none on the final state), against torch
    autograd w.r.t. x, the initial state(s) and the four parameters (graph rebuilt every
    call). FLOPs of the forward: 2 * T * B * (I + H) * G * H (G = 1, 4, 3); forward +
    backward: 3 x that (grad of x and h, and of both weights, are one such product each).
    numpy peer (rnn forward only): one GEMM for the input projection, then a loop of
    h = tanh(xp_t + h W_hh^T)."""

    kind = "rnn_seq"
    family = "rnn"

    def __init__(self, mode, t, b, i, h, backward=False, dtype="float32"):
        super().__init__(mode=mode, t=t, b=b, i=i, h=h, backward=backward, dtype=dtype)
        self.mode, self.t, self.b, self.i, self.h, self.backward = mode, t, b, i, h, backward
        self.name = f"{mode} {'fwd+bwd' if backward else 'fwd'}"
        self.shape = f"T{t} B{b} I{i} H{h}"
        fwd = 2.0 * t * b * (i + h) * _GATES[mode] * h
        self.amount = 3.0 * fwd if backward else fwd
        self.blas = mode == "rnn" and not backward

    def make_data(self, rng):
        return _rnn_data(rng, self.mode, self.t, self.b, self.i, self.h, self.dtype)

    def nnk(self):
        d = self.data
        x, h0, wi, wh, bi, bh, go = (d[k] for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh", "go"))
        c0 = d.get("c0")
        if self.mode == "rnn":
            fwd = _op("rnn")
            if not self.backward:
                return functools.partial(fwd, x, h0, wi, wh, bi, bh)
            back = _op("rnn_backward")

            def f():
                out, _ = fwd(x, h0, wi, wh, bi, bh)
                return back(go, None, x, h0, wi, wh, out)
            return f
        if self.mode == "lstm":
            fwd = _op("lstm")
            if not self.backward:
                return functools.partial(fwd, x, h0, c0, wi, wh, bi, bh)
            back = _op("lstm_backward")

            def f():
                out, _, _, cache = fwd(x, h0, c0, wi, wh, bi, bh, return_cache=True)
                return back(go, None, None, x, h0, c0, wi, wh, out, cache)
            return f
        fwd = _op("gru")
        if not self.backward:
            return functools.partial(fwd, x, h0, wi, wh, bi, bh)
        back = _op("gru_backward")

        def f():
            out, _, cache = fwd(x, h0, wi, wh, bi, bh, return_cache=True)
            return back(go, None, x, h0, wi, wh, out, cache)
        return f

    def numpy(self):
        if self.mode != "rnn" or self.backward:
            return None
        d = self.data
        x, h0, wi, wh, bi, bh = (d[k] for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"))
        whT = wh.T

        def f():
            xp = (x.reshape(-1, self.i) @ wi.T + (bi + bh)).reshape(self.t, self.b, self.h)
            out = np.empty_like(xp)
            h = h0
            for t in range(self.t):
                h = np.tanh(xp[t] + h @ whT, out=out[t])
            return out, h
        return f

    def torch(self):
        torch = _torch()
        d = self.data
        mod = _torch_module(torch, {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[self.mode], d,
                            self.i, self.h)
        grad = self.backward
        x = torch.from_numpy(d["x"].copy()).requires_grad_(grad)
        h0 = torch.from_numpy(d["h0"][None].copy()).requires_grad_(grad)
        states = [h0]
        if self.mode == "lstm":
            states.append(torch.from_numpy(d["c0"][None].copy()).requires_grad_(grad))
        hx = tuple(states) if self.mode == "lstm" else h0
        if not grad:
            def f():
                with torch.no_grad():
                    return mod(x, hx)
            return f
        go = torch.from_numpy(d["go"])
        inputs = (x, *states, *mod.parameters())

        def f():
            out, _ = mod(x, hx)
            return torch.autograd.grad(out, inputs, go)
        return f


# ---------------------------------------------------------------------------------------
# Attention and layer norm (issue 5)
# ---------------------------------------------------------------------------------------

# numpy's naive attention materialises B*H*L*S scores (several times for the backward):
# above this many bytes of scores it is not run (numpy_max; the memory case allows 2 x).
NUMPY_ATTENTION_MAX_SCORES = 256 << 20


class Attention(Case):
    """scaled_dot_product_attention on q, k, v (B, H, L, E) (S = L), optionally causal, vs
    torch F.scaled_dot_product_attention and a naive numpy softmax(Q K^T * scale) V.
    Forward + backward: the forward (return_lse=True) then
    scaled_dot_product_attention_backward, against torch autograd w.r.t. q, k, v (graph
    rebuilt every call) and the naive numpy backward (dV = P^T dO, dP = dO V^T, dS = P (dP -
    rowsum(dO O)), dQ = dS K scale, dK = dS^T Q scale). FLOPs: 4 * B * H * E * pairs for the
    forward (Q K^T and P V), pairs = L * S, or L (L + 1) / 2 when causal (the masked half
    is work nobody has to do); forward + backward: 3 x that (the backward's four products
    dV, dP, dQ, dK; recomputing S is not counted)."""

    kind = "attention"
    family = "attention"

    def __init__(self, b, h, l, e, causal=False, backward=False, dtype="float32",
                 numpy_max=NUMPY_ATTENTION_MAX_SCORES, padded=False):
        super().__init__(b=b, h=h, l=l, e=e, causal=causal, backward=backward, dtype=dtype,
                         numpy_max=numpy_max, padded=padded)
        self.b, self.h, self.l, self.e = b, h, l, e
        self.numpy_max = numpy_max
        self.causal, self.backward = causal, backward
        # padded (forward only): a boolean (B, 1, 1, S) key-padding mask, batch element i
        # keeping the first PAD_KEEP[i % 4] of the keys (FLOPs still counted for all keys)
        self.padded = padded and not backward
        self.name = (("fwd+bwd" if backward else "fwd") + (" causal" if causal else "")
                     + (" padding mask" if self.padded else ""))
        self.shape = f"B{b} H{h} L{l} E{e}"
        pairs = l * (l + 1) / 2 if causal else float(l * l)
        fwd = 4.0 * b * h * e * pairs
        self.amount = 3.0 * fwd if backward else fwd
        self.blas = self._numpy_ok()

    def materialised_bytes(self):
        """The B*H x L x S score matrix a non-flash attention stores."""
        return float(self.b * self.h * self.l * self.l * np.dtype(self.dtype).itemsize)

    def _numpy_ok(self):
        return self.materialised_bytes() <= self.numpy_max

    def make_data(self, rng):
        shp = (self.b, self.h, self.l, self.e)
        d = {k: _randn(rng, shp, self.dtype) for k in ("q", "k", "v")}
        if self.padded:
            m = np.zeros((self.b, 1, 1, self.l), bool)
            for i in range(self.b):
                m[i, ..., :max(1, int(self.l * PAD_KEEP[i % len(PAD_KEEP)]))] = True
            d["mask"] = m
        if self.backward:
            d["go"] = _randn(rng, shp, self.dtype)
        return d

    def nnk(self):
        d = self.data
        q, k, v = d["q"], d["k"], d["v"]
        fwd = _op("scaled_dot_product_attention")
        if not self.backward:
            return functools.partial(fwd, q, k, v, attn_mask=d.get("mask"), is_causal=self.causal)
        back = _op("scaled_dot_product_attention_backward")
        go, causal = d["go"], self.causal

        def f():
            o, lse = fwd(q, k, v, is_causal=causal, return_lse=True)
            return back(go, q, k, v, o, lse, is_causal=causal)
        return f

    def numpy(self):
        if not self._numpy_ok():
            return None
        d = self.data
        q, k, v = d["q"], d["k"], d["v"]
        scale = np.dtype(self.dtype).type(1.0 / math.sqrt(self.e))
        kT = k.swapaxes(-1, -2)
        masked = ~np.tri(self.l, dtype=bool) if self.causal else None
        if self.padded:
            masked = ~d["mask"]

        def probs():
            s = (q @ kT) * scale
            if masked is not None:
                s[np.broadcast_to(masked, s.shape)] = -np.inf
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            return s

        if not self.backward:
            return lambda: probs() @ v
        go = d["go"]

        def f():
            p = probs()
            o = p @ v
            dv = p.swapaxes(-1, -2) @ go
            dp = go @ v.swapaxes(-1, -2)
            ds = p * (dp - (go * o).sum(-1, keepdims=True))
            dq = (ds @ k) * scale
            dk = (ds.swapaxes(-1, -2) @ q) * scale
            return dq, dk, dv
        return f

    def torch(self):
        torch = _torch()
        sdpa = torch.nn.functional.scaled_dot_product_attention
        d = self.data
        causal = self.causal
        if not self.backward:
            q, k, v = (torch.from_numpy(d[n]) for n in ("q", "k", "v"))
            mask = torch.from_numpy(d["mask"]) if self.padded else None
            return functools.partial(sdpa, q, k, v, attn_mask=mask, is_causal=causal)
        q, k, v = (torch.from_numpy(d[n].copy()).requires_grad_() for n in ("q", "k", "v"))
        go = torch.from_numpy(d["go"])

        def f():
            o = sdpa(q, k, v, is_causal=causal)
            return torch.autograd.grad(o, (q, k, v), go)
        return f


class LayerNorm(Case):
    """layer_norm over the last dim of x (R, D) with weight and bias, vs F.layer_norm and
    numpy. Forward bytes: read x + write y (+ weight, bias). Backward: layer_norm_backward
    from the forward's mean and rstd vs torch autograd on a graph built once (only the
    backward is timed) and numpy's formula; bytes: read dy, x, mean, rstd, weight, write
    dx, dweight, dbias."""

    kind = "layer_norm"
    family = "norm"
    metric = "bytes"

    def __init__(self, rows, d, backward=False, dtype="float32"):
        super().__init__(rows=rows, d=d, backward=backward, dtype=dtype)
        self.rows, self.d, self.backward = rows, d, backward
        self.name = "layer_norm " + ("bwd" if backward else "fwd")
        self.shape = f"{rows}x{d}"
        isz = np.dtype(dtype).itemsize
        if backward:
            self.amount = float((3 * rows * d + 2 * rows + 3 * d) * isz)
        else:
            self.amount = float((2 * rows * d + 2 * d) * isz)

    def make_data(self, rng):
        return {"x": _randn(rng, (self.rows, self.d), self.dtype) + 3.0,
                "w": _randn(rng, (self.d,), self.dtype),
                "b": _randn(rng, (self.d,), self.dtype),
                "go": _randn(rng, (self.rows, self.d), self.dtype)}

    def nnk(self):
        d = self.data
        x, w, b = d["x"], d["w"], d["b"]
        ln = _op("layer_norm")
        if not self.backward:
            return functools.partial(ln, x, self.d, w, b)
        _, mean, rstd = ln(x, self.d, w, b, return_stats=True)
        return functools.partial(_op("layer_norm_backward"), d["go"], x, self.d, mean, rstd, w, b)

    def numpy(self):
        d = self.data
        x, w, b, dy = d["x"], d["w"], d["b"], d["go"]
        eps = 1e-5
        if not self.backward:
            def f():
                m = x.mean(-1, keepdims=True)
                v = x.var(-1, keepdims=True)
                return (x - m) / np.sqrt(v + eps) * w + b
            return f
        mean = x.mean(-1, keepdims=True)
        rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + eps)

        def f():
            xhat = (x - mean) * rstd
            g = dy * w
            dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
            return dx, (dy * xhat).sum(0), dy.sum(0)
        return f

    def torch(self):
        torch = _torch()
        F = torch.nn.functional
        d = self.data
        if not self.backward:
            x, w, b = (torch.from_numpy(d[k]) for k in ("x", "w", "b"))
            return functools.partial(F.layer_norm, x, (self.d,), w, b)
        x, w, b = (torch.from_numpy(d[k].copy()).requires_grad_() for k in ("x", "w", "b"))
        go = torch.from_numpy(d["go"])
        y = F.layer_norm(x, (self.d,), w, b)
        return lambda: torch.autograd.grad(y, (x, w, b), go, retain_graph=True)


# ---------------------------------------------------------------------------------------
# Peak extra memory of one call (measured by run.py in a fresh subprocess per library)
# ---------------------------------------------------------------------------------------


class PeakMemory(Case):
    """Peak extra memory of one call of another case's callable (``of``: its spec) in a
    fresh subprocess per library: after a warm-up call of a small instance (``warm``: its
    spec; loads code, starts thread pools) the data is made, the peak RSS is reset, the call
    runs, and extra = peak RSS growth - the bytes of the returned result(s). ``amount``:
    the bytes of the matrix a materialising implementation would build (``ref``); the
    %peak column is nnkernels' extra / that."""

    kind = "memory"
    metric = "memory"

    def __init__(self, of, warm, libs=("nnk", "torch"), dtype="float32"):
        super().__init__(of=of, warm=warm, libs=list(libs), dtype=dtype)
        self.inner = build(of)
        self.of, self.warm, self.libs = of, warm, tuple(libs)
        self.family = self.inner.family
        self.name = f"peak mem {self.inner.name}"
        self.shape = self.inner.shape
        self.amount = self.inner.materialised_bytes()
        self.ref_name = "LxS" if isinstance(self.inner, Attention) else "cols"

    def nnk(self):
        """Only checks that the op exists (the measurement runs in a subprocess)."""
        ops = _ops()
        name = {"conv_fwd": "conv2d", "attention": "scaled_dot_product_attention"}[self.of[0]]
        if getattr(ops, name, None) is None:
            raise Missing(name)
        return None


def _TorchRowReader(torch):
    """torch twin of examples/rnn.py's RowReader (same parameter names)."""
    class RowReader(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(8, 96, batch_first=True)
            self.head = torch.nn.Linear(96, 10)

        def forward(self, x):
            out, _ = self.rnn(x.reshape(-1, 8, 8))
            return self.head(out[:, -1])
    return RowReader()


def _TorchRowTransformer(torch):
    """torch twin of examples/transformer.py's RowTransformer, dropout 0."""
    class RowTransformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(16, 64)  # row pixels + one-hot position -> d
            self.layers = torch.nn.ModuleList([
                torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True, norm_first=True)
                for _ in range(2)])
            self.norm = torch.nn.LayerNorm(64)
            self.head = torch.nn.Linear(64, 10)

        def forward(self, x):
            h = self.embed(x.reshape(-1, 8, 16))
            for layer in self.layers:
                h = layer(h)
            return self.head(self.norm(h).mean(dim=1))
    return RowTransformer()


def _train_models(kind, dtype):
    """The example models of issue 6 (examples/*.py), built twice with the same weights:
    (nnkernels model, torch model, nnkernels input, torch input, targets)."""
    torch = _torch()
    from nnkernels import nn
    rng = np.random.default_rng(0)
    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    npdt = np.dtype(dtype).type
    if kind == "mlp":
        ours = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 10))
        ref = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                  torch.nn.ReLU(), torch.nn.Linear(256, 10))
        x = rng.standard_normal((64, 64)).astype(npdt)
    elif kind == "cnn":
        ours = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
        ref = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(256, 128), torch.nn.ReLU(),
                                  torch.nn.Linear(128, 10))
        x = rng.standard_normal((64, 1, 8, 8)).astype(npdt)
    elif kind in ("rnn", "transformer"):
        import importlib.util
        import os
        import sys
        exdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
        if exdir not in sys.path:
            sys.path.insert(0, exdir)  # the examples import their shared _digits helper
        path = os.path.join(exdir, f"{kind}.py")
        spec = importlib.util.spec_from_file_location(f"nnk_example_{kind}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        ours = mod.RowReader() if kind == "rnn" else mod.RowTransformer(dropout=0.0)
        ref = _TorchRowReader(torch) if kind == "rnn" else _TorchRowTransformer(torch)
        x = rng.standard_normal((64, 64)).astype(npdt)
        if kind == "transformer":
            x = mod.with_positions(x)  # (64, 128): 8 tokens of 8 pixels and a one-hot position
    else:
        raise ValueError(kind)
    ref = ref.to(tdt)
    if dtype == "float64":
        ours.double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    y = rng.integers(0, 10, 64)
    return ours, ref, x, torch.from_numpy(x), y


class TrainStep(Case):
    """One training step (forward, cross-entropy, backward, Adam step) of an example model,
    against the identical torch model (issue 6)."""

    kind = "train_step"
    family = "train"
    metric = "call"

    def __init__(self, model, dtype="float32"):
        super().__init__(model=model, dtype=dtype)
        self.model = model
        self.name = f"{model} step"
        self.shape = {"mlp": "64-256-256-10, batch 64", "cnn": "examples/cnn.py model, 8x8, batch 64",
                      "rnn": "examples/rnn.py LSTM 96, T=8, batch 64",
                      "transformer": "examples/transformer.py, 8 tokens, batch 64"}[model]
        self.amount = 1.0

    def make_data(self, rng):
        ours, ref, x, tx, y = _train_models(self.model, self.dtype)
        return {"ours": ours, "ref": ref, "x": x, "tx": tx, "y": y}

    def nnk(self):
        from nnkernels import nn, optim
        d = self.data
        model, loss = d["ours"], nn.CrossEntropyLoss()
        opt = optim.Adam(model.parameters(), lr=1e-3)
        x, y = d["x"], d["y"]

        def step():
            opt.zero_grad()
            loss(model(x), y)
            model.backward(loss.backward())
            opt.step()
        return step

    def torch(self):
        torch = _torch()
        d = self.data
        model = d["ref"]
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = d["tx"], torch.from_numpy(d["y"])

        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return step


class AdamStep(Case):
    """adam_step_ over n parameters vs torch.optim.Adam's step (single tensor, foreach off
    and on are torch's choice); bytes: read p, g, m, v and write p, m, v."""

    kind = "adam_step"
    family = "train"
    metric = "bytes"

    def __init__(self, n, dtype="float32"):
        super().__init__(n=n, dtype=dtype)
        self.n = n
        self.name = "adam_step_"
        self.shape = f"{n} params"
        self.amount = 7.0 * n * np.dtype(dtype).itemsize

    def make_data(self, rng):
        p = _randn(rng, (self.n,), self.dtype)
        return {"p": p, "g": _randn(rng, (self.n,), self.dtype), "m": np.zeros_like(p), "v": np.zeros_like(p)}

    def nnk(self):
        d = self.data
        return functools.partial(_op("adam_step_"), d["p"], d["g"], d["m"], d["v"], step=3, lr=1e-3)

    def torch(self):
        torch = _torch()
        d = self.data
        p = torch.nn.Parameter(torch.from_numpy(d["p"].copy()))
        p.grad = torch.from_numpy(d["g"].copy())
        opt = torch.optim.Adam([p], lr=1e-3)
        return opt.step


KINDS = {c.kind: c for c in (Gemm, Overhead, Linear, LinearBackward, Act, ActBackward, CrossEntropy, Mse,
                             ConvForward, ConvForwardBackward, MaxPool, RnnCell, RnnSeq,
                             Attention, LayerNorm, PeakMemory, TrainStep, AdamStep)}


def build(spec):
    kind, kw = spec
    return KINDS[kind](**kw)


FAMILIES = ("gemm", "linear", "act", "loss", "conv", "rnn", "attention", "norm", "train")

# Issue 3's conv2d shapes: (N, C, H=W, Cout, k, stride, padding, groups).
CONV_SHAPES = [(32, 3, 32, 32, 3, 1, 1, 1), (16, 64, 56, 64, 3, 1, 1, 1), (16, 128, 28, 128, 3, 1, 1, 1),
               (16, 256, 14, 256, 3, 1, 1, 1), (16, 64, 56, 256, 1, 1, 0, 1), (8, 3, 224, 64, 7, 2, 3, 1),
               (16, 128, 56, 128, 3, 1, 1, 128)]
# Issue 4's RNN shapes (batch, input, hidden) and sequence length.
RNN_CELL_SHAPES = [(1, 128, 128), (32, 256, 256), (64, 512, 512), (256, 1024, 1024)]
RNN_SEQ_SHAPES = [(32, 256, 256), (64, 512, 512)]
RNN_T = 100
# Issue 5's attention shapes (B, H, L, E, causal).
PAD_KEEP = (1.0, 0.78, 0.59, 0.25)  # key fractions kept by the padding-mask case
# The causal shape right after its non-causal twin: issue 5 compares the two, and cases
# measured minutes apart can see the machine in different states.
ATTN_SHAPES = [(8, 8, 128, 64, False), (4, 8, 512, 64, False), (2, 8, 1024, 64, False),
               (2, 8, 1024, 64, True), (1, 8, 4096, 64, False), (1, 16, 2048, 128, False),
               (1, 1, 4096, 64, False)]


def suite(families, full=False, dtype=None):
    """The cases of the chosen families. dtype None: issue 2's set (float32, plus float64
    GEMM at n = 1024); otherwise every case in that dtype."""
    dt = dtype or "float32"
    cases = []
    if "gemm" in families:
        sizes = [128, 256, 512, 1024, 2048] + ([64, 96, 384, 768, 1536, 3072, 4096] if full else [])
        cases += [Gemm(n, n, n, dt) for n in sorted(sizes)]
        cases += [Gemm(32, 4096, 4096, dt), Gemm(4096, 4096, 32, dt), Gemm(4096, 32, 4096, dt)]
        if full:
            cases += [Gemm(1, 4096, 4096, dt), Gemm(4096, 1, 4096, dt), Gemm(300, 301, 302, dt)]
        if dtype is None:
            cases += [Gemm(n, n, n, "float64") for n in ([512, 1024, 2048] if full else [1024])]
        cases += [Overhead(8, dt)]
    if "linear" in families:
        shapes = [(256, 1024, 1024)] + ([(64, 1024, 1024), (1024, 4096, 4096)] if full else [])
        for s in shapes:
            cases += [Linear(*s, dtype=dt), LinearBackward(*s, dtype=dt)]
    if "act" in families:
        shapes = [(4096, 1024)] + ([(1024, 1024), (16384, 1024), (65536, 64)] if full else [])
        for s in shapes:
            cases += [Act(op, *s, dtype=dt) for op in _ACTS]
            cases += [ActBackward(op, *s, dtype=dt) for op in _ACT_BWD]
    if "loss" in families:
        cases += [CrossEntropy(4096, 1000, dt), Mse(4 * 1024 * 1024, dt)]
        if full:
            cases += [CrossEntropy(256, 32000, dt), Mse(16 * 1024 * 1024, dt)]
    if "conv" in families:
        quick = CONV_SHAPES[1]
        for sh in (CONV_SHAPES if full else [quick]):
            cases.append(ConvForward(*sh, dtype=dt))
        for sh in (CONV_SHAPES if full else [quick]):
            cases.append(ConvForwardBackward(*sh, dtype=dt))
        n, c, h, cout, k, st, p, g = quick
        cases.append(PeakMemory(["conv_fwd", dict(n=n, c=c, h=h, cout=cout, k=k, stride=st, padding=p,
                                                  groups=g, dtype=dt)],
                                ["conv_fwd", dict(n=1, c=c, h=8, cout=cout, k=k, stride=st, padding=p,
                                                  groups=g, dtype=dt)], dtype=dt))
        cases.append(MaxPool(16, 64, 56, 2, dtype=dt))
    if "rnn" in families:
        cases += [RnnCell(*s, dtype=dt) for s in (RNN_CELL_SHAPES if full else RNN_CELL_SHAPES[1:2])]
        for s in (RNN_SEQ_SHAPES if full else RNN_SEQ_SHAPES[:1]):
            for mode in ("rnn", "lstm", "gru"):
                cases += [RnnSeq(mode, RNN_T, *s, backward=bw, dtype=dt) for bw in (False, True)]
    if "attention" in families:
        for b, h, l, e, causal in (ATTN_SHAPES if full else ATTN_SHAPES[1:2]):
            cases += [Attention(b, h, l, e, causal, bw, dtype=dt) for bw in (False, True)]
        if full:
            cases.append(Attention(4, 8, 512, 64, padded=True, dtype=dt))
        # Peak extra memory of the forward at a long sequence (issue 5's target shape with
        # --full; numpy only where its L x S scores fit in 2 x NUMPY_ATTENTION_MAX_SCORES).
        lm = 8192 if full else 4096
        nmax = 2 * NUMPY_ATTENTION_MAX_SCORES
        big = Attention(1, 8, lm, 64, dtype=dt).materialised_bytes() > nmax
        libs = ("nnk", "torch") if big else ("nnk", "numpy", "torch")
        cases.append(PeakMemory(["attention", dict(b=1, h=8, l=lm, e=64, dtype=dt, numpy_max=nmax)],
                                ["attention", dict(b=1, h=8, l=64, e=64, dtype=dt)], libs=libs, dtype=dt))
    if "norm" in families:
        for s in ([(4096, 768), (8192, 1024)] if full else [(4096, 768)]):
            cases += [LayerNorm(*s, backward=bw, dtype=dt) for bw in (False, True)]
    if "train" in families:
        cases += [TrainStep(m, dt) for m in ("mlp", "cnn", "rnn", "transformer")]
        cases += [AdamStep(10 * 1000 * 1000, dt)]
    return cases
