"""What the CUDA test files share: the build / GPU markers, fake CUDA arrays for host-side
checks, and the GPU comparison helpers.

The fake CUDA arrays carry made-up device pointers that are never dereferenced: on a machine
without a GPU every call stops at an argument check or at the first CUDA call (RuntimeError);
the tests that would reach a kernel are skipped where a GPU exists (`no_gpu`).
"""

import numpy as np
import pytest

import nnkernels

CUDA = nnkernels.config()["cuda"]
BUILT = CUDA["built"]
AVAILABLE = CUDA["available"]

needs_built = pytest.mark.skipif(not BUILT, reason="nnkernels was built without CUDA")
needs_gpu = pytest.mark.skipif(not AVAILABLE, reason="no usable CUDA GPU (config()['cuda']['available'] is False)")
no_gpu = pytest.mark.skipif(AVAILABLE, reason="would launch a kernel on the fake pointer: only without a GPU")

FAKE_PTR = 0x7F0000001000


class FakeCAI:
    """An object exposing a hand-made __cuda_array_interface__ (version 3)."""

    def __init__(self, shape, typestr="<f4", strides=None, ptr=FAKE_PTR, readonly=False, **extra):
        self.__cuda_array_interface__ = dict(shape=tuple(shape), typestr=typestr, strides=strides,
                                             data=(ptr, readonly), version=3, **extra)


def f32(*shape):
    return FakeCAI(shape, "<f4")


# ---- GPU comparisons (torch is imported only where a GPU is usable) ----
if AVAILABLE:
    import torch

GPU_TOL = {np.float32: 1e-5, np.float64: 1e-12}
DT = [np.float32, np.float64]


def host(a):
    """A CUDA result (DeviceArray or torch tensor) or a host array as a numpy array."""
    if isinstance(a, nnkernels.cuda.DeviceArray):
        return a.numpy()
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def tcuda(a):
    """A numpy array as a C-contiguous torch CUDA tensor (0-d arrays stay 0-d)."""
    return torch.from_numpy(np.array(a, order="C")).cuda()


def close(ours, ref, dtype, factor=1.0, floor=1e-300):
    """Shapes equal, NaNs at the same places, and ||ours - ref|| / max(||ref||, floor) over
    the rest within factor * GPU_TOL[dtype]. floor: the scale of a result that is zero in
    exact arithmetic but rounding noise in practice (attention over a single key: dq = dk = 0)."""
    ours, ref = host(ours), host(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert np.array_equal(np.isnan(ours), np.isnan(ref)), "NaN positions differ"
    keep = ~np.isnan(ref)
    o, r = np.where(keep, ours, 0).astype(np.float64), np.where(keep, ref, 0).astype(np.float64)
    num, den = np.linalg.norm(o - r), max(np.linalg.norm(r), floor)
    assert num / den <= factor * GPU_TOL[np.dtype(dtype).type], f"relative error {num / den:.3e}"


def close_each(ours, ref, dtype, factor=1.0):
    """close() pairwise over two equally long sequences of results; None where ref has None
    (an op's optional outputs, such as bias gradients)."""
    assert len(ours) == len(ref), (len(ours), len(ref))
    for o, r in zip(ours, ref):
        if r is None:
            assert o is None
        else:
            close(o, r, dtype, factor=factor)


@pytest.fixture
def no_tf32():
    """torch's float32 GPU products in true float32 (TF32 off), as nnkernels' by default."""
    if AVAILABLE:
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    else:
        yield
