"""Recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) over the sequence ops
``ops.rnn`` / ``ops.lstm`` / ``ops.gru`` and their ``*_backward`` (one op call per layer
and direction of travel).

Parameters, their names (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``), order, shapes and default initialisation (every one
U(-1/sqrt(H), 1/sqrt(H))) are torch's. States are ``(num_layers, B, H)`` (``(num_layers, H)``
for an unbatched ``(T, I)`` input). Unidirectional only; ``dropout`` between layers is
applied in training mode as torch (mask from ``nn.manual_seed``'s generator).

Forward keeps, per layer, the layer's input, its initial state, its output and the op's
cache (gates, cells); backward releases them.
"""

import math

import numpy as np

from .. import ops
from . import module as _module
from .module import Module, Parameter, _check_dtype, _is_cuda_array, _parse_device

__all__ = ["RNN", "LSTM", "GRU"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _arr(a):
    """a itself when it is a CUDA array (indexing and transposes are views there too), else
    numpy.asarray(a)."""
    return a if _is_cuda_array(a) else np.asarray(a)


def _stack(arrays):
    """numpy.stack, or its CUDA counterpart for DeviceArrays."""
    if _is_cuda_array(arrays[0]):
        from .. import _C
        return _C._cuda_stack(arrays)
    return np.stack(arrays)


class _RNNBase(Module):
    _cuda_ok = True

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        _parse_device(device)
        dt = _check_dtype(dtype)
        if bidirectional:
            raise ValueError(f"{name}: bidirectional=True is not supported")
        if proj_size:
            raise ValueError(f"{name}: proj_size > 0 is not supported")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability "
                             "of an element being zeroed")
        if not isinstance(hidden_size, (int, np.integer)) or isinstance(hidden_size, bool):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if not isinstance(num_layers, (int, np.integer)) or isinstance(num_layers, bool):
            raise TypeError(f"num_layers should be of type int, got: {type(num_layers).__name__}")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if int(input_size) < 0:
            raise ValueError(f"input_size must be >= 0, got {input_size}")
        self.mode = mode
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = False
        self.proj_size = 0
        h, g = self.hidden_size, _GATES[mode]
        bound = 1.0 / math.sqrt(h)
        for k in range(self.num_layers):
            isz = self.input_size if k == 0 else h
            shapes = [("weight_ih", (g * h, isz)), ("weight_hh", (g * h, h))]
            if self.bias:
                shapes += [("bias_ih", (g * h,)), ("bias_hh", (g * h,))]
            for pname, shape in shapes:
                setattr(self, f"{pname}_l{k}", Parameter(_module._uniform(shape, bound, dt)))
        self._ctx = None
        self._init_device(device)

    # -- helpers --------------------------------------------------------------------------

    @property
    def dtype(self):
        return self.weight_ih_l0.data.dtype

    def _layer_params(self, k):
        w_ih = getattr(self, f"weight_ih_l{k}")
        w_hh = getattr(self, f"weight_hh_l{k}")
        b_ih = getattr(self, f"bias_ih_l{k}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l{k}") if self.bias else None
        return w_ih, w_hh, b_ih, b_hh

    @property
    def all_weights(self):
        return [[p for p in self._layer_params(k) if p is not None] for k in range(self.num_layers)]

    def flatten_parameters(self):
        """A no-op (torch's cuDNN weight packing), for drop-in compatibility."""

    def _input(self, x):
        """x as (T, B, I) plus whether it was unbatched."""
        x = _arr(x)
        if x.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected input to be 2-D (T, input_size) or 3-D, "
                             f"got {x.ndim}-D of shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input.size(-1) must be equal to input_size. "
                             f"Expected {self.input_size}, got {x.shape[-1]} (input of shape {x.shape})")
        if x.ndim == 2:
            return x[:, None], True
        return (x.transpose(1, 0, 2) if self.batch_first else x), False

    def _state(self, s, batch, unbatched, what):
        """A state as (num_layers, B, H) (None stays None)."""
        if s is None:
            return None
        s = _arr(s)
        want = (self.num_layers, self.hidden_size) if unbatched else (self.num_layers, batch, self.hidden_size)
        if tuple(s.shape) != want:
            raise ValueError(f"{type(self).__name__}: expected {what} of shape {want}, got {s.shape}")
        return s[:, None] if unbatched else s

    def _grad_in(self, g, unbatched):
        """A gradient of the output as (T, B, H)."""
        if g is None:
            return None
        g = _arr(g)
        if unbatched:
            return g[:, None]
        return g.transpose(1, 0, 2) if self.batch_first else g

    def _grad_state(self, g, unbatched):
        if g is None:
            return None
        g = _arr(g)
        return g[:, None] if unbatched else g

    def _out(self, y, unbatched):
        if unbatched:
            return y[:, 0]
        return y.transpose(1, 0, 2) if self.batch_first else y

    def _dropout_between(self, y):
        """Dropout on a non-last layer's output in training mode: (y', mask or None)."""
        if not self.training or self.dropout == 0.0:
            return y, None
        seed = int(_module._generator().integers(0, 2**63 - 1))
        return ops.dropout(y, self.dropout, seed=seed)

    def _dropout_back(self, g, mask):
        if mask is None:
            return g
        if _is_cuda_array(g):
            from .. import _C
            return _C._cuda_dropout_backward(g, mask, self.dropout)
        scale = 0.0 if self.dropout == 1.0 else 1.0 / (1.0 - self.dropout)
        return np.multiply(g, mask, dtype=g.dtype) * g.dtype.type(scale)

    def _accumulate(self, k, gwi, gwh, gbi, gbh):
        w_ih, w_hh, b_ih, b_hh = self._layer_params(k)
        w_ih._accumulate(gwi)
        w_hh._accumulate(gwh)
        if b_ih is not None:
            b_ih._accumulate(gbi)
            b_hh._accumulate(gbh)

    # -- the shared layer loop ------------------------------------------------------------

    def _run(self, x, states):
        """Run every layer. ``states``: tuple of (num_layers, B, H) arrays or Nones.
        Returns (output (T, B, H), per-state tuple of final states, ctx)."""
        layers = []
        inp = x
        finals = [[] for _ in states]
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (None if p is None else p.data for p in self._layer_params(k))
            s0 = tuple(None if s is None else s[k] for s in states)
            out, fin, cache = self._layer_forward(inp, s0, w_ih, w_hh, b_ih, b_hh)
            for lst, f in zip(finals, fin):
                lst.append(f)
            mask = None
            nxt = out
            if k + 1 < self.num_layers:
                nxt, mask = self._dropout_between(out)
            layers.append((inp, s0, out, cache, mask))
            inp = nxt
        return out, tuple(_stack(f) for f in finals), layers

    def _run_backward(self, g_out, g_states, layers):
        """Backward through every layer; returns (grad_x (T, B, I), per-state grads (L, B, H))."""
        nstate = len(g_states)
        g0 = [[None] * self.num_layers for _ in range(nstate)]
        for k in range(self.num_layers - 1, -1, -1):
            inp, s0, out, cache, mask = layers[k]
            layers[k] = None
            w_ih, w_hh, _, _ = (None if p is None else p.data for p in self._layer_params(k))
            gs = tuple(None if g is None else g[k] for g in g_states)
            dx, ds0, grads = self._layer_backward(g_out, gs, inp, s0, w_ih, w_hh, out, cache)
            self._accumulate(k, *grads)
            for i in range(nstate):
                g0[i][k] = ds0[i]
            g_out = dx
            if k > 0:
                g_out = self._dropout_back(dx, layers[k - 1][4])
        return g_out, tuple(_stack(g) for g in g0)

    def _forward_states(self, x, states):
        try:
            xb, unbatched = self._input(x)
            st = tuple(self._state(s, xb.shape[1], unbatched, w) for s, w in
                       zip(states, ("h0", "c0")))
            out, fin, layers = self._run(xb, st)
        except (ValueError, TypeError) as e:
            raise self._input_error(e, x, *(s for s in states if s is not None)) from e
        self._keep((layers, unbatched, tuple(s is not None for s in states)))
        fin = tuple(f[:, 0] if unbatched else f for f in fin)
        return self._out(out, unbatched), fin

    def _backward_states(self, grad_output, g_states):
        layers, unbatched, given = self._saved()
        gx, gs = self._run_backward(self._grad_in(grad_output, unbatched),
                                    tuple(self._grad_state(g, unbatched) for g in g_states), layers)
        gx = self._out(gx, unbatched)
        gs = tuple((g[:, 0] if unbatched else g) if gv else None for g, gv in zip(gs, given))
        return gx, gs

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s


