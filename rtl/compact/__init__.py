"""The compact RTL architecture: one MAC array, one row unit and a sequencer running a
program compiled from the graph, every tensor and weight in the device's memories
(:mod:`.program` is the compiler, :mod:`.engine` the hardware).  The small-device
architecture: ``fabformer.rtl.generate(graph, arch="compact")``."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from fabformer import ir
from fabformer.errors import FabformerError
from fabformer.fixed import FixedType
from ..blocks import row_shape
from ..generate import architecture
from .engine import CompactTop, Widths
from .program import BACKEND, LANES, Instr, Program, compile_graph

__all__ = ["CompactDesign", "generate_compact", "compile_graph", "Program", "Instr", "BACKEND", "LANES"]


@dataclass
class CompactDesign:
    """A compact design: its program, the Amaranth ``top`` and its analytic numbers
    (the attributes simulation and the boards read, as :class:`fabformer.rtl.Design`)."""

    graph: ir.Graph
    program: Program
    in_tensor: str = ""
    out_tensor: str = ""
    in_rows: int = 0
    in_cols: int = 0
    in_type: FixedType = None
    out_rows: int = 0
    out_cols: int = 0
    out_type: FixedType = None
    multipliers: int = 0
    macs: int = 0
    latency_cycles: int = 0
    ii_cycles: float = 0
    arch: str = "compact"
    parallelism: dict = field(default_factory=dict)
    blocks: list = field(default_factory=list)
    _top: CompactTop = field(default=None, repr=False)

    row_multipliers: str = "dsp"
    holds_output: bool = True  # the output row stays on ``o`` until the next sample's store (the UART shell reads it)
    dsps: int | None = None  # the device's DSPs (row_multipliers "lut": those beyond the lanes take row multiplies)

    @property
    def widths(self) -> Widths:
        if getattr(self, "_widths", None) is None:
            self._widths = Widths(self.program, self.row_multipliers)
        return self._widths

    @property
    def lanes(self) -> int:
        return self.program.L

    @property
    def mac_bound_cycles(self) -> float:
        return self.macs / max(self.multipliers, 1)

    @property
    def mac_utilization(self) -> float:
        """Multiply-accumulates per sample over (MAC lanes x cycles per sample)."""
        return self.macs / (self.lanes * self.ii_cycles)

    def make_top(self, peek: bool = False) -> CompactTop:
        return CompactTop(self, peek=peek)

    @property
    def peek_output(self) -> tuple[int, int, int]:
        """Where a shell reads the output row between samples through the top's ``peek`` port
        (``make_top(peek=True)``): (its first data-memory word, elements a word, bits an element)."""
        return self.program.out_place.base // self.lanes, self.lanes, self.widths.dw

    @property
    def top(self) -> CompactTop:
        if self._top is None:
            self._top = CompactTop(self)
            self._top._MustUse__silence = True
        return self._top

    def listing(self) -> str:
        p = self.program
        return p.listing() + (f"; per sample: latency {self.latency_cycles} cycles, II {self.ii_cycles} cycles, "
                              f"MAC-array utilization {100 * self.mac_utilization:.1f} %\n")

    def verilog(self, name: str = "top") -> str:
        from amaranth.back import verilog
        return verilog.convert(CompactTop(self), name=name, emit_src=False)

    def rtlil(self, name: str = "top") -> str:
        from amaranth.back import rtlil
        return rtlil.convert(CompactTop(self), name=name, emit_src=False)

    def write_verilog(self, directory, name: str = "top", icarus: bool = False) -> Path:
        from fabformer.outdir import prepare_dir
        from ..generate import yosys_reemit
        directory = prepare_dir(directory)
        text = yosys_reemit(self.rtlil(name), name) if icarus else self.verilog(name)
        path = Path(directory) / f"{name}.v"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return path

    def digest(self, name="top", icarus=False) -> str:
        return hashlib.sha256((self.verilog(name) + str(icarus)).encode()).hexdigest()[:16]


@architecture("compact", "one MAC array, one row unit, a sequencer running a program compiled from the graph; "
                         "tensors and weights in RAM; the small-device architecture")
def generate_compact(graph: ir.Graph, parallelism=None, lanes: int = LANES, row_multipliers: str = "dsp",
                     dsps: int | None = None) -> CompactDesign:
    """The compact design of ``graph``: ``lanes`` multipliers in the MAC array (a power of two);
    ``dsps``: with ``"lut"``, the device's DSPs: a row unit multiply that the idle lanes cannot take
    is ``*`` on the DSPs beyond the lanes while they last (16-bit limbs counted), else logic.
    ``row_multipliers``: ``"dsp"`` (the row unit's and write-back's multiplies are ``*``, DSPs where
    the device has them) or ``"lut"`` (sums of partial products: every DSP is the MAC array's)."""
    if row_multipliers not in ("dsp", "lut"):
        raise FabformerError(f"row_multipliers must be 'dsp' or 'lut', not {row_multipliers!r}")
    if parallelism is not None:
        raise FabformerError(f"the compact architecture has one MAC array of `lanes` multipliers; "
                             f"parallelism={parallelism!r} is a dataflow setting (valid: None)")
    prog = compile_graph(graph, lanes)
    if row_multipliers == "lut":  # few LUTs: layer norm's pass 2 at half rate, one requantizer for z and y
        for ins in prog.instrs:
            if ins.op == "layernorm":
                ins.f["h2"] = 1
    d = CompactDesign(graph, prog, in_tensor=prog.in_tensor, out_tensor=prog.out_tensor,
                      row_multipliers=row_multipliers, dsps=dsps)
    d.in_rows, d.in_cols = row_shape(graph.tensors[d.in_tensor].shape)
    d.in_type = graph.type_of(d.in_tensor)
    d.out_rows, d.out_cols = row_shape(graph.tensors[d.out_tensor].shape)
    d.out_type = graph.type_of(d.out_tensor)
    d.multipliers = lanes
    d.macs = prog.macs()
    d.latency_cycles = prog.load_cycles() + prog.run_cycles() + prog.store_cycles()
    d.ii_cycles = d.latency_cycles + 1
    return d
