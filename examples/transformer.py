"""A small Transformer encoder on scikit-learn's 8x8 handwritten digits read as a sequence
of 8 row-tokens: Linear token projection of each row (8 pixels) + a learned positional
embedding, two pre-norm TransformerEncoderLayers (MultiheadAttention + LayerNorm + a ReLU
feedforward), a final LayerNorm, mean-pooling over the tokens, Linear -> 10 classes;
trained with AdamW. Prints the loss while it trains and the held-out test accuracy; writes
examples/out/transformer.png (loss curve, test accuracy per epoch, confusion matrix).

    PYTHONPATH=python python examples/transformer.py [--epochs 40] [--out DIR]
"""

import numpy as np

from _digits import fit_classifier, load_digits_split, parse_args, report

from nnkernels import nn, optim


class RowTransformer(nn.Module):
    """(N, 64) -> (N, 8 tokens, 8) -> Linear(8, d) + pos -> encoder layers -> LayerNorm ->
    mean over tokens -> Linear(d, 10)."""

    def __init__(self, d_model=64, nhead=4, num_layers=2, dim_feedforward=128, dropout=0.1, seed=0):
        super().__init__()
        self.embed = nn.Linear(8, d_model)
        self.pos = nn.Parameter(np.random.default_rng(seed).normal(0.0, 0.02, (8, d_model)).astype(np.float32))
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=dropout, batch_first=True,
                                       norm_first=True)
            for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 10)

    def forward(self, x):
        h = self.embed(x.reshape(-1, 8, 8)) + self.pos.data
        for layer in self.layers:
            h = layer(h)
        h = self.norm(h)
        return self.head(h.mean(axis=1))

    def backward(self, grad):
        g = self.head.backward(grad)                                # (N, d)
        g = np.repeat(g[:, None, :] / g.dtype.type(8), 8, axis=1)  # mean over the 8 tokens
        g = self.norm.backward(g)
        for layer in reversed(list(self.layers)):
            g = layer.backward(g)
        self.pos._accumulate(g.sum(axis=0))
        self.embed.backward(g)  # the input gradient (pixels) is not needed
        return None


def main():
    args = parse_args(__doc__.splitlines()[0], epochs=40)
    nn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    model = RowTransformer(seed=args.seed)
    print(model)
    print(f"{sum(p.size for p in model.parameters())} parameters")
    opt = optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    data = (xtr, ytr, xte, yte)
    losses, accs = fit_classifier(model, opt, data, epochs=args.epochs, rng=rng, batch_size=32,
                                  decay_at=0.7, decay=0.2)
    report(model, data, losses, accs, args.out, "transformer", "Transformer encoder on 8 row-tokens")


if __name__ == "__main__":
    main()
