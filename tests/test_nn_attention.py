"""Layers over the ops of the attention/normalisation family (layer_norm, embedding,
dropout, scaled_dot_product_attention) against torch."""

import numpy as np
import pytest
import torch

from conftest import DTYPES, assert_close
from test_nn import TORCH_DTYPE, check_layer

from nnkernels import nn



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,norm", [((3, 5, 8), 8), ((3, 5, 8), (5, 8)), ((4, 7), 7)])
@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, False)])
def test_layer_norm(shape, norm, affine, bias, dtype, rng):
    torch.manual_seed(0)
    t = torch.nn.LayerNorm(norm, elementwise_affine=affine, bias=bias)
    check_layer(nn.LayerNorm(norm, elementwise_affine=affine, bias=bias), t, rng.standard_normal(shape), rng,
                dtype, factor=1.0 if dtype == np.float64 else 4.0)


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding(padding_idx, rng):
    torch.manual_seed(0)
    t = torch.nn.Embedding(11, 6, padding_idx=padding_idx).double()
    m = nn.Embedding(11, 6, padding_idx=padding_idx, dtype=np.float64)
    assert m.weight.shape == (11, 6)
    if padding_idx is not None:
        assert not np.any(m.weight.data[padding_idx])
    m.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    ids = rng.integers(0, 11, (4, 9))
    ids[0, :3] = 2
    y = m(ids)
    yt = t(torch.tensor(ids))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    g = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(g))
    assert m.backward(g) is None
    assert_close(m.weight.grad, t.weight.grad.numpy(), np.float64)


def test_dropout(rng):
    x = rng.standard_normal((50, 40)).astype(np.float32)
    d = nn.Dropout(0.3)
    nn.manual_seed(1)
    y = d(x)
    nn.manual_seed(1)
    np.testing.assert_array_equal(nn.Dropout(0.3)(x), y)
    kept = y != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(0.7), rtol=1e-6)
    g = rng.standard_normal(x.shape).astype(np.float32)
    gx = d.backward(g)
    np.testing.assert_allclose(gx, np.where(kept, g / np.float32(0.7), 0), rtol=1e-6)
    d.eval()
    assert d(x) is x and d.backward(g) is g
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


def _perturbed(t, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return t


MHA_CASES = [
    # batch_first, self-attention, key_padding_mask, attn_mask kind, is_causal
    (True, True, False, None, False),
    (False, True, False, None, False),
    (True, False, False, None, False),
    (True, True, True, None, False),
    (True, True, False, "bool2d", False),
    (True, False, True, "float3d", False),
    (True, True, False, None, True),
    (True, True, True, None, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first,self_attn,kpm,mask,causal", MHA_CASES)
def test_multihead_attention(batch_first, self_attn, kpm, mask, causal, dtype, rng):
    e, h, b, l, s = 12, 3, 2, 5, 5 if self_attn else 7
    torch.manual_seed(0)
    t = _perturbed(torch.nn.MultiheadAttention(e, h, batch_first=batch_first).to(TORCH_DTYPE[dtype]))
    m = nn.MultiheadAttention(e, h, batch_first=batch_first, dtype=dtype)
    assert set(m.state_dict()) == set(t.state_dict())
    m.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})

    def shape(n):
        return (b, n, e) if batch_first else (n, b, e)
    q = rng.standard_normal(shape(l)).astype(dtype)
    k = q if self_attn else rng.standard_normal(shape(s)).astype(dtype)
    v = q if self_attn else rng.standard_normal(shape(s)).astype(dtype)
    key_padding_mask = None
    if kpm:
        key_padding_mask = np.zeros((b, s), bool)
        key_padding_mask[0, -2:] = True
        if mask == "float3d":  # torch wants both masks of one kind
            key_padding_mask = np.where(key_padding_mask, -np.inf, 0.0).astype(dtype)
    attn_mask = None
    if mask == "bool2d":
        attn_mask = rng.random((l, s)) < 0.3
        np.fill_diagonal(attn_mask, False)
    elif mask == "float3d":
        attn_mask = rng.standard_normal((b * h, l, s)).astype(dtype)
    torch_mask = attn_mask
    if causal:
        torch_mask = np.triu(np.ones((l, s), bool), 1)  # torch's layer needs the mask with the hint
    tq = torch.tensor(q, requires_grad=True)
    tk = tq if self_attn else torch.tensor(k, requires_grad=True)
    tv = tq if self_attn else torch.tensor(v, requires_grad=True)
    yt, _ = t(tq, tk, tv, need_weights=False,
              key_padding_mask=None if key_padding_mask is None else torch.tensor(key_padding_mask),
              attn_mask=None if torch_mask is None else torch.tensor(torch_mask), is_causal=causal)
    y, w = m(q, k, v, key_padding_mask=key_padding_mask, attn_mask=attn_mask, is_causal=causal)
    assert w is None
    factor = 1.0 if dtype == np.float64 else 8.0
    assert_close(y, yt.detach().numpy(), dtype, factor)
    g = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(g))
    gq, gk, gv = m.backward(g)
    if self_attn:
        assert_close(gq + gk + gv, tq.grad.numpy(), dtype, factor)
    else:
        for ours, theirs in ((gq, tq), (gk, tk), (gv, tv)):
            assert_close(ours, theirs.grad.numpy(), dtype, factor)
    tp = dict(t.named_parameters())
    for name, p in m.named_parameters():
        assert_close(p.grad, tp[name].grad.numpy(), dtype, factor)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layer(norm_first, activation, batch_first, dtype, rng):
    torch.manual_seed(0)
    kw = dict(dim_feedforward=24, dropout=0.0, activation=activation, batch_first=batch_first,
              norm_first=norm_first)
    t = _perturbed(torch.nn.TransformerEncoderLayer(12, 3, **kw).to(TORCH_DTYPE[dtype]))
    m = nn.TransformerEncoderLayer(12, 3, **kw)
    check_layer(m, t, rng.standard_normal((2, 6, 12) if batch_first else (6, 2, 12)), rng, dtype,
                factor=1.0 if dtype == np.float64 else 8.0)
