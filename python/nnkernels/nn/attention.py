"""MultiheadAttention and TransformerEncoderLayer (``nn.MultiheadAttention`` /
``nn.TransformerEncoderLayer``) over ``ops.scaled_dot_product_attention`` (+ backward).

Masks follow torch's layer convention (True = masked out); they are turned into the op's
convention (True = takes part) here. Attention-weight dropout is not supported (the fused
op never forms the weights). On CUDA (``to("cuda")``) the masks may be host or CUDA arrays:
a single float mask of the module's dtype on the device is read in place by the op; any
other CUDA mask is copied to the host (a synchronisation), combined there, and the result
copied back to the device.
"""

import math

import numpy as np

from .. import _C, ops
from . import module as _module
from .activation import GELU, ReLU
from .dropout import Dropout
from .linear import Linear
from .module import Module, Parameter, _check_dtype, _is_cuda_array, _on_device, _parse_device
from .norm import LayerNorm

__all__ = ["MultiheadAttention", "TransformerEncoderLayer"]


def _arr(a):
    """a itself when it is a CUDA array (views work there too), else numpy.asarray(a)."""
    return a if _is_cuda_array(a) else np.asarray(a)


def _add(a, b):
    """a + b (same shapes): a new array; on CUDA for our DeviceArrays (which have no +)."""
    if not (_on_device(a) or _on_device(b)):
        return a + b
    from .. import _C
    if not _on_device(a):
        a, b = b, a
    c = a.copy()
    _C._cuda_accumulate_(c, b)
    return c


def _contiguous(a):
    return (a if a.__cuda_array_interface__["strides"] is None else a.copy()) if _on_device(a) \
        else np.ascontiguousarray(a)


def _cat_rows(parts):
    """numpy.concatenate(parts) along axis 0 (CUDA: a stack of equal parts, reshaped)."""
    if _on_device(parts[0]):
        s = _C._cuda_stack(parts)
        return s.reshape((-1,) + tuple(parts[0].shape[1:]))
    return np.concatenate(parts)


def _cat_last(parts):
    """numpy.concatenate(parts, axis=-1) of equal parts (on CUDA: one row-pitched copy each)."""
    if _on_device(parts[0]):
        return _C._cuda_cat_last(parts)
    return np.concatenate(parts, axis=-1)


def _to_additive(mask, dtype):
    """An op-convention mask (bool: True takes part; float: added) as an additive float mask."""
    if mask.dtype == np.bool_:
        return np.where(mask, 0.0, -np.inf).astype(dtype)
    return mask.astype(dtype, copy=False)


def _combine(a, b, dtype):
    if a is None:
        return b
    if b is None:
        return a
    if a.dtype == np.bool_ and b.dtype == np.bool_:
        return a & b
    return _to_additive(a, dtype) + _to_additive(b, dtype)


