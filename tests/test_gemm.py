"""The GEMM family (gemm, matmul, linear, linear_backward, pre-packed operands, the
reference loop) against torch, on every kernel set this CPU runs.

References are computed by torch in float64 from the same (float32 or float64) inputs,
i.e. the exact answer up to float64 rounding, so float32 results are held to TOL[float32]
of the truth, not of another float32 implementation. Shapes are chosen from the block
sizes of each ISA's kernel (read from the kernels' table, csrc/cpu/gemm/blocksizes.cpp): one below, at and one above
MR, NR, MC, KC and NC, with the other two dimensions small so every case stays cheap.
"""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import as_strided

import nnkernels
from nnkernels import _C, ops

from conftest import DTYPES, assert_close


def blocks(isa, dtype):
    """(MR, NR, MC, KC, NC) of this ISA's kernel for dtype (csrc/cpu/gemm/blocksizes.cpp)."""
    d = _C.gemm_block_sizes(isa, np.dtype(dtype).name)
    return d["MR"], d["NR"], d["MC"], d["KC"], d["NC"]


LAYOUTS = ["c", "f", "swap", "step", "neg", "mixed"]


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def layout(x, kind):
    """The same values as x, laid out in memory as `kind` says (a view where it can be)."""
    nd = x.ndim
    if kind == "c" or nd == 0:
        return np.ascontiguousarray(x)
    if kind == "f":  # Fortran order: every axis reversed in memory
        return np.asfortranarray(x)
    if kind == "swap":  # transposed view of a C array (last two axes swapped)
        if nd < 2:
            return layout(x, "step")
        return np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
    if kind == "step":  # slices with steps 2 and 3, and an offset
        big = np.full([3 * s + 1 for s in x.shape], np.nan, dtype=x.dtype)
        idx = tuple(slice(1, 1 + (2 + d % 2) * s, 2 + d % 2) for d, s in enumerate(x.shape))
        big[idx] = x
        return big[idx]
    if kind == "neg":  # negative strides on every axis
        rev = (slice(None, None, -1),) * nd
        return np.ascontiguousarray(x[rev])[rev]
    if kind == "mixed":  # rows stepped, columns reversed (Fortran-ordered parent)
        big = np.full(x.shape[:-1] + (2 * x.shape[-1],) if nd else (), np.nan, dtype=x.dtype)
        big = np.asfortranarray(big)
        v = big[..., ::-2]
        v[...] = x
        return v
    raise AssertionError(kind)


def T(x):
    """float64 torch copy (the reference computes in float64)."""
    return torch.from_numpy(np.array(x, dtype=np.float64))


def ref_addmm(a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=1.0):
    ta, tb = T(a), T(b)
    if trans_a:
        ta = ta.T
    if trans_b:
        tb = tb.T
    if c is None or beta == 0:
        return (alpha * (ta @ tb)).numpy()
    return torch.addmm(T(c), ta, tb, beta=beta, alpha=alpha).numpy()


def check(ours, ref, dtype, factor=1.0):
    assert isinstance(ours, np.ndarray)
    assert ours.dtype == dtype
    assert ours.flags.c_contiguous
    assert_close(ours, ref, dtype, factor)


def assert_nonfinite_match(ours, ref, dtype):
    """NaN, +inf and -inf in the same places; finite values close."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(ref))
    fin = np.isfinite(ref)
    assert_close(np.where(fin, ours, 0), np.where(fin, ref, 0), dtype)


@pytest.fixture
def threads():
    """Restores the thread count after a test that changes it."""
    n = nnkernels.get_num_threads()
    yield
    nnkernels.set_num_threads(n)


def edge_shapes(isa, dtype, dim):
    """(M, N, K) cases one off the `dim` block size of this ISA's kernel."""
    MR, NR, MC, KC, NC = blocks(isa, dtype)
    # Small partner sizes read A/B in place (direct paths); the "wide" ones (more than
    # 4 micro-panels) force packing of the other operand.
    wide_m, wide_n = 4 * MR + 1, 4 * NR + 1
    if dim == "mr":
        # Also M around multiples of 8: the engine switches to an 8-row variant of the
        # kernel where that pads M much less (AVX-512: M = 15, 17, 32, 33, 64).
        ms = (MR - 1, MR, MR + 1, 2 * MR + 1, 7, 8, 9, 17, 32, 33, 64)
        return [(m, n, k) for m in ms for n in (5, wide_n) for k in (9, KC + 3)]
    if dim == "nr":
        return [(m, n, 9) for n in (NR - 1, NR, NR + 1, 2 * NR - 1) for m in (3, wide_m)]
    if dim == "kc":
        return [(m, n, k) for k in (KC - 1, KC, KC + 1, 2 * KC + 1)
                for m, n in ((3, 5), (wide_m, wide_n))]
    if dim == "mc":
        return [(m, n, k) for m in (MC - 1, MC, MC + 1) for n, k in ((7, 5), (wide_n, KC + 1))]
    if dim == "nc":
        return [(m, n, 5) for n in (NC - 1, NC, NC + 1) for m in (3, wide_m)]
    raise AssertionError(dim)


# ---------------------------------------------------------------------------------------
# gemm: values
# ---------------------------------------------------------------------------------------


def test_block_sizes_are_consistent():
    # The shapes below come from the kernels' own block table; check it is sane.
    for isa in nnkernels.config()["isas"]:
        for dt in DTYPES:
            MR, NR, MC, KC, NC = blocks(isa, dt)
            assert min(MR, NR, MC, KC, NC) >= 1
            assert MC % MR == 0 and NC % NR == 0, (isa, dt, MR, NR, MC, NC)
            p = _C.pack_b(np.zeros((3, 5), dt))
            assert p.shape == (3, 5)
    with pytest.raises(ValueError):
        _C.gemm_block_sizes("bogus", "float32")
    with pytest.raises(TypeError):
        _C.gemm_block_sizes("generic", "int32")


