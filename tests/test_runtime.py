"""The runtime API: config(), kernel-set selection, threads, denormals, version, and the
NNKERNELS_ISA / NNKERNELS_NUM_THREADS environment variables (read at import, so those
tests run a fresh interpreter)."""

import json
import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import nnkernels
from nnkernels import ops

RANKING = ["avx512", "avx2", "neon", "generic"]  # best first
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(nnkernels.__file__)))


@pytest.fixture
def threads():
    n = nnkernels.get_num_threads()
    yield
    nnkernels.set_num_threads(n)


def run_python(code, env_extra=None, timeout=120):
    """Run `code` in a fresh interpreter that imports this same nnkernels; returns stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNKERNELS_")}
    env["PYTHONPATH"] = os.pathsep.join([PKG_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(env_extra or {})
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


IMPORT_REPORT = """
import json, os, warnings
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    import nnkernels
print(json.dumps({
    "file": nnkernels.__file__,
    "config": nnkernels.config(),
    "threads": nnkernels.get_num_threads(),
    "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    "warnings": [[x.category.__name__, str(x.message)] for x in w],
}))
"""


def import_report(**env):
    return json.loads(run_python(IMPORT_REPORT, env).strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# config, version
# ---------------------------------------------------------------------------------------


def test_config_keys_and_types():
    cfg = nnkernels.config()
    assert set(cfg) == {"version", "isa", "isas", "num_threads", "cuda"}
    assert isinstance(cfg["version"], str) and cfg["version"] == nnkernels.__version__
    assert isinstance(cfg["isa"], str) and cfg["isa"] in cfg["isas"]
    assert isinstance(cfg["isas"], list) and all(isinstance(s, str) for s in cfg["isas"])
    assert isinstance(cfg["num_threads"], int) and not isinstance(cfg["num_threads"], bool)
    assert cfg["num_threads"] == nnkernels.get_num_threads() >= 1
    cuda = cfg["cuda"]
    assert set(cuda) == {"built", "available", "devices"}
    assert isinstance(cuda["built"], bool) and isinstance(cuda["available"], bool)
    assert isinstance(cuda["devices"], list) and all(isinstance(d, str) for d in cuda["devices"])
    assert cuda["available"] == bool(cuda["devices"])
    if not cuda["built"]:
        assert not cuda["available"]
    # a fresh dict each time: mutating it changes nothing
    cfg["isas"].clear()
    assert nnkernels.config()["isas"]


def test_isas_best_first():
    isas = nnkernels.config()["isas"]
    assert "generic" in isas and isas[-1] == "generic"
    assert len(set(isas)) == len(isas)
    assert all(s in RANKING for s in isas)
    assert [s for s in RANKING if s in isas] == isas


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs /proc/cpuinfo")
def test_isas_match_cpu_flags():
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^flags\s*:(.*)$", f.read(), re.M)
    if m is None:
        pytest.skip("no x86 flags line")
    flags = set(m.group(1).split())
    isas = nnkernels.config()["isas"]
    assert ("avx512" in isas) == ({"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags)
    assert ("avx2" in isas) == ({"avx2", "fma"} <= flags)


def test_version():
    v = nnkernels.__version__
    assert isinstance(v, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", v), v
    assert v == nnkernels._C.__version__ == nnkernels.config()["version"]
    pyproject = os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")
    if os.path.exists(pyproject):  # running from a source tree
        with open(pyproject) as f:
            m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
        assert m and m.group(1) == v
    try:
        from importlib.metadata import PackageNotFoundError, version
        assert version("nnkernels") == v
    except PackageNotFoundError:  # a development build on PYTHONPATH
        pass


def test_public_names():
    for name in ["__version__", "config", "set_num_threads", "get_num_threads", "set_isa",
                 "set_flush_denormal", "ops"]:
        assert hasattr(nnkernels, name)
        assert name in nnkernels.__all__
    for name in ["gemm", "matmul", "linear", "linear_backward"]:
        assert callable(getattr(ops, name)) and name in ops.__all__


# ---------------------------------------------------------------------------------------
# set_isa
# ---------------------------------------------------------------------------------------


def test_set_isa_every_listed_name(rng):
    isas = nnkernels.config()["isas"]
    a, b = rng.standard_normal((37, 41)), rng.standard_normal((41, 29))
    try:
        for name in isas:
            nnkernels.set_isa(name)
            assert nnkernels.config()["isa"] == name
            np.testing.assert_allclose(ops.gemm(a, b), a @ b, rtol=1e-12, atol=1e-12)
    finally:
        nnkernels.set_isa(isas[0])
    assert nnkernels.config()["isa"] == isas[0]


def test_set_isa_rejects_other_names():
    isas = nnkernels.config()["isas"]
    before = nnkernels.config()["isa"]
    bad = ["", "AVX512", "avx512 ", "sse2", "best", "cuda", "auto"]
    bad += [s for s in RANKING if s not in isas]  # known names this CPU cannot run
    for name in bad:
        with pytest.raises(ValueError):
            nnkernels.set_isa(name)
        assert nnkernels.config()["isa"] == before
    for obj in [None, 0, b"generic"]:
        with pytest.raises((ValueError, TypeError)):
            nnkernels.set_isa(obj)


def test_default_isa_is_best():
    rep = import_report()
    assert rep["config"]["isa"] == rep["config"]["isas"][0]
    assert rep["warnings"] == []
    # the subprocess imported the same build
    assert os.path.samefile(rep["file"], nnkernels.__file__)


def test_env_isa_valid():
    for name in nnkernels.config()["isas"]:
        rep = import_report(NNKERNELS_ISA=name)
        assert rep["config"]["isa"] == name
        assert rep["warnings"] == []


@pytest.mark.parametrize("value", ["bogus", "AVX2", "neon_or_not"])
def test_env_isa_invalid_warns_and_uses_default(value):
    rep = import_report(NNKERNELS_ISA=value)
    assert rep["config"]["isa"] == rep["config"]["isas"][0]
    assert [w[0] for w in rep["warnings"]] == ["RuntimeWarning"]
    assert "NNKERNELS_ISA" in rep["warnings"][0][1]


# ---------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------


def test_set_get_num_threads(threads, rng):
    a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 250))
    ref = ops.gemm(a, b)
    for n in [1, 2, 3, 5, 1]:
        nnkernels.set_num_threads(n)
        assert nnkernels.get_num_threads() == n
        assert nnkernels.config()["num_threads"] == n
        np.testing.assert_array_equal(ops.gemm(a, b), ref)


@pytest.mark.parametrize("n", [0, -1, -(2**40)])
def test_set_num_threads_rejects_non_positive(threads, n):
    before = nnkernels.get_num_threads()
    with pytest.raises(ValueError):
        nnkernels.set_num_threads(n)
    assert nnkernels.get_num_threads() == before


def test_set_num_threads_rejects_non_int(threads):
    for obj in [1.5, "2", None]:
        with pytest.raises((TypeError, ValueError)):
            nnkernels.set_num_threads(obj)


def test_set_num_threads_while_other_threads_compute(threads, rng):
    # Replacing the pool while Python threads are inside kernels: no crash, no deadlock,
    # and the results stay bitwise those of one thread (they do not depend on the count).
    a, b = rng.standard_normal((200, 180)).astype(np.float32), rng.standard_normal((180, 220)).astype(np.float32)
    ref = ops.gemm(a, b)
    stop = threading.Event()
    errors = []

    def worker():
        try:
            while not stop.is_set():
                if not np.array_equal(ops.gemm(a, b), ref):
                    errors.append("mismatch")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    try:
        for n in [1, 3, 2, 4, 1, 2] * 3:
            nnkernels.set_num_threads(n)
            ops.gemm(a, b)
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert not errors, errors[:5]


def test_default_threads_is_affinity():
    rep = import_report()
    if rep["affinity"] is not None:
        assert rep["threads"] == rep["affinity"]


@pytest.mark.parametrize("value", ["1", "3", "64"])
def test_env_num_threads_valid(value):
    rep = import_report(NNKERNELS_NUM_THREADS=value)
    assert rep["threads"] == int(value)  # not clamped to the core count
    assert rep["config"]["num_threads"] == int(value)
    assert rep["warnings"] == []


@pytest.mark.parametrize("value", ["0", "-2", "abc", "2.5", ""])
def test_env_num_threads_invalid_warns_and_uses_default(value):
    rep = import_report(NNKERNELS_NUM_THREADS=value)
    assert [w[0] for w in rep["warnings"]] == ["RuntimeWarning"]
    assert "NNKERNELS_NUM_THREADS" in rep["warnings"][0][1]
    if rep["affinity"] is not None:
        assert rep["threads"] == rep["affinity"]


def test_env_both_variables():
    rep = import_report(NNKERNELS_ISA="generic", NNKERNELS_NUM_THREADS="3")
    assert rep["config"]["isa"] == "generic" and rep["threads"] == 3
    assert rep["warnings"] == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_after_pool_use():
    # A child forked after the pool ran gets a working pool of its own.
    out = run_python("""
        import os, numpy as np, nnkernels
        from nnkernels import ops
        nnkernels.set_num_threads(2)
        a = np.random.default_rng(0).standard_normal((300, 300))
        ref = ops.gemm(a, a)
        pid = os.fork()
        if pid == 0:
            ok = np.array_equal(ops.gemm(a, a), ref)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        print("parent", np.array_equal(ops.gemm(a, a), ref))
    """)
    assert "child 0" in out and "parent True" in out


# ---------------------------------------------------------------------------------------
# denormals
# ---------------------------------------------------------------------------------------


def _denormal_cases():
    f = np.float32
    tiny = f(1e-20)                    # tiny * tiny = 1e-40: a float32 denormal
    den = f(1e-40)                     # a denormal input
    assert 0 < tiny * tiny < np.finfo(f).tiny and 0 < den < np.finfo(f).tiny
    a = np.full((3, 5), tiny, f)
    b = np.zeros((5, 4), f)
    b[0] = tiny                        # exact result: one product, 1e-40
    x = np.full((2, 3), den, f)        # denormal input times 1
    w = np.ones((4, 3), f)
    w[:, 1:] = 0
    return [
        ("gemm product", lambda: ops.gemm(a, b), np.float32(tiny * tiny)),
        ("matmul product", lambda: ops.matmul(a[None], b), np.float32(tiny * tiny)),
        ("linear denormal input", lambda: ops.linear(x, w), den),
        ("gemm denormal c", lambda: ops.gemm(a, np.zeros((5, 4), f), np.full(4, den, f)), den),
    ]


def test_set_flush_denormal(isa):
    try:
        supported = nnkernels.set_flush_denormal(False)
        assert isinstance(supported, bool)
        for name, fn, exact in _denormal_cases():
            got = fn()
            assert np.all(got == exact), f"{name}: flush off must give IEEE denormals, got {got}"
        assert nnkernels.set_flush_denormal(True) is supported
        if supported:
            for name, fn, exact in _denormal_cases():
                got = fn()
                assert np.all(got == 0), f"{name}: flush on must give 0, got {got}"
            # the flag is the kernels': Python's own arithmetic (numpy here) is unchanged
            tiny = np.float32(1e-20)
            assert tiny * tiny > 0
            assert (np.full(4, tiny) * np.full(4, tiny) > 0).all()
        nnkernels.set_flush_denormal(False)
        for name, fn, exact in _denormal_cases():
            assert np.all(fn() == exact), name
    finally:
        nnkernels.set_flush_denormal(False)


def test_flush_denormal_with_threads(threads):
    # Every worker thread applies the flag, not only the caller.
    nnkernels.set_num_threads(2)
    f = np.float32
    a = np.full((400, 300), f(1e-20), f)
    b = np.full((300, 500), f(1e-20), f)
    b[1:] = 0
    exact = f(1e-20) * f(1e-20)
    try:
        assert np.all(ops.gemm(a, b) == exact)
        if nnkernels.set_flush_denormal(True):
            assert np.all(ops.gemm(a, b) == 0)
    finally:
        nnkernels.set_flush_denormal(False)
    assert np.all(ops.gemm(a, b) == exact)


SPIN_PROBE = """
import hashlib, numpy as np, nnkernels
from nnkernels import ops
nnkernels.set_num_threads(2)
rng = np.random.default_rng(7)
a = rng.standard_normal((300, 200)).astype(np.float32)
b = rng.standard_normal((200, 170)).astype(np.float32)
x = rng.standard_normal((20, 16, 40)).astype(np.float32)
w_ih = rng.standard_normal((4 * 64, 40)).astype(np.float32) * 0.1
w_hh = rng.standard_normal((4 * 64, 64)).astype(np.float32) * 0.1
h = hashlib.sha256()
for _ in range(3):  # back to back (workers awake) and after a pause (asleep)
    h.update(ops.gemm(a, b).tobytes())
    out, hn, cn = ops.lstm(x, None, None, w_ih, w_hh)
    h.update(out.tobytes())
    import time; time.sleep(0.01)
print(h.hexdigest())
"""


@pytest.mark.parametrize("spin", ["0", "1", "200", "100000", "bogus", "-5"])
def test_spin_setting_does_not_change_results(spin):
    """NNKERNELS_SPIN_US only changes how idle threads wait: any value (invalid ones fall
    back to the default) gives the bits of the default, with workers awake or asleep."""
    ref = run_python(SPIN_PROBE)
    assert run_python(SPIN_PROBE, {"NNKERNELS_SPIN_US": spin}) == ref
