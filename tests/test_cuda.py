"""CUDA part: host-side logic everywhere (protocol parsing, argument checks, error types,
launch arithmetic, config), GPU numerics only where a GPU is usable.

The fake CUDA arrays below carry made-up device pointers that are never dereferenced: on a
machine without a GPU every call stops at an argument check or at the first CUDA call
(RuntimeError); the tests that would reach a kernel are skipped where a GPU exists.
"""

import os
import re
import types

import numpy as np
import pytest

import nnkernels
from nnkernels import _C, ops

from cuda_support import (AVAILABLE, BUILT, CUDA, DT, FAKE_PTR, FakeCAI, close, close_each,  # noqa: F401
                          f32, host, needs_built, needs_gpu, no_gpu, no_tf32, tcuda)


class FakeDLPack:
    """A DLPack producer on a CUDA device, handing out the capsule of another object."""

    def __init__(self, source, device=(2, 0), max_version=None):
        self.source, self.device, self.max_version = source, device, max_version

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, stream=None, max_version=None, **kw):
        if self.max_version is None:
            return self.source.__dlpack__()
        return self.source.__dlpack__(max_version=self.max_version)


# ---------------------------------------------------------------------------------------
# config and module surface
# ---------------------------------------------------------------------------------------


def test_config_cuda_truthful():
    assert set(CUDA) == {"built", "available", "devices"}
    assert isinstance(CUDA["built"], bool) and isinstance(CUDA["available"], bool)
    # The CUDA overloads and the launch-math binding exist exactly when the part was built.
    assert BUILT == hasattr(_C, "_cuda_launch")
    assert AVAILABLE == (len(CUDA["devices"]) > 0)
    if not BUILT:
        assert not AVAILABLE
    assert nnkernels.cuda.is_available() == AVAILABLE
    assert nnkernels.cuda.device_count() == len(CUDA["devices"])


def test_host_calls_unchanged(rng):
    import torch
    x = rng.standard_normal((5, 7)).astype(np.float32)
    assert isinstance(ops.relu(x), np.ndarray)
    assert isinstance(ops.softmax(torch.from_numpy(x)), np.ndarray)
    assert not _C._cuda_is_device(x)
    assert not _C._cuda_is_device(torch.from_numpy(x))
    assert not _C._cuda_is_device(3.0)


# ---------------------------------------------------------------------------------------
# __cuda_array_interface__ parsing
# ---------------------------------------------------------------------------------------


def test_cai_parse_contiguous():
    d = _C._cuda_parse(FakeCAI((3, 4), "<f8", ptr=0x1000), "x")
    assert d["ptr"] == 0x1000 and d["shape"] == (3, 4) and d["strides"] == (4, 1)
    assert d["dtype"] == "float64" and d["contiguous"] and not d["readonly"]
    assert d["device"] == -1 and d["stream"] == 0


def test_cai_parse_strides_stream_readonly():
    # A transposed (4, 3) view of a (3, 4) float32 array: byte strides (4, 16).
    d = _C._cuda_parse(FakeCAI((4, 3), "<f4", strides=(4, 16), readonly=True, stream=7), "w")
    assert d["strides"] == (1, 4) and not d["contiguous"] and d["readonly"] and d["stream"] == 7
    d = _C._cuda_parse(FakeCAI((2, 0, 3), "<f4", ptr=0), "x")  # empty: a null pointer is fine
    assert d["shape"] == (2, 0, 3)
    assert _C._cuda_parse(FakeCAI((), "<f4"), "x")["shape"] == ()


@pytest.mark.parametrize("typestr", ["<i4", "<f2", "|b1", ">f4", "<c8", "f4"])
def test_cai_bad_dtype_is_typeerror_naming_argument(typestr):
    with pytest.raises(TypeError, match="weight"):
        _C._cuda_parse(FakeCAI((2, 2), typestr), "weight")


@pytest.mark.parametrize("bad", [
    dict(strides=(6, 4)),                          # not a multiple of the item size
    dict(strides=(16,)),                           # rank mismatch
    dict(mask=FAKE_PTR),                           # masked arrays
    dict(stream=0),                                # disallowed by the protocol
    dict(ptr=0),                                   # null pointer with data
    dict(shape=(2, -1)),                           # negative dimension
])
def test_cai_bad_fields_are_valueerror(bad):
    shape = bad.pop("shape", (2, 3))
    with pytest.raises(ValueError, match="x"):
        _C._cuda_parse(FakeCAI(shape, "<f4", **bad), "x")


@pytest.mark.parametrize("typestr,name", [("<i8", "int64"), ("<i4", "int32"), ("|i8", "int64")])
def test_cai_parse_index_arrays(typestr, name):
    # Class indices (cross_entropy's target): int32 / int64 only, strides in their item size.
    d = _C._cuda_parse(FakeCAI((5,), typestr, strides=(2 * int(typestr[-1]),)), "target", index=True)
    assert d["dtype"] == name and d["shape"] == (5,) and d["strides"] == (2,)


@pytest.mark.parametrize("typestr", ["<f4", "<f8", "<i2", "|b1", ">i8", "<u8"])
def test_cai_index_bad_dtype_is_typeerror(typestr):
    with pytest.raises(TypeError, match="target.*int32 or int64"):
        _C._cuda_parse(FakeCAI((5,), typestr), "target", index=True)
    with pytest.raises(ValueError, match="target"):  # strides not a multiple of 8 bytes
        _C._cuda_parse(FakeCAI((5,), "<i8", strides=(12,)), "target", index=True)


@pytest.mark.parametrize("typestr,name", [("|b1", "bool"), ("<f4", "float32"), ("<f8", "float64")])
def test_cai_parse_masks(typestr, name):
    d = _C._cuda_parse(FakeCAI((2, 1, 5, 7), typestr), "attn_mask", mask=True)
    assert d["dtype"] == name and d["shape"] == (2, 1, 5, 7)
    with pytest.raises(TypeError, match="attn_mask.*bool, float32 or float64"):
        _C._cuda_parse(FakeCAI((5, 7), "<i8"), "attn_mask", mask=True)
    with pytest.raises(TypeError, match="float32 or float64"):  # bool only where a mask is expected
        _C._cuda_parse(FakeCAI((5, 7), "|b1"), "x")


def test_cai_missing_keys():
    class NoData:
        __cuda_array_interface__ = dict(shape=(2,), typestr="<f4", version=3)
    with pytest.raises(ValueError, match="data"):
        _C._cuda_parse(NoData(), "x")


def test_is_cuda_property_decides():
    class HostTensorLike(FakeCAI):
        is_cuda = False
    assert not _C._cuda_is_device(HostTensorLike((2,)))
    assert _C._cuda_is_device(FakeCAI((2,)))


def test_host_array_in_device_parse_is_mixing():
    with pytest.raises(ValueError, match="host"):
        _C._cuda_parse(np.zeros(3, np.float32), "b")


# ---------------------------------------------------------------------------------------
# DeviceArray protocols (a non-owning test view; nothing is dereferenced)
# ---------------------------------------------------------------------------------------


def test_device_array_interfaces():
    v = _C._cuda_view(0x2000, [3, 5], "float64", 0, False)
    assert isinstance(v, nnkernels.cuda.DeviceArray)
    assert v.shape == (3, 5) and v.dtype == np.float64 and v.ndim == 2 and v.size == 15
    assert v.nbytes == 120 and len(v) == 3 and "float64" in repr(v)
    cai = v.__cuda_array_interface__
    assert cai == dict(shape=(3, 5), typestr="<f8", data=(0x2000, False), strides=None,
                       version=3, stream=1)
    assert v.__dlpack_device__() == (2, 0)
    with pytest.raises(TypeError, match="numpy"):
        np.asarray(v)


def _cai_layout(d):
    """(pointer, shape, byte strides) of a DeviceArray, strides spelled out when C-contiguous."""
    cai = d.__cuda_array_interface__
    shape = cai["shape"]
    strides = cai["strides"]
    if strides is None:
        item = int(cai["typestr"][2:])
        strides, acc = [], item
        for n in reversed(shape):
            strides.insert(0, acc)
            acc *= n
        strides = tuple(strides)
    return cai["data"][0], shape, strides


@pytest.mark.parametrize("case", [
    lambda a: a[1], lambda a: a[:, None, 1:3], lambda a: a[..., ::-2], lambda a: a[-1, ..., 5],
    lambda a: a.transpose(2, 0, 1), lambda a: a.T, lambda a: a.transpose(),
    lambda a: a.reshape(6, 12), lambda a: a.reshape(-1), lambda a: a[..., 4:8].reshape(2, 3, 2, 2),
    lambda a: a[:, :, ::2].reshape(6, 6), lambda a: a.transpose(1, 0, 2)[:, 1].reshape(3, 3, 4),
    lambda a: a[None].reshape(2, 1, 3, 1, 12)])
def test_device_array_views_match_numpy(case):
    """DeviceArray indexing, transpose and (view) reshape give numpy's layout: the same
    offset, shape and strides (metadata only: nothing is dereferenced)."""
    base = 0x10000
    h = np.zeros((2, 3, 12))
    d = _C._cuda_view(base, [2, 3, 12], "float64", 0, False)
    hv, dv = case(h), case(d)
    assert np.shares_memory(hv, h)
    ptr, shape, strides = _cai_layout(dv)
    assert shape == hv.shape
    assert ptr - base == hv.__array_interface__["data"][0] - h.__array_interface__["data"][0]
    if hv.size > 1:
        assert tuple(st for st, n in zip(strides, shape) if n > 1) == \
            tuple(st for st, n in zip(hv.strides, hv.shape) if n > 1)


def test_device_array_view_errors():
    d = _C._cuda_view(0x10000, [2, 3], "float32", 0, False)
    with pytest.raises(IndexError, match="out of bounds"):
        d[2]
    with pytest.raises(IndexError, match="too many"):
        d[0, 0, 0]
    with pytest.raises(IndexError, match="ints, slices"):
        d[[0, 1]]
    with pytest.raises(ValueError, match="permutation"):
        d.transpose(0, 0)
    with pytest.raises(ValueError, match="cannot reshape"):
        d.reshape(4, 2)
    with pytest.raises(ValueError, match=">= 0"):
        d.reshape(-2, 3)


@pytest.mark.parametrize("max_version", [None, (1, 0)])
def test_dlpack_round_trip(max_version):
    v = _C._cuda_view(0x3000, [4, 6], "float32", 0, True)
    cap = v.__dlpack__(max_version=max_version)
    assert type(cap).__name__ == "PyCapsule"
    assert ("versioned" in repr(cap)) == (max_version is not None)
    del cap  # an unconsumed capsule frees its export context
    d = _C._cuda_parse(FakeDLPack(v, max_version=max_version), "q")
    assert d["ptr"] == 0x3000 and d["shape"] == (4, 6) and d["strides"] == (6, 1)
    assert d["dtype"] == "float32" and d["device"] == 0
    # The versioned capsule carries the read-only flag.
    assert d["readonly"] == (max_version is not None)


@pytest.mark.parametrize("dtype,typestr,item", [("int64", "<i8", 8), ("int32", "<i4", 4), ("bool", "|b1", 1)])
def test_device_array_index_and_bool_elements(dtype, typestr, item):
    # max_pool2d's indices (int64) and dropout's mask (bool) come back as DeviceArrays.
    v = _C._cuda_view(0x5000, [2, 7], dtype, 0, False)
    assert v.dtype == np.dtype(dtype) and v.nbytes == 14 * item and dtype in repr(v)
    assert v.__cuda_array_interface__["typestr"] == typestr
    for mv in (None, (1, 0)):
        # The DLPack export carries the element type: parsed back as what it is.
        want_index, want_mask = dtype != "bool", dtype == "bool"
        d = _C._cuda_parse(FakeDLPack(v, max_version=mv), "t", index=want_index, mask=want_mask)
        assert d["dtype"] == dtype and d["shape"] == (2, 7) and d["strides"] == (7, 1)
    # Passed on directly: an index array where indices go, a mask where masks go, and
    # never where floats are expected.
    if dtype == "bool":
        assert _C._cuda_parse(v, "mask", mask=True)["dtype"] == "bool"
        with pytest.raises(TypeError, match="indices"):
            _C._cuda_parse(v, "target", index=True)
    else:
        assert _C._cuda_parse(v, "target", index=True)["dtype"] == dtype
        with pytest.raises(TypeError, match="mask"):
            _C._cuda_parse(v, "mask", mask=True)
    with pytest.raises(TypeError, match="x: expected float32 or float64"):
        _C._cuda_parse(v, "x")
    f = _C._cuda_view(0x5000, [3], "float32", 0, False)
    with pytest.raises(TypeError, match="indices"):
        _C._cuda_parse(f, "target", index=True)
    with pytest.raises(ValueError, match="dtype"):
        _C._cuda_view(0x5000, [3], "int16", 0, False)


