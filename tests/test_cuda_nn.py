"""The nn layers and optimizers on CUDA (Module.to("cuda")): training on the GPU against the
same model trained on the host, the moves and state dicts, and (on every machine) the
checks made before anything is moved."""

import numpy as np
import pytest

import nnkernels
from nnkernels import nn, optim
from cuda_support import AVAILABLE, host, needs_gpu, no_gpu

DT = [np.float32, np.float64]
# Training drifts apart by rounding (different summation orders on the GPU): per dtype, the
# relative tolerance on losses and parameters after a few steps.
TRAIN_TOL = {np.float32: 2e-4, np.float64: 1e-10}


def dev(a):
    """A host array as one of our DeviceArrays (float, int or bool; 0-d stays 0-d)."""
    return nnkernels.cuda.asarray(np.array(a, order="C"))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def train_both(make, opt, x, t, loss_fn, dtype, steps=4):
    """The model `make()` trained on the host and, from the same initial state, on CUDA, with
    the same seeds for dropout: losses and final parameters compared each step."""
    nn.manual_seed(7)
    cpu = make().to(dtype)
    gpu = make().to(dtype)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    assert all(p.device == "cuda" and isinstance(p.data, nnkernels.cuda.DeviceArray) for p in gpu.parameters())
    oc, og = opt(cpu.parameters()), opt(gpu.parameters())
    xd, td = dev(x), dev(t)
    tol = TRAIN_TOL[np.dtype(dtype).type]
    for step in range(steps):
        for model, o, xi, ti in ((cpu, oc, x, t), (gpu, og, xd, td)):
            nn.manual_seed(100 + step)  # the same dropout masks on both
            o.zero_grad()
            out = model(xi)
            loss = loss_fn(out, ti)
            model.backward(loss_fn.backward())
            o.step()
            if model is cpu:
                lc = float(np.asarray(loss))
            else:
                lg = float(host(loss))
        assert abs(lg - lc) <= tol * max(abs(lc), 1.0), (step, lg, lc)
    sc, sg = cpu.state_dict(), gpu.state_dict()
    assert sc.keys() == sg.keys()
    for k in sc:
        assert isinstance(sg[k], np.ndarray) and sg[k].dtype == sc[k].dtype
        assert rel(sg[k], sc[k]) <= 4 * tol, (k, rel(sg[k], sc[k]))
    return cpu, gpu


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_nn_mlp_training(rng, dtype):
    """Linear, LayerNorm, GELU, Dropout, ReLU, CrossEntropyLoss and Adam on CUDA."""
    x = rng.standard_normal((37, 13)).astype(dtype)
    t = rng.integers(0, 5, 37).astype(np.int64)

    def make():
        return nn.Sequential(nn.Linear(13, 24), nn.LayerNorm(24), nn.GELU(), nn.Dropout(0.3),
                             nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 5))
    train_both(make, lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=1e-3), x, t, nn.CrossEntropyLoss(), dtype)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_nn_cnn_training(rng, dtype):
    """Conv2d, MaxPool2d, ConvTranspose2d, AvgPool2d, Flatten, Tanh, MSELoss and SGD with
    Nesterov momentum on CUDA."""
    x = rng.standard_normal((6, 3, 12, 12)).astype(dtype)
    t = rng.standard_normal((6, 4)).astype(dtype)

    def make():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1), nn.Tanh(),
                             nn.AvgPool2d(3, stride=2), nn.Flatten(), nn.Linear(6 * 5 * 5, 4))
    train_both(make, lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True), x, t, nn.MSELoss(), dtype)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_nn_embedding_bce_training(rng, dtype):
    """Embedding (int64 ids on CUDA, a padding row), Unflatten, Sigmoid, BCEWithLogitsLoss
    and AdamW."""
    ids = rng.integers(0, 11, (9, 4)).astype(np.int64)
    t = (rng.random((9, 4, 3)) < 0.5).astype(dtype)

    def make():
        return nn.Sequential(nn.Embedding(11, 6, padding_idx=2), nn.Flatten(0, 1), nn.Linear(6, 3), nn.Sigmoid(),
                             nn.Linear(3, 3), nn.Unflatten(0, (9, 4)))
    train_both(make, lambda ps: optim.AdamW(ps, lr=1e-2), ids, t, nn.BCEWithLogitsLoss(), dtype)