@pytest.mark.parametrize("dim", ["mr", "nr", "kc", "mc", "nc"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_block_edges(isa, dtype, dim, rng):
    for M, N, K in edge_shapes(isa, dtype, dim):
        a, b = rand(rng, (M, K), dtype), rand(rng, (K, N), dtype)
        check(ops.gemm(a, b), ref_addmm(a, b), dtype)
        # Transposed operands (B then has a non-unit column stride and is packed), a bias
        # row, alpha and beta.
        at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
        c = rand(rng, (N,), dtype)
        got = ops.gemm(at, bt, c, trans_a=True, trans_b=True, alpha=-0.75, beta=0.5)
        check(got, ref_addmm(a, b, c, alpha=-0.75, beta=0.5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_small_and_prime_shapes(isa, dtype, rng):
    sizes = (0, 1, 2, 3, 5, 13, 31, 37)
    for M in sizes:
        for N in sizes:
            for K in sizes:
                a, b = rand(rng, (M, K), dtype), rand(rng, (K, N), dtype)
                got = ops.gemm(a, b)
                assert got.shape == (M, N)
                check(got, ref_addmm(a, b), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_transposed_view_at_buffer_end(isa, dtype, rng):
    # A = the last m columns of X (K x w), transposed: unit row stride, column stride w, and
    # its last element is the last of X's buffer. For w = MR the micro-kernel would take
    # such an A for a packed panel and read rows past m (past the buffer: the sanitizer build
    # reports it); the engine packs it instead. Values checked for every w near MR.
    MR = blocks(isa, dtype)[0]
    for w in sorted({4, 6, 8, MR - 1, MR, MR + 1}):
        for m in (1, 3, min(5, w)):
            x = rand(rng, (257, w), dtype)
            a = x.T[w - m:]
            b = rand(rng, (257, 7), dtype)
            check(ops.gemm(a, b), ref_addmm(a, b), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shared", ["b", "a"])
def test_gemm_shared_packing(isa, dtype, shared, rng):
    """Two threads whose grid splits only M (only N) share one packing of B (of A), done in
    parallel before the product: the results are bitwise those of one thread and match
    torch, for plain, transposed and strided operands, with C, bias and activation."""
    M, N, K = (300, 200, 1601) if shared == "b" else (100, 1000, 1601)  # K blocks of unequal length
    n = nnkernels.get_num_threads()
    a_full = rand(rng, (K, 2 * M), dtype)
    b_full = rand(rng, (2 * N, K), dtype)
    cases = [(rand(rng, (M, K), dtype), rand(rng, (K, N), dtype)),
             (a_full[:, ::2].T, b_full[::2].T)]          # transposed and strided views
    c = rand(rng, (M, N), dtype)
    bias = rand(rng, (N,), dtype)
    try:
        for a, b in cases:
            res = []
            for nt in (1, 2):
                nnkernels.set_num_threads(nt)
                res.append((ops.gemm(a, b, c, alpha=0.5, beta=1.5),
                            ops.linear(a, np.ascontiguousarray(b.T), bias, activation="relu")))
            np.testing.assert_array_equal(res[0][0], res[1][0])
            np.testing.assert_array_equal(res[0][1], res[1][1])
            check(res[1][0], ref_addmm(a, b, c, alpha=0.5, beta=1.5), dtype)
            check(res[1][1], np.maximum(ref_addmm(a, b) + bias, 0), dtype)
    finally:
        nnkernels.set_num_threads(n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_zero_size(isa, dtype, rng):
    for M, N, K in [(0, 5, 3), (4, 0, 3), (0, 0, 0), (4, 5, 0), (0, 5, 0), (70, 300, 0)]:
        a, b = rand(rng, (M, K), dtype), rand(rng, (K, N), dtype)
        got = ops.gemm(a, b)
        assert got.shape == (M, N) and got.dtype == dtype
        np.testing.assert_array_equal(got, np.zeros((M, N)))
        c = rand(rng, (M, N), dtype)
        # K == 0: the product is zero, the result is beta * c (torch.addmm).
        check(ops.gemm(a, b, c, alpha=2.0, beta=-1.5), ref_addmm(a, b, c, alpha=2.0, beta=-1.5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_layouts(isa, dtype, rng):
    # Every operand in every layout: small (direct paths) and wide (packed) problems.
    for M, N, K in [(23, 41, 19), (61, 133, 270)]:
        a0, b0, c0 = rand(rng, (M, K), dtype), rand(rng, (K, N), dtype), rand(rng, (M, N), dtype)
        ref = ref_addmm(a0, b0, c0, alpha=1.25, beta=-0.5)
        for i, la in enumerate(LAYOUTS):
            for j, lb in enumerate(LAYOUTS):
                lc = LAYOUTS[(i + j) % len(LAYOUTS)]
                a, b, c = layout(a0, la), layout(b0, lb), layout(c0, lc)
                got = ops.gemm(a, b, c, alpha=1.25, beta=-0.5)
                check(got, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_broadcast_operands(dtype, rng):
    # Zero strides (np.broadcast_to, read-only) are valid inputs.
    M, N, K = 17, 70, 29
    a = np.broadcast_to(rand(rng, (1, K), dtype), (M, K))
    b = np.broadcast_to(rand(rng, (K, 1), dtype), (K, N))
    c = np.broadcast_to(rand(rng, (N,), dtype), (M, N))
    check(ops.gemm(a, b, c), ref_addmm(a, b, c), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_torch_tensors(dtype, rng):
    M, N, K = 19, 37, 23
    a, b, c = rand(rng, (M, K), dtype), rand(rng, (N, K), dtype), rand(rng, (M, N), dtype)
    ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
    ref = ref_addmm(a, b.T, c)
    check(ops.gemm(ta, tb.t(), tc), ref, dtype)                 # transposed torch view
    check(ops.gemm(ta, tb, tc, trans_b=True), ref, dtype)
    big = torch.from_numpy(rand(rng, (2 * M, 3 * K), dtype))
    check(ops.gemm(big[::2, ::3], tb.t()), ref_addmm(big.numpy()[::2, ::3], b.T), dtype)
    # The result is numpy, and torch agrees on it.
    got = ops.gemm(ta, tb.t())
    torch.testing.assert_close(torch.from_numpy(got), ta @ tb.t(),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_trans_alpha_beta(isa, dtype, trans_a, trans_b, rng):
    M, N, K = 29, 67, 41
    a = rand(rng, (K, M) if trans_a else (M, K), dtype)
    b = rand(rng, (N, K) if trans_b else (K, N), dtype)
    c = rand(rng, (M, N), dtype)
    for alpha, beta in [(1.0, 1.0), (-0.5, 2.0), (3.0, 0.0), (0.0, 1.0), (1.0, -1.0)]:
        got = ops.gemm(a, b, c, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta)
        check(got, ref_addmm(a, b, c, trans_a, trans_b, alpha, beta), dtype)
    check(ops.gemm(a, b, trans_a=trans_a, trans_b=trans_b, alpha=-2.0),
          ref_addmm(a, b, None, trans_a, trans_b, -2.0), dtype)


@pytest.mark.parametrize("cshape", [(37,), (1, 37), (11, 1), (11, 37), (), (1, 1), (1,)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_c_broadcast(dtype, cshape, rng):
    M, N, K = 11, 37, 13
    a, b = rand(rng, (M, K), dtype), rand(rng, (K, N), dtype)
    c = rand(rng, cshape, dtype)
    got = ops.gemm(a, b, c, alpha=0.5, beta=-2.0)
    ref = torch.addmm(T(c), T(a), T(b), alpha=0.5, beta=-2.0).numpy()
    check(got, ref, dtype)
    # c in another layout and as a torch tensor
    if c.ndim:
        check(ops.gemm(a, b, layout(c, "neg"), alpha=0.5, beta=-2.0), ref, dtype)
    check(ops.gemm(a, b, torch.from_numpy(c), alpha=0.5, beta=-2.0), ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_beta_zero_does_not_read_c(isa, dtype, rng):
    for M, N, K in [(5, 7, 3), (61, 140, 300)]:
        a, b = rand(rng, (M, K), dtype), rand(rng, (K, N), dtype)
        c = np.full((M, N), np.nan, dtype)
        got = ops.gemm(a, b, c, beta=0.0)
        assert np.isfinite(got).all()
        check(got, ref_addmm(a, b), dtype)
        # out= holding NaN is not read either (beta == 0, or c None)
        out = np.full((M, N), np.nan, dtype)
        assert ops.gemm(a, b, out=out) is out
        assert np.isfinite(out).all()
        check(out, ref_addmm(a, b), dtype)
        out[...] = np.inf
        ops.gemm(a, b, c, beta=0.0, alpha=2.0, out=out)
        check(out, ref_addmm(a, b, alpha=2.0), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_nan_inf_propagate(isa, dtype, rng):
    for M, N, K in [(6, 9, 5), (61, 140, 300)]:
        a, b = rand(rng, (M, K), dtype), rand(rng, (K, N), dtype)
        a[1, 2] = np.nan            # row 1 all NaN
        a[3, 0] = np.inf            # inf * 0 -> NaN in the columns where b[0] is 0 ...
        b[0, : N // 2] = 0.0        # ... and +-inf elsewhere in row 3 (unless other NaN)
        b[K - 1, N - 1] = -np.inf   # column N-1: -inf (or NaN with row 3 / row 1)
        got = ops.gemm(a, b)
        ref = (T(a) @ T(b)).numpy()
        assert np.isnan(ref[3, 0]) and np.isnan(ref[1]).all()
        assert_nonfinite_match(got, ref, dtype)
        # NaN in c propagates when beta != 0
        c = np.zeros((M, N), dtype)
        c[0, 1] = np.nan
        got = ops.gemm(a, b, c, beta=1.0)
        assert_nonfinite_match(got, torch.addmm(T(c), T(a), T(b)).numpy(), dtype)
        # NaN in a zero-padded edge tile stays in its row
        a2, b2 = rand(rng, (M, K), dtype), rand(rng, (K, N), dtype)
        a2[M - 1, K - 1] = np.nan
        got = ops.gemm(a2, b2)
        assert np.isnan(got[M - 1]).all() and np.isfinite(got[: M - 1]).all()


# ---------------------------------------------------------------------------------------
# internal: the reference loop and pre-packed operands
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_ref(dtype, rng):
    for M, N, K in [(0, 3, 4), (1, 1, 1), (7, 13, 0), (17, 5, 29)]:
        for la, lb in [("c", "c"), ("f", "neg"), ("step", "swap")]:
            a, b = layout(rand(rng, (M, K), dtype), la), layout(rand(rng, (K, N), dtype), lb)
            check(_C.gemm_ref(a, b), ref_addmm(a, b), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pack_b(isa, dtype, rng):
    MR, NR, MC, KC, NC = blocks(isa, dtype)
    for M, N, K in [(1, 1, 1), (3, NR + 1, KC + 1), (4 * MR + 3, 3 * NR - 1, 2 * KC + 3),
                    (MC + 1, 5, 7), (5, 0, 3), (0, 4, 3)]:
        for lb in ("c", "swap", "neg"):
            b = layout(rand(rng, (K, N), dtype), lb)
            pb = _C.pack_b(b)
            assert pb.shape == (K, N) and pb.isa == isa
            b_copy = b.copy()
            for la in ("c", "f"):
                a = layout(rand(rng, (M, K), dtype), la)
                got = _C.gemm_packed(a, pb)
                check(got, ref_addmm(a, b_copy), dtype)
            # the packed copy is independent of the source
            b[...] = 0
            check(_C.gemm_packed(a, pb), ref_addmm(a, b_copy), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pack_a(isa, dtype, rng):
    MR, NR, MC, KC, NC = blocks(isa, dtype)
    for M, N, K in [(1, 1, 1), (MR + 1, 3, KC + 1), (4 * MR + 3, 4 * NR + 5, 2 * KC + 3),
                    (MC + 1, 5, 7), (0, 4, 3), (5, 0, 3)]:
        for la in ("c", "swap", "step"):
            a = layout(rand(rng, (M, K), dtype), la)
            pa = _C.pack_a(a)
            assert pa.shape == (M, K) and pa.isa == isa
            for lb in ("c", "f"):
                b = layout(rand(rng, (K, N), dtype), lb)
                check(_C.gemm_packed(pa, b), ref_addmm(a, b), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_survives_isa_switch(dtype, rng):
    # A weight packed for one ISA keeps working (with its own kernel) after set_isa.
    isas = nnkernels.config()["isas"]
    a, b = rand(rng, (37, 300), dtype), rand(rng, (300, 45), dtype)
    try:
        for packer in isas:
            nnkernels.set_isa(packer)
            pb, pa = _C.pack_b(b), _C.pack_a(a)
            for user in isas:
                nnkernels.set_isa(user)
                check(_C.gemm_packed(a, pb), ref_addmm(a, b), dtype)
                check(_C.gemm_packed(pa, b), ref_addmm(a, b), dtype)
    finally:
        nnkernels.set_isa(isas[0])


def test_gemm_packed_errors(rng):
    a = rand(rng, (4, 5), np.float32)
    pb = _C.pack_b(rand(rng, (5, 6), np.float32))
    pa = _C.pack_a(a)
    with pytest.raises(ValueError):
        _C.gemm_packed(a, a)            # nothing packed
    with pytest.raises(ValueError):
        _C.gemm_packed(pa, pb)          # both packed
    with pytest.raises(ValueError):
        _C.gemm_packed(pb, a)           # B-packed on the A side
    with pytest.raises(ValueError):
        _C.gemm_packed(rand(rng, (4, 6), np.float32), pb)  # K mismatch
    with pytest.raises(TypeError):
        _C.gemm_packed(a.astype(np.float64), pb)
    with pytest.raises(ValueError):
        _C.pack_b(np.zeros(3, np.float32))
    with pytest.raises(TypeError):
        _C.pack_a(np.zeros((3, 3), np.int32))


# ---------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((7, 5), (5, 9)),
    ((5,), (5, 9)),                 # vector on the left
    ((7, 5), (5,)),                 # vector on the right
    ((5,), (5,)),                   # dot product -> 0-d
    ((3, 7, 5), (5, 9)),
    ((7, 5), (4, 5, 9)),
    ((2, 1, 7, 5), (3, 5, 9)),      # broadcast batch dims
    ((1, 3, 7, 5), (2, 1, 5, 9)),
    ((5,), (2, 3, 5, 9)),
    ((2, 3, 7, 5), (5,)),
    ((0, 7, 5), (5, 9)),            # zero-size batch
    ((2, 0, 7, 5), (1, 5, 9)),
    ((3, 7, 0), (3, 0, 9)),         # K == 0 -> zeros
    ((3, 0, 5), (5, 9)),
    ((3, 7, 5), (3, 5, 0)),
    ((4, 1, 1), (1, 1, 1)),
    ((6, 29, 31), (6, 31, 17)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_shapes(dtype, sa, sb, rng):
    a, b = rand(rng, sa, dtype), rand(rng, sb, dtype)
    ref = torch.matmul(T(a), T(b)).numpy()
    got = ops.matmul(a, b)
    assert got.shape == ref.shape
    check(got, ref, dtype)
    for la, lb in [("f", "neg"), ("neg", "swap"), ("step", "f"), ("swap", "mixed")]:
        check(ops.matmul(layout(a, la), layout(b, lb)), ref, dtype)
    if min(a.strides + b.strides, default=0) >= 0:
        check(ops.matmul(torch.from_numpy(a), torch.from_numpy(b)), ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_isas(isa, dtype, rng):
    MR, NR, MC, KC, NC = blocks(isa, dtype)
    for sa, sb in [((3, MR + 1, KC + 1), (KC + 1, NR - 1)),
                   ((2, 1, 4 * MR + 1, 17), (3, 17, 4 * NR + 1)),
                   ((5, 2, 9), (1, 9, 2 * NR + 1))]:
        a, b = rand(rng, sa, dtype), rand(rng, sb, dtype)
        ref = torch.matmul(T(a), T(b)).numpy()
        check(ops.matmul(a, b), ref, dtype)
        check(ops.matmul(layout(a, "swap"), layout(b, "neg")), ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_large_batch_items(dtype, rng):
    # Each product large enough that the batch runs one matrix after another, each on
    # every thread (the other batched path).
    a, b = rand(rng, (2, 1, 330, 820), dtype), rand(rng, (2, 820, 500), dtype)
    check(ops.matmul(a, b), torch.matmul(T(a), T(b)).numpy(), dtype)


def test_matmul_torch_views(rng):
    a = torch.from_numpy(rand(rng, (4, 9, 7), np.float32))
    b = torch.from_numpy(rand(rng, (4, 11, 9), np.float32))
    got = ops.matmul(a.transpose(1, 2), b.transpose(1, 2))
    ref = torch.matmul(a.double().transpose(1, 2), b.double().transpose(1, 2)).numpy()
    check(got, ref, np.float32)


# ---------------------------------------------------------------------------------------
# linear and linear_backward
# ---------------------------------------------------------------------------------------


def ref_linear(x, w, bias, activation):
    y = F.linear(T(x), T(w), None if bias is None else T(bias))
    if activation == "relu":
        y = F.relu(y)
    elif activation == "gelu":
        y = F.gelu(y)
    elif activation == "gelu_tanh":
        y = F.gelu(y, approximate="tanh")
    elif activation == "tanh":
        y = torch.tanh(y)
    elif activation == "sigmoid":
        y = torch.sigmoid(y)
    return y.numpy()


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_block_edges(isa, dtype, activation, rng):
    MR, NR, MC, KC, NC = blocks(isa, dtype)
    cases = [(1, 1, 1), (MR - 1, NR + 1, 3), (MR + 1, NR - 1, KC + 1), (4 * MR + 1, 4 * NR + 1, KC - 1),
             (MC + 1, 3, 2 * KC + 1), (2, 2 * NR + 3, KC), (13, 0, 5), (0, 7, 5), (5, 7, 0),
             (32, 4 * NR + 1, KC + 1), (64, NR + 3, 9)]  # 8-row tiles on AVX-512
    for M, N, K in cases:
        x, w, bias = rand(rng, (M, K), dtype), rand(rng, (N, K), dtype), rand(rng, (N,), dtype)
        got = ops.linear(x, w, bias, activation=activation)
        check(got, ref_linear(x, w, bias, activation), dtype)
        got = ops.linear(x, w, activation=activation)
        check(got, ref_linear(x, w, None, activation), dtype)


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_ranks_and_layouts(dtype, activation, rng):
    out_f, in_f = 19, 23
    w, bias = rand(rng, (out_f, in_f), dtype), rand(rng, (out_f,), dtype)
    for xs in [(in_f,), (7, in_f), (3, 5, in_f), (2, 0, in_f), (2, 3, 4, in_f)]:
        x = rand(rng, xs, dtype)
        ref = ref_linear(x, w, bias, activation)
        got = ops.linear(x, w, bias, activation=activation)
        assert got.shape == xs[:-1] + (out_f,)
        check(got, ref, dtype)
        for i, lx in enumerate(LAYOUTS):
            lw = LAYOUTS[(i + 2) % len(LAYOUTS)]
            lb = LAYOUTS[(i + 3) % len(LAYOUTS)]
            got = ops.linear(layout(x, lx), layout(w, lw), layout(bias, lb), activation=activation)
            check(got, ref, dtype)
        tx = torch.from_numpy(x)
        check(ops.linear(tx, torch.from_numpy(w), torch.from_numpy(bias), activation=activation), ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_relu_nan(isa, dtype, rng):
    # relu(NaN) is NaN (as torch), also in the register epilogue; -inf -> 0, +inf -> inf.
    for M, N, K in [(5, 7, 3), (61, 140, 300)]:
        x, w, bias = rand(rng, (M, K), dtype), rand(rng, (N, K), dtype), rand(rng, (N,), dtype)
        x[1, 0] = np.nan
        bias[2] = -np.inf
        bias[3] = np.inf
        got = ops.linear(x, w, bias, activation="relu")
        ref = ref_linear(x, w, bias, "relu")
        assert np.isnan(ref[1]).all()
        assert_nonfinite_match(got, ref, dtype)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_other_activations(dtype, activation, rng):
    # Lightly: one shape spanning a K block edge, best ISA and generic.
    isas = nnkernels.config()["isas"]
    x, w, bias = rand(rng, (37, 300), dtype), rand(rng, (45, 300), dtype), rand(rng, (45,), dtype)
    x *= 0.1
    ref = ref_linear(x, w, bias, activation)
    try:
        for isa in {isas[0], "generic"}:
            nnkernels.set_isa(isa)
            check(ops.linear(x, w, bias, activation=activation), ref, dtype, factor=4.0)
    finally:
        nnkernels.set_isa(isas[0])


def ref_linear_backward(go, x, w):
    tx = T(x).requires_grad_()
    tw = T(w).requires_grad_()
    tb = torch.zeros(w.shape[0], dtype=torch.float64, requires_grad=True)
    F.linear(tx, tw, tb).backward(T(go))
    return tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward(isa, dtype, rng):
    MR, NR, MC, KC, NC = blocks(isa, dtype)
    for xs, out_f in [((1,), 1), ((7,), 5), ((3, 5, 11), 13), ((KC + 1, MR + 1), NR - 1),
                      ((4 * MR + 1, KC - 1), 4 * NR + 1), ((0, 9), 7), ((2, 0, 9), 7),
                      ((6, 0), 4), ((6, 9), 0)]:
        x = rand(rng, xs, dtype)
        w = rand(rng, (out_f, xs[-1]), dtype)
        go = rand(rng, xs[:-1] + (out_f,), dtype)
        rgx, rgw, rgb = ref_linear_backward(go, x, w)
        gx, gw, gb = ops.linear_backward(go, x, w)
        check(gx, rgx, dtype)
        check(gw, rgw, dtype)
        check(gb, rgb, dtype)
        gx, gw, gb = ops.linear_backward(go, x, w, bias=False)
        assert gb is None
        check(gx, rgx, dtype)
        check(gw, rgw, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward_layouts(dtype, rng):
    x, w, go = rand(rng, (3, 7, 29), dtype), rand(rng, (17, 29), dtype), rand(rng, (3, 7, 17), dtype)
    refs = ref_linear_backward(go, x, w)
    for i, lx in enumerate(LAYOUTS):
        lw, lg = LAYOUTS[(i + 1) % len(LAYOUTS)], LAYOUTS[(i + 4) % len(LAYOUTS)]
        got = ops.linear_backward(layout(go, lg), layout(x, lx), layout(w, lw))
        for g, r in zip(got, refs):
            check(g, r, dtype)
    got = ops.linear_backward(torch.from_numpy(go), torch.from_numpy(x), torch.from_numpy(w).t().contiguous().t())
    for g, r in zip(got, refs):
        check(g, r, dtype)


# ---------------------------------------------------------------------------------------
# out=
# ---------------------------------------------------------------------------------------


def _calls(rng, dtype):
    """(name, fn(out), expected shape, inputs) for each op taking out=."""
    a, b, c = rand(rng, (6, 6), dtype), rand(rng, (6, 6), dtype), rand(rng, (6,), dtype)
    x, w, bias = rand(rng, (2, 3, 6), dtype), rand(rng, (6, 6), dtype), rand(rng, (6,), dtype)
    ba, bb = rand(rng, (2, 6, 6), dtype), rand(rng, (6, 6), dtype)
    return [
        ("gemm", lambda out: ops.gemm(a, b, c, out=out), (6, 6), (a, b, c),
         lambda: ref_addmm(a, b, c)),
        ("matmul", lambda out: ops.matmul(ba, bb, out=out), (2, 6, 6), (ba, bb),
         lambda: torch.matmul(T(ba), T(bb)).numpy()),
        ("linear", lambda out: ops.linear(x, w, bias, activation="relu", out=out), (2, 3, 6), (x, w, bias),
         lambda: ref_linear(x, w, bias, "relu")),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_correct(dtype, rng):
    for name, fn, shape, _, ref in _calls(rng, dtype):
        out = np.full(shape, np.nan, dtype)
        res = fn(out)
        assert res is out, name
        check(out, ref(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_errors_leave_out_untouched(dtype, rng):
    other = np.float64 if dtype == np.float32 else np.float32
    for name, fn, shape, inputs, _ in _calls(rng, dtype):
        bad = {
            "shape": np.full(shape[:-1] + (shape[-1] + 1,), 7.0, dtype),
            "rank": np.full((int(np.prod(shape)),), 7.0, dtype),
            "dtype": np.full(shape, 7.0, other),
            "fortran": np.asfortranarray(np.full(shape, 7.0, dtype)),
            "strided": np.full(shape[:-1] + (2 * shape[-1],), 7.0, dtype)[..., ::2],
            "readonly": np.full(shape, 7.0, dtype),
        }
        bad["readonly"].flags.writeable = False
        for kind, out in bad.items():
            before = out.copy()
            with pytest.raises(ValueError):
                fn(out)
            np.testing.assert_array_equal(out, before, err_msg=f"{name}: out= {kind} was written")
        # out overlapping an input: the input itself (same shape), or a view sharing memory
        for inp in inputs:
            if inp.shape == shape:
                before = inp.copy()
                with pytest.raises(ValueError, match="overlap"):
                    fn(inp)
                np.testing.assert_array_equal(inp, before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_untouched_on_input_errors(dtype, rng):
    # A valid out= and a bad input: the error comes before anything is written.
    a, b = rand(rng, (3, 4), dtype), rand(rng, (4, 5), dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    out = np.full((3, 5), 7.0, dtype)
    for exc, fn in [(ValueError, lambda: ops.gemm(a, b, rand(rng, (2, 5), dtype), out=out)),
                    (TypeError, lambda: ops.gemm(a, b.astype(other), out=out)),
                    (TypeError, lambda: ops.gemm(a, b, b[:, :1].astype(np.int32), out=out)),
                    (ValueError, lambda: ops.linear(a, rand(rng, (5, 4), dtype), rand(rng, (4,), dtype), out=out)),
                    (ValueError, lambda: ops.linear(a, rand(rng, (5, 4), dtype), activation="swish", out=out)),
                    (ValueError, lambda: ops.matmul(a, rand(rng, (3, 5), dtype), out=out))]:
        with pytest.raises(exc):
            fn()
        assert (out == 7.0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_overlap_views(dtype, rng):
    buf = rand(rng, (40,), dtype)
    a = buf[:12].reshape(3, 4)
    b = rand(rng, (4, 5), dtype)
    # out's memory starts inside a
    out = buf[10:25].reshape(3, 5)
    before = buf.copy()
    with pytest.raises(ValueError):
        ops.gemm(a, b, out=out)
    np.testing.assert_array_equal(buf, before)
    # out interleaved with a reversed, strided input
    buf2 = rand(rng, (3, 10), dtype)
    a2 = buf2[::-1, ::2][:, :4]
    out2 = buf2[:, 5:10]
    before = buf2.copy()
    with pytest.raises(ValueError):
        ops.gemm(a2, b, out=out2)
    np.testing.assert_array_equal(buf2, before)
    # disjoint parts of one buffer are fine
    out3 = buf[20:35].reshape(3, 5)
    assert ops.gemm(a, b, out=out3) is out3
    check(out3, ref_addmm(a, b), dtype)
    # c overlapping out is rejected too
    c = buf[20:35].reshape(3, 5)
    with pytest.raises(ValueError):
        ops.gemm(a, b, c, out=buf[20:35].reshape(3, 5))


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------

BAD_DTYPES = [np.int32, np.int64, np.float16, np.bool_, np.complex64, np.uint8]


@pytest.mark.parametrize("bad", BAD_DTYPES)
def test_dtype_errors_name_the_argument(bad):
    f = np.ones((3, 3), np.float32)
    z = np.ones((3, 3), bad)
    zv = np.ones(3, bad)
    dname = np.dtype(bad).name
    cases = [
        ("a", lambda: ops.gemm(z, f)), ("b", lambda: ops.gemm(f, z)), ("c", lambda: ops.gemm(f, f, z)),
        ("a", lambda: ops.matmul(z, f)), ("b", lambda: ops.matmul(f, z)),
        ("x", lambda: ops.linear(z, f)), ("weight", lambda: ops.linear(f, z)),
        ("bias", lambda: ops.linear(f, f, zv)),
        ("grad_out", lambda: ops.linear_backward(z, f, f)), ("x", lambda: ops.linear_backward(f, z, f)),
        ("weight", lambda: ops.linear_backward(f, f, z)),
    ]
    for arg, fn in cases:
        with pytest.raises(TypeError) as ei:
            fn()
        msg = str(ei.value)
        assert arg in msg and dname in msg, msg


def test_mixed_float_dtypes():
    f32, f64 = np.ones((3, 3), np.float32), np.ones((3, 3), np.float64)
    for fn in [lambda: ops.gemm(f32, f64), lambda: ops.gemm(f64, f32), lambda: ops.gemm(f32, f32, f64),
               lambda: ops.matmul(f32, f64), lambda: ops.linear(f32, f64),
               lambda: ops.linear(f32, f32, np.ones(3, np.float64)),
               lambda: ops.linear_backward(f32, f64, f32), lambda: ops.linear_backward(f64, f32, f32)]:
        with pytest.raises(TypeError, match="float32|float64"):
            fn()
    # torch tensors of a bad dtype too
    with pytest.raises(TypeError):
        ops.gemm(torch.ones(3, 3, dtype=torch.int64), f32)
    with pytest.raises(TypeError):
        ops.gemm(torch.ones(3, 3, dtype=torch.bfloat16), torch.ones(3, 3, dtype=torch.bfloat16))


def _shape_error(fn, *needles):
    with pytest.raises(ValueError) as ei:
        fn()
    msg = str(ei.value)
    for n in needles:
        assert n in msg, (n, msg)


def test_shape_errors_name_arguments_and_shapes():
    f = np.float64
    a, b = np.ones((3, 4), f), np.ones((5, 6), f)
    _shape_error(lambda: ops.gemm(a, b), "a", "(3, 4)", "b", "(5, 6)")
    _shape_error(lambda: ops.gemm(a, np.ones((4, 4), f), trans_a=True), "a", "(3, 4)", "b", "(4, 4)")
    _shape_error(lambda: ops.gemm(a, np.ones((4, 5), f), np.ones((4,), f)), "c", "(4,)", "(3, 5)")
    _shape_error(lambda: ops.gemm(a, np.ones((4, 5), f), np.ones((2, 5), f)), "c", "(2, 5)")
    _shape_error(lambda: ops.matmul(a, b), "a", "(3, 4)", "b", "(5, 6)")
    _shape_error(lambda: ops.matmul(np.ones((2, 3, 4), f), np.ones((3, 4, 5), f)), "a", "(2, 3, 4)", "b", "(3, 4, 5)")
    _shape_error(lambda: ops.matmul(np.ones(4, f), np.ones(5, f)), "a", "(4,)", "b", "(5,)")
    _shape_error(lambda: ops.linear(a, np.ones((5, 6), f)), "x", "(3, 4)", "weight", "(5, 6)")
    _shape_error(lambda: ops.linear(a, np.ones((5, 4), f), np.ones(4, f)), "bias", "(4,)", "(5,)")
    _shape_error(lambda: ops.linear(a, np.ones((5, 4), f), np.ones((1, 5), f)), "bias", "(1, 5)")
    _shape_error(lambda: ops.linear_backward(np.ones((3, 6), f), a, np.ones((5, 4), f)),
                 "grad_out", "(3, 6)", "(3, 5)")
    _shape_error(lambda: ops.linear_backward(np.ones((3, 5), f), a, np.ones((5, 6), f)),
                 "x", "(3, 4)", "weight", "(5, 6)")


def test_rank_errors():
    f = np.float32
    for fn in [lambda: ops.gemm(np.ones(3, f), np.ones((3, 3), f)),
               lambda: ops.gemm(np.ones((3, 3), f), np.ones((1, 3, 3), f)),
               lambda: ops.gemm(np.ones((3, 3), f), np.ones((3, 3), f), np.ones((1, 3, 3), f)),
               lambda: ops.gemm(np.float32(1), np.ones((3, 3), f)),
               lambda: ops.matmul(np.ones((), f), np.ones((3, 3), f)),
               lambda: ops.matmul(np.ones((3, 3), f), np.ones((), f)),
               lambda: ops.linear(np.ones((), f), np.ones((3, 3), f)),
               lambda: ops.linear(np.ones((2, 3), f), np.ones(3, f)),
               lambda: ops.linear(np.ones((2, 3), f), np.ones((1, 3, 3), f)),
               lambda: ops.linear_backward(np.ones((2, 3), f), np.ones((2, 3), f), np.ones(3, f))]:
        with pytest.raises(ValueError):
            fn()


def test_unknown_activation():
    x, w = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    for act in ["Relu", "gelu_erf", "", "none", "softmax"]:
        with pytest.raises(ValueError, match="activation"):
            ops.linear(x, w, activation=act)
    with pytest.raises(ValueError):
        ops.linear(x, w, activation=1)


def test_non_array_inputs():
    # Nested lists are arrays (float64); objects that are not arrays are TypeError.
    got = ops.gemm([[1.0, 2.0]], [[3.0], [4.0]])
    assert got.dtype == np.float64 and got.tolist() == [[11.0]]
    with pytest.raises(TypeError):
        ops.gemm("ab", np.ones((1, 1)))
    with pytest.raises(TypeError):
        ops.gemm(object(), np.ones((1, 1)))


def _huge(shape, dtype=np.float64):
    return as_strided(np.zeros(1, dtype), shape=shape, strides=(0,) * len(shape))


def test_huge_sizes_raise():
    # Results whose byte count overflows int64, or that no machine can hold: an
    # exception, never a crash (inputs are zero-stride views, so they cost nothing).
    n = 2**31
    a, b = _huge((n, 1)), _huge((1, n))
    for fn in [lambda: ops.gemm(a, b), lambda: ops.gemm(b, a, trans_a=True, trans_b=True),
               lambda: ops.matmul(a, b), lambda: ops.matmul(_huge((n, n // 2, 1, 1)), _huge((1, 1))),
               lambda: ops.linear(a, _huge((n, 1))),
               lambda: ops.linear(_huge((n, n // 4, 1)), _huge((4, 1)))]:
        with pytest.raises((ValueError, MemoryError)):
            fn()
    # Fits in int64 but not in memory.
    a32, b32 = _huge((2**30, 1), np.float32), _huge((1, 2**29), np.float32)
    with pytest.raises((ValueError, MemoryError)):
        ops.gemm(a32, b32)
    with pytest.raises((ValueError, MemoryError)):
        ops.linear_backward(_huge((2**31, 2**29)), _huge((2**31, 1)), _huge((2**29, 1)))


# ---------------------------------------------------------------------------------------
# determinism and threads
# ---------------------------------------------------------------------------------------

DET_SHAPES = [(301, 263, 150), (40, 1000, 300), (1000, 40, 300), (130, 130, 700), (3, 4097, 64)]


def _det_results(rng_seed, dtype):
    rng = np.random.default_rng(rng_seed)
    res = []
    for M, N, K in DET_SHAPES:
        a, b, c = rand(rng, (M, K), dtype), rand(rng, (K, N), dtype), rand(rng, (N,), dtype)
        res.append(ops.gemm(a, b, c, alpha=0.5, beta=1.5))
        res.append(ops.gemm(np.ascontiguousarray(a.T), b, trans_a=True))
        res.append(ops.linear(a, np.ascontiguousarray(b.T), c, activation="relu"))
        res.extend(ops.linear_backward(rand(rng, (M, N), dtype), a, np.ascontiguousarray(b.T)))
    res.append(ops.matmul(rand(rng, (64, 20, 30), dtype), rand(rng, (30, 40), dtype)))
    return res


@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_and_thread_count_independent(isa, dtype, threads):
    first = _det_results(1, dtype)
    again = _det_results(1, dtype)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    nnkernels.set_num_threads(1)
    one = _det_results(1, dtype)
    nnkernels.set_num_threads(2)
    two = _det_results(1, dtype)
    nnkernels.set_num_threads(3)
    three = _det_results(1, dtype)
    for x, y, z in zip(one, two, three):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)


@pytest.mark.parametrize("dtype", DTYPES)
def test_many_python_threads(isa, dtype, rng):
    # 8 Python threads calling at once get bitwise the results of one thread.
    jobs = []
    for M, N, K in [(200, 200, 200), (37, 500, 300), (300, 17, 257), (5, 7, 3)]:
        a, b, bias = rand(rng, (M, K), dtype), rand(rng, (N, K), dtype), rand(rng, (N,), dtype)
        go = rand(rng, (M, N), dtype)
        jobs.append(lambda a=a, b=b, bias=bias: ops.gemm(a, b, bias, trans_b=True, beta=-1.0))
        jobs.append(lambda a=a, b=b, bias=bias: ops.linear(a, b, bias, activation="relu"))
        jobs.append(lambda a=a, b=b, go=go: ops.linear_backward(go, a, b)[1])
    ba, bb = rand(rng, (16, 30, 40), dtype), rand(rng, (40, 50), dtype)
    jobs.append(lambda: ops.matmul(ba, bb))
    expected = [j() for j in jobs]
    errors = []
    barrier = threading.Barrier(8)

    def worker(t):
        try:
            barrier.wait()
            for it in range(4):
                for k in range(len(jobs)):
                    j = (k + t + it) % len(jobs)
                    got = jobs[j]()
                    if not np.array_equal(got, expected[j]):
                        errors.append((t, j))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((t, repr(e)))

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_dot_path(isa, dtype, rng):
    """A side of at most 4 with A rows and B columns contiguous along K (x @ W.T, W @ x.T):
    the engine's dot-product path, with every epilogue term, across vector-length tails."""
    for M, N in ((1, 1), (1, 37), (2, 100), (3, 4), (4, 65), (5, 3), (37, 1), (130, 4), (4, 4)):
        for K in (1, 7, 16, 17, 300):
            a = rand(rng, (M, K), dtype)
            w = rand(rng, (N, K), dtype)
            check(ops.gemm(a, w, trans_b=True), ref_addmm(a, w, trans_b=True), dtype)
            c = rand(rng, (M, N), dtype)
            got = ops.gemm(a, w, c, trans_b=True, alpha=-1.5, beta=0.25)
            # (x4: with one or two outputs, alpha AB + beta c may cancel)
            check(got, ref_addmm(a, w, c, trans_b=True, alpha=-1.5, beta=0.25), dtype, 4)
            bias = rand(rng, (N,), dtype)
            pre = ops.linear(a, w, bias)
            check(pre, ref_linear(a, w, bias, None), dtype)
            # the fused activation is the elementwise op's, applied to the same values (gelu
            # far in its tail amplifies the pre-activation's rounding ~50x, so it is not
            # compared with the exact product here; test_act.py checks gelu itself)
            check(ops.linear(a, w, bias, activation="relu"), F.relu(T(pre)).numpy(), dtype)
            check(ops.linear(a, w, bias, activation="gelu"), ops.gelu(pre), dtype)
    # non-finite values propagate through the dot and the epilogue
    a = rand(rng, (2, 33), dtype)
    w = rand(rng, (5, 33), dtype)
    a[0, 3] = np.nan
    a[1, 4] = np.inf
    assert_nonfinite_match(ops.gemm(a, w, trans_b=True), ref_addmm(a, w, trans_b=True), dtype)
    got = ops.linear(a, w, activation="relu")
    assert np.isnan(got[0]).all()
