"""A small Transformer encoder on scikit-learn's 8x8 handwritten digits read as a sequence
of 8 row-tokens: each token is a row's 8 pixels and a one-hot of its position, so one Linear
(16 -> d) is both the token projection and a learned positional embedding; two pre-norm
TransformerEncoderLayers (MultiheadAttention + LayerNorm + a ReLU feedforward), a final
LayerNorm, mean-pooling over the tokens, Linear -> 10 classes; trained with AdamW. Prints the
loss while it trains and the held-out test accuracy; writes examples/out/transformer.png
(loss curve, test accuracy per epoch, confusion matrix).

    PYTHONPATH=python python examples/transformer.py [--epochs 40] [--out DIR] [--device cuda]
"""

import numpy as np

from _digits import DEVICE_ARG, fit_classifier, load_digits_split, parse_args, report

from nnkernels import nn, ops, optim


def with_positions(x):
    """(N, 64) pixels -> (N, 128): per row-token its 8 pixels, then a one-hot of the row."""
    tokens = x.reshape(-1, 8, 8)
    pos = np.broadcast_to(np.eye(8, dtype=x.dtype), tokens.shape)
    return np.concatenate([tokens, pos], axis=2).reshape(len(x), 128)


class RowTransformer(nn.Module):
    """(N, 128) -> (N, 8 tokens, 16) -> Linear(16, d) -> encoder layers -> LayerNorm -> mean
    over the tokens -> Linear(d, 10). Only layers and ops (the mean is a product with a
    constant vector of 1/8), so it runs on CUDA as well."""

    _cuda_ok = True

    def __init__(self, d_model=64, nhead=4, num_layers=2, dim_feedforward=128, dropout=0.1):
        super().__init__()
        self.embed = nn.Linear(16, d_model)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=dropout, batch_first=True,
                                       norm_first=True)
            for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 10)
        self._avg = {}

    def _mean_vector(self, like):
        """(8,) of 1/8 in like's dtype, where like lives (made once per place)."""
        key = (type(like).__name__, str(like.dtype))
        if key not in self._avg:
            v = np.full(8, 1 / 8, dtype=np.dtype(str(like.dtype)))
            if not isinstance(like, np.ndarray):
                from nnkernels import cuda
                v = cuda.asarray(v)
            self._avg[key] = v
        return self._avg[key]

    def forward(self, x):
        h = self.embed(x.reshape(-1, 8, 16))
        for layer in self.layers:
            h = layer(h)
        h = self.norm(h)
        return self.head(ops.matmul(self._mean_vector(h), h))     # (8,) @ (N, 8, d) -> (N, d)

    def backward(self, grad):
        g = self.head.backward(grad)                               # (N, d)
        v = self._mean_vector(g)
        g = ops.matmul(v.reshape(8, 1), g.reshape(-1, 1, g.shape[-1]))  # (N, 8, d): each token 1/8
        g = self.norm.backward(g)
        for layer in reversed(list(self.layers)):
            g = layer.backward(g)
        self.embed.backward(g)  # the input gradient (pixels) is not needed
        return None


def main():
    args = parse_args(__doc__.splitlines()[0], epochs=40, extra=[DEVICE_ARG])
    nn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    xtr, xte = with_positions(xtr), with_positions(xte)
    model = RowTransformer()
    model.to(args.device)
    print(model)
    print(f"{sum(p.size for p in model.parameters())} parameters")
    opt = optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    data = (xtr, ytr, xte, yte)
    losses, accs = fit_classifier(model, opt, data, epochs=args.epochs, rng=rng, batch_size=32,
                                  decay_at=0.7, decay=0.2)
    report(model, data, losses, accs, args.out, "transformer", "Transformer encoder on 8 row-tokens")


if __name__ == "__main__":
    main()