class _SingleState(_RNNBase):
    """forward / backward of the families whose only state is h (RNN, GRU)."""

    def forward(self, x, h0=None):
        out, (h_n,) = self._forward_states(x, (h0,))
        return out, h_n

    def backward(self, grad_output, grad_h_n=None):
        gx, (gh0,) = self._backward_states(grad_output, (grad_h_n,))
        return gx, gh0


class RNN(_SingleState):
    """``nn.RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, dtype=float32)``:
    ``h_t = act(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh)`` per layer.

    ``forward(x, h0=None) -> (output, h_n)``: x (T, B, I) ((B, T, I) with batch_first, or
    unbatched (T, I)); h0 / h_n (num_layers, B, H). ``backward(grad_output, grad_h_n=None)
    -> (grad_x, grad_h0)`` (grad_h0 None when h0 was None).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def _layer_forward(self, x, s0, w_ih, w_hh, b_ih, b_hh):
        out, h_n = ops.rnn(x, s0[0], w_ih, w_hh, b_ih, b_hh, self.nonlinearity)
        return out, (h_n,), None

    def _layer_backward(self, g_out, gs, x, s0, w_ih, w_hh, out, cache):
        dx, dh0, *grads = ops.rnn_backward(g_out, gs[0], x, s0[0], w_ih, w_hh, out, bias=self.bias,
                                           nonlinearity=self.nonlinearity)
        return dx, (dh0,), grads


class GRU(_SingleState):
    """``nn.GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, dtype=float32)`` (gates r, z, n as torch).

    ``forward(x, h0=None) -> (output, h_n)``; ``backward(grad_output, grad_h_n=None) ->
    (grad_x, grad_h0)`` (grad_h0 None when h0 was None). Shapes as :class:`RNN`.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)

    def _layer_forward(self, x, s0, w_ih, w_hh, b_ih, b_hh):
        out, h_n, cache = ops.gru(x, s0[0], w_ih, w_hh, b_ih, b_hh, return_cache=True)
        return out, (h_n,), cache

    def _layer_backward(self, g_out, gs, x, s0, w_ih, w_hh, out, cache):
        dx, dh0, *grads = ops.gru_backward(g_out, gs[0], x, s0[0], w_ih, w_hh, out, cache, bias=self.bias)
        return dx, (dh0,), grads


