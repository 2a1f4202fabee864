"""The caching pool behind large outputs: views keep blocks alive, reuse never aliases."""

import gc

import numpy as np

from nnkernels import ops


def test_pooled_output_outlives_its_views(rng):
    # (600, 600) float32 = 1.4 MB: above the pool's 1 MiB threshold.
    a = rng.standard_normal((600, 600)).astype(np.float32)
    b = rng.standard_normal((600, 600)).astype(np.float32)
    c = ops.gemm(a, b)
    view = c[::3, 1:]
    expected = view.copy()
    del c
    gc.collect()
    # New outputs of the same size must not reuse the block the view still holds.
    others = [ops.gemm(b, a) for _ in range(3)]
    assert np.array_equal(view, expected)
    for o in others:
        assert not np.shares_memory(o, view)
    assert view.base is not None


def test_pooled_blocks_are_reused_without_stale_results(rng):
    a = rng.standard_normal((700, 700))
    b = rng.standard_normal((700, 700))
    first = ops.gemm(a, b)
    ref = first.copy()
    del first
    gc.collect()
    second = ops.gemm(b, a, beta=0.0)
    np.testing.assert_allclose(second, b @ a, rtol=1e-12, atol=1e-10)
    assert second.flags.c_contiguous and second.flags.writeable and second.flags.owndata is False
    third = ops.gemm(a, b)
    np.testing.assert_array_equal(third, ref)
