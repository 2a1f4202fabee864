"""A feedforward network (64-256-256-10, ReLU) on scikit-learn's 8x8 handwritten digits,
trained with Adam. Prints the loss while it trains and the held-out test accuracy; writes
examples/out/mlp.png (loss curve, test accuracy per epoch, confusion matrix).

    PYTHONPATH=python python examples/mlp.py [--epochs 40] [--out DIR]
"""

import os

import numpy as np

from _digits import Timer, batches, load_digits_split, parse_args, plot_curves_and_confusion, predict

from nnkernels import nn, optim


def main():
    args = parse_args(__doc__.splitlines()[0], epochs=40)
    nn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    print(model)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    losses, accs, timer = [], [], Timer()
    for epoch in range(1, args.epochs + 1):
        if epoch == int(args.epochs * 0.6) + 1:
            opt.param_groups[0]["lr"] *= 0.1
        for idx in batches(len(xtr), 64, rng):
            loss = loss_fn(model(xtr[idx]), ytr[idx])
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
    path = os.path.join(args.out, "mlp.png")
    plot_curves_and_confusion(path, losses, accs, yte, pred, f"MLP on 8x8 digits: test accuracy {acc * 100:.2f}%")
    print(f"final test accuracy: {acc * 100:.2f}% ({int((pred == yte).sum())}/{len(yte)})  wrote {path}")


if __name__ == "__main__":
    main()
