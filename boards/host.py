"""Host side: stream samples to a board over a serial port and check them against golden.

``check_board(graph, framing, x, port=...)`` opens the port with pyserial (or
uses ``link``, any object with ``write(bytes)`` and ``read(n) -> bytes``, e.g.
a loopback or a simulator) and returns a summary; every mismatch names the
sample, the element, the expected and the actual mantissa.
"""
from __future__ import annotations

import numpy as np

from ..errors import FabformerError
from fabformer.vectors import golden_io
from .protocol import Framing

DEFAULT_BAUD = 115200


def open_serial(port: str, baud: int = DEFAULT_BAUD, timeout: float = 2.0):
    try:
        import serial
    except ModuleNotFoundError:
        raise FabformerError("talking to a board needs pyserial: pip install pyserial") from None
    try:
        return serial.Serial(port, baudrate=baud, timeout=timeout)
    except serial.SerialException as e:
        raise FabformerError(f"cannot open serial port {port!r}: {e}") from None


def transact(link, framing: Framing, x_int) -> tuple[np.ndarray, int]:
    """Send one sample's input mantissas; return (output mantissas, cycle count)."""
    link.write(framing.encode(x_int))
    data = link.read(framing.answer_len)
    if len(data) != framing.answer_len:
        raise FabformerError(f"board answered {len(data)} of {framing.answer_len} bytes before the timeout; "
                             "is the bitstream loaded and the baud rate right?")
    return framing.decode(bytes(data))


def check_board(graph, framing: Framing, x, *, port: str | None = None, baud: int = DEFAULT_BAUD,
                link=None, max_report: int = 10) -> dict:
    """Run float inputs ``x`` (a batch) on the board and compare every output bit with golden."""
    if link is None:
        if port is None:
            raise FabformerError("give a serial port (e.g. /dev/ttyUSB1) or a link object")
        link = open_serial(port, baud)
    xin, yg = golden_io(graph, x)
    yg = yg.reshape(len(yg), framing.out_rows, framing.out_cols)
    mismatches, cycles = [], []
    agree = 0
    for s in range(len(xin)):
        y, c = transact(link, framing, xin[s])
        cycles.append(c)
        bad = np.argwhere(y != yg[s])
        if len(bad) == 0:
            agree += 1
        for idx in bad[:max(0, max_report - len(mismatches))]:
            i = tuple(int(v) for v in idx)
            mismatches.append({"sample": s, "index": i, "expected": int(yg[s][i]), "actual": int(y[i])})
    return {"samples": len(xin), "bit_exact_samples": agree, "bit_exact": agree == len(xin),
            "mismatches": mismatches, "cycles_min": min(cycles) if cycles else None,
            "cycles_max": max(cycles) if cycles else None}
