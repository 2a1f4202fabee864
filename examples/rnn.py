"""An LSTM reading each of scikit-learn's 8x8 handwritten digits row by row (8 steps of
8 pixels), its last hidden state -> Linear -> 10 classes, trained with Adam. Prints the
loss while it trains and the held-out test accuracy; writes examples/out/rnn.png (loss
curve, test accuracy per epoch, confusion matrix).

    PYTHONPATH=python python examples/rnn.py [--epochs 40] [--cell lstm|gru] [--out DIR]
"""

import numpy as np

from _digits import fit_classifier, load_digits_split, parse_args, report

from nnkernels import nn, optim


class RowReader(nn.Module):
    """(N, 64) pixels -> (N, 8, 8) rows -> LSTM/GRU (batch_first) -> h_T of the top layer ->
    Linear -> logits (N, 10)."""

    def __init__(self, hidden=96, num_layers=1, cell="lstm"):
        super().__init__()
        self.cell = cell
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(8, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(-1, 8, 8))
        self._keep(out.shape)
        return self.head(out[:, -1])

    def backward(self, grad):
        shape = self._saved()
        g_last = self.head.backward(grad)
        g_out = np.zeros(shape, dtype=g_last.dtype)
        g_out[:, -1] = g_last
        self.rnn.backward(g_out)  # the input gradient (pixels) is not needed
        return None


def main():
    args = parse_args(__doc__.splitlines()[0], epochs=40,
                      extra=[(("--cell",), dict(choices=["lstm", "gru"], default="lstm",
                                                help="recurrent layer (default lstm)"))])
    nn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    model = RowReader(cell=args.cell)
    print(model)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    data = (xtr, ytr, xte, yte)
    losses, accs = fit_classifier(model, opt, data, epochs=args.epochs, rng=rng, batch_size=32,
                                  decay_at=0.7, decay=0.2)
    report(model, data, losses, accs, args.out, "rnn", f"{args.cell.upper()} reading 8x8 digits row by row")


if __name__ == "__main__":
    main()