class RecurrentHead(nn.Module):
    """A recurrent layer's output through a Linear (the recurrent layer's states dropped)."""

    _cuda_ok = True

    def __init__(self, rnn, hidden, out):
        super().__init__()
        self.rnn = rnn
        self.lin = nn.Linear(hidden, out)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.lin(y)

    def backward(self, g):
        gx, _ = self.rnn.backward(self.lin.backward(g))
        return gx


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("kind,batch_first,unbatched", [("LSTM", False, False), ("GRU", True, False),
                                                       ("RNN", False, True)])
def test_gpu_nn_recurrent_training(rng, dtype, kind, batch_first, unbatched):
    """LSTM / GRU / RNN modules (2 layers, dropout between them, batch_first, unbatched
    input) on CUDA: the per-layer states stacked and the dropout backward on the device."""
    T, B, I, H = 7, 3, 5, 6
    shape = (T, I) if unbatched else ((B, T, I) if batch_first else (T, B, I))
    x = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape[:-1] + (2,)).astype(dtype)

    def make():
        return RecurrentHead(getattr(nn, kind)(I, H, num_layers=2, dropout=0.25, batch_first=batch_first), H, 2)
    cpu, gpu = train_both(make, lambda ps: optim.Adam(ps, lr=1e-2), x, t, nn.MSELoss(), dtype)
    # the states, unbatched or not, as the host's
    xd = dev(x)
    for m, xi in ((cpu, x), (gpu, xd)):
        m.eval()
    yc, sc = cpu.rnn(x)
    yg, sg = gpu.rnn(xd)
    tol = TRAIN_TOL[np.dtype(dtype).type]
    assert rel(host(yg), yc) <= tol
    for a, b in zip(sg if kind == "LSTM" else (sg,), sc if kind == "LSTM" else (sc,)):
        assert tuple(a.shape) == b.shape and rel(host(a), b) <= tol


