"""An LSTM reading each of scikit-learn's 8x8 handwritten digits row by row (8 steps of
8 pixels), its last hidden state -> Linear -> 10 classes, trained with Adam. Prints the
loss while it trains and the held-out test accuracy; writes examples/out/rnn.png (loss
curve, test accuracy per epoch, confusion matrix).

    PYTHONPATH=python python examples/rnn.py [--epochs 40] [--cell lstm|gru] [--out DIR] [--device cuda]
"""

import numpy as np

from _digits import DEVICE_ARG, fit_classifier, load_digits_split, parse_args, report

from nnkernels import nn, optim


class RowReader(nn.Module):
    """(N, 64) pixels -> (N, 8, 8) rows -> LSTM/GRU (batch_first) -> its last hidden state h_T ->
    Linear -> logits (N, 10). Only layer calls and views, so it runs on CUDA as well."""

    _cuda_ok = True

    def __init__(self, hidden=96, cell="lstm"):
        super().__init__()
        self.cell = cell
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        _, state = self.rnn(x.reshape(-1, 8, 8))
        h_n = state[0] if self.cell == "lstm" else state      # (1, N, hidden)
        return self.head(h_n[0])

    def backward(self, grad):
        g = self.head.backward(grad)                           # (N, hidden)
        g_h = g.reshape((1,) + tuple(g.shape))
        # the output sequence was not used (None); the input gradient (pixels) is not needed
        self.rnn.backward(None, (g_h, None) if self.cell == "lstm" else g_h)
        return None


def main():
    args = parse_args(__doc__.splitlines()[0], epochs=40,
                      extra=[(("--cell",), dict(choices=["lstm", "gru"], default="lstm",
                                                help="recurrent layer (default lstm)")), DEVICE_ARG])
    nn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    model = RowReader(cell=args.cell)
    model.to(args.device)
    print(model)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    data = (xtr, ytr, xte, yte)
    losses, accs = fit_classifier(model, opt, data, epochs=args.epochs, rng=rng, batch_size=32,
                                  decay_at=0.7, decay=0.2)
    report(model, data, losses, accs, args.out, "rnn", f"{args.cell.upper()} reading 8x8 digits row by row")


if __name__ == "__main__":
    main()
