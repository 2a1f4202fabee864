"""Benchmark cases: for each, the data and a zero-argument callable per library.

A case is rebuilt from its spec ``(kind, kwargs)`` alone, so the numpy worker subprocess
(which never imports torch or nnkernels) can measure exactly the same numpy call.
Kernels are measured with preallocated ``out=`` where the API has one (for every library
alike); ops without ``out=`` are measured with fresh allocation (for every library alike).
"""

import functools
import math
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


KINDS = {c.kind: c for c in (Gemm, Overhead, Linear, LinearBackward, Act, CrossEntropy, Mse)}


def build(spec):
    kind, kw = spec
    return KINDS[kind](**kw)


FAMILIES = ("gemm", "linear", "act", "loss")


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
    if "loss" in families:
        cases += [CrossEntropy(4096, 1000, dt), Mse(4 * 1024 * 1024, dt)]
        if full:
            cases += [CrossEntropy(256, 32000, dt), Mse(16 * 1024 * 1024, dt)]
    return cases
