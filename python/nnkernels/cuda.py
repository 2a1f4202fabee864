"""CUDA arrays for nnkernels (compiled, not yet run on a GPU: see docs/CUDA.md).

When nnkernels was built with CUDA (``config()["cuda"]["built"]``) and a GPU is usable
(``config()["cuda"]["available"]``), the ops in ``nnkernels.ops`` that have a CUDA kernel
run on the GPU when their first array argument is a CUDA array: a :class:`DeviceArray`, or
any object exposing ``__cuda_array_interface__`` or ``__dlpack__`` on a CUDA device (torch
CUDA tensors, CuPy arrays). They return :class:`DeviceArray` results, which
``torch.as_tensor`` / ``torch.from_dlpack`` / ``cupy.asarray`` wrap without a copy.

Mixing host and device arrays in one call raises ``ValueError``; a CUDA array given to a
build without CUDA raises ``RuntimeError``.
"""

from . import _C

DeviceArray = _C.DeviceArray

__all__ = ["DeviceArray", "asarray", "is_available", "device_count", "synchronize", "set_allow_tf32",
           "get_allow_tf32"]


def is_available():
    """Whether the CUDA part was built and a GPU is usable."""
    return bool(_C.cuda_info()["available"])


def device_count():
    """Number of usable CUDA devices (0 without a build with CUDA, a driver or a GPU)."""
    return len(_C.cuda_info()["devices"])


def asarray(host_array):
    """Copy a host array (float32 / float64; int32 / int64 for class targets and ids; bool
    for masks; anything ``numpy.asarray`` takes) to a new
    C-contiguous :class:`DeviceArray` on the current device; a DeviceArray is returned as is.
    RuntimeError without CUDA or without a GPU."""
    return _C.cuda_asarray(host_array)


def synchronize():
    """Wait for every kernel queued by nnkernels (the ops are asynchronous on the GPU;
    ``DeviceArray.numpy()`` waits by itself)."""
    _C.cuda_synchronize()


def set_allow_tf32(flag):
    """Run float32 GEMMs on the GPU (gemm, matmul, linear, and those inside conv2d,
    conv_transpose2d and the recurrent ops) on TF32 tensor cores: inputs rounded to a 10-bit
    mantissa (relative error about 1e-3 instead of 1e-6), float32 accumulation. Off by
    default, as torch's ``torch.backends.cuda.matmul.allow_tf32``. Process-wide; no effect
    on the CPU paths or on a build without CUDA. flag must be a bool (TypeError otherwise)."""
    if not isinstance(flag, bool):
        raise TypeError(f"set_allow_tf32: flag must be a bool, got {type(flag).__name__}")
    _C.cuda_allow_tf32(flag)


def get_allow_tf32():
    """Whether float32 GEMMs on the GPU use TF32 tensor cores (see :func:`set_allow_tf32`)."""
    return bool(_C.cuda_allow_tf32(None))