def test_dlpack_export_checks():
    v = _C._cuda_view(0x3000, [2], "float32", 0, False)
    with pytest.raises(BufferError):
        v.__dlpack__(dl_device=(1, 0))
    with pytest.raises(BufferError):
        v.__dlpack__(copy=True)


def test_dlpack_non_cuda_capsule_is_mixing():
    # __dlpack_device__ claims CUDA, but the capsule holds a CPU tensor.
    with pytest.raises(ValueError, match="host"):
        _C._cuda_parse(FakeDLPack(np.zeros(3, np.float32)), "x")
    # A DLPack producer on the CPU is a host array.
    assert not _C._cuda_is_device(FakeDLPack(np.zeros(3), device=(1, 0)))
    assert _C._cuda_is_device(FakeDLPack(np.zeros(3), device=(2, 0)))


# ---------------------------------------------------------------------------------------
# Routing and argument checks of the CUDA overloads (before any CUDA call)
# ---------------------------------------------------------------------------------------


@needs_built
def test_routing_errors_before_cuda():
    with pytest.raises(TypeError, match="x"):
        ops.relu(FakeCAI((3,), "<i4"))
    with pytest.raises(ValueError, match="cannot be multiplied"):
        ops.gemm(f32(3, 4), f32(5, 6))
    with pytest.raises(TypeError, match="b"):
        ops.gemm(f32(3, 4), FakeCAI((4, 2), "<f8"))
    with pytest.raises(ValueError, match="host"):
        ops.gemm(f32(3, 4), np.ones((4, 2), np.float32))      # device first, host second
    with pytest.raises(ValueError, match="host"):
        ops.gemm(np.ones((3, 4), np.float32), f32(4, 2))      # host first, device second
    # matmul's geometry is the CPU path's (matmul_geom), checked before any CUDA call.
    with pytest.raises(ValueError, match="cannot be multiplied"):
        ops.matmul(f32(2, 3, 4), f32(5))
    with pytest.raises(ValueError, match="do not broadcast"):
        ops.matmul(f32(2, 3, 4), f32(3, 4, 5))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        ops.matmul(f32(), f32(3))
    with pytest.raises(ValueError, match="axis"):
        ops.softmax(f32(3, 4), axis=2)
    with pytest.raises(ValueError, match="activation"):
        ops.linear(f32(3, 4), f32(5, 4), activation="swish")
    with pytest.raises(ValueError, match="do not match"):
        ops.linear(f32(3, 4), f32(5, 3))
    with pytest.raises(ValueError, match="grad_out"):
        ops.linear_backward(f32(3, 4), f32(3, 4), f32(5, 4))
    with pytest.raises(ValueError, match="weight"):
        ops.linear_backward(f32(3, 5), f32(3, 4), f32(5, 3))
    with pytest.raises(ValueError, match="groups"):
        ops.conv2d(f32(1, 4, 8, 8), f32(6, 3, 3, 3), groups=2)
    with pytest.raises(ValueError, match="same"):
        ops.conv2d(f32(1, 3, 8, 8), f32(6, 3, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="grad_out"):
        ops.conv2d_backward(f32(1, 6, 5, 5), f32(1, 3, 8, 8), f32(6, 3, 3, 3))
    with pytest.raises(ValueError, match="groups"):
        ops.conv2d_backward(f32(1, 6, 6, 6), f32(1, 4, 8, 8), f32(6, 3, 3, 3), groups=2)
    with pytest.raises(TypeError, match="grad_out"):
        ops.conv2d_backward(FakeCAI((1, 6, 6, 6), "<f8"), f32(1, 3, 8, 8), f32(6, 3, 3, 3))
    with pytest.raises(ValueError, match="head dim"):
        ops.scaled_dot_product_attention(f32(2, 5, 8), f32(2, 7, 4), f32(2, 7, 4))
    with pytest.raises(ValueError, match="step"):
        ops.adam_step_(f32(4), f32(4), f32(4), f32(4), step=0)
    with pytest.raises(ValueError, match="read-only"):
        ops.sgd_step_(FakeCAI((4,), readonly=True), f32(4), lr=0.1)
    with pytest.raises(ValueError, match="momentum_buffer"):
        ops.sgd_step_(f32(4), f32(4), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="normalized_shape"):
        ops.layer_norm(f32(3, 4), (5,))
    with pytest.raises(ValueError, match="does not match"):
        ops.relu_backward(f32(3), f32(4))
    with pytest.raises(ValueError, match="out"):
        ops.gemm(f32(3, 4), f32(4, 2), out=f32(3, 3))
    with pytest.raises(ValueError, match="overlaps"):
        ops.gemm(f32(3, 4), f32(4, 2), out=FakeCAI((3, 2), ptr=FAKE_PTR))
    # attention masks: dtype, broadcast shape, causal, host mask (before any CUDA call)
    sdpa = ops.scaled_dot_product_attention
    with pytest.raises(ValueError, match="broadcast"):
        sdpa(f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 8), attn_mask=FakeCAI((5, 6), "|b1"))
    with pytest.raises(ValueError, match="broadcast"):
        sdpa(f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 8), attn_mask=FakeCAI((3, 5, 7), "|b1"))
    with pytest.raises(TypeError, match="attn_mask"):
        sdpa(f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 8), attn_mask=FakeCAI((5, 7), "<f8"))
    with pytest.raises(TypeError, match="attn_mask"):
        sdpa(f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 8), attn_mask=FakeCAI((5, 7), "<i4"))
    with pytest.raises(ValueError, match="is_causal"):
        sdpa(f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 8), attn_mask=FakeCAI((5, 7), "|b1"), is_causal=True)
    with pytest.raises(ValueError, match="host"):
        sdpa(f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 8), attn_mask=np.ones((5, 7), bool))
    # attention backward: grad_out, out and lse shapes, dtypes, masks (before any CUDA call)
    bwd = ops.scaled_dot_product_attention_backward
    with pytest.raises(ValueError, match="grad_out"):
        bwd(f32(2, 5, 4), f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 6), f32(2, 5, 6), f32(2, 5))
    with pytest.raises(ValueError, match="out"):
        bwd(f32(2, 5, 6), f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 6), f32(2, 4, 6), f32(2, 5))
    with pytest.raises(ValueError, match="lse"):
        bwd(f32(2, 5, 6), f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 6), f32(2, 5, 6), f32(2, 7))
    with pytest.raises(TypeError, match="lse"):
        bwd(f32(2, 5, 6), f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 6), f32(2, 5, 6), FakeCAI((2, 5), "<f8"))
    with pytest.raises(ValueError, match="head dim"):
        bwd(f32(2, 5, 6), f32(2, 5, 8), f32(2, 7, 4), f32(2, 7, 6), f32(2, 5, 6), f32(2, 5))
    with pytest.raises(ValueError, match="broadcast"):
        bwd(f32(2, 5, 6), f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 6), f32(2, 5, 6), f32(2, 5),
            attn_mask=FakeCAI((3, 1, 7), "|b1"))
    # broadcast batch dims and GQA: the CPU path's rules (attn_batch), before any CUDA call
    with pytest.raises(ValueError, match="enable_gqa"):
        sdpa(f32(4, 5, 8), f32(2, 7, 8), f32(2, 7, 8))
    with pytest.raises(ValueError, match="multiple"):
        sdpa(f32(2, 6, 5, 8), f32(2, 4, 7, 8), f32(2, 4, 7, 8), enable_gqa=True)
    with pytest.raises(ValueError, match="multiple"):
        sdpa(f32(4, 3, 8), f32(0, 5, 8), f32(0, 5, 8), enable_gqa=True)
    with pytest.raises(ValueError, match="grid"):  # the kernels' grid y, before any CUDA call
        sdpa(f32(1024, 64, 5, 8), f32(1024, 64, 7, 8), f32(1024, 64, 7, 8))
    with pytest.raises(ValueError, match="grid"):
        ops.matmul(f32(128 * 70000, 4), f32(4, 8))
    with pytest.raises(ValueError, match="do not broadcast"):
        sdpa(f32(3, 4, 5, 8), f32(2, 4, 7, 8), f32(2, 4, 7, 8))
    with pytest.raises(ValueError, match="batch dims"):
        sdpa(f32(2, 4, 5, 8), f32(2, 4, 7, 8), f32(4, 7, 8))
    with pytest.raises(NotImplementedError, match="batch dims"):
        sdpa(f32(1, 1, 1, 1, 2, 4, 5, 8), f32(1, 1, 1, 1, 2, 2, 7, 8), f32(1, 1, 1, 1, 2, 2, 7, 8), enable_gqa=True)
    # unbatched recurrent forward: state shapes, no cache
    with pytest.raises(ValueError, match="h0"):
        ops.lstm(f32(5, 3), f32(5), None, f32(16, 3), f32(16, 4))
    with pytest.raises(ValueError, match="h"):
        ops.lstm_cell(f32(3), f32(1, 4), None, f32(16, 3), f32(16, 4))
    with pytest.raises(ValueError, match="batched"):
        ops.gru(f32(5, 3), None, f32(12, 3), f32(12, 4), return_cache=True)
    # recurrent forward: the CPU binding's checks
    with pytest.raises(ValueError, match="w_hh"):
        ops.lstm(f32(5, 2, 3), None, None, f32(16, 3), f32(12, 3))
    with pytest.raises(ValueError, match="w_ih"):
        ops.gru(f32(5, 2, 3), None, f32(12, 4), f32(12, 4))
    with pytest.raises(ValueError, match="h0"):
        ops.rnn(f32(5, 2, 3), f32(3, 4), f32(4, 3), f32(4, 4))
    with pytest.raises(ValueError, match="b_hh"):
        ops.rnn(f32(5, 2, 3), None, f32(4, 3), f32(4, 4), None, f32(5))
    with pytest.raises(ValueError, match="nonlinearity"):
        ops.rnn(f32(5, 2, 3), None, f32(4, 3), f32(4, 4), nonlinearity="gelu")
    with pytest.raises(TypeError, match="w_hh"):
        ops.rnn(f32(5, 2, 3), None, f32(4, 3), FakeCAI((4, 4), "<f8"))
    with pytest.raises(ValueError, match="host"):
        ops.rnn(f32(5, 2, 3), np.zeros((2, 4), np.float32), f32(4, 3), f32(4, 4))
    # recurrent backward
    with pytest.raises(ValueError, match="output"):
        ops.rnn_backward(f32(5, 2, 4), None, f32(5, 2, 3), None, f32(4, 3), f32(4, 4), f32(5, 2, 5))
    with pytest.raises(ValueError, match="grad_h_n"):
        ops.rnn_backward(None, f32(3, 4), f32(5, 2, 3), None, f32(4, 3), f32(4, 4), f32(5, 2, 4))
    with pytest.raises(ValueError, match="cache"):
        ops.lstm_backward(None, None, None, f32(5, 2, 3), None, None, f32(16, 3), f32(16, 4),
                          f32(5, 2, 4), (f32(5, 2, 16), None))
    with pytest.raises(ValueError, match="gates"):
        ops.gru_backward(None, None, f32(5, 2, 3), None, f32(12, 3), f32(12, 4), f32(5, 2, 4),
                         (f32(5, 2, 16), f32(5, 2, 4)))
    # losses: shapes, dtypes, reductions, grad_out, class-index targets
    with pytest.raises(ValueError, match="same shape"):
        ops.mse_loss(f32(3, 4), f32(3, 5))
    with pytest.raises(ValueError, match="reduction"):
        ops.mse_loss(f32(3), f32(3), reduction="avg")
    with pytest.raises(TypeError, match="target"):
        ops.binary_cross_entropy_with_logits(f32(3), FakeCAI((3,), "<f8"))
    with pytest.raises(ValueError, match="host"):
        ops.binary_cross_entropy_with_logits(f32(3), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="grad_out"):
        ops.mse_loss_backward(f32(3), f32(3), "none", f32(4))
    with pytest.raises(ValueError, match="scalar"):
        ops.binary_cross_entropy_with_logits_backward(f32(3), f32(3), "sum", f32(2))
    with pytest.raises(TypeError, match="grad_out"):
        ops.mse_loss_backward(f32(3), f32(3), "mean", "one")
    with pytest.raises(TypeError, match="target.*int32 or int64"):
        ops.cross_entropy(f32(4, 5), FakeCAI((4,), "<f4"))
    with pytest.raises(ValueError, match="target must have shape"):
        ops.cross_entropy(f32(4, 5), FakeCAI((3,), "<i8"))
    with pytest.raises(ValueError, match="2-D"):
        ops.cross_entropy(f32(2, 4, 5), FakeCAI((2,), "<i8"))
    with pytest.raises(ValueError, match="grad_out"):
        ops.cross_entropy_backward(f32(4, 5), FakeCAI((4,), "<i4"), "none", f32(5))
    with pytest.raises(ValueError, match="reduction"):
        ops.cross_entropy_backward(f32(4, 5), FakeCAI((4,), "<i4"), "all")
    # im2col / col2im: the CPU binding's geometry and messages (conv_args.h)
    for bad in [lambda m: m.im2col(m.x4, 0), lambda m: m.im2col(m.x2, 2), lambda m: m.col2im(m.c13, (5, 5), 2),
                lambda m: m.col2im(m.c15, (5, 5), 2), lambda m: m.col2im(m.c, (5, 5), 2, padding=-1),
                lambda m: m.im2col(m.x4, 9)]:
        errors = []
        for m in (types.SimpleNamespace(im2col=ops.im2col, col2im=ops.col2im, x4=f32(2, 3, 5, 5), x2=f32(5, 5),
                                        c=f32(2, 12, 16), c13=f32(2, 13, 16), c15=f32(2, 12, 15)),
                  types.SimpleNamespace(im2col=ops.im2col, col2im=ops.col2im, x4=np.ones((2, 3, 5, 5), np.float32),
                                        x2=np.ones((5, 5), np.float32), c=np.ones((2, 12, 16), np.float32),
                                        c13=np.ones((2, 13, 16), np.float32), c15=np.ones((2, 12, 15), np.float32))):
            with pytest.raises(ValueError) as e:
                bad(m)
            errors.append(str(e.value))
        assert errors[0] == errors[1]
    with pytest.raises(TypeError, match="x"):
        ops.im2col(FakeCAI((2, 3, 5, 5), "<i4"), 2)


