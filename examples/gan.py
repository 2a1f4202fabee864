"""Two small GANs trained with BCEWithLogits losses (the non-saturating generator loss):

1. on a 2-D mixture of 8 Gaussians on a ring (Linear layers): the script counts how many of
   the 8 modes the generator covers and prints it;
2. on scikit-learn's 8x8 handwritten digits, with ConvTranspose2d in the generator and
   Conv2d in the discriminator: a grid of generated digits.

Writes examples/out/gan.png (real vs generated ring samples, the losses, generated digits).

    PYTHONPATH=python python examples/gan.py [--steps 4000] [--digit-steps 3000] [--out DIR] [--device cuda]

With --device cuda both networks train on the GPU: noise and real batches are drawn on the
host and copied over, samples copied back for the plots.
"""

import os

import numpy as np

from _digits import DEVICE_ARG, Timer, load_digits_split, parse_args

from nnkernels import nn, optim

RADIUS, STD = 2.0, 0.05


def ring_batch(rng, n):
    angles = 2 * np.pi * rng.integers(0, 8, n) / 8
    centers = RADIUS * np.stack([np.cos(angles), np.sin(angles)], 1)
    return (centers + STD * rng.standard_normal((n, 2))).astype(np.float32)


def modes_covered(samples, min_fraction=0.02):
    """Modes with at least ``min_fraction`` of the samples within 3 std of their centre; and
    the fraction of all samples that are within 3 std of some centre ("high quality")."""
    angles = 2 * np.pi * np.arange(8) / 8
    centers = RADIUS * np.stack([np.cos(angles), np.sin(angles)], 1)
    d = np.linalg.norm(samples[:, None, :] - centers[None], axis=2)
    near = d.min(1) < 3 * STD
    counts = np.bincount(d.argmin(1)[near], minlength=8)
    return int((counts >= min_fraction * len(samples)).sum()), float(near.mean()), counts


def on(device, a):
    """A host array where the networks train: itself, or a CUDA copy."""
    if device == "cuda":
        from nnkernels import cuda
        return cuda.asarray(np.ascontiguousarray(a))
    return a


def host(a):
    return a if isinstance(a, np.ndarray) else a.numpy()


def gan_step(G, D, opt_g, opt_d, real, z, loss_fn, device="cpu"):
    """One discriminator step and one generator step; returns (loss_d, loss_g)."""
    n = len(real)
    ones = on(device, np.ones((n, 1), np.float32))
    zeros = on(device, np.zeros((n, 1), np.float32))
    fake = G(z)  # G keeps what its backward needs until the generator step below
    # discriminator: real -> 1, fake -> 0
    opt_d.zero_grad()
    loss_real = loss_fn(D(real), ones)
    D.backward(loss_fn.backward())
    loss_fake = loss_fn(D(fake), zeros)
    D.backward(loss_fn.backward())
    opt_d.step()
    # generator: make D call the fakes real; D's parameter gradients from this pass are dropped
    opt_g.zero_grad()
    loss_g = loss_fn(D(fake), ones)
    G.backward(D.backward(loss_fn.backward()))
    opt_g.step()
    return loss_real + loss_fake, loss_g


