"""Run the GPU tests' bodies on the host, to check the test code itself (not the kernels).

On a machine without a GPU the tests marked `needs_gpu` are skipped, so a mistake in their
own logic (a wrong reference, an ill-conditioned comparison, a helper that reshapes its
input) waits for the first GPU session. This harness runs each `test_gpu_*` function of a
CUDA test module with every parameter combination, with `tcuda` giving CPU torch tensors,
torch's `device="cuda"` arguments mapped to the CPU, and the ops' numpy results given a
`.numpy()` method, so every op runs on our CPU path and every reference on torch's CPU.

    cd tests && PYTHONPATH=../python python ../tools/emulate_gpu_tests.py test_cuda

Expected failures: tests of the DeviceArray / DLPack plumbing (`is_cuda`, data pointers)
and of TF32 (no tensor cores here). Everything else should pass. Prints one line per
failing case and a count; exits 0 either way (a report, not a test).
"""
import inspect
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import nnkernels  # noqa: E402
from nnkernels import ops as real_ops  # noqa: E402


class HostArray(np.ndarray):
    """An op's host result standing in for a DeviceArray."""

    def numpy(self):
        return np.asarray(self)


def as_device_result(r):
    if isinstance(r, np.ndarray):
        return r.view(HostArray)
    if isinstance(r, (tuple, list)):
        return type(r)(as_device_result(x) for x in r)
    return r


def host_ops():
    def wrapped(f):
        return lambda *a, **kw: as_device_result(f(*a, **kw))
    names = [k for k in dir(real_ops) if not k.startswith("_") and callable(getattr(real_ops, k))]
    return types.SimpleNamespace(**{k: wrapped(getattr(real_ops, k)) for k in names})


def map_cuda_to_cpu():
    """torch calls with a CUDA device run on the CPU instead."""
    def strip(a, k):
        a = tuple("cpu" if (isinstance(x, str) and x.startswith("cuda")) or isinstance(x, torch.device) else x
                  for x in a)
        if "device" in k:
            k = dict(k, device="cpu")
        return a, k

    def on_cpu(f):
        def g(*a, **k):
            a, k = strip(a, k)
            return f(*a, **k)
        return g
    for name in ["tensor", "zeros", "ones", "full", "randn", "empty", "as_tensor", "arange", "rand"]:
        setattr(torch, name, on_cpu(getattr(torch, name)))
    torch.Tensor.to = on_cpu(torch.Tensor.to)
    torch.nn.Module.to = on_cpu(torch.nn.Module.to)
    torch.Tensor.cuda = lambda self, *a, **k: self


class HostCuda:
    DeviceArray = HostArray
    set_allow_tf32 = staticmethod(lambda flag: None)
    get_allow_tf32 = staticmethod(lambda: False)
    synchronize = staticmethod(lambda: None)
    asarray = staticmethod(lambda a: np.asarray(a).view(HostArray))


def cases(f):
    """Every parameter combination of f's parametrize marks."""
    combos = [{}]
    for m in getattr(f, "pytestmark", []):
        if m.name != "parametrize":
            continue
        names, values = m.args[0], m.args[1]
        names = [a.strip() for a in names.split(",")] if isinstance(names, str) else list(names)
        combos = [dict(c, **(dict(zip(names, v)) if len(names) > 1 else {names[0]: v}))
                  for c in combos for v in values]
    return combos


def main(module_name):
    map_cuda_to_cpu()
    mod = __import__(module_name)
    tcuda = lambda a: torch.from_numpy(np.array(a, order="C"))  # noqa: E731
    ops = host_ops()
    for k, v in dict(torch=torch, F=F, tcuda=tcuda, ops=ops).items():
        setattr(mod, k, v)  # module-level helpers of the test file see them too
    ns = dict(mod.__dict__, nnkernels=types.SimpleNamespace(cuda=HostCuda, config=nnkernels.config))
    ok = failed = 0
    for name, f in list(mod.__dict__.items()):
        if not name.startswith("test_gpu") or not callable(f):
            continue
        src = inspect.getsource(f)
        exec(src[src.index("def " + name):], ns)  # the body without its skip marks
        fn = ns[name]
        for c in cases(f):
            kwargs = {p: c.get(p, np.random.default_rng(0) if p == "rng" else None)
                      for p in inspect.signature(fn).parameters}
            try:
                fn(**kwargs)
                ok += 1
            except Exception as e:  # a report line per failing case
                failed += 1
                shown = {k: v for k, v in c.items() if k != "rng"}
                print("FAIL", name, shown, type(e).__name__, str(e)[:160].replace("\n", " "))
    print(f"{module_name}: {ok} cases passed, {failed} failed")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "test_cuda")
