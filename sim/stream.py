"""Stream testbench pieces: a driver with random valid gaps and a monitor with random
ready back-pressure.  Both are called once per clock cycle by the testbench loop:
``drive()`` after the falling edge sets this cycle's signals, ``sample()`` in the
read-only phase before the rising edge sees whether a beat is transferred at it."""
from __future__ import annotations

import random


class StreamDriver:
    """Drives ``<prefix>__valid`` / ``<prefix>__payload`` from a queue of packed rows."""

    def __init__(self, dut, prefix: str, valid_prob: float = 1.0, seed: int = 0):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.valid_prob = valid_prob
        self.rng = random.Random(seed)
        self.queue: list[int] = []
        self.pos = 0
        self._offer = False
        self.fired: list[int] = []  # cycle of each transferred beat

    def load(self, rows: list[int]) -> None:
        self.queue, self.pos, self.fired = list(rows), 0, []

    @property
    def done(self) -> bool:
        return self.pos >= len(self.queue)

    def drive(self) -> None:
        self._offer = not self.done and (self.valid_prob >= 1.0 or self.rng.random() < self.valid_prob)
        self.valid.value = int(self._offer)
        if self._offer:
            self.payload.value = self.queue[self.pos]

    def sample(self, cycle: int) -> None:
        if self._offer and int(self.ready.value):
            self.fired.append(cycle)
            self.pos += 1


class StreamMonitor:
    """Drives ``<prefix>__ready`` randomly and records transferred ``<prefix>__payload`` rows."""

    def __init__(self, dut, prefix: str, ready_prob: float = 1.0, seed: int = 1):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.ready_prob = ready_prob
        self.rng = random.Random(seed)
        self._ready = False
        self.rows: list[int] = []
        self.fired: list[int] = []

    def reset(self) -> None:
        self.rows, self.fired = [], []

    def drive(self) -> None:
        self._ready = self.ready_prob >= 1.0 or self.rng.random() < self.ready_prob
        self.ready.value = int(self._ready)

    def sample(self, cycle: int) -> bool:
        if self._ready and int(self.valid.value):
            self.rows.append(int(self.payload.value))
            self.fired.append(cycle)
            return True
        return False
