"""Module, Parameter and the containers (Sequential, ModuleList).

A :class:`Module` is torch's ``nn.Module`` without autograd: ``forward`` computes and keeps
what its ``backward`` needs; ``backward(*grads)`` takes the gradients of ``forward``'s
outputs (same structure), returns the gradients of its inputs (same structure as the
inputs; ``None`` for inputs without a gradient), accumulates parameter gradients into
``p.grad`` and releases what ``forward`` kept. Names, shapes and ``state_dict`` keys are
torch's, so ``m.load_state_dict({k: v.numpy() for k, v in torch_m.state_dict().items()})``
works.

``m.to("cuda")`` (or ``m.cuda()``) moves the parameters into CUDA device memory
(:class:`nnkernels.cuda.DeviceArray`); the layers then take and return CUDA arrays and run
on the ops' CUDA paths. The layers that do so have ``_cuda_ok = True``; moving a model
holding any other layer raises NotImplementedError before anything is moved.
"""

from collections import OrderedDict

import numpy as np

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "manual_seed"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# The generator behind every layer's default initialisation (see manual_seed).
_rng = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator used by the layers' default initialisation (and Dropout)."""
    global _rng
    _rng = np.random.default_rng(seed)


def _generator():
    return _rng


def _check_dtype(dtype):
    dt = np.dtype(np.float32 if dtype is None else dtype)
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be numpy.float32 or numpy.float64, got {dt}")
    return dt


def _on_device(a):
    """Whether ``a`` is one of our CUDA arrays (a parameter or gradient moved by ``to``)."""
    from ..cuda import DeviceArray
    return isinstance(a, DeviceArray)


def _parse_device(device):
    """"cpu" or "cuda" from torch's spellings ("cuda", "cuda:0", "cpu"; None: no move)."""
    if device is None:
        return None
    name = str(device)
    if name == "cpu":
        return "cpu"
    if name in ("cuda", "cuda:0"):
        return "cuda"
    raise ValueError(f"device must be 'cpu' or 'cuda' (device 0), got {device!r}")


def _to_device(a, device):
    """``a`` (a host or device array, or None) in ``device``'s memory (itself when there)."""
    if a is None or _on_device(a) == (device == "cuda"):
        return a
    if device == "cuda":
        from .. import cuda
        return cuda.asarray(a)
    return a.numpy()


def _is_cuda_array(a):
    """A CUDA array of any kind (ours, torch CUDA tensors, CuPy arrays)."""
    return _on_device(a) or hasattr(a, "__cuda_array_interface__")


def _uniform(shape, bound, dtype):
    """U(-bound, bound) of ``shape`` in ``dtype`` (drawn in float64, then cast)."""
    return _generator().uniform(-bound, bound, size=shape).astype(dtype)


