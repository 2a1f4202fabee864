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


def _bench_common():
    import os
    import sys
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
    if here not in sys.path:
        sys.path.insert(0, here)
    import common
    return common


def test_measure_many_interleaves_and_reports_errors():
    """The bench times nnkernels and its peers in interleaved rounds: every callable gets its
    repeats spread over the rounds (so a change of machine state hits them alike), a raising
    callable is reported instead of timed, and the others still are."""
    common = _bench_common()
    log = []

    def mk(name):
        def f():
            log.append(name)
            sum(range(200))
        return f

    def bad():
        raise RuntimeError("no")

    t, err = common.measure_many({"a": mk("a"), "b": mk("b"), "bad": bad}, target=0.01, rounds=4)
    assert set(t) == {"a", "b"} and err == {"bad": "RuntimeError: no"}
    for name in ("a", "b"):
        assert t[name].min > 0 and t[name].repeat >= 3 and t[name].min <= t[name].median
    # the timed calls alternate between a and b at least once per round
    switches = sum(1 for x, y in zip(log, log[1:]) if x != y)
    assert switches >= 2 * 4 - 1
