"""Shared by the examples: the 8x8 digits of scikit-learn (shipped inside the package, no
download), a fixed train/test split, minibatches, the output folder and plots."""

import argparse
import os
import time

import numpy as np


# --device for the examples whose model moves to CUDA as a whole (mlp, cnn, rnn, transformer).
DEVICE_ARG = (("--device",), dict(choices=["cpu", "cuda"], default="cpu",
                                  help="where the model trains (cuda: needs a CUDA build and a GPU)"))


def _on_cuda(model):
    return any(p.device == "cuda" for p in model.parameters())


def _to_model(model, a):
    """A host batch as the model wants it: itself, or a CUDA copy for a model on CUDA."""
    if _on_cuda(model):
        from nnkernels import cuda
        return cuda.asarray(np.ascontiguousarray(a))
    return a


def _host(a):
    return a.numpy() if hasattr(a, "numpy") and not isinstance(a, np.ndarray) else np.asarray(a)


def parse_args(description, epochs=None, steps=None, extra=None):
    p = argparse.ArgumentParser(description=description)
    if epochs is not None:
        p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    if steps is not None:
        p.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
                   help="folder for the PNG (default examples/out/)")
    p.add_argument("--seed", type=int, default=0)
    for args, kw in (extra or []):
        p.add_argument(*args, **kw)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    return a


def load_digits_split(seed=0, test_fraction=0.25, dtype=np.float32):
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1], shape (N, 64); a
    stratified split fixed by ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(dtype)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return xtr, ytr, xte, yte


def batches(n, batch_size, rng):
    perm = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield perm[i:i + batch_size]


def random_shift(x, rng):
    """Shift each (N, 1, 8, 8) image by -1, 0 or +1 pixel in each direction (zero fill)."""
    n = len(x)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dy, dx = rng.integers(0, 3, n), rng.integers(0, 3, n)
    rows = (dy[:, None] + np.arange(8))[:, :, None]
    cols = (dx[:, None] + np.arange(8))[:, None, :]
    return padded[np.arange(n)[:, None, None], 0, rows, cols][:, None]


def predict(model, x, batch_size=512):
    model.eval()
    out = np.concatenate([_host(model(_to_model(model, x[i:i + batch_size]))).argmax(1)
                          for i in range(0, len(x), batch_size)])
    model.train()
    return out


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __str__(self):
        return f"{time.perf_counter() - self.t0:.1f}s"


def fit_classifier(model, opt, data, *, epochs, rng, batch_size, decay_at, decay, augment=None):
    """Minibatch training with cross-entropy: the learning rate is multiplied by `decay` once,
    after the fraction `decay_at` of the epochs; test accuracy after every epoch. Prints
    progress; returns (per-step losses, per-epoch test accuracies)."""
    from nnkernels import nn

    xtr, ytr, xte, yte = data
    loss_fn = nn.CrossEntropyLoss()
    losses, accs, timer = [], [], Timer()
    for epoch in range(1, epochs + 1):
        if epoch == int(epochs * decay_at) + 1:
            for group in opt.param_groups:
                group["lr"] *= decay
        for idx in batches(len(xtr), batch_size, rng):
            x = xtr[idx] if augment is None else augment(xtr[idx], rng)
            loss = loss_fn(model(_to_model(model, x)), _to_model(model, ytr[idx]))
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
            losses.append(float(_host(loss)))
        accs.append(float((predict(model, xte) == yte).mean()))
        if epoch % 5 == 0 or epoch in (1, epochs):
            print(f"epoch {epoch:3d}  loss {np.mean(losses[-len(xtr) // batch_size:]):.4f}  "
                  f"test accuracy {accs[-1] * 100:.2f}%  [{timer}]", flush=True)
    return losses, accs


def report(model, data, losses, accs, out_dir, name, title):
    """Final test accuracy, printed and plotted (loss curve, accuracy, confusion matrix)."""
    _, _, xte, yte = data
    pred = predict(model, xte)
    acc = float((pred == yte).mean())
    path = os.path.join(out_dir, f"{name}.png")
    plot_curves_and_confusion(path, losses, accs, yte, pred, f"{title}: test accuracy {acc * 100:.2f}%")
    print(f"final test accuracy: {acc * 100:.2f}% ({int((pred == yte).sum())}/{len(yte)})  wrote {path}")


def plot_curves_and_confusion(path, losses, accs, y_true, y_pred, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.zeros((10, 10), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    losses = np.asarray(losses)
    ax[0].plot(losses, alpha=0.3, lw=0.8, label="per step")
    w = max(1, len(losses) // 50)
    if len(losses) >= w:
        ax[0].plot(np.arange(w - 1, len(losses)), np.convolve(losses, np.ones(w) / w, "valid"),
                   label=f"mean of {w}")
    ax[0].legend()
    ax[0].set_yscale("log")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("training loss")
    ax[1].plot(np.arange(1, len(accs) + 1), np.asarray(accs) * 100, marker="o")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("test accuracy (%)")
    im = ax[2].imshow(cm, cmap="Blues")
    for i in range(10):
        for j in range(10):
            if cm[i, j]:
                ax[2].text(j, i, cm[i, j], ha="center", va="center",
                           color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    ax[2].set_xticks(range(10))
    ax[2].set_yticks(range(10))
    ax[2].set_xlabel("predicted")
    ax[2].set_ylabel("true")
    fig.colorbar(im, ax=ax[2])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