@needs_built
@no_gpu
def test_no_driver_is_runtimeerror():
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.relu(f32(3))
    # unbatched recurrent inputs get through the checks (read as B = 1)
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.lstm(f32(5, 3), f32(4), None, f32(16, 3), f32(16, 4))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.gru(f32(5, 3), f32(1, 4), f32(12, 3), f32(12, 4))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.rnn_cell(f32(3), f32(4), f32(4, 3), f32(4, 4))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.im2col(f32(2, 3, 5, 5), 2)
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.col2im(f32(12, 16), (5, 5), 2)
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.scaled_dot_product_attention_backward(f32(2, 5, 6), f32(2, 5, 8), f32(2, 7, 8),
                                                  f32(2, 7, 6), f32(2, 5, 6), f32(2, 5))
    with pytest.raises(RuntimeError, match="CUDA"):
        nnkernels.cuda.asarray(np.ones(3))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.lstm(f32(5, 2, 3), None, None, f32(16, 3), f32(16, 4))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.rnn_backward(f32(5, 2, 4), None, f32(5, 2, 3), None, f32(4, 3), f32(4, 4), f32(5, 2, 4))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.scaled_dot_product_attention(f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 8),
                                         attn_mask=FakeCAI((2, 1, 7), "|b1"))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.scaled_dot_product_attention_backward(f32(2, 5, 6), f32(2, 5, 8), f32(2, 7, 8), f32(2, 7, 6),
                                                  f32(2, 5, 6), f32(2, 5), attn_mask=FakeCAI((5, 7), "<f4"))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.mse_loss(f32(3), f32(3))
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.cross_entropy_backward(f32(4, 5), FakeCAI((4,), "<i8"), "none", f32(4))
    with pytest.raises(RuntimeError, match="CUDA"):
        nnkernels.cuda.synchronize()
    with pytest.raises(RuntimeError):
        _C._cuda_view(0x1000, [2], "float32", 0, False).numpy()


@pytest.mark.skipif(BUILT, reason="only for builds without CUDA")
def test_cuda_input_without_cuda_build():
    with pytest.raises(RuntimeError, match="no CUDA support"):
        ops.relu(f32(3))
    with pytest.raises(RuntimeError, match="no CUDA support"):
        ops.relu(FakeDLPack(np.zeros(3), device=(2, 0)))
    with pytest.raises(RuntimeError, match="without CUDA"):
        nnkernels.cuda.asarray(np.ones(3))


# ---------------------------------------------------------------------------------------
# Launch-shape arithmetic (launch.h)
# ---------------------------------------------------------------------------------------


@needs_built
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("side", ["rows", "cols"])
def test_gemm_tile_positions(dtype, side):
    """The GEMM kernel's thread -> tile position map: every position of a tile side exactly
    once, each thread's positions in aligned groups of VW consecutive ones (one 16-byte
    shared-memory read each), and the threads' groups side by side (a warp's reads cover
    consecutive 16-byte words)."""
    d = _C._cuda_launch(f"gemm_tile_{side}", dtype, [])
    pos, per, vw, size = d["pos"], d["per"], d["vw"], d["size"]
    assert vw * (4 if dtype == "float32" else 8) == 16
    assert sorted(pos) == list(range(size))
    threads = size // per
    for t in range(threads):
        mine = pos[t * per:(t + 1) * per]
        for g in range(per // vw):
            grp = mine[g * vw:(g + 1) * vw]
            assert grp == list(range(grp[0], grp[0] + vw)) and grp[0] % vw == 0
            assert grp[0] == g * threads * vw + t * vw


@needs_built
def test_matmul_batch_stride():
    """cu_matmul runs one batched GEMM over the flattened batch: an operand's batch strides
    flatten to one step, or the operand is copied out first (None)."""
    S = lambda shape, st: _C._cuda_launch("batch_stride", "float32", list(shape) + list(st))
    assert S([4, 3], [3 * 35, 35]) == 35          # contiguous (4, 3, 5, 7)
    assert S([4, 3], [0, 0]) == 0                 # broadcast over the whole batch
    assert S([4, 3], [35, 0]) is None             # broadcast over the inner dim only
    assert S([4, 3], [0, 35]) is None             # broadcast over the outer dim only
    assert S([4, 1, 3], [105, 999, 35]) == 35     # a size-1 dim's stride does not count
    assert S([1, 3], [0, 35]) == 35
    assert S([], []) == 0
    assert S([2, 3], [-3 * 35, -35]) == -35       # reversed views


@needs_built
def test_launch_math():
    L = _C._cuda_launch
    assert L("gemm", "float32", [4096, 4096, 1]) == dict(grid=(32, 32, 1), block=256)
    assert L("gemm", "float32", [129, 1, 3]) == dict(grid=(1, 3, 3), block=256)   # 64 x 64 tiles
    assert L("gemm", "float64", [4096, 100, 1]) == dict(grid=(2, 64, 1), block=256)
    # float32: 64-row tiles where they pad M by at least a quarter less than 128-row ones
    for m, rows in [(64, 1), (1, 1), (65, 1), (128, 1), (192, 3), (200, 2), (256, 2), (300, 3), (4097, 33)]:
        assert L("gemm", "float32", [m, 300, 1]) == dict(grid=(3, rows, 1), block=256), m
    # and 64-column tiles likewise for N (a conv's 7 x 7 positions), 64 x 64 for both
    assert L("gemm", "float32", [512, 49, 1]) == dict(grid=(1, 4, 1), block=256)
    assert L("gemm", "float32", [512, 196, 1]) == dict(grid=(2, 4, 1), block=256)   # 256 columns either way
    assert L("gemm", "float32", [64, 49, 2]) == dict(grid=(1, 1, 2), block=256)
    assert L("gemm", "float32", [4096, 4097, 1]) == dict(grid=(33, 32, 1), block=256)
    assert L("gemm", "float64", [64, 300, 1]) == dict(grid=(5, 1, 1), block=256)
    # split K: fewer output blocks than half the SMs, K at least 2 * 256 deep, one batch entry
    assert L("gemm_splits", "float32", [5, 7, 5000, 1, 132]) == (16, 320)        # 1 block: 16 chunks
    assert L("gemm_splits", "float32", [64, 576, 3136, 1, 132]) == (12, 264)     # 5 blocks; K / 256 = 12
    assert L("gemm_splits", "float32", [64, 576, 3136, 2, 132])[0] == 1          # batched: no split
    assert L("gemm_splits", "float32", [1024, 1024, 4096, 1, 132])[0] == 3       # 64 blocks: 192 with 3 chunks
    assert L("gemm_splits", "float32", [2048, 1024, 4096, 1, 132])[0] == 1       # 128 blocks
    assert L("gemm_splits", "float32", [5, 7, 511, 1, 132])[0] == 1              # too shallow
    assert L("gemm_splits", "float64", [64, 64, 1 << 20, 1, 132]) == (16, 65536)
    assert L("gemm_splits", "float32", [2048, 2048, 1 << 20, 1, 4096])[0] == 1   # parts would pass 2^22
    with pytest.raises(ValueError, match="grid"):
        L("gemm", "float32", [128 * 70000, 8, 1])
    # the tiled persistent RNN's plans, forward (nc = G columns per unit, K = H) and backward
    # (nc = 1, K = G H): (U, Rb, Q, Kc, blocks, shared-memory bytes), every block on its own SM;
    # the shared memory: nc U weight rows (up to Q) of K (up to a 16-byte vector), Rb staged
    # rows (up to R) of Kc, the (Rb, nc U) sums; None when the weights do not fit on chip
    assert L("rnn_plan", "float32", [1, 512, 64, 512, 132, 232448]) == (32, 8, 8, 512, 128, 82944)
    assert L("rnn_plan", "float32", [4, 512, 64, 512, 132, 232448]) == (16, 16, 8, 512, 128, 167936)
    assert L("rnn_plan", "float32", [1, 2048, 64, 512, 132, 232448])[3] == 1024    # staged in 2 chunks
    assert L("rnn_plan", "float64", [4, 1024, 64, 1024, 132, 232448]) is None
    assert L("rnn_plan", "float32", [4, 4096, 64, 4096, 132, 232448]) is None
    prng = np.random.default_rng(5)
    for _ in range(300):
        G, B, H, sms = int(prng.choice([1, 3, 4])), int(prng.integers(1, 300)), int(prng.integers(1, 1500)), \
            int(prng.integers(1, 200))
        nc, K = (G, H) if prng.random() < 0.5 else (1, G * H)
        dt = str(prng.choice(["float32", "float64"]))
        lim = int(prng.integers(1 << 14, 232449))
        plan = L("rnn_plan", dt, [nc, K, B, H, sms, lim])
        if plan is None:
            continue
        U, Rb, Q, Kc, blocks, smem = plan
        es = 4 if dt == "float32" else 8
        ve, R = 16 // es, min(16, (64 if es == 4 else 32) // Q)
        up = lambda n, m: -(-n // m) * m
        assert Q in (1, 2, 4, 8) and 1 <= U <= H and 1 <= Rb <= B
        assert Kc == up(K, ve) or (Kc % (32 * ve) == 0 and 0 < Kc < K)
        assert blocks == -(-H // U) * -(-B // Rb) <= sms
        assert smem == es * (up(K, ve) * up(nc * U, Q) + Kc * up(Rb, R) + Rb * nc * U) <= lim
    assert L("elementwise", "float32", [0])["grid"][0] == 1
    assert L("elementwise", "float32", [257])["grid"][0] == 2
    assert L("elementwise", "float32", [1 << 40])["grid"][0] == 1 << 20
    assert L("rows", "float32", [17]) == dict(grid=(3, 1, 1), block=256)
    assert L("norm", "float64", [5]) == dict(grid=(5, 1, 1), block=256)
    assert L("attention", "float32", [64, 2048]) == dict(grid=(64, 64, 1), block=128)
    kt = lambda dt, Lq, S, t, c: L("attention_key_tiles", dt, [Lq, S, t, int(c)])
    assert kt("float32", 2048, 2048, 0, False) == 64
    assert kt("float32", 2048, 2048, 0, True) == 1        # causal block skipping
    assert kt("float32", 2048, 2048, 63, True) == 64
    assert kt("float64", 2048, 2048, 0, True) == 2        # 16-key tiles for float64
    kd = lambda dt, d: L("attention_key_tiles", dt, [2048, 2048, 0, 1, d])
    assert (kd("float32", 128), kd("float32", 129), kd("float64", 256)) == (1, 2, 4)  # halved past 128
    assert kt("float32", 10, 1000, 0, True) == 1
    assert kt("float32", 100, 0, 0, False) == 0


# ---------------------------------------------------------------------------------------
# GPU numerics: against torch on the GPU and against our CPU path
# ---------------------------------------------------------------------------------------

if AVAILABLE:
    import torch
    import torch.nn.functional as F



@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_asarray_numpy_dlpack(rng, dtype):
    x = rng.standard_normal((7, 5)).astype(dtype)
    d = nnkernels.cuda.asarray(x)
    assert isinstance(d, nnkernels.cuda.DeviceArray) and d.shape == x.shape and d.dtype == dtype
    np.testing.assert_array_equal(d.numpy(), x)
    t = torch.from_dlpack(d)
    assert t.is_cuda and t.data_ptr() == d.__cuda_array_interface__["data"][0]
    t2 = torch.as_tensor(d, device="cuda")
    assert t2.data_ptr() == t.data_ptr()
    np.testing.assert_array_equal(t.cpu().numpy(), x)
    # torch CUDA tensors in, DeviceArray out, no host round trip.
    y = ops.relu(tcuda(x))
    assert isinstance(y, nnkernels.cuda.DeviceArray)
    np.testing.assert_array_equal(y.numpy(), np.maximum(x, 0))
    with pytest.raises(ValueError, match="host"):
        ops.gemm(d, np.ones((5, 2), dtype))


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (129, 67, 257), (300, 513, 33), (64, 64, 0)])
def test_gpu_gemm(rng, dtype, m, n, k, no_tf32):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype)  # used transposed
    c = rng.standard_normal((1, n)).astype(dtype)
    ours = ops.gemm(tcuda(a), tcuda(b), tcuda(c), trans_b=True, alpha=0.5, beta=2.0)
    ref = torch.addmm(tcuda(c), tcuda(a), tcuda(b).T, alpha=0.5, beta=2.0)
    close(ours, ref, dtype, factor=max(1, k) ** 0.5)
    close(ours, ops.gemm(a, b, c, trans_b=True, alpha=0.5, beta=2.0), dtype, factor=max(1, k) ** 0.5)
    # A non-contiguous (transposed torch view) first operand.
    at = tcuda(a.T.copy()).T
    close(ops.matmul(at, tcuda(b.T.copy())), tcuda(a) @ tcuda(b).T, dtype, factor=max(1, k) ** 0.5)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("act", [None, "relu", "gelu", "gelu_tanh", "tanh", "sigmoid"])