class Encoder(nn.Module):
    """Two TransformerEncoderLayers (post-norm with a causal mask, pre-norm with a key
    padding mask) and a Linear head; masks given as host arrays."""

    _cuda_ok = True

    def __init__(self, d, batch_first):
        super().__init__()
        self.a = nn.TransformerEncoderLayer(d, 2, dim_feedforward=12, dropout=0.2, batch_first=batch_first)
        self.b = nn.TransformerEncoderLayer(d, 2, dim_feedforward=10, dropout=0.0, activation="gelu",
                                            batch_first=batch_first, norm_first=True)
        self.head = nn.Linear(d, 3)
        self.kpm = None

    def forward(self, x):
        y = self.a(x, is_causal=True, src_mask=np.triu(np.ones((7, 7), bool), 1))
        return self.head(self.b(y, src_key_padding_mask=self.kpm))

    def backward(self, g):
        return self.a.backward(self.b.backward(self.head.backward(g)))


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("batch_first", [False, True])
def test_gpu_nn_transformer_training(rng, dtype, batch_first):
    """TransformerEncoderLayer (MultiheadAttention on the fused qkv path, LayerNorm, dropout,
    residual adds) on CUDA, with host masks copied to the device."""
    B, L, d = 3, 7, 8
    x = rng.standard_normal((B, L, d) if batch_first else (L, B, d)).astype(dtype)
    t = rng.standard_normal(x.shape[:-1] + (3,)).astype(dtype)
    kpm = np.zeros((B, L), bool)
    kpm[1, 5:] = True

    def make():
        m = Encoder(d, batch_first)
        m.kpm = kpm
        return m
    # SGD, not Adam: the key part of in_proj_bias has a zero gradient in exact arithmetic
    # (softmax ignores a per-row constant), which Adam would blow up to lr-sized steps of
    # rounding noise, different on the two devices.
    train_both(make, lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9), x, t, nn.MSELoss(), dtype)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_nn_multihead_attention_device_masks(rng, dtype):
    """attn_mask / key_padding_mask given as CUDA arrays (bool and float, 2-D and 3-D, a
    strided bool view, with is_causal), forward and backward, against the host module given
    the same masks on the host; a float mask of the other dtype is a TypeError on both."""
    B, H, L, S, E = 2, 2, 5, 6, 8
    mha_c = nn.MultiheadAttention(E, H, dtype=dtype, batch_first=True)
    mha_g = nn.MultiheadAttention(E, H, dtype=dtype, batch_first=True)
    mha_g.load_state_dict(mha_c.state_dict())
    mha_g.cuda()
    tol = TRAIN_TOL[np.dtype(dtype).type]
    other = np.float64 if dtype == np.float32 else np.float32
    am_b = rng.random((L, S)) < 0.3
    am_b[:, 0] = False
    am_f = np.where(am_b, -np.inf, rng.standard_normal((L, S))).astype(dtype)
    am3 = np.where(rng.random((B * H, L, S)) < 0.3, -np.inf, rng.standard_normal((B * H, L, S))).astype(dtype)
    am3[..., 1] = 0.5
    kpm_b = np.zeros((B, S), bool)
    kpm_b[1, 4:] = True
    kpm_f = np.where(kpm_b, -np.inf, 0.25 * rng.standard_normal((B, S))).astype(dtype)
    wide = rng.random((L, 2 * S)) < 0.3
    wide[:, 0] = False
    strided = dev(wide)[:, ::2]                      # a non-contiguous bool DeviceArray
    cases = [dict(attn_mask=am_b), dict(attn_mask=am_f), dict(attn_mask=am3), dict(key_padding_mask=kpm_b),
             dict(key_padding_mask=kpm_f), dict(key_padding_mask=kpm_f, is_causal=True),
             dict(attn_mask=am_b, key_padding_mask=kpm_b), dict(attn_mask=am_f, key_padding_mask=kpm_b),
             dict(attn_mask=strided)]
    for case in cases:
        q, k, v = (rng.standard_normal((B, n, E)).astype(dtype) for n in (L, S, S))
        g = rng.standard_normal((B, L, E)).astype(dtype)
        host_kw = {n: (host(m) if n.endswith("mask") and not isinstance(m, np.ndarray) else m)
                   for n, m in case.items()}
        dev_kw = {n: (dev(m) if isinstance(m, np.ndarray) else m) for n, m in case.items()}
        yc, _ = mha_c(q, k, v, **host_kw)
        yg, _ = mha_g(dev(q), dev(k), dev(v), **dev_kw)
        assert rel(host(yg), yc) <= tol, sorted(case)
        for a, b in zip(mha_g.backward(dev(g)), mha_c.backward(g)):
            assert tuple(a.shape) == b.shape and rel(host(a), b) <= tol, sorted(case)
    with pytest.raises(ValueError, match="host"):
        mha_c(q, k, v, attn_mask=dev(am_b))
    for m in (mha_c, mha_g):  # a float mask of the other dtype: TypeError, on both devices
        a = (lambda x: x) if m is mha_c else dev
        with pytest.raises(TypeError, match="dtype"):
            m(a(q), a(k), a(v), attn_mask=a(am_f.astype(other)))


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
def test_gpu_nn_multihead_attention_separate_inputs(rng, dtype):
    """MultiheadAttention with distinct query / key / value (the per-projection path: the
    weight gradient's rows stacked on the device), unbatched and batched."""
    mha_c = nn.MultiheadAttention(8, 4, dtype=dtype)
    mha_g = nn.MultiheadAttention(8, 4, dtype=dtype)
    mha_g.load_state_dict(mha_c.state_dict())
    mha_g.cuda()
    tol = TRAIN_TOL[np.dtype(dtype).type]
    for shape_q, shape_kv in (((5, 2, 8), (6, 2, 8)), ((5, 8), (6, 8))):
        q, k, v = (rng.standard_normal(s).astype(dtype) for s in (shape_q, shape_kv, shape_kv))
        g = rng.standard_normal(shape_q).astype(dtype)
        am = rng.random((5, 6)) < 0.3
        am[:, 0] = False
        yc, _ = mha_c(q, k, v, attn_mask=am)
        yg, _ = mha_g(dev(q), dev(k), dev(v), attn_mask=am)
        assert rel(host(yg), yc) <= tol
        for a, b in zip(mha_g.backward(dev(g)), mha_c.backward(g)):
            assert tuple(a.shape) == b.shape and rel(host(a), b) <= tol
    for pc, pg in zip(mha_c.parameters(), mha_g.parameters()):
        assert rel(host(pg.grad), pc.grad) <= tol


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", [-100, 3])
def test_gpu_nn_cross_entropy_spatial(rng, dtype, reduction, ignore):
    """CrossEntropyLoss on (N, C, d1, d2) logits (a transposed copy on the device) and on
    (C,) logits, forward and backward, with some targets equal to ignore_index, against the
    host."""
    for xs, ts in (((2, 5, 3, 4), (2, 3, 4)), ((5,), ())):
        x = rng.standard_normal(xs).astype(dtype)
        t = rng.integers(0, 5, ts)
        t = np.asarray(np.where(rng.random(np.shape(t)) < 0.3, ignore, t), np.int64)
        lc = nn.CrossEntropyLoss(reduction=reduction, ignore_index=ignore)
        lg = nn.CrossEntropyLoss(reduction=reduction, ignore_index=ignore)
        yc, yg = lc(x, t), lg(dev(x), dev(t))
        assert np.shape(host(yg)) == np.shape(yc)
        if np.all(np.isnan(yc)):  # the mean over no kept target
            assert np.all(np.isnan(host(yg)))
        else:
            assert rel(host(yg), yc) <= 1e-5
        g = rng.standard_normal(np.shape(yc)).astype(dtype) if reduction == "none" else None
        gc, gg = lc.backward(g), lg.backward(None if g is None else dev(g))
        assert tuple(gg.shape) == gc.shape and rel(host(gg), gc) <= 1e-5