class MultiheadAttention(Module):
    """``nn.MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True,
    batch_first=False, dtype=float32)`` with kdim = vdim = embed_dim.

    Parameters as torch: in_proj_weight (3E, E) (xavier-uniform), in_proj_bias (3E,) zeros,
    out_proj (a Linear, bias zeros). ``forward(query, key, value, key_padding_mask=None,
    need_weights=False, attn_mask=None, is_causal=False) -> (out, None)``;
    ``backward(grad_out) -> (grad_query, grad_key, grad_value)`` (when query, key and value
    are one array, the total gradient is their sum).
    """

    _cuda_ok = True

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__()
        dt = _check_dtype(dtype)
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported")
        if (kdim is not None and kdim != embed_dim) or (vdim is not None and vdim != embed_dim):
            raise NotImplementedError("MultiheadAttention: kdim and vdim must equal embed_dim")
        if dropout != 0.0:
            raise NotImplementedError("MultiheadAttention: attention-weight dropout is not supported")
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        if self.num_heads <= 0 or self.embed_dim % self.num_heads != 0:
            raise ValueError("embed_dim must be divisible by num_heads")
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout = 0.0
        self.batch_first = bool(batch_first)
        e = self.embed_dim
        bound = math.sqrt(6.0 / (e + 3 * e))  # xavier_uniform_ on (3E, E)
        self.in_proj_weight = Parameter(_module._uniform((3 * e, e), bound, dt))
        self.in_proj_bias = Parameter(np.zeros(3 * e, dt)) if bias else None
        self.out_proj = Linear(e, e, bias=bias, dtype=dt)
        if bias:
            self.out_proj.bias.data[...] = 0
        self._ctx = None
        _parse_device(device)
        self._init_device(device)

    def _heads(self, t, b, n):
        """(B, n, E) -> (B, H, n, D) view."""
        return t.reshape(b, n, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def _device_float_mask(self, m, is_attn, b, l, s, dtype):
        """A single float CUDA mask of the module's dtype is additive in both conventions: the
        op reads it in place (key_padding_mask (B, S) as a (B, 1, 1, S) view). None otherwise."""
        if _C._cuda_parse(m, "mask", mask=True)["dtype"] != np.dtype(dtype).name:
            return None
        shape = tuple(m.shape)
        if not is_attn:
            return m.reshape(b, 1, 1, s) if shape == (b, s) else None
        if shape == (l, s):
            return m
        return m.reshape(b, self.num_heads, l, s) if shape == (b * self.num_heads, l, s) else None

    def _mask(self, attn_mask, key_padding_mask, is_causal, b, l, s, dtype):
        """The op's (mask, is_causal) from torch's layer-convention masks."""
        h = self.num_heads
        on_device = _on_device(self.in_proj_weight.data)
        dev_masks = [m for m in (attn_mask, key_padding_mask) if m is not None and _is_cuda_array(m)]
        if dev_masks and not on_device:
            raise ValueError(f"{self!r} is on the host: give attn_mask and key_padding_mask as host arrays")
        if on_device and len(dev_masks) == 1 and (attn_mask is not None or not is_causal) \
                and (attn_mask is None) != (key_padding_mask is None):
            direct = self._device_float_mask(dev_masks[0], attn_mask is not None, b, l, s, dtype)
            if direct is not None:
                return direct, False
        # Otherwise CUDA masks are copied to the host (a synchronisation), combined there with
        # the host ones, and the result copied back.
        attn_mask, key_padding_mask = (_C._cuda_mask_to_host(m) if m is not None and _is_cuda_array(m) else m
                                       for m in (attn_mask, key_padding_mask))
        am = None
        if attn_mask is not None:
            am = np.asarray(attn_mask)
            am = ~am if am.dtype == np.bool_ else am
            if am.ndim == 3:
                if am.shape != (b * h, l, s):
                    raise ValueError(f"attn_mask of shape {am.shape}: expected {(l, s)} or {(b * h, l, s)}")
                am = am.reshape(b, h, l, s)
            elif am.shape != (l, s):
                raise ValueError(f"attn_mask of shape {am.shape}: expected {(l, s)} or {(b * h, l, s)}")
            is_causal = False  # torch: is_causal is only a hint when attn_mask is given
        kpm = None
        if key_padding_mask is not None:
            kpm = np.asarray(key_padding_mask)
            if kpm.shape != (b, s):
                raise ValueError(f"key_padding_mask of shape {kpm.shape}: expected {(b, s)}")
            kpm = (~kpm if kpm.dtype == np.bool_ else kpm).reshape(b, 1, 1, s)
        if is_causal and kpm is not None:
            am = np.tril(np.ones((l, s), dtype=bool))
            is_causal = False
        mask = _combine(am, kpm, dtype)
        if mask is not None and on_device:
            from .. import cuda
            mask = cuda.asarray(mask)
        return mask, bool(is_causal)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if need_weights:
            raise NotImplementedError("MultiheadAttention: need_weights=True is not supported "
                                      "(the fused attention never forms the weights)")
        same = query is key and key is value
        q_in, k_in, v_in = (_arr(t) for t in (query, key, value))
        unbatched = q_in.ndim == 2
        if unbatched:
            q_in, k_in, v_in = q_in[None], k_in[None], v_in[None]
        elif not self.batch_first:
            q_in, k_in, v_in = (t.transpose(1, 0, 2) for t in (q_in, k_in, v_in))
        if q_in.ndim != 3 or q_in.shape[-1] != self.embed_dim or k_in.shape[-1] != self.embed_dim \
                or v_in.shape[-1] != self.embed_dim or k_in.shape[:2] != v_in.shape[:2] \
                or q_in.shape[0] != k_in.shape[0]:
            raise ValueError(f"{self!r}: query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)} "
                             f"do not fit embed_dim={self.embed_dim} (batch_first={self.batch_first})")
        b, l, e = q_in.shape
        s = k_in.shape[1]
        w = self.in_proj_weight.data
        bias = self.in_proj_bias.data if self.in_proj_bias is not None else None
        if same:
            qkv = ops.linear(q_in, w, bias)
            q, k, v = qkv[..., :e], qkv[..., e:2 * e], qkv[..., 2 * e:]
        else:
            bq, bk, bv = (None, None, None) if bias is None else (bias[:e], bias[e:2 * e], bias[2 * e:])
            q = ops.linear(q_in, w[:e], bq)
            k = ops.linear(k_in, w[e:2 * e], bk)
            v = ops.linear(v_in, w[2 * e:], bv)
        q, k, v = self._heads(q, b, l), self._heads(k, b, s), self._heads(v, b, s)
        mask, causal = self._mask(attn_mask, key_padding_mask, is_causal, b, l, s, q.dtype)
        out, lse = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, return_lse=True)
        merged = out.transpose(0, 2, 1, 3).reshape(b, l, e)
        y = self.out_proj(merged)
        self._keep((same, unbatched, q_in, k_in, v_in, q, k, v, out, lse, mask, causal))
        if unbatched:
            y = y[0]
        elif not self.batch_first:
            y = y.transpose(1, 0, 2)
        return y, None

    def _backward(self, grad_out, sum_inputs):
        same, unbatched, q_in, k_in, v_in, q, k, v, out, lse, mask, causal = self._saved()
        g = _arr(grad_out)
        if unbatched:
            g = g[None]
        elif not self.batch_first:
            g = g.transpose(1, 0, 2)
        b, l, e = q_in.shape
        gm = self.out_proj.backward(g)                       # (B, L, E)
        dq, dk, dv = ops.scaled_dot_product_attention_backward(
            self._heads(gm, b, l), q, k, v, out, lse, attn_mask=mask, is_causal=causal)
        dq, dk, dv = (t.transpose(0, 2, 1, 3).reshape(b, -1, e) for t in (dq, dk, dv))
        w = self.in_proj_weight.data
        has_bias = self.in_proj_bias is not None
        if same:
            dqkv = _cat_last([dq, dk, dv])
            gx, gw, gb = ops.linear_backward(dqkv, q_in, w, bias=has_bias)
            self.in_proj_weight._accumulate(gw)
            if has_bias:
                self.in_proj_bias._accumulate(gb)
            if sum_inputs:
                grads = (gx,)
            else:
                grads = (ops.matmul(dq, w[:e]), ops.matmul(dk, w[e:2 * e]), ops.matmul(dv, w[2 * e:]))
        else:
            gws, gbs, grads = [], [], []
            for i, (d, x) in enumerate(((dq, q_in), (dk, k_in), (dv, v_in))):
                gx, gwi, gbi = ops.linear_backward(d, x, w[i * e:(i + 1) * e], bias=has_bias)
                gws.append(gwi)
                gbs.append(gbi)
                grads.append(gx)
            self.in_proj_weight._accumulate(_cat_rows(gws))
            if has_bias:
                self.in_proj_bias._accumulate(_cat_rows(gbs))
            if sum_inputs:
                grads = (_add(_add(grads[0], grads[1]), grads[2]),)
        if unbatched:
            grads = tuple(t[0] for t in grads)
        elif not self.batch_first:
            grads = tuple(_contiguous(t.transpose(1, 0, 2)) for t in grads)
        return grads

    def backward(self, grad_out, grad_weights=None):
        return self._backward(grad_out, sum_inputs=False)

    def extra_repr(self):
        return ""


