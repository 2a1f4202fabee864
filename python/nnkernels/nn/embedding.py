"""Embedding (``nn.Embedding``) over ``ops.embedding`` / ``ops.embedding_backward``."""

import numpy as np

from .. import ops
from . import module as _module
from .module import Module, Parameter, _check_dtype, _on_device

__all__ = ["Embedding"]


class Embedding(Module):
    """``nn.Embedding(num_embeddings, embedding_dim, padding_idx=None, dtype=float32)``:
    weight N(0, 1) (torch's initialisation), the ``padding_idx`` row zero and never given a
    gradient. ``backward`` returns None (ids have no gradient). max_norm and sparse
    gradients are not supported."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None, dtype=None):
        super().__init__()
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise NotImplementedError("Embedding: max_norm, scale_grad_by_freq and sparse are not supported")
        dt = _check_dtype(dtype)
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            padding_idx = int(padding_idx)
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError("padding_idx must be within num_embeddings")
            if padding_idx < 0:
                padding_idx += self.num_embeddings
        self.padding_idx = padding_idx
        if _weight is None:
            w = _module._generator().standard_normal((self.num_embeddings, self.embedding_dim)).astype(dt)
            if padding_idx is not None:
                w[padding_idx] = 0
        else:
            w = np.asarray(_weight, dtype=dt)
        self.weight = Parameter(w)
        self._ctx = None
        self._init_device(device)

    _cuda_ok = True

    def forward(self, ids):
        y = ops.embedding(ids, self.weight.data)
        self._keep(ids)
        return y

    def backward(self, grad):
        ids = self._saved()
        gw = ops.embedding_backward(grad, ids, self.num_embeddings)
        if self.padding_idx is not None:
            if _on_device(gw):
                from .. import _C
                _C._cuda_copy_from_host_(gw[self.padding_idx], np.zeros(self.embedding_dim, gw.dtype))
            else:
                gw[self.padding_idx] = 0
        self.weight._accumulate(gw)
        return None

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
