"""The bench's peak-FLOP probe: runs for every kernel set this CPU has (nothing timing-based)."""

import math

import pytest

import nnkernels
from nnkernels import _C


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("isa", nnkernels.config()["isas"])
def test_peak_flops_positive(isa, dtype):
    r = _C.peak_flops(dtype, isa, 0, 0.005)
    assert isinstance(r, float)
    assert math.isfinite(r) and r > 0


def test_peak_flops_threads_restored():
    n = nnkernels.get_num_threads()
    r = _C.peak_flops("float32", nnkernels.config()["isa"], 1, 0.005)
    assert math.isfinite(r) and r > 0
    assert nnkernels.get_num_threads() == n


def test_peak_flops_errors():
    isa = nnkernels.config()["isa"]
    with pytest.raises(TypeError):
        _C.peak_flops("float16", isa, 0, 0.01)
    with pytest.raises(ValueError):
        _C.peak_flops("float32", "no_such_isa", 0, 0.01)
    with pytest.raises(ValueError):
        _C.peak_flops("float32", isa, 0, 0.0)
    with pytest.raises(ValueError):
        _C.peak_flops("float32", isa, -1, 0.01)
