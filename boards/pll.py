"""Board clocks from a PLL: ECP5 ``EHXPLLL`` and iCE40 ``SB_PLL40_PAD``.

:func:`pll_setting` finds the divider setting whose output is the highest frequency not
above the one asked for (the model's clock must not exceed what nextpnr says the design
reaches); :class:`PLLDomain` makes the ``sync`` domain from the board oscillator through
that PLL, held in reset until the PLL locks.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib.cdc import ResetSynchronizer

from ..errors import FabformerError

FAMILIES = ("ecp5", "ice40")


@dataclass(frozen=True)
class PLLSetting:
    family: str
    in_mhz: float
    out_mhz: float
    vco_mhz: float
    params: tuple  # (name, value) pairs of the primitive's dividers

    def as_dict(self) -> dict:
        return {"family": self.family, "in_mhz": self.in_mhz, "out_mhz": round(self.out_mhz, 4),
                "vco_mhz": round(self.vco_mhz, 3), **dict(self.params)}


def pll_setting(family: str, in_mhz: float, want_mhz: float) -> PLLSetting:
    """The PLL setting of ``family`` whose output is closest to ``want_mhz`` from below."""
    if family not in FAMILIES:
        raise FabformerError(f"no PLL for family {family!r}; valid: {', '.join(FAMILIES)}")
    best = None
    if family == "ecp5":
        # EHXPLLL, feedback from CLKOP: out = in / CLKI_DIV * CLKFB_DIV, VCO = out * CLKOP_DIV
        for ci in range(1, 129):
            pfd = in_mhz / ci
            if not 3.125 <= pfd <= 400:
                continue
            for fb in range(1, 81):
                out = pfd * fb
                if out > want_mhz + 1e-9 or not 3.125 <= out <= 400:
                    continue
                for op in range(1, 129):
                    vco = out * op
                    if 400 <= vco <= 800:
                        cand = (out, -ci, PLLSetting("ecp5", in_mhz, out, vco, (
                            ("CLKI_DIV", ci), ("CLKFB_DIV", fb), ("CLKOP_DIV", op), ("CLKOP_CPHASE", (op - 1) // 2))))
                        if best is None or cand[:2] > best[:2]:
                            best = cand
                        break
    else:
        # SB_PLL40, simple feedback: out = in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)
        for r in range(16):
            pfd = in_mhz / (r + 1)
            if not 10 <= pfd <= 133:
                continue
            for f in range(128):
                vco = pfd * (f + 1)
                if not 533 <= vco <= 1066:
                    continue
                for q in range(1, 7):
                    out = vco / (1 << q)
                    if out > want_mhz + 1e-9 or not 16 <= out <= 275:
                        continue
                    rng = next(i for i, lim in enumerate((17, 26, 44, 66, 101, 1e9), 1) if pfd < lim)
                    cand = (out, -r, PLLSetting("ice40", in_mhz, out, vco, (
                        ("DIVR", r), ("DIVF", f), ("DIVQ", q), ("FILTER_RANGE", rng))))
                    if best is None or cand[:2] > best[:2]:
                        best = cand
    if best is None:
        raise FabformerError(f"no {family} PLL setting gives {want_mhz:g} MHz or less from {in_mhz:g} MHz "
                             f"(lowest outputs: ecp5 3.125 MHz, ice40 16 MHz)")
    return best[2]


class PLLDomain(Elaboratable):
    """Drives the ``sync`` clock domain (which the parent defines) from the platform's oscillator
    through the PLL ``setting``; ``sync`` is in reset until the PLL locks (the release
    synchronized to the new clock)."""

    def __init__(self, setting: PLLSetting):
        self.setting = setting

    def elaborate(self, platform):
        m = Module()
        s = self.setting
        p = dict(s.params)
        clk, lock = Signal(name="pll_clk"), Signal(name="pll_lock")
        if s.family == "ecp5":
            osc = platform.request(platform.default_clk, dir="i").i
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{s.in_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{s.out_mhz:.4f}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD", p_CLKI_DIV=p["CLKI_DIV"],
                p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"], p_CLKOP_CPHASE=p["CLKOP_CPHASE"],
                p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p["CLKFB_DIV"],
                i_RST=0, i_STDBY=0, i_CLKI=osc, o_CLKOP=clk, i_CLKFB=clk, i_PHASESEL0=0, i_PHASESEL1=0,
                i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=lock)
        else:
            pad = platform.request(platform.default_clk, dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"], i_PACKAGEPIN=pad.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        platform.add_clock_constraint(clk, s.out_mhz * 1e6)
        m.d.comb += ClockSignal("sync").eq(clk)
        if s.family == "ecp5":
            # the synchronized reset reaches every flip-flop of the design: on ECP5 it goes through a
            # clock buffer (DCCA) onto a global network, which nextpnr routes to the fabric too, instead
            # of one general-routing net of ~30k loads (15 ns across the LFE5U-85F on the digits model)
            m.domains.reset_gen = ClockDomain("reset_gen", local=True)
            m.d.comb += ClockSignal("reset_gen").eq(clk)
            m.submodules.reset_sync = ResetSynchronizer(~lock, domain="reset_gen")
            rst = Signal(name="rst_global")
            m.submodules.reset_buf = Instance("DCCA", i_CLKI=ResetSignal("reset_gen"), i_CE=1, o_CLKO=rst)
            m.d.comb += ResetSignal("sync").eq(rst)
        else:
            m.submodules.reset_sync = ResetSynchronizer(~lock, domain="sync")
        return m