def test_gpu_linear(rng, dtype, act, no_tf32):
    x = rng.standard_normal((3, 37, 65)).astype(dtype)
    w = rng.standard_normal((29, 65)).astype(dtype)
    b = rng.standard_normal(29).astype(dtype)
    ours = ops.linear(tcuda(x), tcuda(w), tcuda(b), activation=act)
    ref = F.linear(tcuda(x), tcuda(w), tcuda(b))
    ref = {None: lambda t: t, "relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh,
           "sigmoid": torch.sigmoid, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[act](ref)
    close(ours, ref, dtype, factor=8)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("xshape", [(3, 37, 65), (1, 65), (0, 65)])
def test_gpu_linear_backward(rng, dtype, xshape, no_tf32):
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal((29, 65)).astype(dtype)
    g = rng.standard_normal(xshape[:-1] + (29,)).astype(dtype)
    wv = tcuda(np.ascontiguousarray(w.T)).t()  # a transposed view: any weight strides
    ours = ops.linear_backward(tcuda(g), tcuda(x), wv)
    for o, r in zip(ours, ops.linear_backward(g, x, w)):  # our CPU path
        close(o, r, dtype, factor=8)
    t = [tcuda(a).requires_grad_(True) for a in (x, w, np.zeros(29, dtype))]
    F.linear(*t).backward(tcuda(g))                        # torch autograd
    for o, r in zip(ours, t):
        close(o, r.grad, dtype, factor=8)
    assert ops.linear_backward(tcuda(g), tcuda(x), tcuda(w), bias=False)[2] is None


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_matmul_batched(rng, dtype, no_tf32):
    a = rng.standard_normal((4, 33, 17)).astype(dtype)
    b = rng.standard_normal((4, 17, 45)).astype(dtype)
    close(ops.matmul(tcuda(a), tcuda(b)), tcuda(a) @ tcuda(b), dtype, factor=4)
    b2 = rng.standard_normal((17, 45)).astype(dtype)
    close(ops.matmul(tcuda(a), tcuda(b2)), tcuda(a) @ tcuda(b2), dtype, factor=4)


@needs_gpu
@pytest.mark.cuda
def test_gpu_cat_last(rng):
    """_cuda_cat_last (the attention layer's concatenation along the last dim): row-pitched
    copies of contiguous and strided parts of unequal widths, as numpy.concatenate."""
    for dtype in (np.float32, np.float64):
        for lead in [(), (3,), (2, 5), (0, 4)]:
            parts = [rng.standard_normal(lead + (w,)).astype(dtype) for w in (3, 1, 4)]
            dev = [nnkernels.cuda.asarray(parts[0]), nnkernels.cuda.asarray(parts[1])]
            wide = rng.standard_normal(lead + (8,)).astype(dtype)
            dev.append(nnkernels.cuda.asarray(wide)[..., ::2])  # a strided view
            parts[2] = wide[..., ::2]
            got = _C._cuda_cat_last(dev)
            assert got.shape == lead + (8,) and got.__cuda_array_interface__["strides"] is None
            np.testing.assert_array_equal(got.numpy(), np.concatenate(parts, axis=-1))
    a = nnkernels.cuda.asarray(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="last dim"):
        _C._cuda_cat_last([a, nnkernels.cuda.asarray(np.zeros((3, 3), np.float32))])
    with pytest.raises(ValueError, match="last dim"):
        _C._cuda_cat_last([a, nnkernels.cuda.asarray(np.zeros((2, 3), np.float64))])


def _layout(x, kind, vw):
    """x (R, C) on the GPU as: "row" C-contiguous; "col" a transposed view of a column-major
    copy; "colpad" the same with a padded leading dimension; "pad" a row-major view of a
    wider array (row stride a multiple of 16 bytes, the columns short of it); "offset" a view
    starting one element past a 16-byte boundary.
    The wider array's other elements are NaN: a kernel that lets any of them into a product
    (a load past K multiplied by zero, say) gives NaN."""
    r, c = x.shape
    if kind == "row":
        return tcuda(x)
    if kind == "col":
        return tcuda(x.T.copy()).T
    if kind == "colpad":  # column-major with a padded leading dimension
        tall = np.full((c, -(-(r + 1) // vw) * vw), np.nan, x.dtype)
        tall[:, :r] = x.T
        return tcuda(tall)[:, :r].T
    wide = np.full((r, -(-(c + 1) // vw) * vw + vw), np.nan, x.dtype)
    if kind == "pad":
        wide[:, :c] = x
        return tcuda(wide)[:, :c]
    wide[:, 1:c + 1] = x
    return tcuda(wide)[:, 1:c + 1]


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("M,N,K", [(132, 68, 20), (5, 130, 12), (128, 128, 8), (67, 33, 37), (4, 4, 4),
                                   (260, 8, 124), (2, 6, 10)])
def test_gpu_gemm_vector_loads(rng, dtype, tf32, M, N, K, no_tf32):
    """The GEMM's 16-byte global loads (row- and column-major operands with 16-byte aligned
    strides; groups crossing the edges of M, N and K loaded element by element) and its
    scalar loads (misaligned bases), in every pairing, batched, against float64 products."""
    if tf32 and dtype != np.float32:
        return
    vw = 16 // np.dtype(dtype).itemsize
    a = rng.standard_normal((3, M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    kinds = ["row", "col", "colpad", "pad", "offset"]
    nnkernels.cuda.set_allow_tf32(tf32)
    try:
        for ka in kinds:
            for kb in kinds:
                av = _layout(a[1], ka, vw)
                bv = _layout(b, kb, vw)
                ref = a[1].astype(np.float64) @ b.astype(np.float64)
                got = host(ops.matmul(av, bv))
                if tf32:
                    assert np.linalg.norm(got - ref) <= 2e-3 * np.linalg.norm(ref), (ka, kb)
                else:
                    close(got, ref, dtype, factor=max(1, K) ** 0.5)
        # batched: the batch entries' bases are aligned or not depending on M * K
        got = host(ops.matmul(tcuda(a), _layout(b, "pad", vw)))
        ref = a.astype(np.float64) @ b.astype(np.float64)
        if tf32:
            assert np.linalg.norm(got - ref) <= 2e-3 * np.linalg.norm(ref)
        else:
            close(got, ref, dtype, factor=max(1, K) ** 0.5)
    finally:
        nnkernels.cuda.set_allow_tf32(False)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("M,N,K,layout", [(5, 7, 5000, "row"), (64, 200, 3136, "col"), (130, 3, 1000, "row"),
                                          (1, 1, 777, "col"), (9, 130, 2049, "row")])
def test_gpu_gemm_split_k(rng, dtype, M, N, K, layout, no_tf32):
    """GEMMs with few output blocks and a deep K run as K chunks summed in order (split K):
    against float64 products and the unsplit kernel (NNKERNELS_CUDA_SPLIT_K=0), with the
    epilogue (alpha, beta * C, bias, activation) applied once after the sum, transposed
    operands, and the same bits on a second call."""
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    c = rng.standard_normal((M, N)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    at = tcuda(a) if layout == "row" else tcuda(a.T.copy()).T
    bt = tcuda(b) if layout == "row" else tcuda(b.T.copy()).T
    ref = a.astype(np.float64) @ b.astype(np.float64)
    got = host(ops.matmul(at, bt))
    close(got, ref, dtype, factor=max(1, K) ** 0.5)
    np.testing.assert_array_equal(got, host(ops.matmul(at, bt)))  # deterministic
    old = os.environ.get("NNKERNELS_CUDA_SPLIT_K")
    os.environ["NNKERNELS_CUDA_SPLIT_K"] = "0"
    try:
        whole = host(ops.matmul(at, bt))
    finally:
        if old is None:
            del os.environ["NNKERNELS_CUDA_SPLIT_K"]
        else:
            os.environ["NNKERNELS_CUDA_SPLIT_K"] = old
    close(got, whole, dtype, factor=max(1, K) ** 0.5)
    # the epilogue after the sum: 0.5 * A B + 2 * C, then linear's bias and relu
    got = host(ops.gemm(at, bt, tcuda(c), alpha=0.5, beta=2.0))
    close(got, 0.5 * ref + 2.0 * c, dtype, factor=max(1, K) ** 0.5)
    lin = host(ops.linear(at, bt.T, tcuda(bias), activation="relu"))
    close(lin, np.maximum(ref + bias, 0), dtype, factor=max(1, K) ** 0.5)


def test_allow_tf32_flag():
    """The TF32 switch: off by default (as torch), a bool only; kept in builds without CUDA."""
    assert nnkernels.cuda.get_allow_tf32() is False
    try:
        nnkernels.cuda.set_allow_tf32(True)
        assert nnkernels.cuda.get_allow_tf32() is True
    finally:
        nnkernels.cuda.set_allow_tf32(False)
    assert nnkernels.cuda.get_allow_tf32() is False
    with pytest.raises(TypeError, match="bool"):
        nnkernels.cuda.set_allow_tf32(1)


@pytest.fixture
def tf32():
    nnkernels.cuda.set_allow_tf32(True)
    yield
    nnkernels.cuda.set_allow_tf32(False)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("M,N,K", [(512, 512, 512), (1, 1, 1), (129, 77, 31), (300, 1000, 8), (17, 33, 1000)])
def test_gpu_gemm_tf32(rng, tf32, M, N, K):
    """float32 GEMMs on TF32 tensor cores: within TF32's rounding (10-bit mantissa: about
    5e-4 relative per product) of a float64 product, visibly coarser than the float32 path
    (so the tensor cores did run), with the epilogue (bias, activation) and any strides."""
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    rel = lambda x, r: np.linalg.norm(x.astype(np.float64) - r) / max(np.linalg.norm(r), 1e-300)
    got = ops.matmul(tcuda(a), tcuda(b)).numpy()
    assert rel(got, ref) < 2e-3
    nnkernels.cuda.set_allow_tf32(False)
    exact = ops.matmul(tcuda(a), tcuda(b)).numpy()
    nnkernels.cuda.set_allow_tf32(True)
    assert rel(exact, ref) < 1e-5
    if K >= 8:
        assert rel(got, ref) > 3 * rel(exact, ref)
    # transposed operands and the fused epilogue (linear: x W^T + b, relu)
    w = rng.standard_normal((N, K)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    y = ops.linear(tcuda(a), tcuda(w), tcuda(bias), activation="relu").numpy()
    yref = np.maximum(a.astype(np.float64) @ w.T.astype(np.float64) + bias, 0)
    assert rel(y, yref) < 2e-3
    got_t = ops.matmul(tcuda(a.T.copy()).T, tcuda(b)).numpy()
    assert rel(got_t, ref) < 2e-3


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("sa,sb", [((7,), (7,)), ((7,), (7, 5)), ((3, 7), (7,)), ((2, 3, 7), (7,)),
                                   ((7,), (4, 7, 5)), ((2, 1, 3, 7), (1, 4, 7, 5)), ((4, 3, 7), (1, 7, 5)),
                                   ((1, 3, 7), (4, 7, 5)), ((2, 3, 3, 7), (3, 7, 5)), ((0, 3, 7), (7, 2))])
def test_gpu_matmul_broadcast_and_vectors(rng, dtype, no_tf32, sa, sb):
    """1-D operands and broadcast batch dims, as torch.matmul (and the CPU path): operands
    whose batch strides flatten to one step are read in place, the others copied out."""
    a = rng.standard_normal(sa).astype(dtype)
    b = rng.standard_normal(sb).astype(dtype)
    got = ops.matmul(tcuda(a), tcuda(b))
    want = torch.matmul(tcuda(a), tcuda(b))
    assert tuple(got.shape) == tuple(want.shape)
    close(got, want, dtype, factor=4)
    close(got, ops.matmul(a, b), dtype, factor=4)  # the CPU path
    # A transposed (non-contiguous) batched operand.
    if len(sb) == 3:
        bt = tcuda(rng.standard_normal((sb[0], sb[2], sb[1])).astype(dtype)).transpose(1, 2)
        close(ops.matmul(tcuda(a), bt), torch.matmul(tcuda(a), bt), dtype, factor=4)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_activations(rng, dtype):
    x = (rng.standard_normal((33, 71)) * 3).astype(dtype)
    g = rng.standard_normal((33, 71)).astype(dtype)
    tx = tcuda(x).requires_grad_(False)
    cases = [
        ("relu", ops.relu, F.relu, ops.relu_backward, "x"),
        ("sigmoid", ops.sigmoid, torch.sigmoid, ops.sigmoid_backward, "y"),
        ("tanh", ops.tanh, torch.tanh, ops.tanh_backward, "y"),
        ("gelu", ops.gelu, F.gelu, ops.gelu_backward, "x"),
    ]
    for name, fwd, tf, bwd, v in cases:
        y = fwd(tx)
        close(y, tf(tx), dtype, factor=4)
        close(y, fwd(x), dtype, factor=4)
        t = tx.clone().requires_grad_(True)
        out = tf(t)
        out.backward(tcuda(g))
        dx = bwd(tcuda(g), tx if v == "x" else out.detach())
        close(dx, t.grad, dtype, factor=8)
    close(ops.leaky_relu(tx, 0.2), F.leaky_relu(tx, 0.2), dtype)
    close(ops.gelu(tx, approximate="tanh"), F.gelu(tx, approximate="tanh"), dtype, factor=4)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_gpu_softmax(rng, dtype, axis):
    x = (rng.standard_normal((9, 1000, 3)) * 4).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    for log, fwd, bwd, tf in [(False, ops.softmax, ops.softmax_backward, torch.softmax),
                              (True, ops.log_softmax, ops.log_softmax_backward, torch.log_softmax)]:
        y = fwd(tcuda(x), axis=axis)
        close(y, tf(tcuda(x), axis), dtype, factor=4)
        close(y, fwd(x, axis=axis), dtype, factor=4)
        t = tcuda(x).requires_grad_(True)
        out = tf(t, axis)
        out.backward(tcuda(g))
        close(bwd(tcuda(g), out.detach(), axis=axis), t.grad, dtype, factor=8)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_layer_norm(rng, dtype):
    x = rng.standard_normal((6, 7, 300)).astype(dtype)
    w = rng.standard_normal(300).astype(dtype)
    b = rng.standard_normal(300).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    y, mean, rstd = ops.layer_norm(tcuda(x), (300,), tcuda(w), tcuda(b), return_stats=True)
    tx, tw, tb = (tcuda(a).requires_grad_(True) for a in (x, w, b))
    ref = F.layer_norm(tx, (300,), tw, tb)
    close(y, ref, dtype, factor=4)
    ref.backward(tcuda(g))
    dx, dw, db = ops.layer_norm_backward(tcuda(g), tcuda(x), (300,), mean, rstd, tcuda(w), tcuda(b))
    close(dx, tx.grad, dtype, factor=8)
    close(dw, tw.grad, dtype, factor=8)
    close(db, tb.grad, dtype, factor=8)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_optimizers(rng, dtype):
    p0 = rng.standard_normal(1001).astype(dtype)
    grads = [rng.standard_normal(1001).astype(dtype) for _ in range(3)]
    for kind in ["sgd", "adam", "adamw"]:
        p = nnkernels.cuda.asarray(p0)
        s1 = nnkernels.cuda.asarray(np.zeros_like(p0))
        s2 = nnkernels.cuda.asarray(np.zeros_like(p0))
        tp = torch.nn.Parameter(tcuda(p0))
        opt = {"sgd": lambda: torch.optim.SGD([tp], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
               "adam": lambda: torch.optim.Adam([tp], lr=0.01, weight_decay=0.01),
               "adamw": lambda: torch.optim.AdamW([tp], lr=0.01, weight_decay=0.1)}[kind]()
        for step, gr in enumerate(grads, 1):
            tp.grad = tcuda(gr)
            opt.step()
            if kind == "sgd":
                ops.sgd_step_(p, tcuda(gr), s1, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True, step=step)
            else:
                ops.adam_step_(p, tcuda(gr), s1, s2, step=step, lr=0.01,
                               weight_decay=0.01 if kind == "adam" else 0.1, decoupled=kind == "adamw")
        close(p, tp, dtype, factor=10)


CONV_GEOMS = [  # (N, C, H, W), (O, KH, KW), conv2d keywords
    ((2, 4, 13, 11), (6, 3, 3), dict(padding=1)),
    ((3, 6, 9, 17), (4, 5, 3), dict(stride=(2, 3), padding=(2, 1), dilation=(1, 2), groups=2)),
    ((1, 3, 1, 7), (5, 1, 3), dict(padding=(0, 4))),                 # padding wider than the kernel
    ((2, 8, 6, 6), (8, 1, 1), dict()),                               # 1 x 1: K = C
    ((2, 5, 7, 7), (3, 7, 7), dict()),                               # one output position
    ((1, 4, 20, 23), (4, 3, 3), dict(stride=3, padding=2, dilation=3, groups=4)),
    ((4, 2, 5, 129), (3, 2, 2), dict(stride=1, padding=(1, 0))),     # P = 4 * 128 + ...
    ((2, 3, 9, 9), (100, 3, 3), dict(padding=1)),                    # O = 100: the 128-row tile
    ((2, 4, 7, 7), (200, 3, 3), dict(padding=1)),                    # 7 x 7 positions: 64-column tiles
    ((2, 3, 8, 7), (4, 3, 3), dict(stride=2, padding=1)),            # input-gradient phases of 2 x 2 / 1 x 2 taps
    ((2, 4, 5, 6), (3, 1, 1), dict(stride=2)),                       # phases no tap reaches: zero
    ((1, 2, 1, 9), (3, 1, 2), dict(stride=2)),                       # H < stride: an empty phase
]


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("geom", CONV_GEOMS, ids=lambda g: f"{g[0]}-{g[1]}")
def test_gpu_conv2d_implicit_gemm(rng, dtype, tf32, geom, no_tf32):
    """conv2d's implicit GEMMs (the forward with B gathered from x through the tap table, the
    weight gradient with B gathered through the position table) against the im2col path
    (NNKERNELS_CUDA_CONV=im2col): the same products in the same order, so the same bits; and
    against torch / the CPU path. Strides, dilations, groups, padding wider than the kernel,
    1 x 1."""
    if tf32 and dtype != np.float32:
        return
    (n, c, h, w_), (o, kh, kw), kwargs = geom
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = rng.standard_normal((o, c // kwargs.get("groups", 1), kh, kw)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    gy = rng.standard_normal(F.conv2d(torch.from_numpy(x), torch.from_numpy(w), **kwargs).shape).astype(dtype)
    nnkernels.cuda.set_allow_tf32(tf32)
    old = os.environ.pop("NNKERNELS_CUDA_CONV", None)
    run = lambda: (host(ops.conv2d(tcuda(x), tcuda(w), tcuda(b), **kwargs)),
                   [host(t) for t in ops.conv2d_backward(tcuda(gy), tcuda(x), tcuda(w), **kwargs)])
    try:
        implicit, grads = run()
        os.environ["NNKERNELS_CUDA_CONV"] = "im2col"
        cols, grads_cols = run()
    finally:
        nnkernels.cuda.set_allow_tf32(False)
        os.environ.pop("NNKERNELS_CUDA_CONV", None)
        if old is not None:
            os.environ["NNKERNELS_CUDA_CONV"] = old
    np.testing.assert_array_equal(implicit, cols)
    # the weight and bias gradients: the same products in the same order; the input gradient
    # (implicit: per phase of the stride, stride 1 one phase) sums over (o, i, j) in one pass
    # where col2im adds the taps last
    for i, (a, c) in enumerate(zip(grads, grads_cols)):
        if i > 0:
            np.testing.assert_array_equal(a, c)
        elif tf32:
            assert np.linalg.norm(a - c) <= 3e-3 * max(np.linalg.norm(c), 1e-30)
        else:
            close(a, c, dtype, factor=8)
    cpu = list(ops.conv2d_backward(gy, x, w, **kwargs))
    # conv_transpose2d's backward (both of its products are this convolution's) with the same
    # weight: its input has the conv output's shape, its grad_out the conv input's
    xt = rng.standard_normal(gy.shape).astype(dtype)
    gt = rng.standard_normal(ops.conv_transpose2d(xt, w, **kwargs).shape).astype(dtype)
    nnkernels.cuda.set_allow_tf32(tf32)
    try:
        t_implicit = [host(t) for t in ops.conv_transpose2d_backward(tcuda(gt), tcuda(xt), tcuda(w), **kwargs)]
        os.environ["NNKERNELS_CUDA_CONV"] = "im2col"
        t_cols = [host(t) for t in ops.conv_transpose2d_backward(tcuda(gt), tcuda(xt), tcuda(w), **kwargs)]
    finally:
        nnkernels.cuda.set_allow_tf32(False)
        os.environ.pop("NNKERNELS_CUDA_CONV", None)
        if old is not None:
            os.environ["NNKERNELS_CUDA_CONV"] = old
    for a, c in zip(t_implicit, t_cols):
        np.testing.assert_array_equal(a, c)
    # conv_transpose2d's forward (the input gradient's implicit GEMM, with its bias)
    bt = rng.standard_normal(w.shape[1] * kwargs.get("groups", 1)).astype(dtype)
    t_out = host(ops.conv_transpose2d(tcuda(xt), tcuda(w), tcuda(bt), **kwargs))
    cpu += list(ops.conv_transpose2d_backward(gt, xt, w, **kwargs))
    cpu.append(ops.conv_transpose2d(xt, w, bt, **kwargs))
    for a, c in zip(grads + t_implicit + [t_out], cpu):
        if tf32:
            assert np.linalg.norm(a - c) <= 3e-3 * max(np.linalg.norm(c), 1e-30)
        else:
            close(a, c, dtype, factor=8)
    ref = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), torch.from_numpy(b).double(),
                   **kwargs).numpy()
    if tf32:
        assert np.linalg.norm(implicit - ref) <= 3e-3 * np.linalg.norm(ref)
    else:
        close(implicit, ref, dtype, factor=8)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("cfg", [dict(stride=1, padding=1), dict(stride=2, padding=0, dilation=2),
                                 dict(padding="same", groups=2), dict(padding="valid")])
def test_gpu_conv2d(rng, dtype, cfg, no_tf32):
    groups = cfg.get("groups", 1)
    x = rng.standard_normal((3, 4, 13, 11)).astype(dtype)
    w = rng.standard_normal((6, 4 // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    ours = ops.conv2d(tcuda(x), tcuda(w), tcuda(b), **cfg)
    close(ours, F.conv2d(tcuda(x), tcuda(w), tcuda(b), **cfg), dtype, factor=8)
    close(ours, ops.conv2d(x, w, b, **cfg), dtype, factor=8)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape,k,kw", [((2, 3, 7, 9), 3, dict(padding=1)), ((1, 2, 11, 6), (2, 3), dict(stride=(2, 1), dilation=(1, 2))),
                                        ((4, 5, 5), 2, dict(stride=2)), ((0, 3, 5, 5), 2, dict())])
def test_gpu_im2col_col2im(rng, dtype, shape, k, kw):
    """F.unfold / F.fold: against torch on the GPU and our CPU path (a gather each way, no
    sums in im2col: bitwise equal to the CPU)."""
    x = rng.standard_normal(shape).astype(dtype)
    cols = ops.im2col(tcuda(x), k, **kw)
    cpu = ops.im2col(x, k, **kw)
    np.testing.assert_array_equal(host(cols), cpu)
    if shape[0]:
        close(cols, F.unfold(tcuda(x), k, **kw), dtype)
    back = ops.col2im(cols, shape[-2:], k, **kw)
    close(back, ops.col2im(cpu, shape[-2:], k, **kw), dtype)
    if shape[0]:
        close(back, F.fold(tcuda(cpu), shape[-2:], k, **kw), dtype)
    # a non-contiguous image
    xt = tcuda(np.swapaxes(x, -1, -2).copy()).transpose(-1, -2)
    np.testing.assert_array_equal(host(ops.im2col(xt, k, **kw)), cpu)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("cfg", [dict(stride=1, padding=1), dict(stride=2, padding=0, dilation=2),
                                 dict(padding="same", groups=2), dict(stride=(2, 3), padding=(1, 2)),
                                 dict(unbatched=True, padding=1)])
def test_gpu_conv2d_backward(rng, dtype, cfg, no_tf32):
    cfg = dict(cfg)
    unbatched = cfg.pop("unbatched", False)
    groups = cfg.get("groups", 1)
    x = rng.standard_normal((4, 13, 11) if unbatched else (3, 4, 13, 11)).astype(dtype)
    w = rng.standard_normal((6, 4 // groups, 3, 3)).astype(dtype)
    gy = ops.conv2d(x, w, **cfg)
    gy = rng.standard_normal(gy.shape).astype(dtype)
    ours = ops.conv2d_backward(tcuda(gy), tcuda(x), tcuda(w), **cfg)
    for o, r in zip(ours, ops.conv2d_backward(gy, x, w, **cfg)):   # our CPU path
        close(o, r, dtype, factor=8)
    t = [tcuda(a).requires_grad_(True) for a in (x, w)]
    b = tcuda(np.zeros(6, dtype)).requires_grad_(True)
    F.conv2d(t[0], t[1], b, **cfg).backward(tcuda(gy))               # torch autograd
    for o, r in zip(ours, (t[0].grad, t[1].grad, b.grad)):
        close(o, r, dtype, factor=8)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L,S,E,Ev", [(1, 1, 8, 8), (77, 77, 64, 64), (50, 130, 40, 24), (130, 33, 128, 128),
                                      (40, 37, 256, 129), (19, 50, 160, 256)])
def test_gpu_flash_attention(rng, dtype, causal, L, S, E, Ev):
    q = rng.standard_normal((2, 3, L, E)).astype(dtype)
    k = rng.standard_normal((2, 3, S, E)).astype(dtype)
    v = rng.standard_normal((2, 3, S, Ev)).astype(dtype)
    out, lse = ops.scaled_dot_product_attention(tcuda(q), tcuda(k), tcuda(v), is_causal=causal,
                                                return_lse=True)
    ref = F.scaled_dot_product_attention(tcuda(q), tcuda(k), tcuda(v), is_causal=causal)
    close(out, ref, dtype, factor=8)
    cpu_out, cpu_lse = ops.scaled_dot_product_attention(q, k, v, is_causal=causal, return_lse=True)
    close(out, cpu_out, dtype, factor=8)
    close(lse, cpu_lse, dtype, factor=8)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L,S,E,Ev", [(1, 1, 8, 8), (77, 77, 64, 64), (50, 130, 40, 24), (130, 33, 128, 128),
                                      (0, 9, 16, 16), (9, 0, 16, 16), (40, 37, 256, 129), (19, 50, 160, 256)])
def test_gpu_flash_attention_backward(rng, dtype, causal, L, S, E, Ev):
    q = rng.standard_normal((2, 3, L, E)).astype(dtype)
    k = rng.standard_normal((2, 3, S, E)).astype(dtype)
    v = rng.standard_normal((2, 3, S, Ev)).astype(dtype)
    g = rng.standard_normal((2, 3, L, Ev)).astype(dtype)
    # With a single key (S = 1) softmax's gradient is zero: dq and dk are rounding noise,
    # so they are compared on the scale of the gradient flowing in.
    fl = np.linalg.norm(g) if S == 1 else 1e-300
    out, lse = ops.scaled_dot_product_attention(tcuda(q), tcuda(k), tcuda(v), is_causal=causal,
                                                return_lse=True)
    dq, dk, dv = ops.scaled_dot_product_attention_backward(tcuda(g), tcuda(q), tcuda(k), tcuda(v),
                                                           out, lse, is_causal=causal)
    # our CPU path (the same maths, float64-tested in test_attention.py)
    cout, clse = ops.scaled_dot_product_attention(q, k, v, is_causal=causal, return_lse=True)
    for ours, ref in zip((dq, dk, dv), ops.scaled_dot_product_attention_backward(
            g, q, k, v, cout, clse, is_causal=causal)):
        if ref.size:
            close(ours, ref, dtype, factor=32, floor=fl)
        else:
            assert ours.shape == ref.shape
    if L and S:  # and torch autograd on the GPU
        t = [tcuda(x).requires_grad_(True) for x in (q, k, v)]
        F.scaled_dot_product_attention(*t, is_causal=causal).backward(tcuda(g))
        for ours, ref in zip((dq, dk, dv), t):
            close(ours, ref.grad, dtype, factor=32, floor=fl)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("qs,ks,gqa", [((2, 6), (2, 2), True), ((2, 4), (2, 1), True), ((3, 2), (1, 2), False),
                                       ((2,), (3, 2), False), ((4,), (), False), ((1, 3), (2, 3), False),
                                       ((1, 3), (0, 1), False)])
def test_gpu_flash_attention_gqa_and_broadcast(rng, dtype, qs, ks, gqa):
    """Broadcast batch dims and GQA (k / v heads dividing q's): the kernels read the operands
    in place and sum the gradients of k and v (and of a broadcast q) over the batch-heads
    they serve; against our CPU path and torch autograd."""
    L, S, E, Ev = 13, 21, 16, 8
    q = rng.standard_normal(qs + (L, E)).astype(dtype)
    k = rng.standard_normal(ks + (S, E)).astype(dtype)
    v = rng.standard_normal(ks + (S, Ev)).astype(dtype)
    cout, clse = ops.scaled_dot_product_attention(q, k, v, enable_gqa=gqa, return_lse=True)
    g = rng.standard_normal(cout.shape).astype(dtype)
    out, lse = ops.scaled_dot_product_attention(tcuda(q), tcuda(k), tcuda(v), enable_gqa=gqa, return_lse=True)
    close(out, cout, dtype, factor=8)
    close(lse, clse, dtype, factor=8)
    grads = ops.scaled_dot_product_attention_backward(tcuda(g), tcuda(q), tcuda(k), tcuda(v), out, lse,
                                                      enable_gqa=gqa)
    cgrads = ops.scaled_dot_product_attention_backward(g, q, k, v, cout, clse, enable_gqa=gqa)
    for ours, ref, x in zip(grads, cgrads, (q, k, v)):
        assert tuple(ours.shape) == x.shape
        close(ours, ref, dtype, factor=32)
    if cout.size:
        t = [tcuda(x).requires_grad_(True) for x in (q, k, v)]
        F.scaled_dot_product_attention(*t, enable_gqa=gqa).backward(tcuda(g))
        for ours, ref in zip(grads, t):
            close(ours, ref.grad, dtype, factor=32)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("seed", range(4))
def test_gpu_flash_attention_tiled_and_quad_kernels(seed):
    """float32 has two sets of kernels (tiled, the default for head dims <= 128 forward and
    backward (templated on 64 / 128); quad with NNKERNELS_CUDA_ATTN=quad) and the GEMM path
    (NNKERNELS_CUDA_ATTN=gemm; the one for head dims over 256), here with a score budget of
    2000 elements (NNKERNELS_CUDA_ATTN_CHUNK) so that long rows run in several chunks: each,
    forward and backward, against the CPU path on random shapes (odd sizes, S = 0, causal with
    L != S, bool masks with a fully masked row, GQA)."""
    import os
    rng = np.random.default_rng(seed)
    for _ in range(12):
        B, H = int(rng.integers(1, 3)), int(rng.choice([1, 2, 4]))
        gqa = H > 1 and bool(rng.integers(0, 2))
        kvh = H // 2 if gqa else H
        L, S = int(rng.integers(1, 150)), int(rng.integers(0, 100))
        E, Ev = int(rng.integers(1, 129)), int(rng.integers(1, 129))  # tiled: head dims <= 128
        causal = bool(rng.integers(0, 2))
        q = rng.standard_normal((B, H, L, E)).astype(np.float32)
        k = rng.standard_normal((B, kvh, S, E)).astype(np.float32)
        v = rng.standard_normal((B, kvh, S, Ev)).astype(np.float32)
        mask = None
        if not causal and S and rng.integers(0, 2):
            mask = rng.random((L, S)) < 0.5
            mask[rng.integers(0, L)] = False
        ref, rlse = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, return_lse=True,
                                                     enable_gqa=gqa)
        g = rng.standard_normal(ref.shape).astype(np.float32)
        rgrads = ops.scaled_dot_product_attention_backward(g, q, k, v, ref, rlse, attn_mask=mask, is_causal=causal,
                                                           enable_gqa=gqa)
        dm = None if mask is None else tcuda(mask)
        for kernel in ("tiled", "quad", "gemm"):
            os.environ["NNKERNELS_CUDA_ATTN"] = kernel
            os.environ["NNKERNELS_CUDA_ATTN_CHUNK"] = "2000"
            try:
                out, lse = ops.scaled_dot_product_attention(tcuda(q), tcuda(k), tcuda(v), is_causal=causal,
                                                            attn_mask=dm, return_lse=True, enable_gqa=gqa)
                grads = ops.scaled_dot_product_attention_backward(tcuda(g), tcuda(q), tcuda(k), tcuda(v), out, lse,
                                                                  attn_mask=dm, is_causal=causal, enable_gqa=gqa)
            finally:
                del os.environ["NNKERNELS_CUDA_ATTN"], os.environ["NNKERNELS_CUDA_ATTN_CHUNK"]
            close(out, ref, np.float32, factor=8)
            lse = host(lse)
            assert np.array_equal(np.isneginf(lse), np.isneginf(rlse))
            fin = np.isfinite(rlse)
            close(lse[fin], rlse[fin], np.float32, factor=8)
            # (a single visible key makes dq and dk rounding noise: compared on g's scale)
            for o, r in zip(grads, rgrads):
                close(o, r, np.float32, factor=32, floor=float(np.linalg.norm(g)))


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("case", range(4))
def test_gpu_attention_large_head_dims(rng, dtype, case):
    """Head dims over 256 (the GEMM path: scores in memory): forward and backward against the
    CPU path, the forward also against torch where no mask is given; an additive float mask
    with -inf entries broadcast over the heads and a fully masked row, causal with L != S,
    GQA with broadcast batch dims, a strided q, S = 0, and several score chunks."""
    import os
    import torch.nn.functional as F
    B, H, kvh, L, S, E, Ev, causal, masked, chunk = [
        (2, 3, 3, 37, 29, 300, 260, False, True, None),
        (1, 4, 2, 23, 31, 257, 300, True, False, "100"),
        (2, 2, 1, 5, 0, 264, 257, False, False, None),
        (1, 2, 2, 17, 19, 512, 64, False, True, "40")][case]
    qfull = rng.standard_normal((B, H, L, 2 * E)).astype(dtype)
    q = qfull[..., ::2]                                                # strided head dim
    k = rng.standard_normal((1, kvh, S, E)).astype(dtype)              # k, v broadcast over the batch
    v = rng.standard_normal((1, kvh, S, Ev)).astype(dtype)
    mask = None
    if masked:
        mask = (rng.standard_normal((B, 1, L, S)) * 2).astype(dtype)
        mask[rng.random(mask.shape) < 0.2] = -np.inf
        mask[:, :, 3] = -np.inf  # a row with no visible key
    gqa = kvh != H
    kw = dict(is_causal=causal, enable_gqa=gqa)
    ref, rlse = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, return_lse=True, **kw)
    g = rng.standard_normal(ref.shape).astype(dtype)
    rgrads = ops.scaled_dot_product_attention_backward(g, q, k, v, ref, rlse, attn_mask=mask, **kw)
    dm = None if mask is None else tcuda(mask)
    qd = tcuda(qfull)[..., ::2]
    if chunk:
        os.environ["NNKERNELS_CUDA_ATTN_CHUNK"] = chunk
    try:
        out, lse = ops.scaled_dot_product_attention(qd, tcuda(k), tcuda(v), attn_mask=dm, return_lse=True, **kw)
        grads = ops.scaled_dot_product_attention_backward(tcuda(g), qd, tcuda(k), tcuda(v), out, lse, attn_mask=dm,
                                                          **kw)
    finally:
        os.environ.pop("NNKERNELS_CUDA_ATTN_CHUNK", None)
    close(out, ref, dtype, factor=8)
    lse = host(lse)
    assert np.array_equal(np.isneginf(lse), np.isneginf(rlse))
    fin = np.isfinite(rlse)
    close(lse[fin], rlse[fin], dtype, factor=8)
    assert len(grads) == len(rgrads) == 3
    for o, r in zip(grads, rgrads):
        close(o, r, dtype, factor=32, floor=float(np.linalg.norm(g)))
    if S and mask is None:  # and torch's forward (k, v expanded over the batch)
        t = [torch.from_numpy(np.array(np.broadcast_to(a, (B,) + a.shape[1:]))) for a in (q, k, v)]
        close(out, F.scaled_dot_product_attention(*t, **kw), dtype, factor=8)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("gqa,causal", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("E", [16, 6])
def test_gpu_flash_attention_strided_operands(rng, dtype, gqa, causal, E):
    """q, k, v as views of a fused projection (B, L, 3, H, 2 E) transposed to (B, H, L, E), and
    v with a column step of 2: read in place with their strides, forward and backward,
    against the CPU path on contiguous copies and torch autograd. E = 16: q and k take the
    tiled kernels' 16-byte tile loads; E = 6: rows of 16-byte multiples whose last group of 4
    runs past E, loaded element by element."""
    B, L, H = 2, 37, 4
    kvh = 2 if gqa else H
    x = tcuda(rng.standard_normal((B, L, 3, H, 2 * E)).astype(dtype))
    q = x[:, :, 0, :, :E].transpose(1, 2)
    k = x[:, :, 1, :kvh, E:].transpose(1, 2)
    v = x[:, :, 2, :kvh, ::2].transpose(1, 2)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    qc, kc, vc = (np.ascontiguousarray(host(t)) for t in (q, k, v))
    out, lse = ops.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa, return_lse=True)
    cout, clse = ops.scaled_dot_product_attention(qc, kc, vc, is_causal=causal, enable_gqa=gqa, return_lse=True)
    close(out, cout, dtype, factor=8)
    close(lse, clse, dtype, factor=8)
    g = rng.standard_normal(cout.shape).astype(dtype)
    gt = tcuda(np.repeat(g, 2, axis=-1))[..., ::2]  # a strided grad_out too
    grads = ops.scaled_dot_product_attention_backward(gt, q, k, v, out, lse, is_causal=causal, enable_gqa=gqa)
    cgrads = ops.scaled_dot_product_attention_backward(g, qc, kc, vc, cout, clse, is_causal=causal, enable_gqa=gqa)
    for ours, ref in zip(grads, cgrads):
        close(ours, ref, dtype, factor=32)
    t = [tcuda(a).requires_grad_(True) for a in (qc, kc, vc)]
    F.scaled_dot_product_attention(*t, is_causal=causal, enable_gqa=gqa).backward(tcuda(g))
    for ours, ref in zip(grads, t):
        close(ours, ref.grad, dtype, factor=32)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("kind", ["padding", "bool", "additive", "strided"])
def test_gpu_flash_attention_masks(rng, dtype, kind):
    B, H, L, S, E = 2, 3, 37, 70, 32
    q = rng.standard_normal((B, H, L, E)).astype(dtype)
    k = rng.standard_normal((B, H, S, E)).astype(dtype)
    v = rng.standard_normal((B, H, S, E)).astype(dtype)
    g = rng.standard_normal((B, H, L, E)).astype(dtype)
    if kind == "padding":  # (B, 1, 1, S): keys past each element's length removed
        mask = np.arange(S)[None, None, None, :] < np.array([S, 23])[:, None, None, None]
    elif kind == "bool":  # (L, S), every row keeps key 0
        mask = rng.random((L, S)) < 0.6
        mask[:, 0] = True
    elif kind == "additive":  # (H, L, S) float, with -inf entries
        mask = rng.standard_normal((H, L, S)).astype(dtype)
        mask[:, :, 5:9] = -np.inf
    else:  # a strided bool view
        mask = (rng.random((B, H, L, 2 * S)) < 0.7)[..., ::2]
        mask[..., 0] = True
    dm = tcuda(mask) if kind != "strided" else tcuda(np.ascontiguousarray(np.repeat(mask, 2, axis=-1)))[..., ::2]
    out, lse = ops.scaled_dot_product_attention(tcuda(q), tcuda(k), tcuda(v), attn_mask=dm, return_lse=True)
    cout, clse = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, return_lse=True)
    close(out, cout, dtype, factor=8)
    close(lse, clse, dtype, factor=8)
    t = [tcuda(x).requires_grad_(True) for x in (q, k, v)]
    ref = F.scaled_dot_product_attention(*t, attn_mask=tcuda(np.ascontiguousarray(mask)))
    close(out, ref, dtype, factor=8)
    ref.backward(tcuda(g))
    grads = ops.scaled_dot_product_attention_backward(tcuda(g), tcuda(q), tcuda(k), tcuda(v), out, lse,
                                                      attn_mask=dm)
    cgrads = ops.scaled_dot_product_attention_backward(g, q, k, v, cout, clse, attn_mask=mask)
    for ours, cref, tref in zip(grads, cgrads, t):
        close(ours, cref, dtype, factor=32)
        close(ours, tref.grad, dtype, factor=32)
    # a row with every key masked out: output 0, lse -inf, zero gradients (as the CPU path)
    full = np.ones((L, S), bool)
    full[3] = False
    out, lse = ops.scaled_dot_product_attention(tcuda(q), tcuda(k), tcuda(v), attn_mask=tcuda(full), return_lse=True)
    o, l = out.numpy(), lse.numpy()
    assert np.all(o[:, :, 3] == 0) and np.all(np.isneginf(l[:, :, 3]))
    dq = ops.scaled_dot_product_attention_backward(tcuda(g), tcuda(q), tcuda(k), tcuda(v), out, lse,
                                                   attn_mask=tcuda(full))[0].numpy()
    assert np.all(dq[:, :, 3] == 0) and np.all(np.isfinite(dq))


def rnn_gpu_cases(f):
    """The recurrent GPU tests' parameters: both dtypes, every family, T = 1, a longer
    sequence, batch 0 and T = 0; (5, 37, 20, 300) runs the persistent kernel with several
    units per block, a partial last block and several batch rows per warp."""
    for d in (pytest.mark.parametrize("T,B,I,H", [(1, 1, 5, 7), (9, 3, 17, 33), (3, 0, 5, 6), (0, 2, 3, 4),
                                                 (5, 37, 20, 300)]),
              pytest.mark.parametrize("mode", ["tanh", "relu", "lstm", "gru"]),
              pytest.mark.parametrize("dtype", DT), pytest.mark.cuda, needs_gpu):
        f = d(f)
    return f


def rnn_arrays(rng, dtype, mode, T, B, I, H):
    """x, h0, c0, w_ih, w_hh, b_ih, b_hh of a random recurrent layer (G = 1, 4 or 3 gates)."""
    G = {"lstm": 4, "gru": 3}.get(mode, 1)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0, c0 = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    wi = (rng.standard_normal((G * H, I)) * 0.3).astype(dtype)
    wh = (rng.standard_normal((G * H, H)) * 0.3).astype(dtype)
    bi, bh = (rng.standard_normal(G * H).astype(dtype) for _ in range(2))
    return x, h0, c0, wi, wh, bi, bh


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("mode", ["tanh", "lstm", "gru"])
def test_gpu_rnn_unbatched(rng, dtype, mode):
    """Unbatched inputs (x (T, I) / (I,)): the CUDA binding reads them as B = 1 and shapes
    its results as the CPU path's ops.py does ((H,) states, or (1, H) when given so)."""
    T, I, H = 6, 5, 7
    x, h0, c0, wi, wh, bi, bh = rnn_arrays(rng, dtype, "rnn" if mode == "tanh" else mode, T, 1, I, H)
    x1, h1, c1 = x[:, 0], h0[0], c0[0] if c0 is not None else None
    d = lambda a: None if a is None else tcuda(a)
    for hh, cc in ((h1, c1), (None, None), (h0, c0)):  # (H,), zeros, (1, H)
        if mode == "lstm":
            ours, ref = ops.lstm(d(x1), d(hh), d(cc), d(wi), d(wh), d(bi), d(bh)), ops.lstm(x1, hh, cc, wi, wh, bi, bh)
        elif mode == "gru":
            ours, ref = ops.gru(d(x1), d(hh), d(wi), d(wh), d(bi), d(bh)), ops.gru(x1, hh, wi, wh, bi, bh)
        else:
            ours, ref = ops.rnn(d(x1), d(hh), d(wi), d(wh), d(bi), d(bh)), ops.rnn(x1, hh, wi, wh, bi, bh)
        for o, r in zip(ours, ref):
            close(o, r, dtype, factor=8)
    # cells: x (I,), states (H,)
    if mode == "lstm":
        ours, ref = ops.lstm_cell(d(x1[0]), d(h1), d(c1), d(wi), d(wh)), ops.lstm_cell(x1[0], h1, c1, wi, wh)
    elif mode == "gru":
        ours, ref = (ops.gru_cell(d(x1[0]), d(h1), d(wi), d(wh)),), (ops.gru_cell(x1[0], h1, wi, wh),)
    else:
        ours, ref = (ops.rnn_cell(d(x1[0]), None, d(wi), d(wh)),), (ops.rnn_cell(x1[0], None, wi, wh),)
    for o, r in zip(ours, ref):
        close(o, r, dtype, factor=8)


@rnn_gpu_cases
def test_gpu_rnn_forward(rng, dtype, mode, T, B, I, H):
    """The CUDA sequence forward against our CPU path (outputs, final states and the cache the
    backward reads) and against torch's GPU modules; a transposed-view w_hh and no biases in
    one case."""
    x, h0, c0, wi, wh, bi, bh = rnn_arrays(rng, dtype, mode, T, B, I, H)
    no_bias = (T, B) == (9, 3) and dtype == np.float64
    if no_bias:
        bi = bh = None
    d = lambda a: None if a is None else tcuda(a)
    whd = tcuda(np.ascontiguousarray(wh.T)).t() if (T, B) == (9, 3) else tcuda(wh)
    if mode == "lstm":
        ours = ops.lstm(d(x), d(h0), d(c0), d(wi), whd, d(bi), d(bh), return_cache=True)
        ref = ops.lstm(x, h0, c0, wi, wh, bi, bh, return_cache=True)
        ours, ref = ours[:3] + ours[3], ref[:3] + ref[3]
    elif mode == "gru":
        ours = ops.gru(d(x), d(h0), d(wi), whd, d(bi), d(bh), return_cache=True)
        ref = ops.gru(x, h0, wi, wh, bi, bh, return_cache=True)
        ours, ref = ours[:2] + ours[2], ref[:2] + ref[2]
    else:
        ours = ops.rnn(d(x), d(h0), d(wi), whd, d(bi), d(bh), nonlinearity=mode)
        ref = ops.rnn(x, h0, wi, wh, bi, bh, nonlinearity=mode)
    for o, r in zip(ours, ref):
        close(o, r, dtype, factor=8)
    if T and B:
        kind = {"lstm": "LSTM", "gru": "GRU"}.get(mode, "RNN")
        kw = {} if kind != "RNN" else {"nonlinearity": mode}
        mod = getattr(torch.nn, kind)(I, H, bias=not no_bias, **kw).to("cuda", torch.float64 if dtype == np.float64 else torch.float32)
        with torch.no_grad():
            mod.weight_ih_l0.copy_(tcuda(wi))
            mod.weight_hh_l0.copy_(tcuda(wh))
            if not no_bias:
                mod.bias_ih_l0.copy_(tcuda(bi))
                mod.bias_hh_l0.copy_(tcuda(bh))
            hx = (tcuda(h0)[None], tcuda(c0)[None]) if kind == "LSTM" else tcuda(h0)[None]
            tout = mod(tcuda(x), hx)[0]
        close(ours[0], tout, dtype, factor=8)


@rnn_gpu_cases
def test_gpu_rnn_backward(rng, dtype, mode, T, B, I, H):
    """Backpropagation through time on the GPU against our CPU path (every gradient; some
    final-state gradients given, some None) and torch autograd on its GPU modules."""
    x, h0, c0, wi, wh, bi, bh = rnn_arrays(rng, dtype, mode, T, B, I, H)
    go = rng.standard_normal((T, B, H)).astype(dtype)
    ghn, gcn = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    d = lambda a: None if a is None else tcuda(a)
    if mode == "lstm":
        run = lambda dv: ops.lstm_backward(
            dv(go), dv(ghn), None, dv(x), dv(h0), dv(c0), dv(wi), dv(wh),
            *(lambda r: (r[0], r[3]))(ops.lstm(dv(x), dv(h0), dv(c0), dv(wi), dv(wh), dv(bi), dv(bh),
                                               return_cache=True)))
    elif mode == "gru":
        run = lambda dv: ops.gru_backward(
            dv(go), None, dv(x), dv(h0), dv(wi), dv(wh),
            *(lambda r: (r[0], r[2]))(ops.gru(dv(x), dv(h0), dv(wi), dv(wh), dv(bi), dv(bh), return_cache=True)))
    else:
        run = lambda dv: ops.rnn_backward(
            dv(go), dv(ghn), dv(x), dv(h0), dv(wi), dv(wh),
            ops.rnn(dv(x), dv(h0), dv(wi), dv(wh), dv(bi), dv(bh), nonlinearity=mode)[0], nonlinearity=mode)
    ours, ref = run(d), run(lambda a: a)
    close_each(ours, ref, dtype, factor=16)
    if T and B:
        kind = {"lstm": "LSTM", "gru": "GRU"}.get(mode, "RNN")
        kw = {} if kind != "RNN" else {"nonlinearity": mode}
        tdt = torch.float64 if dtype == np.float64 else torch.float32
        mod = getattr(torch.nn, kind)(I, H, **kw).to("cuda", tdt)
        with torch.no_grad():
            for prm, val in zip(mod.parameters(), (wi, wh, bi, bh)):
                prm.copy_(tcuda(val))
        xt = tcuda(x).requires_grad_(True)
        h0t = tcuda(h0)[None].requires_grad_(True)
        hx = (h0t, tcuda(c0)[None]) if kind == "LSTM" else h0t
        out, hn = mod(xt, hx)
        hn = hn[0] if kind == "LSTM" else hn
        loss = (out * tcuda(go)).sum() + ((hn[0] * tcuda(ghn)).sum() if mode != "gru" else 0)
        loss.backward()
        dx_t, dh0_t = xt.grad, h0t.grad[0]
        close(ours[0], dx_t, dtype, factor=16)
        close(ours[1], dh0_t, dtype, factor=16)
        i_wi = 3 if kind == "LSTM" else 2
        close(ours[i_wi], mod.weight_ih_l0.grad, dtype, factor=16)
        close(ours[i_wi + 1], mod.weight_hh_l0.grad, dtype, factor=16)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("mode", ["tanh", "relu", "lstm", "gru"])
def test_gpu_rnn_persistent_plans(rng, dtype, mode):
    """The tiled persistent forward and backward under forced plans (NNKERNELS_CUDA_RNN_PLAN =
    U,Rb,Q[,Kc]): each warp-tile shape Q = 1, 2, 4, 8; partial unit and row blocks; more tiles
    than warps; H not a multiple of the 16-byte vector; one block; the operand staged in chunks
    (Kc, the last one partial). Also the default plan, the fifth session's persistent forward
    ("rows", with the per-step backward) and the per-step path, all against the CPU path (the
    cache and every gradient). A plan that does not fit, or is malformed, is a ValueError
    naming the variable."""
    T, B, I, H = 4, 13, 6, 21
    x, h0, c0, wi, wh, bi, bh = rnn_arrays(rng, dtype, mode, T, B, I, H)
    go = rng.standard_normal((T, B, H)).astype(dtype)
    ghn, gcn = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))

    def run(dv):
        if mode == "lstm":
            r = ops.lstm(dv(x), dv(h0), dv(c0), dv(wi), dv(wh), dv(bi), dv(bh), return_cache=True)
            g = ops.lstm_backward(dv(go), dv(ghn), dv(gcn), dv(x), dv(h0), dv(c0), dv(wi), dv(wh), r[0], r[3])
            return r[:3] + r[3] + g
        if mode == "gru":
            r = ops.gru(dv(x), dv(h0), dv(wi), dv(wh), dv(bi), dv(bh), return_cache=True)
            g = ops.gru_backward(dv(go), dv(ghn), dv(x), dv(h0), dv(wi), dv(wh), r[0], r[2])
            return r[:2] + r[2] + g
        r = ops.rnn(dv(x), dv(h0), dv(wi), dv(wh), dv(bi), dv(bh), nonlinearity=mode)
        return r + ops.rnn_backward(dv(go), dv(ghn), dv(x), dv(h0), dv(wi), dv(wh), r[0], nonlinearity=mode)

    ref = run(lambda a: a)
    # at most 12 blocks each; a device with fewer SMs refuses a plan (ValueError), and only that
    # refusal is let pass
    plans = ["7,5,1", "6,5,2", "8,13,4", "5,7,8", "21,13,8", "11,3,2", "6,5,2,8", "5,7,8,12", "21,13,1,4"]
    settings = [("NNKERNELS_CUDA_RNN_PLAN", p) for p in plans]
    settings += [("NNKERNELS_CUDA_RNN_PLAN", None), ("NNKERNELS_CUDA_RNN_PERSISTENT", "rows"),
                 ("NNKERNELS_CUDA_RNN_PERSISTENT", "0")]
    for name, value in settings:
        old = os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
        try:
            ours = run(tcuda)
        except ValueError as e:
            m = re.search(r"needs (\d+) blocks .* the device has (\d+) SMs", str(e))
            if not (m and int(m.group(1)) > int(m.group(2))):
                raise
            continue
        finally:
            os.environ.pop(name, None)
            if old is not None:
                os.environ[name] = old
        close_each(ours, ref, dtype, factor=16)
    for bad, msg in [("1,1,1", "blocks"), ("3,5,3", "U,Rb,Q"), ("x", "U,Rb,Q"), ("3,5,2,6", "U,Rb,Q")]:
        os.environ["NNKERNELS_CUDA_RNN_PLAN"] = bad
        try:
            with pytest.raises(ValueError, match="NNKERNELS_CUDA_RNN_PLAN.*" + msg):
                run(tcuda)
        finally:
            os.environ.pop("NNKERNELS_CUDA_RNN_PLAN", None)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("kind", ["mse", "bce"])
@pytest.mark.parametrize("shape", [(7, 13), (4099,), (0, 3)])
def test_gpu_elementwise_losses(rng, dtype, kind, shape):
    import torch.nn.functional as F
    fwd, bwd, tf = {"mse": (ops.mse_loss, ops.mse_loss_backward, F.mse_loss),
                    "bce": (ops.binary_cross_entropy_with_logits,
                            ops.binary_cross_entropy_with_logits_backward,
                            F.binary_cross_entropy_with_logits)}[kind]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = (rng.standard_normal(shape) if kind == "mse" else rng.random(shape)).astype(dtype)
    if x.size:
        x.flat[0] = 1e4  # BCE on a large logit stays finite
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for red in ["mean", "sum", "none"]:
        ours = fwd(tcuda(x), tcuda(t), reduction=red)
        ref = tf(tcuda(x).double(), tcuda(t).double(), reduction=red)
        if red == "none":
            close(ours, ref, dtype, factor=4)
            close(ours, fwd(x, t, reduction=red), dtype, factor=4)
        elif x.size == 0:
            assert (np.isnan(ours) if red == "mean" else ours == 0.0)
        else:
            assert isinstance(ours, float)
            np.testing.assert_allclose(ours, ref.item(), rtol=tol)
            np.testing.assert_allclose(ours, fwd(x, t, reduction=red), rtol=tol)
        xt = tcuda(x).requires_grad_(True)
        go = rng.standard_normal(shape).astype(dtype) if red == "none" else 0.37
        tf(xt, tcuda(t), reduction=red).backward(tcuda(go) if red == "none" else torch.tensor(go, dtype=xt.dtype, device="cuda"))
        for g in ([tcuda(go)] if red == "none" else [go, tcuda(np.array(go, dtype))]):
            dx = bwd(tcuda(x), tcuda(t), reduction=red, grad_out=g)
            close(dx, xt.grad, dtype, factor=4)
        close(bwd(tcuda(x), tcuda(t), reduction=red), bwd(x, t, reduction=red), dtype, factor=4)
    # non-contiguous inputs
    if len(shape) == 2 and x.size:
        xs = tcuda(x)[:, ::2]
        ts = tcuda(t)[:, ::2]
        close(fwd(xs, ts, reduction="none"), tf(xs, ts, reduction="none"), dtype, factor=4)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("tdtype", [np.int64, np.int32])
@pytest.mark.parametrize("N,C", [(37, 11), (5, 1000), (None, 7), (0, 4)])
def test_gpu_cross_entropy(rng, dtype, tdtype, N, C):
    import torch.nn.functional as F
    shape = (C,) if N is None else (N, C)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    t = rng.integers(0, C, size=() if N is None else (N,)).astype(tdtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for red in ["mean", "sum", "none"]:
        ours = ops.cross_entropy(tcuda(x), tcuda(t), reduction=red)
        ref = F.cross_entropy(tcuda(x).double(), tcuda(t).long(), reduction=red)
        if red == "none":
            close(ours, ref, dtype, factor=4)
        elif N == 0:
            assert (np.isnan(ours) if red == "mean" else ours == 0.0)
        else:
            np.testing.assert_allclose(ours, ref.item(), rtol=tol)
            np.testing.assert_allclose(ours, ops.cross_entropy(x, t, reduction=red), rtol=tol)
        xt = tcuda(x).requires_grad_(True)
        go = rng.standard_normal(t.shape).astype(dtype) if red == "none" else 1.7
        F.cross_entropy(xt, tcuda(t).long(), reduction=red).backward(
            tcuda(go) if red == "none" else torch.tensor(go, dtype=xt.dtype, device="cuda"))
        dx = ops.cross_entropy_backward(tcuda(x), tcuda(t), reduction=red, grad_out=tcuda(go) if red == "none" else go)
        close(dx, xt.grad, dtype, factor=4)
        close(dx, ops.cross_entropy_backward(x, t, reduction=red, grad_out=go), dtype, factor=4)
    if N:
        # a strided target, and out-of-range targets -> IndexError naming the first bad row
        t2 = np.repeat(t, 2)
        close(ops.cross_entropy(tcuda(x), tcuda(t2)[::2], reduction="none"),
              ops.cross_entropy(x, t, reduction="none"), dtype, factor=4)
        for bad in (-1, C):
            tb = t.copy()
            tb[N // 2] = bad
            with pytest.raises(IndexError, match=rf"target\[{N // 2}\] = {bad}"):
                ops.cross_entropy(tcuda(x), tcuda(tb))
            with pytest.raises(IndexError, match="out of range"):
                ops.cross_entropy_backward(tcuda(x), tcuda(tb))


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("tdtype", [np.int64, np.int32])
@pytest.mark.parametrize("N,C,ignore,frac", [(41, 13, -100, 0.3), (29, 7, 3, 0.5), (6, 1000, 0, 1.0),
                                             (None, 7, 4, 1.0), (53, 5, 2**40, 0.0)])
def test_gpu_cross_entropy_ignore_index(rng, dtype, tdtype, N, C, ignore, frac):
    """Targets equal to ignore_index: loss 0, zero gradient rows, left out of the mean (NaN
    when none is kept), against torch and our CPU path; other bad targets still raise."""
    import torch.nn.functional as F
    shape = (C,) if N is None else (N, C)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    t = rng.integers(0, C, size=() if N is None else (N,))
    t = np.where(rng.random(t.shape) < frac, ignore, t).astype(tdtype) if ignore < 2**31 else t.astype(tdtype)
    kept = int(np.sum(t != ignore))
    for red in ["mean", "sum", "none"]:
        ours = ops.cross_entropy(tcuda(x), tcuda(t), reduction=red, ignore_index=ignore)
        cpu = ops.cross_entropy(x, t, reduction=red, ignore_index=ignore)
        ref = F.cross_entropy(tcuda(x).double(), tcuda(t).long(), reduction=red, ignore_index=ignore)
        if red == "none":
            close(ours, ref, dtype, factor=4)
            close(ours, cpu, dtype, factor=4)
            assert np.all(host(ours)[t == ignore] == 0)
        elif red == "mean" and kept == 0:
            assert np.isnan(ours) and np.isnan(cpu)
        else:
            np.testing.assert_allclose(ours, ref.item(), rtol=1e-12 if dtype == np.float64 else 1e-5)
        xt = tcuda(x).requires_grad_(True)
        go = rng.standard_normal(t.shape).astype(dtype) if red == "none" else -0.8
        F.cross_entropy(xt, tcuda(t).long(), reduction=red, ignore_index=ignore).backward(
            tcuda(go) if red == "none" else torch.tensor(go, dtype=xt.dtype, device="cuda"))
        dx = ops.cross_entropy_backward(tcuda(x), tcuda(t), reduction=red,
                                        grad_out=tcuda(go) if red == "none" else go, ignore_index=ignore)
        close(dx, xt.grad, dtype, factor=4)
        close(dx, ops.cross_entropy_backward(x, t, reduction=red, grad_out=go, ignore_index=ignore), dtype, factor=4)
    if N and kept < N and not 0 <= ignore < C:
        # with another ignore_index the ignored value is an out-of-range target
        with pytest.raises(IndexError, match="out of range"):
            ops.cross_entropy(tcuda(x), tcuda(t), ignore_index=C)
