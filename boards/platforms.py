"""Boards fabformer builds for: amaranth-boards platforms plus what fabformer needs to know.

Each board is one small subclass of its amaranth-boards platform that adds
``board`` (the name users type), ``family``, ``available`` (LUT/FF/DSP/BRAM of
the device), the UART/LED resource names and the reset button.  ``BOARDS`` maps
names to classes; :func:`get_board` names the valid choices on a typo.
A part-only target (any device yosys/nextpnr know, no pins) is :class:`PartTarget`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from amaranth_boards.arty_a7 import ArtyA7_35Platform, ArtyA7_100Platform
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from ..errors import FabformerError

RESOURCE_KINDS = ("lut", "ff", "dsp", "bram")


class FabformerBoard:
    """Mixin for board platforms: what fabformer needs beyond pins."""

    board: str = ""
    family: str = ""  # "ice40", "ecp5" or "xilinx"
    open_flow: bool = True
    available: dict = {}
    bram_bits: int = 0  # bits per block RAM
    dsp_width: int = 16  # widest multiplier operand one DSP takes (signed operands count their sign bit)
    uart: tuple = ("uart", 0)
    leds: tuple = (("led", 0), ("led", 1))
    synth_opts: str = ""
    pll_target_mhz: float | None = None  # the first clock tried from the PLL when no --clock is given

    def board_extras(self, m) -> None:
        """Drive board pins the shell needs besides UART and LEDs (none by default)."""

    @property
    def clock_mhz(self) -> float:
        return self.default_clk_frequency / 1e6


class ICEBreaker(FabformerBoard, ICEBreakerPlatform):
    """1BitSquared iCEBreaker: iCE40 UP5K, 12 MHz, FTDI UART, user button as reset."""

    board = "icebreaker"
    family = "ice40"
    default_rst = "button"
    available = {"lut": 5280, "ff": 5280, "dsp": 8, "bram": 30}
    bram_bits = 4096
    dsp_width = 16
    synth_opts = "-dsp"
    pll_target_mhz = 48.0


class ULX3S85F(FabformerBoard, ULX3S_85F_Platform):
    """Radiona ULX3S with the ECP5 LFE5U-85F, 25 MHz, FTDI UART, button 1 (PWR) is not used."""

    board = "ulx3s-85f"
    family = "ecp5"
    available = {"lut": 83640, "ff": 83640, "dsp": 156, "bram": 208}
    bram_bits = 18432
    dsp_width = 18
    pll_target_mhz = 100.0

    def board_extras(self, m) -> None:
        m.d.comb += self.request("uart_tx_enable", 0).o.eq(1)  # enables the FTDI's receive path


class ArtyA7_35(FabformerBoard, ArtyA7_35Platform):
    """Digilent Arty A7-35T (xc7a35t), 100 MHz, USB UART; Vivado project only."""

    board = "arty-a7-35"
    family = "xilinx"
    open_flow = False
    available = {"lut": 20800, "ff": 41600, "dsp": 90, "bram": 50}
    bram_bits = 36864
    dsp_width = 18


class ArtyA7_100(FabformerBoard, ArtyA7_100Platform):
    """Digilent Arty A7-100T (xc7a100t), 100 MHz, USB UART; Vivado project only."""

    board = "arty-a7-100"
    family = "xilinx"
    open_flow = False
    available = {"lut": 63400, "ff": 126800, "dsp": 240, "bram": 135}
    bram_bits = 36864
    dsp_width = 18


BOARDS = {c.board: c for c in (ICEBreaker, ULX3S85F, ArtyA7_35, ArtyA7_100)}


def get_board(name: str):
    """A new platform object for board ``name``."""
    try:
        return BOARDS[name]()
    except KeyError:
        raise FabformerError(f"unknown board {name!r}; valid boards: {', '.join(sorted(BOARDS))}") from None


# -- part-only targets -------------------------------------------------------------
_PARTS = {
    # family: {device: (nextpnr device option, default package, available resources, bram bits)}
    "ice40": {
        "iCE40UP5K": ("--up5k", "sg48", {"lut": 5280, "ff": 5280, "dsp": 8, "bram": 30}, 4096),
        "iCE40HX8K": ("--hx8k", "ct256", {"lut": 7680, "ff": 7680, "dsp": 0, "bram": 32}, 4096),
        "iCE40HX1K": ("--hx1k", "tq144", {"lut": 1280, "ff": 1280, "dsp": 0, "bram": 16}, 4096),
    },
    "ecp5": {
        "LFE5U-12F": ("--12k", "CABGA381", {"lut": 12288, "ff": 12288, "dsp": 28, "bram": 32}, 18432),
        "LFE5U-25F": ("--25k", "CABGA381", {"lut": 24288, "ff": 24288, "dsp": 28, "bram": 56}, 18432),
        "LFE5U-45F": ("--45k", "CABGA381", {"lut": 43848, "ff": 43848, "dsp": 72, "bram": 108}, 18432),
        "LFE5U-85F": ("--85k", "CABGA381", {"lut": 83640, "ff": 83640, "dsp": 156, "bram": 208}, 18432),
    },
}


@dataclass
class PartTarget:
    """A bare device (no board): the shell's ports are left for nextpnr to place.

    ``device`` is one of :data:`PART_DEVICES`; ``clock_mhz`` is the clock the
    design is timed for; ``clock_pin`` the package's clock input the clock is placed on
    (:data:`CLOCK_PINS`; None: left to the placer).
    """

    device: str
    clock_mhz: float = 12.0
    package: str | None = None
    family: str = field(init=False)
    board: str = field(init=False)
    open_flow: bool = field(default=True, init=False)

    def __post_init__(self):
        for fam, devs in _PARTS.items():
            if self.device in devs:
                self.family = fam
                break
        else:
            raise FabformerError(f"unknown part {self.device!r}; valid parts: {', '.join(PART_DEVICES)}")
        self.board = f"part:{self.device}"
        opt, pkg, avail, bits = _PARTS[self.family][self.device]
        self.nextpnr_device = opt
        self.package = self.package or pkg
        self.available = dict(avail)
        self.bram_bits = bits
        self.dsp_width = 16 if self.family == "ice40" else 18
        self.synth_opts = "-dsp" if self.family == "ice40" and avail["dsp"] else ""
        self.clock_pin = CLOCK_PINS.get((self.family, self.package))


PART_DEVICES = [d for devs in _PARTS.values() for d in devs]

# a dedicated clock input of each package (the pin the vendor's evaluation boards use for their
# oscillator): a bare part's clock goes there, so it reaches the global clock network from any
# placement (left to the placer, the pad can land where no route to the clock tree exists)
CLOCK_PINS = {("ecp5", "CABGA381"): "G2", ("ice40", "sg48"): "35", ("ice40", "ct256"): "J3",
              ("ice40", "tq144"): "21"}


def get_target(name: str, clock_mhz: float | None = None):
    """A board (``icebreaker``) or a bare part (``part:LFE5U-85F``)."""
    if name.startswith("part:"):
        return PartTarget(name[5:], clock_mhz or 12.0)
    return get_board(name)
