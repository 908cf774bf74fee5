"""Train the PyTorch sequence examples and save them as torch.export archives (.pt2).

    python examples/torch/train_sequences.py [text causal]   # both by default; about a minute each on 2 cores

The data are made here (nothing downloads); the tasks are the Keras examples' (``examples/text``,
``examples/causal``):

- ``text.pt2``: token ids (batch, 12), 0 the padding at the end.  ``nn.Embedding`` tokens +
  ``nn.Embedding`` positions (``self.pos(torch.arange(T))``) -> ``nn.TransformerEncoderLayer(16, 2 heads,
  ff 32, post-norm, ReLU)`` with ``src_key_padding_mask = ids == PAD`` -> the mean over the kept tokens
  ``(h * keep).sum(1) / keep.sum(1).clamp(min=1)`` -> ``Linear(16, 2)``.  Label: do ids 1..5 ("positive")
  outnumber ids 6..10 ("negative")?  fabformer maps the mask to ``mask_fill`` and the mean to
  ``masked_avg_pool``.
- ``causal.pt2``: sequences (batch, 8, 2) -> ``Linear(2, 16)`` -> ``nn.TransformerEncoderLayer(16, 2 heads,
  ff 32, pre-norm, GELU)`` with ``is_causal=True`` and ``nn.Transformer.generate_square_subsequent_mask`` ->
  ``Linear(16, 2)`` at every step.  Label at step t: is the running sum of the first feature positive?
  fabformer maps the mask to ``causal_fill``.

Text trains for 8 epochs, causal for 4 (batches of 64, a one-cycle learning rate, 2 threads).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
MAXLEN, VOCAB, PAD, D = 12, 30, 0, 16  # text
T, F = 8, 2  # causal


def make_text(n: int, seed: int = 0):
    """(ids [n, MAXLEN] int64, labels [n]): 1..5 positive, 6..10 negative, 11.. filler, PAD at the end."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(11, VOCAB, (n, MAXLEN))
    k = rng.integers(1, 6, n)
    for i in range(n):
        ids[i, rng.choice(MAXLEN, k[i], replace=False)] = rng.integers(1, 11, k[i])
        ids[i, MAXLEN - rng.integers(0, 4):] = PAD
    p, q = ((ids >= 1) & (ids <= 5)).sum(1), ((ids >= 6) & (ids <= 10)).sum(1)
    keep = p != q
    return ids[keep].astype(np.int64), (p > q)[keep].astype(np.int64)


def make_causal(n: int, seed: int = 0):
    """(sequences [n, T, F], labels [n, T])."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, T, F))
    return x, (np.cumsum(x[:, :, 0], 1) > 0).astype(np.int64)


MAKE = {"text": make_text, "causal": make_causal}


class Text(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D, padding_idx=PAD)  # padding_idx: the PAD row gets no gradient
        self.pos = nn.Embedding(MAXLEN, D)
        self.encoder = nn.TransformerEncoderLayer(D, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(D, 2)

    def forward(self, ids):
        pad = ids == PAD
        h = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        h = self.encoder(h, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1))


class Causal(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(F, D)
        self.encoder = nn.TransformerEncoderLayer(D, 2, 32, dropout=0.0, batch_first=True, norm_first=True,
                                                  activation="gelu")
        self.head = nn.Linear(D, 2)

    def forward(self, x):
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
        return self.head(self.encoder(self.embed(x), src_mask=mask, is_causal=True))


def train(model, x, y, epochs: int, lr: float = 3e-3, batch: int = 64) -> None:
    x = torch.as_tensor(x)
    x = x if x.dtype == torch.int64 else x.float()
    y = torch.as_tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * ((len(x) + batch - 1) // batch))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            out = model(x[idx])
            nn.functional.cross_entropy(out.reshape(-1, 2), y[idx].reshape(-1)).backward()
            opt.step()
            sched.step()
    model.eval()


def accuracy(model, x, y) -> float:
    from fabformer.frontend.pytorch import torch_predict
    return float(np.mean(torch_predict(model, x).argmax(-1) == y))


def main(argv=None) -> int:
    from fabformer.frontend.pytorch import export, save_program
    torch.set_num_threads(2)
    want = list(sys.argv[1:] if argv is None else argv) or ["text", "causal"]
    for name in want:
        torch.manual_seed(0)
        make = MAKE[name]
        x, y = make(6000, seed=0)
        xt, yt = make(1000, seed=1)
        model = Text() if name == "text" else Causal()
        t = time.time()
        train(model, x, y, epochs=8 if name == "text" else 4)
        secs = time.time() - t
        ep = export(model, x)
        save_program(ep, HERE / f"{name}.pt2")
        print(f"{name}: test accuracy {100 * accuracy(model, xt, yt):.2f} % (trained in {secs:.0f} s) -> {name}.pt2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
