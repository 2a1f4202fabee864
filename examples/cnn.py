"""A small convolutional network (Conv2d + MaxPool2d twice, then Linear) on scikit-learn's
8x8 handwritten digits, trained with Adam on randomly shifted images (one pixel at most).
Prints the loss while it trains and the held-out test accuracy; writes examples/out/cnn.png
(loss curve, test accuracy per epoch, confusion matrix).

    PYTHONPATH=python python examples/cnn.py [--epochs 80] [--out DIR]
"""

import os

import numpy as np

from _digits import Timer, batches, random_shift, load_digits_split, parse_args, plot_curves_and_confusion, predict

from nnkernels import nn, optim


def main():
    args = parse_args(__doc__.splitlines()[0], epochs=80)
    nn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 32 x 4 x 4
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 64 x 2 x 2
        nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    print(model)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=2e-3)
    losses, accs, timer = [], [], Timer()
    for epoch in range(1, args.epochs + 1):
        if epoch == int(args.epochs * 0.7) + 1:
            opt.param_groups[0]["lr"] *= 0.2
        for idx in batches(len(xtr), 64, rng):
            loss = loss_fn(model(random_shift(xtr[idx], rng)), ytr[idx])
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
            losses.append(loss)
        accs.append(float((predict(model, xte) == yte).mean()))
        if epoch % 5 == 0 or epoch in (1, args.epochs):
            print(f"epoch {epoch:3d}  loss {np.mean(losses[-len(xtr) // 64:]):.4f}  "
                  f"test accuracy {accs[-1] * 100:.2f}%  [{timer}]", flush=True)
    pred = predict(model, xte)
    acc = float((pred == yte).mean())
    path = os.path.join(args.out, "cnn.png")
    plot_curves_and_confusion(path, losses, accs, yte, pred, f"CNN on 8x8 digits: test accuracy {acc * 100:.2f}%")
    print(f"final test accuracy: {acc * 100:.2f}% ({int((pred == yte).sum())}/{len(yte)})  wrote {path}")


if __name__ == "__main__":
    main()