def train_ring(args, rng):
    zdim = 8
    G = nn.Sequential(nn.Linear(zdim, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
    D = nn.Sequential(nn.Linear(2, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2),
                      nn.Linear(128, 1))
    dev = args.device
    G.to(dev)
    D.to(dev)
    opt_g = optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    loss_fn = nn.BCEWithLogitsLoss()
    hist, timer = [], Timer()
    for step in range(1, args.steps + 1):
        z = rng.standard_normal((256, zdim)).astype(np.float32)
        hist.append(gan_step(G, D, opt_g, opt_d, on(dev, ring_batch(rng, 256)), on(dev, z), loss_fn, dev))
        if step % 500 == 0 or step == args.steps:
            fake = host(G(on(dev, rng.standard_normal((2000, zdim)).astype(np.float32))))
            covered, quality, _ = modes_covered(fake)
            print(f"ring step {step:5d}  loss D {hist[-1][0]:.3f}  G {hist[-1][1]:.3f}  "
                  f"modes covered {covered}/8  near a mode {quality * 100:.0f}%  [{timer}]", flush=True)
    samples = host(G(on(dev, rng.standard_normal((2000, zdim)).astype(np.float32))))
    return samples, np.asarray(hist)


def train_digits(args, rng):
    xtr, _, xte, _ = load_digits_split(args.seed)
    x = np.concatenate([xtr, xte]).reshape(-1, 1, 8, 8) * 2 - 1  # all 1797 images, in [-1, 1]
    zdim = 32
    G = nn.Sequential(
        nn.Linear(zdim, 64 * 2 * 2), nn.ReLU(), nn.Unflatten(1, (64, 2, 2)),
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),    # 32 x 4 x 4
        nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1), nn.Tanh())     # 1 x 8 x 8
    D = nn.Sequential(
        nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.2),      # 32 x 4 x 4
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.2),     # 64 x 2 x 2
        nn.Flatten(), nn.Linear(256, 1))
    dev = args.device
    G.to(dev)
    D.to(dev)
    print(G)
    opt_g = optim.Adam(G.parameters(), lr=5e-4, betas=(0.5, 0.999))
    opt_d = optim.Adam(D.parameters(), lr=5e-4, betas=(0.5, 0.999))
    loss_fn = nn.BCEWithLogitsLoss()
    hist, timer = [], Timer()
    for step in range(1, args.digit_steps + 1):
        real = x[rng.integers(0, len(x), 64)]
        z = rng.standard_normal((64, zdim)).astype(np.float32)
        hist.append(gan_step(G, D, opt_g, opt_d, on(dev, real), on(dev, z), loss_fn, dev))
        if step % 500 == 0 or step == args.digit_steps:
            print(f"digits step {step:5d}  loss D {hist[-1][0]:.3f}  G {hist[-1][1]:.3f}  [{timer}]", flush=True)
    samples = host(G(on(dev, rng.standard_normal((100, zdim)).astype(np.float32))))
    return (samples[:, 0] + 1) / 2, np.asarray(hist)


def plot(path, ring_samples, ring_hist, real_ring, digits, digit_hist, covered):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(20, 5))
    ax[0].scatter(real_ring[:, 0], real_ring[:, 1], s=3, alpha=0.3, label="real")
    ax[0].scatter(ring_samples[:, 0], ring_samples[:, 1], s=3, alpha=0.3, label="generated")
    ax[0].set_aspect("equal")
    ax[0].set_xlim(-3, 3)
    ax[0].set_ylim(-3, 3)
    ax[0].legend(loc="upper right")
    ax[0].set_title(f"8 Gaussians: {covered}/8 modes covered")
    for a, h, title in ((ax[1], ring_hist, "ring GAN losses"), (ax[2], digit_hist, "digits GAN losses")):
        if len(h) == 0:
            continue
        w = max(1, len(h) // 100)
        for i, name in enumerate(("discriminator", "generator")):
            a.plot(np.convolve(h[:, i], np.ones(w) / w, "valid"), label=name)
        a.set_xlabel("step")
        a.legend()
        a.set_title(title)
    grid = np.ones((10 * 9 + 1, 10 * 9 + 1))
    for k, img in enumerate(digits[:100]):
        r, c = divmod(k, 10)
        grid[1 + 9 * r:9 + 9 * r, 1 + 9 * c:9 + 9 * c] = img
    ax[3].imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    ax[3].axis("off")
    ax[3].set_title("generated 8x8 digits (ConvTranspose2d generator)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    args = parse_args(__doc__.splitlines()[0], steps=4000,
                      extra=[(("--digit-steps",), dict(type=int, default=3000,
                                                       help="training steps of the digits GAN (default 3000)")),
                             DEVICE_ARG])
    nn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    ring_samples, ring_hist = train_ring(args, rng)
    covered, quality, counts = modes_covered(ring_samples)
    digits, digit_hist = train_digits(args, rng)
    path = os.path.join(args.out, "gan.png")
    plot(path, ring_samples, ring_hist, ring_batch(rng, 2000), digits, digit_hist, covered)
    print(f"samples per mode: {counts.tolist()}")
    print(f"final: ring GAN covers {covered}/8 modes ({quality * 100:.0f}% of samples within 3 std of a mode)"
          f"  wrote {path}")


if __name__ == "__main__":
    main()
