"""A small Transformer encoder on scikit-learn's 8x8 handwritten digits read as a sequence
of 8 row-tokens: Linear token projection of each row (8 pixels) + a learned positional
embedding, two pre-norm TransformerEncoderLayers (MultiheadAttention + LayerNorm + a ReLU
feedforward), a final LayerNorm, mean-pooling over the tokens, Linear -> 10 classes;
trained with AdamW. Prints the loss while it trains and the held-out test accuracy; writes
examples/out/transformer.png (loss curve, test accuracy per epoch, confusion matrix).

    PYTHONPATH=python python examples/transformer.py [--epochs 40] [--out DIR]
"""

import os

import numpy as np

from _digits import Timer, batches, load_digits_split, parse_args, plot_curves_and_confusion, predict

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
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    losses, accs, timer = [], [], Timer()
    for epoch in range(1, args.epochs + 1):
        if epoch == int(args.epochs * 0.7) + 1:
            opt.param_groups[0]["lr"] *= 0.2
        for idx in batches(len(xtr), 32, rng):
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
            losses.append(loss)
        accs.append(float((predict(model, xte) == yte).mean()))
        if epoch % 5 == 0 or epoch in (1, args.epochs):
            print(f"epoch {epoch:3d}  loss {np.mean(losses[-len(xtr) // 32:]):.4f}  "
                  f"test accuracy {accs[-1] * 100:.2f}%  [{timer}]", flush=True)
    pred = predict(model, xte)
    acc = float((pred == yte).mean())
    path = os.path.join(args.out, "transformer.png")
    plot_curves_and_confusion(path, losses, accs, yte, pred,
                              f"Transformer encoder on 8 row-tokens: test accuracy {acc * 100:.2f}%")
    print(f"final test accuracy: {acc * 100:.2f}% ({int((pred == yte).sum())}/{len(yte)})  wrote {path}")


if __name__ == "__main__":
    main()
