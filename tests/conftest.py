"""Shared test fixtures: seeded RNG, the tolerance table, the `isa` fixture."""

import contextlib
import zlib

import numpy as np
import pytest

import nnkernels

# Relative error of the norm, ||ours - ref|| / ||ref||, against torch in float64.
# float64: the algorithms sum in a different order than torch; 1e-12 leaves room for
# K up to ~1e4. float32: FA-style bound of a few ulps times sqrt(K) growth.
TOL = {np.float64: 1e-12, np.float32: 2e-6}

# Elementwise accuracy on dense grids (test_act.py::test_elementwise_accuracy_grid), in ulps of
# the result (ulp(r) = 2^(floor(log2|r|) - 23 or - 52), 2^-149 / 2^-1074 at denormals) or,
# where the formula cancels (gelu for x < 0, gelu's derivative), as absolute error in units
# of 2^-24 |x| (2^-53 |x|) and 2^-24 (2^-53). Worst cases found by exhaustive float32 runs
# over every ISA (see vec_math.inl): sigmoid 2.8, tanh 1.4, gelu x >= 0 3.0, x < 0 3.0,
# gelu' 4.3.
ACT_ULP = {
    np.float32: {"sigmoid": 3.0, "tanh": 1.5, "gelu_pos": 3.5, "gelu_neg": 3.5, "gelu_grad": 4.5},
    np.float64: {"sigmoid": 3.0, "tanh": 2.0, "gelu_pos": 2.0, "gelu_neg": 2.0},
}
DTYPES = [np.float32, np.float64]


def rel_err(ours, ref):
    """||ours - ref|| / max(||ref||, tiny), computed in float64."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    if ref.size == 0:
        return 0.0
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-300))


def assert_close(ours, ref, dtype, factor=1.0):
    """Relative error of the norm within factor * TOL[dtype]; NaN positions must agree."""
    ours = np.asarray(ours)
    ref = np.asarray(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    nan_o, nan_r = np.isnan(ours), np.isnan(ref)
    assert np.array_equal(nan_o, nan_r), "NaN positions differ"
    keep = ~nan_r
    err = rel_err(np.where(keep, ours, 0), np.where(keep, ref, 0))
    assert err <= factor * TOL[np.dtype(dtype).type], f"relative error {err:.3e}"


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: reproducible, different per test."""
    seed = zlib.crc32(request.node.nodeid.encode())  # hash() of a str varies per process
    return np.random.default_rng(seed)


@pytest.fixture(params=nnkernels.config()["isas"])
def isa(request):
    """Run the test once per kernel set this CPU can run; restore the best afterwards."""
    best = nnkernels.config()["isas"][0]
    nnkernels.set_isa(request.param)
    yield request.param
    nnkernels.set_isa(best)


@contextlib.contextmanager
def streaming_forced():
    """The kernels' last-level cache size forced to one byte, so every output that may go out
    by non-temporal stores does (the tests compare the bits with the cached path's)."""
    from nnkernels import _C
    assert _C._llc_bytes(1) == 1
    try:
        yield
    finally:
        _C._llc_bytes(0)
    assert _C._llc_bytes() > 1
