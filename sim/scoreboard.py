"""Golden reference and in-order scoreboard.

The reference turns golden mantissas into packed stream rows (what the driver
sends, what the monitor must see); the scoreboard compares rows in order and
reports the tensor, element index, expected and actual value of every mismatch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..fixed import FixedType


def pack_rows(a: np.ndarray, t: FixedType, cols: int) -> list[int]:
    """Integer mantissas (any shape, row-major) -> one packed unsigned int per row."""
    flat = np.asarray(a, dtype=np.int64).reshape(-1, cols)
    mask = (1 << t.width) - 1
    rows = []
    for r in flat:
        v = 0
        for e, x in enumerate(r.tolist()):
            v |= (int(x) & mask) << (t.width * e)
        rows.append(v)
    return rows


def unpack_rows(rows: list[int], t: FixedType, cols: int) -> np.ndarray:
    mask = (1 << t.width) - 1
    out = np.zeros((len(rows), cols), dtype=np.int64)
    for i, v in enumerate(rows):
        for e in range(cols):
            x = (int(v) >> (t.width * e)) & mask
            if t.signed and x >> (t.width - 1):
                x -= 1 << t.width
            out[i, e] = x
    return out


@dataclass
class Mismatch:
    tensor: str
    sample: int
    index: tuple
    expected: int
    actual: int

    def __str__(self):
        return (f"tensor {self.tensor!r} sample {self.sample} index {self.index}: "
                f"expected {self.expected}, got {self.actual}")


class Scoreboard:
    """In-order comparison of output rows against the golden expectation."""

    def __init__(self, tensor: str, expected_rows: list[int], t: FixedType, cols: int, rows_per_sample: int,
                 shape: tuple):
        self.tensor, self.t, self.cols, self.rps, self.shape = tensor, t, cols, rows_per_sample, tuple(shape)
        self.expected = list(expected_rows)
        self.seen = 0
        self.mismatches: list[Mismatch] = []

    def check(self, row: int) -> list[Mismatch]:
        k = self.seen
        self.seen += 1
        if k >= len(self.expected):
            m = Mismatch(self.tensor, k // self.rps, ("extra row",), 0, int(row))
            self.mismatches.append(m)
            return [m]
        exp = unpack_rows([self.expected[k]], self.t, self.cols)[0]
        act = unpack_rows([row], self.t, self.cols)[0]
        new = []
        sample, r = divmod(k, self.rps)
        for e in np.nonzero(exp != act)[0].tolist():
            flat = r * self.cols + e
            idx = tuple(int(i) for i in np.unravel_index(flat, self.shape)) if self.shape else ()
            new.append(Mismatch(self.tensor, sample, idx, int(exp[e]), int(act[e])))
        self.mismatches.extend(new)
        return new

    @property
    def complete(self) -> bool:
        return self.seen >= len(self.expected)