class LSTM(_RNNBase):
    """``nn.LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, proj_size=0, dtype=float32)`` (gates i, f, g, o).

    ``forward(x, (h0, c0)=None) -> (output, (h_n, c_n))``: states (num_layers, B, H);
    ``backward(grad_output, grad_state=None) -> (grad_x, (grad_h0, grad_c0))`` where
    grad_state is ``(grad_h_n, grad_c_n)`` (either may be None) and the state gradient is
    None when the forward got no state.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)

    def _layer_forward(self, x, s0, w_ih, w_hh, b_ih, b_hh):
        out, h_n, c_n, cache = ops.lstm(x, s0[0], s0[1], w_ih, w_hh, b_ih, b_hh, return_cache=True)
        return out, (h_n, c_n), cache

    def _layer_backward(self, g_out, gs, x, s0, w_ih, w_hh, out, cache):
        dx, dh0, dc0, *grads = ops.lstm_backward(g_out, gs[0], gs[1], x, s0[0], s0[1], w_ih, w_hh, out,
                                                 cache, bias=self.bias)
        return dx, (dh0, dc0), grads

    def forward(self, x, hx=None):
        if hx is None:
            states = (None, None)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("LSTM: the state must be a tuple (h0, c0)")
            states = tuple(hx)
            if (states[0] is None) != (states[1] is None):
                raise ValueError("LSTM: give both h0 and c0, or neither")
        out, (h_n, c_n) = self._forward_states(x, states)
        return out, (h_n, c_n)

    def backward(self, grad_output, grad_state=None):
        if grad_state is None:
            grad_state = (None, None)
        elif not isinstance(grad_state, (tuple, list)) or len(grad_state) != 2:
            raise ValueError("LSTM.backward: grad_state must be (grad_h_n, grad_c_n) or None")
        gx, (gh0, gc0) = self._backward_states(grad_output, tuple(grad_state))
        if gh0 is None:
            return gx, None
        return gx, (gh0, gc0)
