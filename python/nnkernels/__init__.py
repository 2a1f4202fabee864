"""nnkernels: neural-network kernels in C++ with run-time CPU dispatch, checked against PyTorch."""

import os as _os
import warnings as _warnings

from . import _C

__version__ = _C.__version__

__all__ = [
    "__version__",
    "config",
    "cuda",
    "get_num_threads",
    "nn",
    "ops",
    "optim",
    "set_flush_denormal",
    "set_isa",
    "set_num_threads",
]


def config():
    """The build and run-time configuration.

    Returns a dict: ``version``, ``isa`` (the CPU kernel set in use), ``isas`` (every set
    this CPU can run, best first), ``num_threads`` and ``cuda`` (``built``, ``available``,
    ``devices``).
    """
    return {
        "version": __version__,
        "isa": _C.current_isa(),
        "isas": list(_C.isas()),
        "num_threads": _C.get_num_threads(),
        "cuda": dict(_C.cuda_info()),
    }


def set_isa(name):
    """Use the CPU kernel set ``name`` (one of ``config()["isas"]``)."""
    if not isinstance(name, str) or not _C.set_isa(name):
        raise ValueError(f"set_isa: unknown or unsupported kernel set {name!r}; "
                         f"this CPU runs {list(_C.isas())}")


def set_num_threads(n):
    """Worker threads for the CPU kernels (``n >= 1``)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _C.set_num_threads(n)


def get_num_threads():
    """Worker threads used by the CPU kernels."""
    return _C.get_num_threads()


def set_flush_denormal(flag):
    """Flush denormal floats to zero inside the CPU kernels; returns whether the CPU supports it."""
    return bool(_C.set_flush_denormal(bool(flag)))


def _apply_env():
    isa = _os.environ.get("NNKERNELS_ISA")
    if isa:
        if not _C.set_isa(isa):
            _warnings.warn(f"NNKERNELS_ISA={isa!r} is not a kernel set this CPU runs "
                           f"({list(_C.isas())}); using {_C.current_isa()!r}", RuntimeWarning,
                           stacklevel=3)
    nt = _os.environ.get("NNKERNELS_NUM_THREADS")
    if nt is not None:
        try:
            n = int(nt)
        except ValueError:
            n = 0
        if n >= 1:
            _C.set_num_threads(n)
        else:
            _warnings.warn(f"NNKERNELS_NUM_THREADS={nt!r} is not a positive integer; using "
                           f"{_C.default_num_threads()} threads", RuntimeWarning, stacklevel=3)


_apply_env()

from . import ops  # noqa: E402
from . import nn, optim  # noqa: E402
from . import cuda  # noqa: E402
