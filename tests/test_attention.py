"""scaled_dot_product_attention and its backward against torch (math backend, float64)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import nnkernels
from nnkernels import _C, ops

from conftest import DTYPES, TOL, assert_close

# float32: softmax and two products in float32 against the float64 reference.
F32_FACTOR = 5.0


def factor(dtype):
    return F32_FACTOR if dtype == np.float32 else 1.0


def _expand(t, batch, group):
    """t (..., X, Y) broadcast to the output batch dims (key/value heads repeated for GQA)."""
    if group > 1:
        t = t.repeat_interleave(group, dim=-3)
    return t.broadcast_to(tuple(batch) + tuple(t.shape[-2:]))


def reference(q, k, v, mask=None, causal=False, scale=None, gqa=False, grad=None):
    """out, lse and (with grad) dq, dk, dv and their magnitudes from torch in float64.

    The magnitude of dq is scale * (P o (|dO| |V|^T + |dO| . |O|)) |K| (dk likewise): the
    size of the terms that cancel in dS = P o (dP - D), against which rounding is judged
    (dq and dk vanish exactly for S = 1).
    """
    t = [torch.tensor(np.ascontiguousarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v)]
    m = None
    if mask is not None:
        m = torch.tensor(mask if mask.dtype == bool else np.asarray(mask, np.float64))
    with sdpa_kernel(SDPBackend.MATH):
        out = F.scaled_dot_product_attention(*t, attn_mask=m, is_causal=causal, scale=scale,
                                             enable_gqa=gqa)
    batch = out.shape[:-2]
    group = 1
    if gqa and t[0].dim() >= 3 and t[1].dim() >= 3 and t[0].shape[-3] != t[1].shape[-3]:
        group = t[0].shape[-3] // t[1].shape[-3]
    qx, kx, vx = _expand(t[0], batch, 1), _expand(t[1], batch, group), _expand(t[2], batch, group)
    sc = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (qx @ kx.transpose(-1, -2)) * sc
    if m is not None:
        s = s.masked_fill(~m, -math.inf) if m.dtype == torch.bool else s + m
    if causal:
        L, S = s.shape[-2:]
        s = s.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), -math.inf)
    lse = torch.logsumexp(s, -1)
    res = [out.detach().numpy(), lse.detach().numpy()]
    if grad is None:
        return res
    g = torch.tensor(np.asarray(grad, np.float64))
    out.backward(g)
    res += [x.grad.numpy() for x in t]
    with torch.no_grad():
        P = torch.nan_to_num(torch.exp(s - lse[..., None]), nan=0.0)
        dsm = P * (g.abs() @ vx.abs().transpose(-1, -2) + (g.abs() * out.abs()).sum(-1, keepdim=True))
        dqm = sc * dsm @ kx.abs()
        dkm = sc * dsm.transpose(-1, -2) @ qx.abs()
    # sum the expanded magnitudes back to q's and k's shapes (autograd of the expansion)
    res.append(torch.autograd.grad(qx, t[0], dqm, retain_graph=True)[0].numpy())
    res.append(torch.autograd.grad(kx, t[1], dkm)[0].numpy())
    return res


def assert_grad_close(ours, ref, mag, dtype, f):
    err = np.linalg.norm(np.asarray(ours, np.float64) - ref)
    assert err <= f * TOL[np.dtype(dtype).type] * max(np.linalg.norm(mag), 1e-300), \
        f"error {err:.3e} against magnitude {np.linalg.norm(mag):.3e}"


def check(rng, dtype, qs, ks, vs, mask=None, causal=False, scale=None, gqa=False, views=None):
    q = rng.standard_normal(qs).astype(dtype)
    k = rng.standard_normal(ks).astype(dtype)
    v = rng.standard_normal(vs).astype(dtype)
    if views is not None:
        q, k, v = views(q, k, v)
    out, lse = ops.scaled_dot_product_attention(q, k, v, mask, causal, scale, gqa, return_lse=True)
    assert out.dtype == dtype and lse.dtype == dtype
    g = rng.standard_normal(out.shape).astype(dtype)
    ro, rl, rdq, rdk, rdv, mdq, mdk = reference(q, k, v, mask, causal, scale, gqa, grad=g)
    f = factor(dtype)
    assert_close(out, ro, dtype, f)
    fin = np.isfinite(rl)
    assert np.array_equal(np.isfinite(lse), fin)
    assert np.all(lse[~fin] == -np.inf)
    assert_close(lse[fin], rl[fin], dtype, f)
    dq, dk, dv = ops.scaled_dot_product_attention_backward(g, q, k, v, out, lse, mask, causal,
                                                           scale, gqa)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    assert_grad_close(dq, rdq, mdq, dtype, 4 * f)
    assert_grad_close(dk, rdk, mdk, dtype, 4 * f)
    assert_close(dv, rdv, dtype, 4 * f)
    return out, lse


# (B, H, L, S, E, Ev): L = 1, L != S, odd and prime lengths, every E of the issue,
# lengths off the block sizes (query blocks of 64-70 rows, key blocks of 128 / 256).
SHAPES = [
    (1, 1, 1, 1, 16, 16),
    (2, 1, 1, 37, 40, 40),
    (1, 2, 67, 5, 64, 16),
    (1, 1, 71, 263, 111, 7),
    (1, 1, 129, 131, 128, 128),
    (2, 2, 13, 17, 16, 33),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_backward(isa, rng, dtype, shape):
    B, H, L, S, E, Ev = shape
    check(rng, dtype, (B, H, L, E), (B, H, S, E), (B, H, S, Ev))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("LS", [(5, 300), (300, 5), (70, 70), (1, 9), (141, 139)])
def test_causal(isa, rng, dtype, LS):
    L, S = LS
    check(rng, dtype, (2, L, 16), (2, S, 16), (2, S, 24), causal=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("LS", [(300, 290), (290, 530), (531, 300)])
def test_causal_diagonal_tiles(isa, rng, dtype, LS):
    # Enough batch elements that the forward claims whole batch elements per thread, and
    # lengths where query blocks straddle key blocks (diagonal tiles computed per row panel).
    L, S = LS
    check(rng, dtype, (3, 3, L, 40), (3, 3, S, 40), (3, 3, S, 24), causal=True)


MASK_SHAPES = ["full", "LS", "B1LS", "S", "1HL1"]


def make_mask(rng, kind, B, H, L, S, dtype, masked_rows=True):
    shape = {"full": (B, H, L, S), "LS": (L, S), "B1LS": (B, 1, L, S), "S": (S,),
             "1HL1": (1, H, L, 1)}[kind]
    if dtype == bool:
        m = rng.random(shape) < 0.7
        if masked_rows and len(shape) >= 2 and shape[-2] > 2:
            m[..., 1, :] = False  # rows with every key masked out
    else:
        m = rng.standard_normal(shape).astype(dtype)
        if masked_rows and len(shape) >= 2 and shape[-2] > 2:
            m[..., 2, :] = -np.inf
            m[..., 0, ::2] = -np.inf
    return m


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mkind", ["bool", "float"])
@pytest.mark.parametrize("mshape", MASK_SHAPES)
def test_masks(isa, rng, dtype, mkind, mshape):
    B, H, L, S, E = 2, 2, 19, 150, 40
    mask = make_mask(rng, mshape, B, H, L, S, bool if mkind == "bool" else dtype)
    out, lse = check(rng, dtype, (B, H, L, E), (B, H, S, E), (B, H, S, E), mask=mask)
    if mshape in ("full", "LS", "B1LS"):
        row = 1 if mkind == "bool" else 2
        assert np.all(out[..., row, :] == 0) and np.all(lse[..., row] == -np.inf)
    assert not np.isnan(out).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_key_padding_masks(isa, rng, dtype):
    # A boolean mask shared by every query (B, 1, 1, S) ends each batch element's keys
    # early: key blocks past the last kept key are skipped and the last one is cut short.
    # Kept lengths: none (rows give 0 and -inf), within the first block, exactly one
    # forward block (256), past one backward block (128), a single key, and all; also with
    # holes before the end, a strided mask, and L = 1.
    B, H, L, S, E = 7, 2, 37, 600, 24
    keep = [0, 5, 256, 129, 1, 600, 300]
    mask = np.zeros((B, 1, 1, S), bool)
    for i, n in enumerate(keep):
        mask[i, ..., :n] = True
    mask[6, ..., 100:200] = False
    out, lse = check(rng, dtype, (B, H, L, E), (B, H, S, E), (B, H, S, 16), mask=mask)
    assert np.all(out[0] == 0) and np.all(lse[0] == -np.inf)
    wide = np.zeros((B, 1, 1, 2 * S), bool)
    wide[..., ::2] = mask
    check(rng, dtype, (B, H, L, E), (B, H, S, E), (B, H, S, 16), mask=wide[..., ::2])
    check(rng, dtype, (B, H, 1, E), (B, H, S, E), (B, H, S, 16), mask=mask)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_masked_gradients_zero(rng, dtype):
    q = rng.standard_normal((1, 4, 8)).astype(dtype)
    k = rng.standard_normal((1, 6, 8)).astype(dtype)
    v = rng.standard_normal((1, 6, 8)).astype(dtype)
    mask = np.zeros((4, 6), bool)
    out, lse = ops.scaled_dot_product_attention(q, k, v, mask, return_lse=True)
    assert np.all(out == 0) and np.all(lse == -np.inf)
    g = rng.standard_normal(out.shape).astype(dtype)
    for d in ops.scaled_dot_product_attention_backward(g, q, k, v, out, lse, mask):
        assert np.all(d == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(6, 2), (4, 1), (3, 3)])
def test_gqa(isa, rng, dtype, heads):
    Hq, Hkv = heads
    check(rng, dtype, (2, Hq, 23, 16), (2, Hkv, 29, 16), (2, Hkv, 29, 8), gqa=True)
    check(rng, dtype, (1, Hq, 33, 16), (1, Hkv, 33, 16), (1, Hkv, 33, 16), gqa=True, causal=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_backward_key_parts(isa, rng, dtype, causal):
    """Few key/value batch elements and many keys: the backward splits each one's key blocks
    into parts with partial dQ sums, also when a kv element serves several query heads (GQA)
    and when one query element serves several output batch elements (broadcast q)."""
    check(rng, dtype, (1, 4, 37, 16), (1, 2, 700, 16), (1, 2, 700, 8), gqa=True, causal=causal)
    check(rng, dtype, (1, 2, 40, 16), (3, 2, 400, 16), (3, 2, 400, 16), causal=causal)
    check(rng, dtype, (1, 1, 520, 24), (1, 1, 1100, 24), (1, 1, 1100, 24), causal=causal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_and_ranks(rng, dtype):
    check(rng, dtype, (5, 16), (7, 16), (7, 9), scale=0.37)
    check(rng, dtype, (3, 5, 16), (3, 7, 16), (3, 7, 9), scale=2.0)
    # batch dims broadcast: q (2, 3, ...) against k, v (1, 3, ...) and (3, ...)
    check(rng, dtype, (2, 3, 5, 16), (1, 3, 7, 16), (1, 3, 7, 9))
    check(rng, dtype, (2, 1, 5, 16), (3, 7, 16), (3, 7, 9))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous(isa, rng, dtype):
    B, L, S, H, E = 2, 11, 13, 3, 16

    def split_heads(q, k, v):
        # (B, L, H*E) projections -> (B, H, L, E) views; v reversed along S and E
        q = q.reshape(B, L, H, E).transpose(0, 2, 1, 3)
        k = k.reshape(B, S, H, E).transpose(0, 2, 1, 3)
        v = v.reshape(B, S, H, 2 * E).transpose(0, 2, 1, 3)[:, :, ::-1, ::-2]
        assert not q.flags.c_contiguous and not k.flags.c_contiguous
        return q, k, v

    check(rng, dtype, (B, L, H * E), (B, S, H * E), (B, S, H * 2 * E), views=split_heads)
    mask = (rng.random((S, L)) < 0.8).T  # transposed mask
    check(rng, dtype, (B, H, L, E), (B, H, S, E), (B, H, S, E), mask=mask)


def test_torch_tensors_and_oracle(rng):
    q, k, v = (torch.randn(2, 3, 9, 16, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(9, 9) < 0.8
    out, lse = ops.scaled_dot_product_attention(q, k, v, mask, return_lse=True)
    ro, rl = _C.scaled_dot_product_attention_ref(q, k, v, mask, False, None, False)
    assert_close(out, ro, np.float64)
    assert_close(lse, rl, np.float64)
    with sdpa_kernel(SDPBackend.MATH):
        r = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert_close(out, r.numpy(), np.float64)


def test_zero_sizes(rng):
    q = np.zeros((2, 0, 8))
    k = rng.standard_normal((2, 5, 8))
    out, lse = ops.scaled_dot_product_attention(q, k, k, return_lse=True)
    assert out.shape == (2, 0, 8) and lse.shape == (2, 0)
    q = rng.standard_normal((2, 3, 8))
    k = np.zeros((2, 0, 8))
    out, lse = ops.scaled_dot_product_attention(q, k, np.zeros((2, 0, 4)), return_lse=True)
    assert out.shape == (2, 3, 4) and np.all(out == 0) and np.all(lse == -np.inf)
    out = ops.scaled_dot_product_attention(np.zeros((0, 3, 8)), np.zeros((0, 4, 8)),
                                           np.zeros((0, 4, 8)))
    assert out.shape == (0, 3, 8)


@pytest.mark.parametrize("causal", [False, True])
def test_deterministic_and_thread_independent(rng, causal):
    q = rng.standard_normal((1, 1, 300, 64)).astype(np.float32)
    k = rng.standard_normal((1, 1, 301, 64)).astype(np.float32)
    v = rng.standard_normal((1, 1, 301, 64)).astype(np.float32)
    g = rng.standard_normal((1, 1, 300, 64)).astype(np.float32)
    threads = nnkernels.get_num_threads()
    results = []
    try:
        for n in (1, 2, 2, 3):
            nnkernels.set_num_threads(n)
            out, lse = ops.scaled_dot_product_attention(q, k, v, is_causal=causal, return_lse=True)
            grads = ops.scaled_dot_product_attention_backward(g, q, k, v, out, lse, is_causal=causal)
            results.append((out, lse) + tuple(grads))
    finally:
        nnkernels.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_errors(rng):
    q = rng.standard_normal((2, 4, 5, 8))
    k = rng.standard_normal((2, 4, 6, 8))
    with pytest.raises(ValueError, match="head dim"):
        ops.scaled_dot_product_attention(q, rng.standard_normal((2, 4, 6, 9)), k)
    with pytest.raises(ValueError, match="keys"):
        ops.scaled_dot_product_attention(q, k, rng.standard_normal((2, 4, 7, 8)))
    with pytest.raises(ValueError, match="broadcast"):
        ops.scaled_dot_product_attention(q, rng.standard_normal((3, 4, 6, 8)),
                                         rng.standard_normal((3, 4, 6, 8)))
    with pytest.raises(ValueError, match="enable_gqa"):
        ops.scaled_dot_product_attention(q, k[:, :2], k[:, :2])
    with pytest.raises(ValueError, match="multiple"):
        ops.scaled_dot_product_attention(q, k[:, :3], k[:, :3], enable_gqa=True)
    with pytest.raises(ValueError, match="multiple"):  # zero key heads: an error, not a division by zero
        ops.scaled_dot_product_attention(q, k[:, :0], k[:, :0], enable_gqa=True)
    with pytest.raises(ValueError, match="attn_mask"):
        ops.scaled_dot_product_attention(q, k, k, np.ones((5, 7), bool))
    with pytest.raises(ValueError, match="is_causal"):
        ops.scaled_dot_product_attention(q, k, k, np.ones((5, 6), bool), is_causal=True)
    with pytest.raises(TypeError, match="attn_mask"):
        ops.scaled_dot_product_attention(q, k, k, np.ones((5, 6), np.int32))
    with pytest.raises(TypeError, match="attn_mask"):
        ops.scaled_dot_product_attention(q, k, k, np.ones((5, 6), np.float32))
    with pytest.raises(TypeError):
        ops.scaled_dot_product_attention(q.astype(np.float32), k, k)
    with pytest.raises(TypeError):
        ops.scaled_dot_product_attention(q.astype(np.int64), k, k)
    with pytest.raises(ValueError):
        ops.scaled_dot_product_attention(q[0, 0, 0], k, k)
    out, lse = ops.scaled_dot_product_attention(q, k, k, return_lse=True)
    with pytest.raises(ValueError, match="grad_out"):
        ops.scaled_dot_product_attention_backward(out[:, :, :4], q, k, k, out, lse)
    with pytest.raises(ValueError, match="lse"):
        ops.scaled_dot_product_attention_backward(out, q, k, k, out, lse[..., :4])
