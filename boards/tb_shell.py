"""cocotb testbench of the UART shell: a UART driver, a UART monitor, nothing else.

It reads ``shell_tb.json`` (``divisor``, ``requests``: list of byte lists,
``answer_len``) from the simulation's working folder, sends each request over
``rx`` bit by bit, collects the bytes the design answers on ``tx`` and writes
them to ``shell_answers.json``; the comparison against golden happens in Python
outside the simulator (:func:`fabformer.boards.simshell.simulate_shell`).
"""
import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge


async def uart_send(dut, byte: int, divisor: int):
    for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
        dut.rx.value = bit
        await ClockCycles(dut.clk, divisor)


async def uart_receive(dut, divisor: int) -> int:
    while True:
        await FallingEdge(dut.tx)
        await ClockCycles(dut.clk, divisor // 2)
        if int(dut.tx.value) == 0:
            break
    v = 0
    for i in range(8):
        await ClockCycles(dut.clk, divisor)
        v |= int(dut.tx.value) << i
    await ClockCycles(dut.clk, divisor)
    assert int(dut.tx.value) == 1, "stop bit is not high"
    return v


@cocotb.test()
async def shell_roundtrip(dut):
    cfg = json.loads(Path(os.environ.get("FABFORMER_SHELL_TB", "shell_tb.json")).read_text())
    div = cfg["divisor"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    answers = []
    for req in cfg["requests"]:
        rx_task = cocotb.start_soon(_receive_n(dut, div, cfg["answer_len"]))
        for b in req:
            await uart_send(dut, b, div)
        answers.append(await rx_task)
    await RisingEdge(dut.clk)
    Path(cfg["answers_path"]).write_text(json.dumps(answers))


async def _receive_n(dut, div, n):
    return [await uart_receive(dut, div) for _ in range(n)]