@needs_gpu
@pytest.mark.cuda
def test_gpu_nn_moves_and_state(rng):
    """to("cuda") / cpu() / to(dtype) on CUDA keep the values; load_state_dict and zero_grad
    write in place on the device; the optimizer's state follows a parameter moved back."""
    nn.manual_seed(3)
    m = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    ref = {k: v.copy() for k, v in m.state_dict().items()}
    m.cuda()
    datas = [p.data for p in m.parameters()]
    new = {k: rng.standard_normal(v.shape) for k, v in ref.items()}  # float64, cast on load
    m.load_state_dict(new)
    assert all(p.data is d for p, d in zip(m.parameters(), datas))  # in place
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, new[k].astype(np.float32))
    x = dev(rng.standard_normal((3, 5)).astype(np.float32))
    out = m(x)
    assert isinstance(out, nnkernels.cuda.DeviceArray) and out.shape == (3, 2)
    m.backward(dev(np.ones((3, 2), np.float32)))
    grads = [host(p.grad) for p in m.parameters()]
    out = m(x)
    m.backward(dev(np.ones((3, 2), np.float32)))  # accumulates on the device
    for p, g in zip(m.parameters(), grads):
        np.testing.assert_allclose(host(p.grad), 2 * g, rtol=1e-6, atol=1e-7)
    o = optim.SGD(m.parameters(), lr=0.1, momentum=0.5)
    o.step()
    m.zero_grad(set_to_none=False)
    assert all(not host(p.grad).any() for p in m.parameters())
    m.to(np.float64)
    assert all(p.device == "cuda" and p.dtype == np.float64 for p in m.parameters())
    m.cpu()
    assert all(isinstance(p.data, np.ndarray) and p.dtype == np.float64 for p in m.parameters())
    m.float()
    for p in m.parameters():
        p.grad = np.ones_like(p.data)
    o.step()  # momentum buffers (on the device) follow the parameters back to the host
    assert all(isinstance(o.state[p]["momentum_buffer"], np.ndarray) for p in m.parameters())


def test_nn_to_cuda_checks_before_moving():
    """Layers that do not run on CUDA refuse the move before anything is moved; bad device
    names are ValueError; all of this on any machine."""
    class HostOnly(nn.Module):  # a user's layer that did not declare _cuda_ok
        pass
    m = nn.Sequential(nn.Linear(3, 4), HostOnly())
    with pytest.raises(NotImplementedError, match="HostOnly"):
        m.to("cuda")
    assert all(isinstance(p.data, np.ndarray) for p in m.parameters())
    with pytest.raises(ValueError, match="device"):
        nn.Linear(3, 4).to("cuda:1")
    with pytest.raises(ValueError, match="device"):
        nn.Linear(3, 4, device="tpu")
    with pytest.raises(ValueError, match="'tpu' is neither a device"):
        nn.Linear(3, 4).to("tpu")
    with pytest.raises(TypeError):
        nn.Linear(3, 4).to("int32")  # a dtype, not a float one
    assert nn.Linear(3, 4).to("float64").weight.data.dtype == np.float64
    assert nn.Linear(3, 4, device="cpu").weight.device == "cpu"


@no_gpu
def test_nn_to_cuda_without_gpu():
    """Without a usable GPU (or without CUDA) the move raises RuntimeError at the first
    parameter and leaves the model on the host."""
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with pytest.raises(RuntimeError):
        m.to("cuda")
    assert all(isinstance(p.data, np.ndarray) for p in m.parameters())
    with pytest.raises(RuntimeError):
        nn.Conv2d(1, 2, 3, device="cuda")
    assert not AVAILABLE