class Parameter:
    """A learnable array: ``.data`` (a C-contiguous numpy array, or a DeviceArray after
    ``Module.to("cuda")``; updated in place by the optimizers) and ``.grad`` (None or an
    array of the same shape, accumulated by ``backward``)."""

    __slots__ = ("data", "grad")

    def __init__(self, data, dtype=None):
        arr = np.array(data, dtype=dtype, order="C", copy=True)
        if arr.dtype not in _FLOAT_DTYPES:
            arr = arr.astype(np.float32)
        self.data = arr
        self.grad = None

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def device(self):
        """"cuda" when the data is in CUDA device memory, else "cpu"."""
        return "cuda" if _on_device(self.data) else "cpu"

    def numpy(self):
        """The data array itself (no copy), as ``torch.Tensor.numpy``; a host copy of it on
        CUDA."""
        return self.data.numpy() if _on_device(self.data) else self.data

    def __array__(self, dtype=None, copy=None):
        data = self.numpy()
        if dtype is None or np.dtype(dtype) == data.dtype:
            return data.copy() if copy and data is self.data else data
        return data.astype(dtype)

    def _accumulate(self, g):
        """Add ``g`` into ``.grad`` (the first gradient is taken as is: ops return new arrays)."""
        if self.grad is None:
            self.grad = g
        elif _on_device(self.grad):
            from .. import _C
            _C._cuda_accumulate_(self.grad, g)
        else:
            self.grad += g

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer: registers Parameters and sub-Modules assigned as
    attributes (in assignment order, as torch), and gives ``parameters()``,
    ``state_dict()``, ``train()``/``eval()``, ``save``/``load`` and the dtype casts."""

    # Whether the layer runs on CUDA arrays once its parameters are moved there (to("cuda")).
    _cuda_ok = False

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration ---------------------------------------------------------------------

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError("Module.__init__() must be called before assigning attributes")
        params.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter or None, as torch: None is skipped in state_dict)."""
        setattr(self, name, param)

    def add_module(self, name, module):
        setattr(self, name, module)

    # -- running --------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, *grads):
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def _saved(self, name="_ctx"):
        """Take what forward kept (and release it); RuntimeError when there is none."""
        ctx = self.__dict__.get(name)
        if ctx is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a preceding forward "
                               "(or a second time for one forward)")
        object.__setattr__(self, name, None)
        return ctx

    def _keep(self, ctx, name="_ctx"):
        object.__setattr__(self, name, ctx)

    def _input_error(self, exc, *arrays):
        """Re-raise an op's shape/dtype error with this layer and the input shapes named."""
        shapes = ", ".join(str(tuple(np.shape(a))) for a in arrays)
        return type(exc)(f"{self!r}: bad input of shape {shapes}: {exc}")

    # -- traversal ------------------------------------------------------------------------

    def children(self):
        return iter(self._modules.values())

    def named_children(self):
        return iter(self._modules.items())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        """(name, Parameter) pairs with torch's dotted names; each Parameter once."""
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mprefix, m in mods:
            for name, p in m._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mprefix}.{name}" if mprefix else name), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def zero_grad(self, set_to_none=True):
        """Clear every parameter's gradient (``None``, as torch's default, or zeros)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            elif _on_device(p.grad):
                from .. import _C
                _C._cuda_copy_from_host_(p.grad, np.zeros(p.grad.shape, p.grad.dtype))
            else:
                p.grad[...] = 0

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    # -- state ----------------------------------------------------------------------------

    def _state_entries(self):
        """(key, Parameter) for every entry of the state dict, with duplicates kept as torch."""
        out = []
        for mprefix, m in self.named_modules():
            for name, p in m._parameters.items():
                out.append(((f"{mprefix}.{name}" if mprefix else name), p))
        return out

    def state_dict(self):
        """OrderedDict of key -> a host (numpy) copy of the parameter's array, keys as
        torch's (for a model on CUDA too)."""
        return OrderedDict((k, p.data.numpy() if _on_device(p.data) else p.data.copy())
                           for k, p in self._state_entries())

    def load_state_dict(self, state_dict, strict=True):
        """Copy ``state_dict``'s values into the existing parameters, cast to their dtype.

        Values: numpy arrays, torch tensors, anything ``numpy.asarray`` takes. Missing or
        unexpected keys (with ``strict``) and shape mismatches raise RuntimeError naming the
        keys; nothing is copied then. Returns ``(missing_keys, unexpected_keys)``.
        """
        entries = self._state_entries()
        own = {k for k, _ in entries}
        given = set(state_dict.keys())
        missing = [k for k, _ in entries if k not in given]
        unexpected = sorted(k for k in given if k not in own)
        errors = []
        if strict and missing:
            errors.append("missing key(s) in state_dict: " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            errors.append("unexpected key(s) in state_dict: " + ", ".join(repr(k) for k in unexpected))
        values = {}
        for k, p in entries:
            if k not in given:
                continue
            v = state_dict[k]
            if hasattr(v, "detach") and hasattr(v, "cpu"):  # a torch tensor
                v = v.detach().cpu().numpy()
            v = np.asarray(v)
            if v.shape != p.data.shape:
                errors.append(f"size mismatch for {k!r}: copying an array of shape {v.shape}, "
                              f"the parameter in the current model has shape {p.data.shape}")
            elif not (np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_):
                errors.append(f"{k!r}: cannot copy an array of dtype {v.dtype} into a parameter")
            values[k] = v
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for k, p in entries:
            if k in values:
                if _on_device(p.data):
                    from .. import _C
                    _C._cuda_copy_from_host_(p.data, np.asarray(values[k]).astype(p.data.dtype))
                else:
                    np.copyto(p.data, values[k], casting="unsafe")
        return missing, unexpected

    def save(self, path):
        """Write ``state_dict()`` to ``path`` as an uncompressed ``.npz`` (the path as given)."""
        with open(path, "wb") as f:
            np.savez(f, **self.state_dict())

    def load(self, path):
        """Load parameters saved by :meth:`save` (strict, as ``load_state_dict``)."""
        with np.load(path, allow_pickle=False) as f:
            self.load_state_dict({k: f[k] for k in f.files})
        return self

    # -- dtype and device -----------------------------------------------------------------

    def to(self, *args, device=None, dtype=None):
        """Cast every parameter (and gradient) to a dtype and / or move it to a device, in
        place; returns self. As torch: ``to(dtype)``, ``to(device)``, ``to(device, dtype)``
        or keywords; devices "cpu", "cuda", "cuda:0".

        Moving to "cuda" needs every layer to run there (``_cuda_ok``): otherwise
        NotImplementedError, before anything is moved. What forward kept is dropped.
        """
        for a in args:
            if type(a).__name__ == "device" or (isinstance(a, str) and (a in ("cpu", "cuda") or a.startswith("cuda:"))):
                device = a
            else:
                if isinstance(a, str):
                    try:
                        np.dtype(a)
                    except TypeError:
                        raise ValueError(f"to: {a!r} is neither a device ('cpu', 'cuda', 'cuda:0') nor a "
                                         "dtype") from None
                dtype = a  # a dtype, or a dtype's name ("float64")
        dev = _parse_device(device)
        dt = _check_dtype(dtype) if dtype is not None else None
        if dev == "cuda":
            bad = sorted({type(m).__name__ for m in self.modules() if not m._cuda_ok})
            if bad:
                raise NotImplementedError(f"{', '.join(bad)}: not marked as running on CUDA (a Module of your "
                                          "own sets the class attribute _cuda_ok = True when its forward and "
                                          "backward work on CUDA arrays)")
        for m in self.modules():
            for p in m._parameters.values():
                if p is None:
                    continue
                target = dev or p.device
                if dt is not None and p.data.dtype != dt:
                    p.data = _to_device(_to_device(p.data, "cpu").astype(dt), target)
                    if p.grad is not None:
                        p.grad = _to_device(np.asarray(_to_device(p.grad, "cpu")).astype(dt), target)
                p.data = _to_device(p.data, target)
                p.grad = _to_device(p.grad, target)
            if dt is not None and "dtype" in m.__dict__:
                object.__setattr__(m, "dtype", dt)
            object.__setattr__(m, "_ctx", None)
        return self

    def _init_device(self, device):
        """The end of a layer's __init__ given ``device=``: move there ("cpu": stay)."""
        if _parse_device(device) == "cuda":
            self.to("cuda")

    def cuda(self):
        """``to("cuda")``."""
        return self.to("cuda")

    def cpu(self):
        """``to("cpu")``."""
        return self.to("cpu")

    def double(self):
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    # -- repr -----------------------------------------------------------------------------

    def extra_repr(self):
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}("]
        if extra:
            lines.append("  " + extra)
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        lines.append(")")
        return "\n".join(lines)


class _Container(Module):
    """What Sequential and ModuleList share: sub-modules keyed "0", "1", ... in order."""

    _cuda_ok = True

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: {type(module).__name__} is not a Module")
        self.add_module(str(len(self._modules)), module)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return self._from_list(mods[idx])
        return mods[idx]


class Sequential(_Container):
    """``nn.Sequential``: modules applied in order; ``backward`` runs them in reverse.

    ``Sequential(m0, m1, ...)`` or ``Sequential(OrderedDict(name=module, ...))``; keys of
    the state dict are ``"0.weight"`` etc. (or the given names), as torch.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            items = [(str(k), m) for k, m in modules[0].items()]
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: entry {name!r} is not a Module ({type(m).__name__})")
            self.add_module(name, m)

    @staticmethod
    def _from_list(mods):
        return Sequential(*mods)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, grad):
        for m in reversed(self._modules.values()):
            grad = m.backward(grad)
        return grad


class ModuleList(_Container):
    """``nn.ModuleList``: holds sub-modules (keys ``"0"``, ``"1"``, ...); no forward."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    @staticmethod
    def _from_list(mods):
        return ModuleList(mods)
