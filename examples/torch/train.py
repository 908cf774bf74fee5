"""Train the PyTorch digits examples and save them as torch.export archives (.pt2).

    python examples/torch/train.py [encoder_post encoder_pre brevitas_q8]   # all three by default

Each trains in about a minute on 2 CPU cores (20-25 epochs of batches of 32, a one-cycle learning rate).

Three classifiers of scikit-learn's bundled digits (8 tokens x 8 features; nothing downloads):

- ``encoder_post.pt2``: Linear(8, 16) -> nn.TransformerEncoderLayer(16, 2 heads, ff 32, post-norm,
  ReLU) -> Flatten -> Linear(128, 10);
- ``encoder_pre.pt2``: Linear(8, 16) -> nn.TransformerEncoder(1 x nn.TransformerEncoderLayer(16, 2
  heads, ff 32, pre-norm, exact GELU), final LayerNorm) -> Flatten -> Linear(128, 10);
- ``brevitas_q8.pt2``: fully quantized with Brevitas, 8-bit power-of-two scales and floor rounding
  (the IR's TRN): QuantIdentity -> QuantLinear(8, 16) -> QuantReLU -> Flatten -> QuantLinear(128, 32)
  -> QuantReLU -> QuantLinear(32, 10) -> QuantIdentity (16 bits); fabformer converts it to exact types.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent


class Encoder(nn.Module):
    def __init__(self, norm_first: bool):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True, norm_first=norm_first,
                                           activation="gelu" if norm_first else "relu")
        if norm_first:  # pre-norm: the encoder's final LayerNorm closes the residual stream
            self.encoder = nn.TransformerEncoder(layer, num_layers=1, norm=nn.LayerNorm(16),
                                                 enable_nested_tensor=False)
        else:
            self.encoder = layer
        self.flatten = nn.Flatten()  # no positional encoding: the row order reaches the head through Flatten
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.flatten(self.encoder(self.embed(x))))


def brevitas_model() -> nn.Module:
    import brevitas.nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8BiasPerTensorFloatInternalScaling,
                                Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint)
    from brevitas.quant.base import PerTensorPoTScaling8bit

    class Int8BiasPo2(PerTensorPoTScaling8bit, Int8BiasPerTensorFloatInternalScaling):
        """8-bit biases with their own power-of-two scale (no input scale needed at export)."""

    class Int16ActPo2(Int8ActPerTensorFixedPoint):
        bit_width = 16

    floor = dict(float_to_int_impl_type="floor")  # the IR rounds with floor (TRN) or half-up (RND)
    lin = dict(weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int8BiasPo2)
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, **floor),
        qnn.QuantLinear(8, 16, **lin), qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, **floor),
        nn.Flatten(),
        qnn.QuantLinear(128, 32, **lin), qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, **floor),
        qnn.QuantLinear(32, 10, **lin), qnn.QuantIdentity(act_quant=Int16ActPo2, **floor))


def train(model, data, epochs: int, lr: float = 3e-3, seed: int = 0, batch: int = 32) -> float:
    torch.manual_seed(seed)
    x = torch.as_tensor(data.x_train, dtype=torch.float32)
    y = torch.as_tensor(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * ((len(x) + batch - 1) // batch))
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(data.x_test, dtype=torch.float32))
    return float((out.argmax(1).numpy() == data.y_test).mean())


def main(argv=None) -> int:
    from fabformer.apps.data import digits
    from fabformer.frontend.pytorch import export, save_program
    torch.set_num_threads(2)
    data = digits()
    want = set(sys.argv[1:] if argv is None else argv) or {"encoder_post", "encoder_pre", "brevitas_q8"}
    for name, make, epochs, lr in (("encoder_post", lambda: Encoder(False), 25, 5e-3),
                                   ("encoder_pre", lambda: Encoder(True), 20, 3e-3),
                                   ("brevitas_q8", brevitas_model, 16, 5e-3)):
        if name not in want:
            continue
        torch.manual_seed(0)
        model = make()
        t = time.time()
        acc = train(model, data, epochs, lr)
        ep = export(model, data.x_train)
        save_program(ep, HERE / f"{name}.pt2")
        print(f"{name}: test accuracy {100 * acc:.2f} % ({time.time() - t:.0f} s) -> {name}.pt2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
