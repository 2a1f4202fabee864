"""A small convolutional network (Conv2d + MaxPool2d twice, then Linear) on scikit-learn's
8x8 handwritten digits, trained with Adam on randomly shifted images (one pixel at most).
Prints the loss while it trains and the held-out test accuracy; writes examples/out/cnn.png
(loss curve, test accuracy per epoch, confusion matrix).

    PYTHONPATH=python python examples/cnn.py [--epochs 80] [--out DIR] [--device cuda]
"""

import numpy as np

from _digits import DEVICE_ARG, fit_classifier, load_digits_split, parse_args, random_shift, report

from nnkernels import nn, optim


def main():
    args = parse_args(__doc__.splitlines()[0], epochs=80, extra=[DEVICE_ARG])
    nn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 32 x 4 x 4
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 64 x 2 x 2
        nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    model.to(args.device)
    print(model)
    opt = optim.Adam(model.parameters(), lr=2e-3)
    data = (xtr, ytr, xte, yte)
    losses, accs = fit_classifier(model, opt, data, epochs=args.epochs, rng=rng, batch_size=64,
                                  decay_at=0.7, decay=0.2, augment=random_shift)
    report(model, data, losses, accs, args.out, "cnn", "CNN on 8x8 digits")


if __name__ == "__main__":
    main()