class TransformerEncoderLayer(Module):
    """``nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1,
    activation="relu", layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
    dtype=float32)``: self-attention and a feedforward block, each with a residual and a
    LayerNorm (after, or before with ``norm_first``). ``dropout`` applies to the residual
    branches and the feedforward block as torch; attention-weight dropout is not supported,
    so in training mode with dropout > 0 the result differs from torch's in that one place
    (eval mode is identical). ``forward(src, src_mask=None, src_key_padding_mask=None,
    is_causal=False)``; ``backward(grad) -> grad_src``."""

    _cuda_ok = True

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        super().__init__()
        dt = _check_dtype(dtype)
        self.self_attn = MultiheadAttention(d_model, nhead, bias=bias, batch_first=batch_first, dtype=dt)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dt)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dt)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dt)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dt)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        if activation in ("relu", ReLU) or isinstance(activation, ReLU):
            self.activation = ReLU()
        elif activation in ("gelu", GELU) or isinstance(activation, GELU):
            self.activation = GELU()
        else:
            raise ValueError(f"activation should be relu/gelu, not {activation!r}")
        _parse_device(device)
        self._init_device(device)

    def _sa(self, x, mask, kpm, is_causal):
        y, _ = self.self_attn(x, x, x, key_padding_mask=kpm, attn_mask=mask, is_causal=is_causal)
        return self.dropout1(y)

    def _ff(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def _ff_backward(self, g):
        return self.linear1.backward(self.activation.backward(self.dropout.backward(
            self.linear2.backward(self.dropout2.backward(g)))))

    def _sa_backward(self, g):
        return self.self_attn._backward(self.dropout1.backward(g), sum_inputs=True)[0]

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = _arr(src)
        if self.norm_first:
            x = _add(x, self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal))
            x = _add(x, self._ff(self.norm2(x)))
        else:
            x = self.norm1(_add(x, self._sa(x, src_mask, src_key_padding_mask, is_causal)))
            x = self.norm2(_add(x, self._ff(x)))
        return x

    def backward(self, grad):
        g = _arr(grad)
        if self.norm_first:
            g = _add(g, self.norm2.backward(self._ff_backward(g)))
            g = _add(g, self.norm1.backward(self._sa_backward(g)))
        else:
            g = self.norm2.backward(g)
            g = _add(g, self._ff_backward(g))
            g = self.norm1.backward(g)
            g = _add(g, self._sa_backward(g))
        return g
