"""The board-level top: the UART shell wired to a board's UART pins and LEDs."""
from __future__ import annotations

from amaranth import Elaboratable, Module

from .shell import UARTShell


class BoardTop(Elaboratable):
    """``shell`` connected to the platform's UART and two LEDs (alive, busy); with a ``pll``
    setting (:func:`fabformer.boards.pll.pll_setting`) the shell and the model run from the PLL's
    clock instead of the board oscillator."""

    def __init__(self, shell: UARTShell, pll=None):
        self.shell = shell
        self.pll = pll

    def elaborate(self, platform):
        m = Module()
        if self.pll is not None:
            from amaranth import ClockDomain
            from .pll import PLLDomain
            m.domains.sync = ClockDomain("sync")
            m.submodules.clock = PLLDomain(self.pll)
        m.submodules.shell = shell = self.shell
        uart = platform.request(*platform.uart)
        m.d.comb += [shell.rx.eq(uart.rx.i), uart.tx.o.eq(shell.tx)]
        (a_name, a_num), (b_name, b_num) = platform.leds
        m.d.comb += [platform.request(a_name, a_num).o.eq(shell.led_alive),
                     platform.request(b_name, b_num).o.eq(shell.led_busy)]
        platform.board_extras(m)
        return m
