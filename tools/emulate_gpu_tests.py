"""Run the GPU tests' bodies on a machine without a GPU.

On a machine without a GPU the tests marked `needs_gpu` are skipped. This harness runs each
`test_gpu_*` function of a CUDA test module with every parameter combination, `tcuda`
giving CPU torch tensors and torch's `device="cuda"` arguments mapped to the CPU, so every
reference is computed by torch on the CPU. Two modes:

- default (any build): the ops run on our CPU path (their numpy results given a `.numpy()`
  method). This checks the test code itself: a wrong reference, an ill-conditioned
  comparison, a helper that reshapes its input. Expected failures: the DeviceArray /
  DLPack plumbing tests and TF32 (no tensor cores here).

      cd tests && PYTHONPATH=../python python ../tools/emulate_gpu_tests.py test_cuda

- `--emu` (a build with -DNNKERNELS_CUDA_EMU=ON, tools/cuda_emu/README.md): the ops run
  our CUDA kernels on the CUDA emulator, with the torch tensors passed in as CUDA arrays
  (their host memory through __cuda_array_interface__). The tests in NEEDS_TORCH_CUDA
  are not run. Everything else should pass; `--strict` exits 1 when a case fails.

      cd tests && PYTHONPATH=/path/to/emulated/build python ../tools/emulate_gpu_tests.py --emu test_cuda

Prints one line per failing case and a count.
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


def wrap_ops(wrapped):
    """A namespace of every public op of nnkernels.ops, each passed through `wrapped`."""
    names = [k for k in dir(real_ops) if not k.startswith("_") and callable(getattr(real_ops, k))]
    return types.SimpleNamespace(**{k: wrapped(getattr(real_ops, k)) for k in names})


def host_ops():
    return wrap_ops(lambda f: lambda *a, **kw: as_device_result(f(*a, **kw)))


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


class TorchAsCuda:
    """A host torch tensor presented as CUDA memory (__cuda_array_interface__, no copy): with
    the emulator, device pointers are host pointers."""

    def __init__(self, t):
        t = t.detach()
        item = t.element_size()
        typestr = np.dtype(str(t.dtype).replace("torch.", "")).str if t.dtype != torch.bool else "|b1"
        self.tensor = t
        self.__cuda_array_interface__ = dict(
            shape=tuple(t.shape), typestr=typestr, strides=tuple(st * item for st in t.stride()),
            data=(t.data_ptr(), False), version=3)


def emulated_ops():
    """The real ops, with host torch tensors passed as CUDA arrays."""
    def conv(a):
        if isinstance(a, torch.Tensor):
            return TorchAsCuda(a)
        if isinstance(a, (list, tuple)):
            return type(a)(conv(x) for x in a)
        return a

    return wrap_ops(lambda f: lambda *a, **kw: f(*conv(a), **{k: conv(v) for k, v in kw.items()}))


# Tests that need torch itself on a GPU (zero-copy DLPack / __cuda_array_interface__ into
# torch CUDA tensors): not run on the emulator, where torch has no CUDA.
NEEDS_TORCH_CUDA = {"test_gpu_asarray_numpy_dlpack"}


def main(module_name, emu=False, only=None):
    map_cuda_to_cpu()
    mod = __import__(module_name)
    tcuda = lambda a: torch.from_numpy(np.array(a, order="C"))  # noqa: E731
    if emu:
        devices = nnkernels.config()["cuda"]["devices"]
        if not devices or not devices[0].startswith("nnkernels CUDA emulator"):
            sys.exit("--emu needs a build with -DNNKERNELS_CUDA_EMU=ON (tools/cuda_emu/README.md)")
        ops, cuda_ns = emulated_ops(), nnkernels
        # torch here has no CUDA: our device arrays reach it as host copies
        for name in ["from_dlpack", "as_tensor"]:
            f = getattr(torch, name)
            setattr(torch, name, lambda a, *r, _f=f, **k: _f(a.numpy(), *r, **k)
                    if isinstance(a, nnkernels.cuda.DeviceArray) else _f(a, *r, **k))
    else:
        ops, cuda_ns = host_ops(), types.SimpleNamespace(cuda=HostCuda, config=nnkernels.config)
    for k, v in dict(torch=torch, F=F, tcuda=tcuda, ops=ops).items():
        setattr(mod, k, v)  # module-level helpers of the test file see them too
    ns = dict(mod.__dict__, nnkernels=cuda_ns)
    ok = failed = 0
    for name, f in list(mod.__dict__.items()):
        if not name.startswith("test_gpu") or not callable(f) or (only and only not in name):
            continue
        if emu and name in NEEDS_TORCH_CUDA:
            print("NOT RUN", name, "(needs torch with CUDA)")
            continue
        src = inspect.getsource(f)
        exec(src[src.index("def " + name):], ns)  # the body without its skip marks
        fn = ns[name]
        for c in cases(f):
            kwargs = {p: c.get(p, np.random.default_rng(0) if p == "rng" else None)
                      for p in inspect.signature(fn).parameters}
            if emu and "tf32" in kwargs:  # the fixture: TF32 on for this test
                nnkernels.cuda.set_allow_tf32(True)
            try:
                fn(**kwargs)
                ok += 1
            except Exception as e:  # a report line per failing case
                failed += 1
                shown = {k: v for k, v in c.items() if k != "rng"}
                print("FAIL", name, shown, type(e).__name__, str(e)[:300].replace("\n", " "), flush=True)
            finally:
                if emu:
                    nnkernels.cuda.set_allow_tf32(False)
    print(f"{module_name}: {ok} cases passed, {failed} failed")
    return failed


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("module", nargs="?", default="test_cuda")
    ap.add_argument("--emu", action="store_true", help="run the ops on the CUDA emulator build")
    ap.add_argument("-k", dest="only", help="only tests whose name contains this")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a case fails")
    a = ap.parse_args()
    sys.exit(1 if main(a.module, a.emu, a.only) and a.strict else 0)
