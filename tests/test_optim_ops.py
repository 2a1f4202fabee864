"""sgd_step_ / adam_step_ (the fused ops) against torch.optim (SGD, Adam, AdamW), every ISA."""

import numpy as np
import pytest
import torch

from conftest import DTYPES, assert_close
from nnkernels import ops

SHAPES = [(1,), (7,), (33, 17), (4, 5, 6), (70001,)]


def _torch_run(opt_cls, p0, grads, **kw):
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = opt_cls([p], **kw)
    for g in grads:
        p.grad = torch.from_numpy(g.copy())
        opt.step()
    return p.detach().numpy(), opt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cfg", [
    dict(lr=0.1),
    dict(lr=0.05, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-3),
    dict(lr=0.02, momentum=0.8, nesterov=True),
])
def test_sgd_matches_torch(isa, rng, dtype, shape, cfg):
    p0 = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(4)]
    ref, _ = _torch_run(torch.optim.SGD, p0, grads, **cfg)
    p = p0.copy()
    buf = np.zeros_like(p) if cfg.get("momentum", 0) else None
    for step, g in enumerate(grads, 1):
        g_before = g.copy()
        ops.sgd_step_(p, g, buf, step=step, **cfg)
        assert np.array_equal(g, g_before)  # grad is never modified
    assert_close(p, ref, dtype, factor=4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("decoupled,cfg", [
    (False, dict(lr=1e-2)),
    (False, dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    (True, dict(lr=1e-2, weight_decay=0.1)),
    (True, dict(lr=2e-3, betas=(0.5, 0.9), eps=1e-5, weight_decay=0.0)),
])
def test_adam_matches_torch(isa, rng, dtype, shape, decoupled, cfg):
    p0 = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(5)]
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    kw = dict(cfg)
    if not decoupled or "weight_decay" in kw:
        kw.setdefault("weight_decay", 0.0)
    ref, opt = _torch_run(cls, p0, grads, **kw)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    beta1, beta2 = cfg.get("betas", (0.9, 0.999))
    for step, g in enumerate(grads, 1):
        ops.adam_step_(p, g, m, v, step=step, lr=cfg["lr"], beta1=beta1, beta2=beta2,
                       eps=cfg.get("eps", 1e-8), weight_decay=kw["weight_decay"],
                       decoupled=decoupled)
    st = opt.state[opt.param_groups[0]["params"][0]]
    assert_close(p, ref, dtype, factor=4)
    assert_close(m, st["exp_avg"].numpy(), dtype, factor=4)
    assert_close(v, st["exp_avg_sq"].numpy(), dtype, factor=4)


def test_steps_are_deterministic_across_threads(rng):
    import nnkernels
    g = rng.standard_normal(300001).astype(np.float32)
    outs = []
    for nt in (1, 2, 1):
        nnkernels.set_num_threads(nt)
        p, m, v = np.ones_like(g) * 0.5, np.zeros_like(g), np.zeros_like(g)
        for step in (1, 2, 3):
            ops.adam_step_(p, g, m, v, step=step, lr=0.01, weight_decay=0.01)
        outs.append(p)
    nnkernels.set_num_threads(nnkernels._C.default_num_threads())
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_optim_errors(rng):
    p = rng.standard_normal(5)
    g = rng.standard_normal(5)
    with pytest.raises(ValueError, match="momentum_buffer"):
        ops.sgd_step_(p, g, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="step"):
        ops.adam_step_(p, g, np.zeros(5), np.zeros(5), step=0)
    with pytest.raises(TypeError, match="grad"):
        ops.sgd_step_(p, g.astype(np.float32), lr=0.1)
    with pytest.raises(ValueError, match="grad"):
        ops.sgd_step_(p, rng.standard_normal(6), lr=0.1)
    with pytest.raises(ValueError, match="exp_avg"):
        ops.adam_step_(p, g, np.zeros(4), np.zeros(5), step=1)
    with pytest.raises(TypeError, match="param"):
        ops.sgd_step_(p.astype(np.int64), g, lr=0.1)
    ro = p.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.sgd_step_(ro, g, lr=0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.sgd_step_(np.zeros((4, 4))[:, 1], np.zeros(4), lr=0.1)
    before = p.copy()
    with pytest.raises(ValueError, match="overlap"):
        ops.sgd_step_(p, p, lr=0.1)
    assert np.array_equal(p, before)
    with pytest.raises(ValueError, match="nesterov"):
        ops.sgd_step_(p, g, np.zeros(5), lr=0.1, momentum=0.0, nesterov=True)


def test_zero_size_and_nan(rng):
    p = np.zeros((0, 3))
    ops.adam_step_(p, p.copy(), p.copy(), p.copy(), step=1)
    q = np.array([1.0, 2.0])
    ops.sgd_step_(q, np.array([np.nan, 1.0]), lr=0.5)
    assert np.isnan(q[0]) and q[1] == 1.5
