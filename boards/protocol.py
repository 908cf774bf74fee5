"""The UART frame format of :mod:`fabformer.boards.shell`, host side.

Request: ``SYNC_IN``, then ``in_rows * in_cols`` elements row by row, each
``ceil(in_width / 8)`` little-endian bytes of its two's-complement mantissa.
Answer: ``SYNC_OUT``, ``out_rows * out_cols`` elements (``ceil(out_width / 8)``
little-endian bytes, upper bits zero), then the cycle count (4 bytes, little-endian).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FabformerError
from .shell import CYCLE_BYTES, SYNC_IN, SYNC_OUT, bytes_per_element


@dataclass(frozen=True)
class Framing:
    in_rows: int
    in_cols: int
    in_width: int
    in_signed: bool
    out_rows: int
    out_cols: int
    out_width: int
    out_signed: bool

    @classmethod
    def for_design(cls, design) -> "Framing":
        return cls(design.in_rows, design.in_cols, design.in_type.width, design.in_type.signed,
                   design.out_rows, design.out_cols, design.out_type.width, design.out_type.signed)

    @property
    def request_len(self) -> int:
        return 1 + self.in_rows * self.in_cols * bytes_per_element(self.in_width)

    @property
    def answer_len(self) -> int:
        return 1 + self.out_rows * self.out_cols * bytes_per_element(self.out_width) + CYCLE_BYTES

    def encode(self, x) -> bytes:
        """One sample of input mantissas (``in_rows * in_cols`` integers) -> request bytes."""
        x = np.asarray(x, dtype=np.int64)
        if x.size != self.in_rows * self.in_cols:
            raise FabformerError(f"a sample has {self.in_rows * self.in_cols} input elements "
                                 f"({self.in_rows} rows x {self.in_cols}), not {x.size}")
        lo = -(1 << (self.in_width - 1)) if self.in_signed else 0
        hi = (1 << (self.in_width - (1 if self.in_signed else 0))) - 1
        if x.min() < lo or x.max() > hi:
            raise FabformerError(f"input mantissas must lie in [{lo}, {hi}] for {self.in_width}-bit "
                                 f"{'signed' if self.in_signed else 'unsigned'} elements")
        nb = bytes_per_element(self.in_width)
        mask = (1 << (8 * nb)) - 1
        out = bytearray([SYNC_IN])
        for v in x.reshape(-1).tolist():
            out += (int(v) & mask).to_bytes(nb, "little")
        return bytes(out)

    def decode(self, data: bytes) -> tuple[np.ndarray, int]:
        """Answer bytes -> (output mantissas of shape (out_rows, out_cols), cycle count)."""
        if len(data) != self.answer_len:
            raise FabformerError(f"answer has {len(data)} bytes, expected {self.answer_len}")
        if data[0] != SYNC_OUT:
            raise FabformerError(f"answer starts with 0x{data[0]:02x}, expected 0x{SYNC_OUT:02x}")
        nb = bytes_per_element(self.out_width)
        w = self.out_width
        vals = []
        for i in range(self.out_rows * self.out_cols):
            v = int.from_bytes(data[1 + i * nb: 1 + (i + 1) * nb], "little") & ((1 << w) - 1)
            if self.out_signed and v >> (w - 1):
                v -= 1 << w
            vals.append(v)
        cycles = int.from_bytes(data[-CYCLE_BYTES:], "little")
        return np.asarray(vals, dtype=np.int64).reshape(self.out_rows, self.out_cols), cycles

    def answer(self, y, cycles: int) -> bytes:
        """What a correct board answers for outputs ``y`` (used by loopback tests)."""
        nb = bytes_per_element(self.out_width)
        w = self.out_width
        out = bytearray([SYNC_OUT])
        for v in np.asarray(y, dtype=np.int64).reshape(-1).tolist():
            out += (int(v) & ((1 << w) - 1)).to_bytes(nb, "little")
        return bytes(out + int(cycles).to_bytes(CYCLE_BYTES, "little"))
