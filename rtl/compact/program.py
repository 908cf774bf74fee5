"""The compact architecture's compiler: a graph becomes a program for one engine.

The engine (:mod:`.engine`) has one multiply-accumulate array of ``L`` lanes, one
element-serial row unit (softmax, layer norm, tables, requantization, copies) and
a sequencer that runs the program from an instruction ROM.  Every tensor lives in
one data memory of ``L``-element words (row ``r`` of a tensor at
``base + r * pitch``, ``pitch`` a multiple of ``L``); weights live in a weight ROM
of ``L``-lane words, biases and layer-norm parameters in a constant ROM, every
table of the graph in one table ROM.

An instruction is a set of named integer fields (:data:`FIELDS`); the engine reads
them from the instruction ROM.  Two instruction classes:

* ``mac`` (dense, matmul, global average pool): for each group ``g``, row ``m``,
  output tile ``t`` (``L`` columns) and ``k``: ``acc[j] += a[g, m, k] * b[g, k, tL + j]``;
  then one element per cycle: ``rq(acc + bias)`` (dense) or ``rq(acc * scale)``.
* ``row`` (copy, add, relu, requantize, lookup, softmax, layer norm): rows of ``N``
  elements in one to three passes, one element per cycle.

The arithmetic is golden's (:mod:`fabformer.golden`): products exact, sums exact,
one requantization with the output type's rounding and overflow, the same tables.
:meth:`Program.execute` runs the program in Python (the instruction semantics the
hardware implements); the cycle count of every instruction is analytic
(:meth:`Program.cycles`) and the simulation checks it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fabformer import ir, registry
from fabformer.errors import FabformerError
from fabformer.fixed import FixedType, Overflow, Rounding

__all__ = ["Program", "Instr", "compile_graph", "BACKEND", "LANES", "ROW_OPS"]

BACKEND = "rtl.compact"
LANES = 8  # the UP5K has 8 SB_MAC16
ROW_OPS = {"copy": 0, "add": 1, "relu": 2, "requantize": 3, "lookup": 4, "softmax": 5, "layernorm": 6}
PASSES = {"softmax": 3, "layernorm": 3}

# engine timing constants (cycles); the engine is built to these numbers
FETCH = 2        # instruction ROM read and set-up
ROW_DRAIN = 10   # issue to write of the row unit's element pipeline
LN_H2_DRAIN = 2  # layer norm at half rate (h2): z on the common requantizer (its second stage, z held a cycle)
MAC_DRAIN = 4    # issue to the write-back buffer (operands, product, sum, capture)
WB_DEPTH = 5     # write-back after the last lane's select: bias or scale (2), requantize (2), write
SUM_WAIT = {"softmax": 3, "layernorm": 5}  # after pass 1 until the row's sum is complete (softmax
                 # sums the table's exponents at S3, layer norm the squares at S4)
P_CYCLES = 1     # softmax / layer norm: the per-row normalisation's leading one before pass 2 (its shift and
                 # table read run beside pass 2's first issues: the elements need them from their S3 on)
STORE_READ = 2   # per output row: word reads in flight before the row is presented

registry.declare(BACKEND, "the compact RTL architecture (fabformer.rtl.compact): one MAC array, one row unit, "
                          "a sequencer running a program compiled from the graph")


@dataclass
class Place:
    """A tensor in the data memory.  Rows are ``(h, r)`` for a ``[H, R, C]`` tensor (``h = 0``
    for 2-D): element ``(h, r, c)`` at ``base + h * hs + r * pitch + c``.  A plain tensor has
    ``hs = R * pitch``; a view (split or merged heads sharing another tensor's storage) has
    ``hs`` = the head's column offset."""

    base: int
    rows: int      # H * R
    cols: int
    pitch: int
    heads: int = 1
    hs: int = 0

    @property
    def size(self) -> int:
        return self.rows * self.pitch

    @property
    def rows_per_head(self) -> int:
        return self.rows // self.heads

    @property
    def head_stride(self) -> int:
        return self.hs if self.heads > 1 else self.rows_per_head * self.pitch


@dataclass
class Instr:
    unit: str           # "mac" or "row"
    op: str             # dense / matmul / pool, or a ROW_OPS key
    node: str           # the graph node it implements
    f: dict = field(default_factory=dict)
    note: str = ""

    def cycles(self, L: int) -> int:
        f = self.f
        if self.unit == "mac":  # per row: load the a row (matmul), then T tiles of max(K, L) slots
            per_tile = max(f["K"], L)
            return FETCH + f["G"] * f["M"] * (f["arl"] + f["T"] * per_tile) + MAC_DRAIN + L + WB_DEPTH
        rows = f["n1"] * f["n2"]
        if self.op in PASSES:  # h2: the last pass at half rate (layer norm sharing one requantizer)
            return FETCH + rows * ((PASSES[self.op] + f.get("h2", 0)) * f["N"] + SUM_WAIT[self.op] + P_CYCLES) + \
                ROW_DRAIN + LN_H2_DRAIN * f.get("h2", 0)
        per = 2 if self.op == "add" else 1  # add reads its two operands through one port
        return FETCH + rows * f["N"] * per + ROW_DRAIN


#: the rounding field: 0 truncate (floor), 1 half up, 2 half to even (QKeras' tf.round, AP_RND_CONV)
RND_CODES = {Rounding.TRN: 0, Rounding.RND: 1, Rounding.RND_CONV: 2}


def _rq_fields(prefix: str, t: FixedType) -> dict:
    """Requantization target fields: rounding, overflow and the range of ``t``."""
    if t.rounding not in RND_CODES:
        raise FabformerError(f"rounding {t.rounding.value} (type {t}) is not supported by the compact "
                             f"architecture; valid: {', '.join(r.value for r in RND_CODES)}")
    sat = t.overflow is Overflow.SAT
    return {f"{prefix}rnd": RND_CODES[t.rounding], f"{prefix}sat": int(sat),
            f"{prefix}lo": t.min_int, f"{prefix}hi": t.max_int, f"{prefix}mask": (1 << t.width) - 1,
            f"{prefix}half": (1 << (t.width - 1)) if t.signed else 0}


def rq_apply(v: int, sh: int, rnd: int, sat: int, lo: int, hi: int, mask: int, half: int) -> int:
    """The engine's requantizer on one Python integer (``fixed.requantize``)."""
    if sh > 0:
        if rnd == 1:
            v += 1 << (sh - 1)
        elif rnd == 2:  # ties to even: half - 1, plus the kept part's lowest bit
            v += (1 << (sh - 1)) - 1 + ((v >> sh) & 1)
        v >>= sh
    elif sh < 0:
        v = v << -sh
    if sat:
        return min(max(v, lo), hi)
    return ((v + half) & mask) - half


def relu_range(dt: FixedType, rt: FixedType) -> tuple[int, int] | None:
    """A relu of output type ``rt`` on a value of type ``dt`` as one saturation: golden's
    ``requantize(max(y, 0), dt.frac, rt)`` of ``y = requantize(v, f, dt)`` equals ``requantize(v, f,
    dt)`` saturated to ``[max(dt.lo, 0, rt.lo), min(dt.hi, rt.hi)]`` when both types saturate, the
    relu shifts by 0 (no second rounding) and the ranges meet (clamps to intersecting intervals
    compose to the clamp to their intersection); else None."""
    if dt.overflow is not Overflow.SAT or rt.overflow is not Overflow.SAT or dt.frac != rt.frac:
        return None
    lo, hi = max(dt.min_int, 0, rt.min_int), min(dt.max_int, rt.max_int)
    return (lo, hi) if lo <= hi else None


class Ctx:
    """What an op's compile function sees: the graph, placements, ROM builders."""

    def __init__(self, prog: "Program", graph: ir.Graph):
        self.prog, self.g = prog, graph

    def place(self, tensor: str) -> Place:
        return self.prog.places[tensor]

    def weights(self, w: np.ndarray) -> int:
        """Append a ``[K, N]`` weight matrix to the weight ROM (``ceil(N/L)`` words per k); its base word."""
        L = self.prog.L
        k, n = w.shape
        tiles = -(-n // L)
        base = len(self.prog.wrom)
        for kk in range(k):
            for t in range(tiles):
                row = [int(v) for v in w[kk, t * L:(t + 1) * L]]
                self.prog.wrom.append(row + [0] * (L - len(row)))
        return base

    def consts(self, pairs) -> int:
        base = len(self.prog.crom)
        self.prog.crom.extend((int(a), int(b)) for a, b in pairs)
        return base

    def table(self, tbl: ir.Table, prefix: str) -> dict:
        key = tuple(int(v) for v in tbl.values)  # equal tables (two layer norms' inverse square roots) once
        if key not in self.prog._tables:
            self.prog._tables[key] = len(self.prog.trom)
            self.prog.trom.extend(int(v) for v in tbl.values)
        return {f"{prefix}base": self.prog._tables[key], f"{prefix}shift": tbl.shift, f"{prefix}off": tbl.offset,
                f"{prefix}size": tbl.size, f"{prefix}uns": int(not tbl.out_type.signed)}

    def emit(self, unit, op, node, note="", **f):
        self.prog.instrs.append(Instr(unit, op, node.name, f, note))


def _row_addr(prefix: str, base: int, s1: int, s2: int, sc: int) -> dict:
    return {f"{prefix}base": base, f"{prefix}s1": s1, f"{prefix}s2": s2, f"{prefix}sc": sc}


def _uns(t: FixedType) -> int:
    """1 when a tensor's mantissas are unsigned (the data memory holds their raw bits)."""
    return int(not t.signed)


def _plain_rows(ctx: Ctx, node, src: str, dst: str, extra_b: str | None = None) -> dict:
    """Row addressing for a row-wise op: rows ``(h, r)``, ``N`` columns, each tensor with its strides."""
    a, d = ctx.place(src), ctx.place(dst)
    f = {"n1": a.heads, "n2": a.rows_per_head, "N": a.cols, "ua": _uns(ctx.g.type_of(src)),
         "ub": _uns(ctx.g.type_of(extra_b)) if extra_b is not None else 0}
    f.update(_row_addr("a", a.base, a.head_stride, a.pitch, 1))
    f.update(_row_addr("d", d.base, d.head_stride, d.pitch, 1))
    if extra_b is not None:
        b = ctx.place(extra_b)
        f.update(_row_addr("b", b.base, b.head_stride, b.pitch, 1))
    return f


# -- per-op compile functions (the registry backend rtl.compact) --------------------------
def compact(kind):
    return registry.implements(kind, BACKEND)


@compact(ir.Quantize)
def _c_quantize(n, g, ctx):
    raise FabformerError(f"{n.name}: the quantize node is done by the host; the compact program starts after it")


@compact(ir.Dense)
def _c_dense(n, g, ctx):
    xt, ot = g.type_of(n.inputs[0]), g.type_of(n.output)
    a, o = ctx.place(n.inputs[0]), ctx.place(n.output)
    K, N = n.weight.shape
    L = ctx.prog.L
    f_acc = xt.frac + n.weight_type.frac
    bsh = f_acc - n.bias_type.frac
    T = -(-N // L)
    rq = _rq_fields("rq", ot)
    relu = ctx.prog.fused_relu.get(n.name)
    if relu is not None:  # relu(rq(v)) written at once: rq(v) saturated to the ranges' intersection
        rq["rqlo"], rq["rqhi"] = relu_range(ot, g.type_of(relu.output))
    osm, ocs = o.pitch, 1
    if n.name in ctx.prog.transposed:  # the output written transposed: (m, c) at base + c * pitch + m
        o = ctx.place(ctx.prog.temps[ctx.prog.transposed[n.name]])
        osm, ocs = 1, o.pitch
    ctx.emit("mac", "dense", n, G=1, M=a.rows, T=T, K=K, Nlast=N - (T - 1) * L,
             aone=0, abuf=0, arl=0, ua=_uns(xt), ub=0, abase=a.base, asg=0, asm=a.pitch, brom=1,
             bbase=ctx.weights(n.weight), bsg=0, bsk=T,
             obase=o.base, osg=0, osm=osm, ocs=ocs, wbmode=0,
             cbase=ctx.consts((int(b) << bsh, 0) for b in n.bias),
             scale=0, rqsh=f_acc - ot.frac, note="+ relu" if relu is not None else
             ("transposed output" if ocs != 1 else ""), **rq)


@compact(ir.MatMul)
def _c_matmul(n, g, ctx):
    at, bt, ot = (g.type_of(t) for t in (*n.inputs, n.output))
    H, M, K = g.tensors[n.inputs[0]].shape
    Nn = g.tensors[n.output].shape[2]
    a, o = ctx.place(n.inputs[0]), ctx.place(n.output)
    L = ctx.prog.L
    b_src = n.inputs[1]
    if n.transpose_b and n.name in ctx.prog.transposed.values():  # bT written by b's dense
        b_src = ctx.prog.temps[n.name]
    elif n.transpose_b:  # b[h, n, k] -> bT[h, k, n] through the row unit, then the same product
        b_src = ctx.prog.temps[n.name]
        bp, tp = ctx.place(n.inputs[1]), ctx.place(b_src)
        f = {"n1": H, "n2": K, "N": Nn}
        f.update(_row_addr("a", bp.base, bp.head_stride, 1, bp.pitch))
        f.update(_row_addr("d", tp.base, K * tp.pitch, tp.pitch, 1))
        ctx.emit("row", "copy", n, note="transpose b", **f, **_rq_fields("rq", bt))
    b = ctx.place(b_src)
    T = -(-Nn // L)
    ctx.emit("mac", "matmul", n, G=H, M=M, T=T, K=K, Nlast=Nn - (T - 1) * L,
             aone=0, abuf=1, arl=-(-K // L), ua=_uns(at), ub=_uns(bt), abase=a.base, asg=a.head_stride,
             asm=a.pitch, brom=0, bbase=b.base // L,
             bsg=b.head_stride // L, bsk=b.pitch // L, obase=o.base, osg=o.head_stride, osm=o.pitch, ocs=1, wbmode=1,
             cbase=0, scale=n.scale, rqsh=at.frac + bt.frac + n.scale_frac - ot.frac, **_rq_fields("rq", ot))


@compact(ir.GlobalAvgPool)
def _c_pool(n, g, ctx):
    xt, ot = g.type_of(n.inputs[0]), g.type_of(n.output)
    x, o = ctx.place(n.inputs[0]), ctx.place(n.output)
    L = ctx.prog.L
    T = -(-x.cols // L)
    ctx.emit("mac", "pool", n, G=1, M=1, T=T, K=x.rows, Nlast=x.cols - (T - 1) * L,
             aone=1, abuf=0, arl=0, ua=0, ub=_uns(xt), abase=0, asg=0, asm=0, brom=0, bbase=x.base // L, bsg=0,
             bsk=x.pitch // L,
             obase=o.base, osg=0, osm=o.pitch, ocs=1, wbmode=1, cbase=0, scale=n.scale,
             rqsh=xt.frac + n.scale_frac - ot.frac, **_rq_fields("rq", ot))


def _check_same_type(n, g):
    if g.type_of(n.inputs[0]) != g.type_of(n.output):
        raise FabformerError(f"{n.name}: {n.kind} must keep its input type "
                             f"({g.type_of(n.inputs[0])} -> {g.type_of(n.output)})")


@compact(ir.SplitHeads)
def _c_split(n, g, ctx):
    _check_same_type(n, g)
    if n.output in ctx.prog.views:
        return  # a view of the input: no instruction
    x, o = ctx.place(n.inputs[0]), ctx.place(n.output)
    H = n.heads
    Tk, HD = g.tensors[n.inputs[0]].shape
    D = HD // H
    f = {"n1": H, "n2": Tk, "N": D}
    f.update(_row_addr("a", x.base, D, x.pitch, 1))
    f.update(_row_addr("d", o.base, o.head_stride, o.pitch, 1))
    ctx.emit("row", "copy", n, **f, **_rq_fields("rq", g.type_of(n.output)))


@compact(ir.MergeHeads)
def _c_merge(n, g, ctx):
    _check_same_type(n, g)
    if n.inputs[0] in ctx.prog.views:
        return  # the input was written in place
    x, o = ctx.place(n.inputs[0]), ctx.place(n.output)
    H, Tk, D = g.tensors[n.inputs[0]].shape
    f = {"n1": H, "n2": Tk, "N": D}
    f.update(_row_addr("a", x.base, x.head_stride, x.pitch, 1))
    f.update(_row_addr("d", o.base, D, o.pitch, 1))
    ctx.emit("row", "copy", n, **f, **_rq_fields("rq", g.type_of(n.output)))


@compact(ir.Flatten)
def _c_flatten(n, g, ctx):
    _check_same_type(n, g)
    if n.output in ctx.prog.views:
        return
    x, o = ctx.place(n.inputs[0]), ctx.place(n.output)
    f = {"n1": x.heads, "n2": x.rows_per_head, "N": x.cols}
    f.update(_row_addr("a", x.base, x.head_stride, x.pitch, 1))
    f.update(_row_addr("d", o.base, x.rows_per_head * x.cols, x.cols, 1))
    ctx.emit("row", "copy", n, **f, **_rq_fields("rq", g.type_of(n.output)))


@compact(ir.Add)
def _c_add(n, g, ctx):
    at, bt, ot = (g.type_of(t) for t in (*n.inputs, n.output))
    F = max(at.frac, bt.frac)
    ctx.emit("row", "add", n, **_plain_rows(ctx, n, n.inputs[0], n.output, n.inputs[1]),
             ash=F - at.frac, bsh=F - bt.frac, rqsh=F - ot.frac, **_rq_fields("rq", ot))


@compact(ir.Relu)
def _c_relu(n, g, ctx):
    if ctx.prog.views.get(n.inputs[0], (None, None))[1] == "fused":  # done by the dense producing its input
        return
    xt, ot = g.type_of(n.inputs[0]), g.type_of(n.output)
    ctx.emit("row", "relu", n, **_plain_rows(ctx, n, n.inputs[0], n.output), rqsh=xt.frac - ot.frac,
             **_rq_fields("rq", ot))


@compact(ir.Requantize)
def _c_requantize(n, g, ctx):
    xt, ot = g.type_of(n.inputs[0]), g.type_of(n.output)
    ctx.emit("row", "requantize", n, **_plain_rows(ctx, n, n.inputs[0], n.output), rqsh=xt.frac - ot.frac,
             **_rq_fields("rq", ot))


@compact(ir.Lookup)
def _c_lookup(n, g, ctx):
    ctx.emit("row", "lookup", n, **_plain_rows(ctx, n, n.inputs[0], n.output), **ctx.table(n.table, "t1"),
             **_rq_fields("rq", g.type_of(n.output)))


@compact(ir.Softmax)
def _c_softmax(n, g, ctx):
    ot = g.type_of(n.output)
    R, Fr = n.recip_bits, n.recip_table.out_type.frac
    ctx.emit("row", "softmax", n, **_plain_rows(ctx, n, n.inputs[0], n.output), **ctx.table(n.exp_table, "t1"),
             **ctx.table(n.recip_table, "t2"), R=R, rqsh=Fr - ot.frac, **_rq_fields("rq", ot))


@compact(ir.LayerNorm)
def _c_layernorm(n, g, ctx):
    ot, nt = g.type_of(n.output), n.norm_type
    R, Ft = n.invsqrt_bits, n.invsqrt_table.out_type.frac
    f = nt.frac + n.gamma_type.frac
    bshift = f - n.beta_type.frac
    cb = ctx.consts((int(ga), int(be) << bshift) for ga, be in zip(n.gamma, n.beta))
    ctx.emit("row", "layernorm", n, **_plain_rows(ctx, n, n.inputs[0], n.output), **ctx.table(n.invsqrt_table, "t2"),
             R=R, eps=n.eps, cbase=cb, zc0=Ft + R // 2 - nt.frac, rqsh=f - ot.frac,
             **_rq_fields("rq", ot), **_rq_fields("z", nt))


def mark_unimplemented() -> None:
    """Op kinds registered after these compile functions (newer IR kinds) are marked unsupported
    with the reason a user reads, so that the registry's coverage check names them as decided."""
    for kind in registry.op_kinds():
        if registry.find(kind, BACKEND) is None:
            registry.unsupported(kind, BACKEND, "the compact architecture has no instruction for it yet")


mark_unimplemented()


# -- the program -------------------------------------------------------------------------
class Program:
    """A compiled graph: instructions, memory placement and ROM images."""

    def __init__(self, graph: ir.Graph, lanes: int = LANES):
        if lanes < 1 or lanes & (lanes - 1):
            raise FabformerError(f"compact lanes must be a power of two, not {lanes}")
        self.g, self.L = graph, lanes
        q = [i for i, n in enumerate(graph.nodes) if n.kind == "quantize"]
        if len(q) != 1:
            raise FabformerError("the RTL backend needs exactly one quantize node (the host quantizes the "
                                 f"input); graph {graph.name!r} has {len(q)}")
        if len(graph.outputs) != 1:
            raise FabformerError(f"the RTL backend needs exactly one graph output, got {graph.outputs}")
        self.nodes = graph.nodes[q[0] + 1:]
        self.in_tensor, self.out_tensor = graph.nodes[q[0]].output, graph.outputs[0]
        if self.out_tensor == self.in_tensor:
            raise FabformerError(f"graph {graph.name!r} has no hardware after its quantize node")
        for n in self.nodes:
            registry.get(n, BACKEND)  # a clear error for an unsupported op kind
        self.instrs: list[Instr] = []
        self.wrom: list[list[int]] = []
        self.crom: list[tuple] = []
        self.trom: list[int] = []
        self._tables: dict = {}
        self.temps: dict = {}
        self.places: dict[str, Place] = {}
        self._allocate()
        ctx = Ctx(self, graph)
        for n in self.nodes:
            registry.get(n, BACKEND)(n, graph, ctx)
        if not self.wrom:
            self.wrom.append([0] * self.L)
        if not self.crom:
            self.crom.append((0, 0))
        if not self.trom:
            self.trom.append(0)

    # tensors: shapes, lifetimes, addresses -----------------------------------------------------
    def _shape(self, t):
        if t in self.temps.values():
            return self._temp_shape[t]
        s = self.g.tensors[t].shape
        if not s:
            return 1, 1
        return (int(np.prod(s[:-1])) if len(s) > 1 else 1), int(s[-1])

    def _views(self) -> dict:
        """Reshapes done by addressing alone: ``{tensor: (parent, kind)}``.  Split heads and flatten
        view their input, merge heads' input is written into the merged tensor; each needs the
        head width (or the row) to be whole words, and neither end of the hardware to be a view."""
        L, g = self.L, self.g
        views = {}
        ends = {self.in_tensor, self.out_tensor}
        for n in self.nodes:
            x, y = n.inputs[0], n.output
            if n.kind == "split_heads":
                d = g.tensors[y].shape[2]
                if d % L == 0 and y not in ends and x not in views:
                    views[y] = (x, "split")
            elif n.kind == "merge_heads":
                d = g.tensors[x].shape[2]
                if d % L == 0 and x not in ends and y not in views and self.g.producer(x) is not None:
                    views[x] = (y, "merge")
            elif n.kind == "flatten":
                s = g.tensors[x].shape
                if len(s) == 2 and s[1] % L == 0 and x not in views:
                    views[y] = (x, "flatten")
        return views

    def _fusions(self) -> tuple[dict, dict]:
        """Write-back fusions of a dense: ``{dense: relu node}`` where the relu is its only reader and
        one saturation (:func:`relu_range`) does both; ``{dense: matmul}`` where the dense's output,
        split into heads as a view, is only the transposed operand b of that matmul: the dense writes
        b transposed (no copy).  Neither when the dense's output is an end of the hardware."""
        g = self.g
        readers: dict[str, list] = {}
        for n in self.nodes:
            for t in n.inputs:
                readers.setdefault(t, []).append(n)
        ends = {self.in_tensor, self.out_tensor}
        relus, trans = {}, {}
        for n in self.nodes:
            if n.kind != "dense" or n.output in ends or n.output in self.views:
                continue
            rd = readers.get(n.output, [])
            if len(rd) != 1:
                continue
            r = rd[0]
            if r.kind == "relu" and r.output not in ends and r.output not in self.views and \
                    relu_range(g.type_of(n.output), g.type_of(r.output)) is not None:
                relus[n.name] = r
            elif r.kind == "split_heads" and self.views.get(r.output) == (n.output, "split") and \
                    len(g.tensors[n.output].shape) == 2:
                rs = readers.get(r.output, [])
                if len(rs) == 1 and rs[0].kind == "matmul" and rs[0].transpose_b and \
                        list(rs[0].inputs).count(r.output) == 1 and rs[0].inputs[1] == r.output:
                    trans[n.name] = rs[0].name
        return relus, trans

    def _allocate(self):
        """Tensor lifetimes (in node steps) to data-memory addresses, first fit, reusing freed space;
        a view shares its parent's storage, whose lifetime covers every member's."""
        L = self.L
        self._temp_shape, self._temp_heads = {}, {}
        self.views = self._views()
        self.fused_relu, self.transposed = self._fusions()
        life: dict[str, list] = {self.in_tensor: [-1, -1]}
        for i, n in enumerate(self.nodes):
            for t in n.inputs:
                life[t][1] = i
            life.setdefault(n.output, [i, i])
            if n.kind == "matmul" and n.transpose_b:
                h, nn, k = self.g.tensors[n.inputs[1]].shape
                tmp = f"{n.name}/b_transposed"
                self.temps[n.name] = tmp
                self._temp_shape[tmp] = (h * k, nn)
                self._temp_heads[tmp] = h
                life[tmp] = [i, i]
        for d, mm in self.transposed.items():  # bT written by the dense: live from it on
            life[self.temps[mm]][0] = next(i for i, n in enumerate(self.nodes) if n.name == d)
        for d, r in self.fused_relu.items():
            self.views[self.g.node(d).output] = (r.output, "fused")
        for d, mm in self.transposed.items():
            self.views[self.g.node(d).output] = (self.temps[mm], "transposed")
        life[self.out_tensor][1] = len(self.nodes)

        def root(t):
            while t in self.views:
                t = self.views[t][0]
            return t
        glife: dict[str, list] = {}
        for t, (s, e) in life.items():
            r = root(t)
            gl = glife.setdefault(r, [s, e])
            gl[0], gl[1] = min(gl[0], s), max(gl[1], e)
        live: list[tuple] = []  # (base, size, end, tensor)
        self.order = sorted(life, key=lambda t: (life[t][0], t))
        self.dm_words = 0
        for t in sorted(glife, key=lambda t: (glife[t][0], t)):
            start, end = glife[t]
            live = [x for x in live if x[2] >= start]  # a node's inputs stay live while it writes
            rows, cols = self._shape(t)
            pitch = -(-cols // L) * L
            size = rows * pitch
            base = 0
            for b, sz, _, _ in sorted(live):
                if base + size <= b:
                    break
                base = max(base, b + sz)
            live.append((base, size, end, t))
            self.places[t] = Place(base, rows, cols, pitch)
            self.dm_words = max(self.dm_words, (base + size) // L)
        self.lifetimes = life

        def place(t):
            if t in self.places:
                return self.places[t]
            parent, kind = self.views[t]
            pp = place(parent)
            shape = self.g.tensors[t].shape
            if kind in ("fused", "transposed"):  # the relu's output; b transposed (never read as itself)
                p = Place(pp.base, pp.rows, pp.cols, pp.pitch) if kind == "fused" else \
                    Place(pp.base, *self._shape(t), pp.pitch)
            elif kind == "split":
                h, r, d = shape
                p = Place(pp.base, h * r, d, pp.pitch, heads=h, hs=d)
            elif kind == "merge":
                h, r, d = shape
                p = Place(pp.base, h * r, d, pp.pitch, heads=h, hs=d)
            else:
                p = Place(pp.base, 1, int(np.prod(shape)), int(np.prod(shape)))
            self.places[t] = p
            return p
        for t in life:
            place(t)
        for t, p in self.places.items():  # 3-D plain tensors: heads for the row loops
            s = self.g.tensors[t].shape if t in self.g.tensors else ()
            if len(s) == 3 and p.heads == 1 and t not in self.views:
                p.heads, p.hs = s[0], s[1] * p.pitch
            elif t in self._temp_heads:
                p.heads = self._temp_heads[t]
                p.hs = p.rows // p.heads * p.pitch

    # numbers ---------------------------------------------------------------------------------
    @property
    def in_place(self) -> Place:
        return self.places[self.in_tensor]

    @property
    def out_place(self) -> Place:
        return self.places[self.out_tensor]

    def load_cycles(self) -> int:
        return self.in_place.rows * (self.in_place.pitch // self.L)

    def store_cycles(self) -> int:
        o = self.out_place
        return o.rows * (o.pitch // self.L + STORE_READ)

    def run_cycles(self) -> int:
        return sum(i.cycles(self.L) for i in self.instrs)

    def macs(self) -> int:
        return sum(n.macs(self.g) for n in self.nodes)

    def mac_cycles(self) -> int:
        return sum(i.cycles(self.L) for i in self.instrs if i.unit == "mac")

    # the program run in Python: the semantics the engine implements ------------------------------
    def execute(self, x: np.ndarray) -> np.ndarray:
        """Run the program on one sample's input mantissas; the output tensor's mantissas."""
        L = self.L
        dm = np.zeros(max(self.dm_words, 1) * L, dtype=object)
        p = self.in_place
        x = np.asarray(x).reshape(p.rows, p.cols)
        for r in range(p.rows):
            dm[p.base + r * p.pitch:p.base + r * p.pitch + p.cols] = [int(v) for v in x[r]]
        for ins in self.instrs:
            (self._exec_mac if ins.unit == "mac" else self._exec_row)(ins, dm)
        o = self.out_place
        out = np.array([[int(dm[o.base + r * o.pitch + c]) for c in range(o.cols)] for r in range(o.rows)],
                       dtype=np.int64)
        return out.reshape(self.g.tensors[self.out_tensor].shape)

    @staticmethod
    def _rq(f, v, sh, prefix="rq"):
        return rq_apply(v, sh, f[prefix + "rnd"], f[prefix + "sat"], f[prefix + "lo"], f[prefix + "hi"],
                        f[prefix + "mask"], f[prefix + "half"])

    def _tab(self, f, prefix, src):
        i = min(max((src >> f[prefix + "shift"]) - f[prefix + "off"], 0), f[prefix + "size"] - 1)
        return self.trom[f[prefix + "base"] + i]

    def _exec_mac(self, ins, dm):
        f, L = ins.f, self.L
        for gg in range(f["G"]):
            for m in range(f["M"]):
                for t in range(f["T"]):
                    acc = [0] * L
                    for k in range(f["K"]):
                        a = 1 if f["aone"] else dm[f["abase"] + gg * f["asg"] + m * f["asm"] + k]
                        w = f["bbase"] + gg * f["bsg"] + k * f["bsk"] + t
                        b = self.wrom[w] if f["brom"] else list(dm[w * L:(w + 1) * L])
                        acc = [acc[j] + a * int(b[j]) for j in range(L)]
                    nl = L if t < f["T"] - 1 else f["Nlast"]
                    for j in range(nl):
                        v = acc[j] + self.crom[f["cbase"] + t * L + j][0] if f["wbmode"] == 0 else acc[j] * f["scale"]
                        e = f["obase"] + gg * f["osg"] + m * f["osm"] + (t * L + j) * f["ocs"]
                        dm[e] = self._rq(f, v, f["rqsh"])

    def _exec_row(self, ins, dm):
        f, op = ins.f, ins.op
        for i1 in range(f["n1"]):
            for i2 in range(f["n2"]):
                ea = [f["abase"] + i1 * f["as1"] + i2 * f["as2"] + c * f["asc"] for c in range(f["N"])]
                ed = [f["dbase"] + i1 * f["ds1"] + i2 * f["ds2"] + c * f["dsc"] for c in range(f["N"])]
                xs = [int(dm[e]) for e in ea]
                if op == "copy":
                    ys = xs
                elif op == "add":
                    eb = [f["bbase"] + i1 * f["bs1"] + i2 * f["bs2"] + c * f["bsc"] for c in range(f["N"])]
                    ys = [self._rq(f, (x << f["ash"]) + (int(dm[e]) << f["bsh"]), f["rqsh"]) for x, e in zip(xs, eb)]
                elif op == "relu":
                    ys = [self._rq(f, max(x, 0), f["rqsh"]) for x in xs]
                elif op == "requantize":
                    ys = [self._rq(f, x, f["rqsh"]) for x in xs]
                elif op == "lookup":
                    ys = [self._tab(f, "t1", x) for x in xs]
                elif op == "softmax":
                    mx = max(xs)
                    es = [self._tab(f, "t1", mx - x) for x in xs]
                    s = sum(es)
                    p = s.bit_length() - 1
                    nsh = p - f["R"]
                    r = self._tab(f, "t2", s >> nsh if nsh >= 0 else s << -nsh)
                    ys = [self._rq(f, e * r, f["rqsh"] + p) for e in es]
                elif op == "layernorm":
                    N = f["N"]
                    S = sum(xs)
                    Q = sum((N * x - S) ** 2 for x in xs) + f["eps"]
                    sh = Q.bit_length() - 1 - f["R"]
                    sh -= sh % 2
                    t = self._tab(f, "t2", Q >> sh if sh >= 0 else Q << -sh)
                    zsh = f["zc0"] + sh // 2
                    ys = []
                    for c, x in enumerate(xs):
                        z = self._rq(f, (N * x - S) * t, zsh, "z")
                        ga, be = self.crom[f["cbase"] + c]
                        ys.append(self._rq(f, z * ga + be, f["rqsh"]))
                else:
                    raise FabformerError(f"{ins.node}: no row op {op!r}")
                for e, y in zip(ed, ys):
                    dm[e] = y

    # the listing ---------------------------------------------------------------------------------
    def listing(self) -> str:
        L = self.L
        lines = [f"; compact program of graph {self.g.name!r}: {len(self.instrs)} instructions, {L} MAC lanes",
                 f"; data memory {self.dm_words} words x {L} elements, weight ROM {len(self.wrom)} words, "
                 f"constant ROM {len(self.crom)} entries, table ROM {len(self.trom)} entries",
                 "; tensors (element address = base + row * pitch + col; live between node steps):"]
        for t in self.order:
            p = self.places[t]
            s, e = self.lifetimes[t]
            view = f"  view of {self.views[t][0]} ({self.views[t][1]})" if t in self.views else ""
            lines.append(f";   {t:<28} base {p.base:>6} rows {p.rows:>4} cols {p.cols:>4} pitch {p.pitch:>4}"
                         f" heads {p.heads} hs {p.head_stride:>4}  live {s:>3}..{e:<3}{view}")
        lines.append(f"; {'pc':>3}  {'unit':<4} {'op':<10} {'cycles':>7}  node / fields")
        for pc, ins in enumerate(self.instrs):
            keys = (["G", "M", "T", "K", "abase", "bbase", "obase", "rqsh"] if ins.unit == "mac"
                    else ["n1", "n2", "N", "abase", "dbase", "rqsh"])
            fs = " ".join(f"{k}={ins.f[k]}" for k in keys if k in ins.f)
            note = f" ({ins.note})" if ins.note else ""
            lines.append(f"  {pc:>3}  {ins.unit:<4} {ins.op:<10} {ins.cycles(L):>7}  {ins.node}{note}: {fs}")
        lines.append(f"; load {self.load_cycles()} + run {self.run_cycles()} + store {self.store_cycles()} cycles; "
                     f"{self.macs()} MACs; MAC instructions {self.mac_cycles()} cycles")
        return "\n".join(lines) + "\n"


def compile_graph(graph: ir.Graph, lanes: int = LANES) -> Program:
    graph.verify()
    return Program(graph, lanes)
