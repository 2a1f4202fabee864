"""nnkernels.optim against torch.optim: several steps on random parameters and gradients."""

import numpy as np
import pytest
import torch

from conftest import DTYPES, assert_close

from nnkernels import nn, optim

TD = {np.float32: torch.float32, np.float64: torch.float64}

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.02)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.3)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_steps_match_torch(name, kw, dtype, rng):
    shapes = [(7, 3), (5,), (2, 3, 4)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [nn.Parameter(a) for a in init]
    theirs = [torch.tensor(a, requires_grad=True) for a in init]
    # two groups, the second with its own lr
    o = getattr(optim, name)([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.02}], **kw)
    t = getattr(torch.optim, name)([{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.02}], **kw)
    for step in range(6):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            if step == 2 and i == 1:  # a parameter without a gradient this step is skipped
                p.grad, q.grad = None, None
                continue
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad = g[::-1] if g.ndim == 1 else g  # any strides
            q.grad = torch.tensor(np.ascontiguousarray(p.grad))
        o.step()
        t.step()
    for p, q in zip(ours, theirs):
        assert_close(p.data, q.detach().numpy(), dtype, 4.0)
    o.zero_grad()
    assert all(p.grad is None for p in ours)


def test_step_counts_are_per_parameter(rng):
    a, b = nn.Parameter(rng.standard_normal(3)), nn.Parameter(rng.standard_normal(3))
    o = optim.Adam([a, b], lr=0.1)
    a.grad = np.ones(3)
    o.step()
    b.grad = np.ones(3)
    o.step()
    assert o.state[a]["step"] == 2 and o.state[b]["step"] == 1


def test_bad_arguments():
    p = [nn.Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta"):
        optim.Adam(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(TypeError, match="Module"):
        optim.Adam(nn.Linear(2, 2))
    assert optim.AdamW(p).param_groups[0]["weight_decay"] == 1e-2
