"""A feedforward network (64-256-256-10, ReLU) on scikit-learn's 8x8 handwritten digits,
trained with Adam. Prints the loss while it trains and the held-out test accuracy; writes
examples/out/mlp.png (loss curve, test accuracy per epoch, confusion matrix).

    PYTHONPATH=python python examples/mlp.py [--epochs 40] [--out DIR] [--device cuda]
"""

import numpy as np

from _digits import DEVICE_ARG, fit_classifier, load_digits_split, parse_args, report

from nnkernels import nn, optim


def main():
    args = parse_args(__doc__.splitlines()[0], epochs=40, extra=[DEVICE_ARG])
    nn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    model.to(args.device)
    print(model)
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    data = (xtr, ytr, xte, yte)
    losses, accs = fit_classifier(model, opt, data, epochs=args.epochs, rng=rng, batch_size=64,
                                  decay_at=0.6, decay=0.1)
    report(model, data, losses, accs, args.out, "mlp", "MLP on 8x8 digits")


if __name__ == "__main__":
    main()
