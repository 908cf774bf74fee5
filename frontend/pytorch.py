"""PyTorch models (``nn.Module`` or a ``torch.export`` program, Brevitas included) ->
fixed-point :class:`~fabformer.ir.Graph`.

The model is traced with :func:`torch.export.export` (a loaded ``.pt2`` archive already is
one).  The exported graph's ATen nodes are grouped into *units*: the nodes of one call of a
module that is converted whole (``nn.MultiheadAttention``, Brevitas' quantized modules),
or else one node each (``aten.linear``, ``aten.layer_norm``, ``aten.add``, …; the
``nn.Module`` that called it is named in messages).  There is one :class:`Handler` per
unit class, as for Keras: every unit's ``check`` runs before anything is built, so one
error lists every unsupported module and function.

Types follow the Keras frontend: the build runs with provisional types, the float graph
runs over the calibration data, and the build runs again with ``activation_bits`` wide
types whose integer part comes from the ranges.  Brevitas quantizers with power-of-two
scales and round-half-to-even (Brevitas' default) or floor rounding give exact types instead; each one is checked against the
values Brevitas itself computes on the calibration data, so a converted quantizer that
would not reproduce Brevitas bit for bit is refused, never approximated.

Token ids and masks: an integer model input of token ids feeds ``nn.Embedding`` (``embedding``); a unit
computed from parameters alone (``self.pos(torch.arange(T))``, ``generate_square_subsequent_mask``) is a
constant that PyTorch evaluates, added by ``add_const`` or read as a mask.  A padding mask ``ids == PAD``
builds no op: it is carried as a :class:`_Mark` (the IR tensor nonzero where a token is kept: the ids for
PAD 0, else ``ids - PAD``) through PyTorch's mask handling to the attention, whose mask on the scores is
read on the calibration data and must be a key padding mask, a causal mask or both (``mask_fill``,
``causal_fill``), or to the masked mean ``(h * keep).sum(1) / keep.sum(1)`` (``masked_avg_pool``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import tables
from ..errors import ConversionError, FabformerError
from ..fixed import FixedType, Overflow, Rounding, bits_for, quantize_float
from ..ir import (MAX_TENSOR_BITS, Add, AddConst, CausalFill, Dense, Embedding, Flatten, GlobalAvgPool, Graph,
                  LayerNorm, Lookup, MaskedAvgPool, MaskFill, MatMul, MergeHeads, Quantize, Relu, Requantize,
                  Softmax, SplitHeads)
from ..requant import weight_type
from .config import ConvertConfig
from .handlers import Handler, Handlers
from .keras import _FOLDABLE, GraphBuilder, _check_overrides

__all__ = ["convert", "export", "load_torch_model", "torch_predict", "is_torch_model", "TorchModel", "HANDLERS",
           "SUPPORTED"]

HANDLERS = Handlers("torch")  # one handler per module class (converted whole) or ATen function
#: ATen functions that are identities in an inference graph
_IDENTITY = {"dropout", "contiguous", "clone", "detach", "alias", "_assert_tensor_metadata",
             "feature_dropout", "alpha_dropout", "lift_fresh_copy"}
_ROUNDERS = {"round": "round half to even", "floor": "floor", "ceil": "ceil", "trunc": "round toward zero"}


# -- torch access ------------------------------------------------------------------
def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - the extra is installed in CI
        raise FabformerError("PyTorch models need the Python package 'torch' (pip install 'fabformer[torch]')") \
            from None
    return torch


def is_torch_model(model) -> bool:
    """True for an ``nn.Module``, an ``ExportedProgram`` or a :class:`TorchModel` (torch is not
    imported for other models)."""
    import sys
    if isinstance(model, TorchModel):
        return True
    if "torch" not in sys.modules:
        return False
    torch = sys.modules["torch"]
    return isinstance(model, (torch.nn.Module, torch.export.ExportedProgram))


class TorchModel:
    """A PyTorch model as the applications call a reference model: ``predict(x)`` gives its float
    outputs as NumPy.  It runs on CUDA through PyTorch where a GPU is present (``device``), else on
    the CPU; ``program`` is the ``torch.export`` program, ``name`` its file stem."""

    def __init__(self, program, name: str = "model", device: str | None = None):
        torch = _torch()
        self.program = program
        self.name = name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def predict(self, x, verbose=0, batch_size: int = 4096):
        return torch_predict(self.program, x, device=self.device, batch=batch_size)

    def __call__(self, x, training: bool = False):
        return self.predict(x)

    def __repr__(self):
        return f"TorchModel({self.name!r}, device={self.device!r})"


EXPORT_BATCH = 64  # batch size of the programs fabformer exports (static shapes; inputs run in batches of it)


def export(model, example):
    """``torch.export`` a module in eval mode on ``example`` (a batch of inputs, padded or cut to
    :data:`EXPORT_BATCH`: the program's batch size is fixed)."""
    torch = _torch()
    if isinstance(model, torch.export.ExportedProgram):
        return model
    if not isinstance(model, torch.nn.Module):
        raise FabformerError(f"not a PyTorch model: {type(model).__name__}; give an nn.Module or an ExportedProgram")
    ex = np.asarray(example)
    dt = np.int64 if np.issubdtype(ex.dtype, np.integer) else np.float32  # token ids stay integers
    ex = ex.astype(dt)[:EXPORT_BATCH]
    ex = np.concatenate([ex, np.zeros((EXPORT_BATCH - len(ex),) + ex.shape[1:], dt)])
    x = torch.as_tensor(ex)
    model.eval()
    try:
        return torch.export.export(model, (x,))
    except Exception as e:
        raise ConversionError([f"model {type(model).__name__}: torch.export cannot trace it "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"]) from None


def save_program(program, path) -> None:
    """``torch.export.save`` without the per-node source locations (``stack_trace``: file paths of
    the machine that exported), so a committed archive names no machine's folders."""
    torch = _torch()
    for node in program.graph_module.graph.nodes:
        node.meta.pop("stack_trace", None)
    torch.export.save(program, str(path))


def load_torch_model(path):
    """Load a ``torch.export`` archive (``.pt2``).  Nothing in it is run as Python: the archive
    holds an ATen graph and tensors (read with PyTorch's weights-only loader)."""
    from pathlib import Path
    p = Path(path)
    if not p.exists():
        raise FabformerError(f"model file {str(p)!r} does not exist")
    if p.suffix != ".pt2":
        raise FabformerError(f"PyTorch models are read from torch.export archives (.pt2), not {p.suffix!r} "
                             f"(pickled .pt/.pth files could run code on load); save with torch.export.save")
    torch = _torch()
    try:
        return torch.export.load(str(p))
    except Exception as e:
        raise FabformerError(f"cannot load torch.export archive {str(p)!r}: {type(e).__name__}: {e}") from None


def torch_predict(model, x, device: str = "cpu", batch: int = 4096) -> np.ndarray:
    """The PyTorch model's own float32 outputs (an ``nn.Module`` or an exported program)."""
    torch = _torch()
    if isinstance(model, torch.export.ExportedProgram):
        fixed = _static_batch(model)
        batch = fixed or batch
        dt = _input_dtype(model)
        m = model.module().to(device)
    else:
        fixed = None
        dt = np.int64 if np.issubdtype(np.asarray(x).dtype, np.integer) else np.float32  # token ids stay integers
        m = model.eval().to(device)
    with torch.no_grad():
        return _batched(lambda xb: m(torch.as_tensor(xb, device=device)).detach().to("cpu").numpy(),
                        np.asarray(x).astype(dt), batch, fixed).astype(np.float64)


def _static_batch(ep) -> int | None:
    """The batch size an exported program was traced with when it is fixed, else None."""
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            n = next(n for n in ep.graph.nodes if n.name == spec.arg.name)
            b = n.meta["val"].shape[0]
            return int(b) if isinstance(b, int) else None
    return None


def _input_dtype(ep):
    """The NumPy dtype of the program's (first) input: int64 for token ids, else float32."""
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            n = next(n for n in ep.graph.nodes if n.name == spec.arg.name)
            v = n.meta.get("val")
            return np.int64 if v is not None and not v.dtype.is_floating_point else np.float32
    return np.float32


def _batched(fn, x: np.ndarray, batch: int, fixed: int | None):
    """``fn`` over ``x`` in batches; a fixed batch size pads the last batch (then drops the padding)."""
    outs = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        n = len(xb)
        if fixed and n < fixed:
            xb = np.concatenate([xb, np.zeros((fixed - n,) + xb.shape[1:], dtype=xb.dtype)])
        outs.append(fn(xb)[:n])
    return np.concatenate(outs) if outs else np.zeros((0,))


# -- the exported graph as units ----------------------------------------------------------
def _op(node) -> str:
    t = node.target
    return getattr(getattr(t, "_overloadpacket", None), "__name__", None) or getattr(t, "__name__", str(t))


def _stack(node) -> list[tuple[str, str]]:
    """(module path, class name) from the outermost module to the innermost; the root is left out."""
    out = []
    for v in (node.meta.get("nn_module_stack") or {}).values():
        path, cls = v[0], v[1]
        cls = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
        if path:
            out.append((path, cls))
    return out


def _short(cls: str) -> str:
    return cls.rsplit(".", 1)[-1]


@dataclass
class _Unit:
    """One module call converted whole, or one ATen function node."""

    name: str  # the IR name (module path, or path/node for a function)
    cls: str  # handler key: a module class name, or "aten.<function>"
    module: str  # the module that made it: "path (Class)", or "the model"
    nodes: list = field(default_factory=list)
    inputs: list = field(default_factory=list)  # external fx nodes carrying data (not parameters)
    output: object = None  # the fx node whose value leaves the unit
    outputs: list = field(default_factory=list)
    const: bool = False  # computed from parameters and constants alone: PyTorch evaluates it once

    @property
    def node(self):
        return self.nodes[0]


def _opaque(cls: str) -> bool:
    return cls.startswith("brevitas.nn.") or HANDLERS.get(_short(cls)) is not None


class _Program:
    """An exported program, its units, and (once :meth:`evaluate` ran) every node's value."""

    def __init__(self, ep):
        self.ep = ep
        sig = ep.graph_signature
        self.params = {}  # placeholder name -> tensor
        self.user_inputs = []
        for spec in sig.input_specs:
            name = spec.arg.name
            kind = spec.kind.name
            if kind == "USER_INPUT":
                self.user_inputs.append(name)
            elif kind in ("PARAMETER", "BUFFER"):
                self.params[name] = ep.state_dict[spec.target] if spec.target in ep.state_dict \
                    else ep.constants[spec.target]
            elif kind in ("CONSTANT_TENSOR", "CUSTOM_OBJ"):
                self.params[name] = ep.constants[spec.target]
        self.nodes = list(ep.graph.nodes)
        self.by_name = {n.name: n for n in self.nodes}
        self.values: dict = {}
        self.units = self._units()

    def _units(self) -> list[_Unit]:
        units: list[_Unit] = []
        of_node: dict = {}
        open_units: dict = {}
        names: dict = {}
        for n in self.nodes:
            if n.op != "call_function":
                continue
            st = _stack(n)
            key = next(((p, c) for p, c in st if _opaque(c)), None)
            if key is not None:
                path, cls = key
                u = open_units.get(path)
                if u is None:
                    u = _Unit(path, _short(cls), f"module {path!r} ({_short(cls)})")
                    open_units[path] = u
                    units.append(u)
                u.nodes.append(n)
                of_node[n.name] = u
                continue
            op = _op(n)
            path, cls = st[-1] if st else ("", "")
            where = f"module {path!r} ({_short(cls)})" if path else "the model"
            leaf = path and _short(cls) in _LEAF_MODULES
            base = path if leaf else (f"{path}/{n.name}" if path else n.name)
            u = _Unit(base, f"aten.{op}", where, [n])
            names[base] = names.get(base, 0) + 1
            units.append(u)
            of_node[n.name] = u
        self.of_node = of_node
        for u in units:
            inside = {m.name for m in u.nodes}
            ins = []
            for m in u.nodes:
                for a in m.all_input_nodes:
                    if a.name in inside or a.name in self.params:
                        continue
                    if a.op == "placeholder" or a.name in of_node:
                        if a not in ins and not _param_only(a, self.params):
                            ins.append(a)
            u.inputs = ins
            outs = [m for m in u.nodes if any(c.name not in inside for c in m.users)]
            u.outputs = outs
            u.output = outs[-1] if outs else u.nodes[-1]
            u.const = not ins and all(_param_only(m, self.params) for m in u.nodes)
        return units

    def evaluate(self, x) -> None:
        """Run the exported graph on ``x`` (float32) and keep every node's value (batched along
        axis 0 where the node has the batch axis; a fixed-batch export runs batch by batch)."""
        torch = _torch()
        fixed = _static_batch(self.ep)
        x = np.asarray(x).astype(_input_dtype(self.ep))
        parts: list = []

        class _Keep(torch.fx.Interpreter):
            def run_node(self, n):
                r = super().run_node(n)
                parts[-1][n.name] = r
                return r

        def run(xb):
            parts.append({})
            args = [torch.as_tensor(xb) if spec.arg.name in self.user_inputs else self.params[spec.arg.name]
                    for spec in self.ep.graph_signature.input_specs]
            with torch.no_grad():
                _Keep(self.ep.graph_module).run(*args)
            return np.zeros(len(xb))

        n = len(x)
        _batched(run, x, fixed or max(n, 1), fixed)
        vals = self.values
        vals.clear()
        b = fixed or n
        const = {m.name for u in self.units if u.const for m in u.nodes}
        for k, v in parts[0].items():
            if k in const:
                vals[k] = v
            elif isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == b and len(parts) > 1 \
                    or (isinstance(v, torch.Tensor) and fixed is None):
                vals[k] = torch.cat([p[k] for p in parts])[:n] if len(parts) > 1 else v
            else:
                vals[k] = v

    def value(self, node) -> np.ndarray | None:
        """A node's value as float64 (parameters included); None when it is not a tensor."""
        torch = _torch()
        if node is None:
            return None
        v = self.params.get(node.name) if node.name in self.params else self.values.get(node.name)
        if isinstance(v, torch.Tensor):
            return v.detach().to("cpu").to(torch.float64).numpy()
        if isinstance(v, (int, float)):
            return np.asarray(v, dtype=np.float64)
        return None


def _param_only(node, params) -> bool:
    """True when ``node`` is computed from parameters and constants alone (no input data)."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        if n.op == "placeholder":
            if n.name not in params:
                return False
            continue
        todo.extend(n.all_input_nodes)
    return True


_LEAF_MODULES = {"Linear", "LayerNorm", "ReLU", "GELU", "Flatten", "Dropout", "Identity", "Embedding",
                 "Softmax", "Tanh", "Sigmoid", "Conv1d", "Conv2d", "LSTM", "GRU", "BatchNorm1d"}


def _shape(node) -> tuple:
    """A node's shape; a symbolic (free) batch size reads as -1."""
    v = node.meta.get("val")
    return tuple(s if isinstance(s, int) else -1 for s in v.shape) if hasattr(v, "shape") else ()


def _data_nodes(u: _Unit) -> set:
    """Names of the unit's nodes that depend on its data input (not weights or scales)."""
    srcs = {a.name for a in u.inputs}
    out = set()
    for m in u.nodes:
        if any(a.name in srcs or a.name in out for a in m.all_input_nodes):
            out.add(m.name)
    return out


# -- the builder ---------------------------------------------------------------------
class _Builder(GraphBuilder):
    def __init__(self, prog: _Program, cfg: ConvertConfig, ranges: dict | None, name: str):
        super().__init__(cfg, ranges, name)
        self.prog = prog
        self.float_units: list = []  # units whose types came from calibration, not from quantizers
        self.uses = {}
        for u in prog.units:
            for a in u.inputs:
                self.uses[a.name] = self.uses.get(a.name, 0) + 1

    def src(self, node):
        if node.name not in self.tensor_of and node.name in self.prog.values or node.name in self.prog.params:
            raise _ConstantArgument(node)
        return self.tensor_of[node.name]

    def const(self, node) -> np.ndarray:
        """The value of a constant (a parameter, or computed from parameters alone) as float64."""
        return self.prog.value(node)

    def qtype(self, tensor):
        return self.g.type_of(tensor)

    def set(self, u: _Unit, tensor: str) -> None:
        self.tensor_of[u.output.name] = tensor

    def build(self) -> Graph:
        p = self.prog
        (xin,) = p.user_inputs
        shape = _shape(p.by_name[xin])[1:]
        x = self.g.add_input("input", shape)
        if _input_dtype(p.ep) == np.int64:  # token ids: whole numbers up to the largest vocabulary, saturating
            vocab = [_table(p, u).shape[0] for u in p.units if u.cls in _EmbeddingHandler.classes and not u.const]
            hi = max(vocab) - 1 if vocab else (1 << (self.cfg.activation_bits - 1)) - 1
            t = self.cfg.layers.get("input", {}).get("output") or \
                FixedType(max(bits_for(0, hi), 1), 0, False, Rounding.RND_CONV, Overflow.SAT)
            self.roles[("input", "output")] = "input/q"
        else:
            t = self.act_type("input", "output", "input/q")
        self.tensor_of[xin] = self.add(Quantize("input/quantize", (x,), "input/q"), t)
        for u in p.units:
            if u.const:
                continue  # evaluated by PyTorch; its consumers read the value (a positional table, a causal mask)
            if u.cls.startswith("aten.") and u.node.op == "call_function" and _op(u.node) in _IDENTITY:
                self.tensor_of[u.node.name] = self.src(u.inputs[0]) if u.inputs else None
                continue
            if any(a.name not in self.tensor_of for a in u.inputs):
                continue  # an earlier unit could not be built: its problem is already recorded
            h = HANDLERS.get(u.cls)
            marks = [a for a in u.inputs if isinstance(self.tensor_of[a.name], _Mark)]
            if marks and not getattr(h, "takes_masks", False):
                self.problems.append(f"{_where(u)}: takes the padding mask {marks[0].name!r} "
                                     f"({self.tensor_of[marks[0].name].what}); a padding mask (ids == PAD) goes "
                                     f"to attention (key_padding_mask / src_key_padding_mask) or to the masked "
                                     f"mean (h * keep).sum(1) / keep.sum(1) only")
                continue
            try:
                h.build(self, u)
            except _ConstantArgument as e:
                self.problems.append(f"{_where(u)}: takes the constant {e.node.name!r} (computed from parameters "
                                     f"alone) where a tensor computed from the input is expected; constants are "
                                     f"supported added with + (a positional table) and as attention masks")
        out = p.ep.graph.output_node().args[0]
        if self.problems:
            return self.g
        res = self.tensor_of.get(out[0].name)
        if not isinstance(res, str):
            self.problems.append(f"the model returns {out[0].name!r}, which is not computed from the input by "
                                 f"mapped functions (a constant or a mask)")
            return self.g
        self.g.outputs = [res]
        return self.g

    # shared builds --------------------------------------------------------------
    def dense(self, name, src, kernel, bias, wt=None, bt=None):
        """A Dense op from a float kernel [in, out] and bias (quantized here unless wt/bt are given)."""
        c = self.cfg
        xt = self.qtype(src)
        role = name.split("/", 1)[1] + "_" if "/" in name else ""
        layer = name.split("/", 1)[0]
        if wt is None:
            wt = c.layers.get(layer, {}).get(role + "weight") or weight_type(kernel, c.weight_bits)
            self.roles[(layer, role + "weight")] = name
            w = quantize_float(kernel, wt)
        else:
            w = np.round(np.asarray(kernel) * 2.0 ** wt.frac).astype(np.int64)
        if bias is None:
            bias = np.zeros(kernel.shape[1])
        pf = xt.frac + wt.frac
        if bt is None:
            bt = c.layers.get(layer, {}).get(role + "bias") or weight_type(bias, c.bias_bits)
            self.roles[(layer, role + "bias")] = name
            if bt.frac > pf:  # bias finer than the product: round it to the product's grid
                bt = bt.with_(frac=pf, width=max(2, bt.width - (bt.frac - pf)))
            b = quantize_float(bias, bt)
        else:
            if bt.frac > pf:
                self.problems.append(f"{name}: the quantized bias (scale 2**-{bt.frac}) is finer than the "
                                     f"accumulator (input x weight scale 2**-{pf}); the IR adds the bias on the "
                                     f"accumulator's grid: quantize the bias with scale input_scale * weight_scale "
                                     f"or coarser")
                bt = bt.with_(frac=pf)
            b = np.round(np.asarray(bias) * 2.0 ** bt.frac).astype(np.int64)
        return Dense(name, (src,), name, weight=w, weight_type=wt, bias=b, bias_type=bt)

    def softmax(self, layer, name, src):
        c = self.cfg
        t = c.layers.get(layer, {}).get("probs") or FixedType(
            c.softmax_bits, c.softmax_bits - 1, False, Rounding.RND, Overflow.SAT)
        self.roles[(layer, "probs")] = name
        op = Softmax(name, (src,), name, exp_table=tables.exp_table(self.qtype(src).frac, c.exp_bits, c.table_index_bits),
                     recip_table=tables.recip_table(c.recip_bits, c.recip_out_bits), recip_bits=c.recip_bits)
        return self.add(op, t)

    def keep_tensor(self, u: _Unit, ids: str, pad: int) -> str | None:
        """The ``[T]`` tensor nonzero where a token is kept: the ids for PAD = 0, else ``ids - PAD`` (exact)."""
        it = self.qtype(ids)
        if not 0 <= pad <= it.max_int:
            self.problems.append(f"{_where(u)}: PAD {pad} is not a token id; valid: 0..{it.max_int} (the ids' "
                                 f"range, {it})")
            return None
        if pad == 0:
            return ids
        name = f"input/keep{pad}"
        if name not in self.g.tensors:
            shape = tuple(self.g.tensors[ids].shape)
            ct = FixedType(max(bits_for(-pad, -pad, True), 2), 0, True, Rounding.RND, Overflow.SAT)
            t = FixedType(max(bits_for(-pad, it.max_int - pad, True), 2), 0, True, Rounding.RND, Overflow.SAT)
            self.add(AddConst(name, (ids,), name, const=np.full(shape, -pad, np.int64), const_type=ct), t)
        return name

    def mask_scores(self, layer: str, scores: str, keep: str | None, causal: bool) -> str:
        """Scores with masked entries at a value so far below every score that the softmax gives them 0
        (as the Keras frontend does)."""
        st = self.qtype(scores)
        ints = math.ceil(math.log2(abs(st.min_value) + 16)) + 1
        frac = min(st.frac, MAX_TENSOR_BITS - ints)
        t = FixedType(ints + frac, frac, True, self.cfg.rounding, Overflow.SAT)
        name = f"{layer}/masked"
        if keep is None:
            return self.add(CausalFill(name, (scores,), name), t)
        return self.add(MaskFill(name, (scores, keep), name, causal=causal), t)

    def quantizer(self, u: _Unit, src: str, t: FixedType, relu: bool) -> str:
        """Apply an exact quantizer of type ``t`` (after a ReLU when ``relu``) to ``src``."""
        prod = self.g.producer(src)
        single = self.uses.get(u.inputs[0].name, 0) <= 1 and prod is not None and isinstance(prod, _FOLDABLE) \
            and not any(src in n.inputs for n in self.g.nodes)
        if relu:
            if single:  # round the accumulator once, to the relu's frac; the sign bit saturates negatives
                self.g.retype(src, FixedType(t.width + 1, t.frac, True, t.rounding, Overflow.SAT))
            return self.add(Relu(u.name, (src,), u.name), t)
        if single:
            self.g.retype(src, t)
            return src
        return self.add(Requantize(u.name, (src,), u.name), t)


# -- one handler per unit class -------------------------------------------------------
def _where(u: _Unit) -> str:
    if u.cls.startswith("aten."):
        return f"function {u.cls} in {u.module}"
    return u.module


@HANDLERS.register
class _LinearHandler(Handler):
    classes = ("aten.linear",)

    def check(self, u, where):
        if len(_shape(u.node)) > 3:
            return [f"{where}: linear over a {len(_shape(u.node)) - 1}-D input not supported (1-D or 2-D per sample)"]
        return []

    def build(self, bld, u):
        n = u.node
        p = bld.prog
        w = p.value(n.args[1])
        b = p.value(n.args[2]) if len(n.args) > 2 and n.args[2] is not None else None
        src = bld.src(n.args[0])
        op = bld.dense(u.name, src, w.T, b)
        bld.float_units.append(u.name)
        bld.set(u, bld.add(op, bld.act_type(u.name, "output", u.name)))


@HANDLERS.register
class _LayerNormHandler(Handler):
    classes = ("aten.layer_norm",)

    def check(self, u, where):
        n = u.node
        shape = n.args[1]
        if list(shape) != [_shape(n)[-1]]:
            return [f"{where}: normalized_shape {list(shape)} not supported; only the last axis ({_shape(n)[-1]})"]
        return []

    def build(self, bld, u):
        n = u.node
        p = bld.prog
        c = bld.cfg
        src = bld.src(n.args[0])
        xt = bld.qtype(src)
        N = _shape(n)[-1]
        gamma = p.value(n.args[2]) if len(n.args) > 2 and n.args[2] is not None else np.ones(N)
        beta = p.value(n.args[3]) if len(n.args) > 3 and n.args[3] is not None else np.zeros(N)
        eps = float(n.args[4]) if len(n.args) > 4 else 1e-5
        ov = c.layers.get(u.name, {})
        norm_t = ov.get("norm") or c.act(c.norm_bits, c.norm_bits - 2)
        g_eff = gamma * math.sqrt(N)
        gt = ov.get("gamma") or weight_type(g_eff, c.bias_bits)
        bt = ov.get("beta") or weight_type(beta, c.bias_bits)
        if bt.frac > norm_t.frac + gt.frac:
            bt = bt.with_(frac=norm_t.frac + gt.frac)
        for r in ("norm", "gamma", "beta"):
            bld.roles[(u.name, r)] = u.name
        e = max(1, round(eps * N ** 3 * 2.0 ** (2 * xt.frac)))
        t = bld.act_type(u.name, "output", u.name)
        op = LayerNorm(u.name, (src,), u.name, gamma=quantize_float(g_eff, gt), gamma_type=gt,
                       beta=quantize_float(beta, bt), beta_type=bt, eps=e,
                       invsqrt_table=tables.invsqrt_table(c.invsqrt_bits, c.recip_out_bits),
                       invsqrt_bits=c.invsqrt_bits, norm_type=norm_t)
        bld.float_units.append(u.name)
        bld.set(u, bld.add(op, t))


@HANDLERS.register
class _ReluHandler(Handler):
    classes = ("aten.relu",)

    def build(self, bld, u):
        src = bld.src(u.node.args[0])
        t = bld.act_type(u.name, "output", u.name, signed=False)
        bld.set(u, bld.add(Relu(u.name, (src,), u.name), t))


@HANDLERS.register
class _GeluHandler(Handler):
    classes = ("aten.gelu",)

    def build(self, bld, u):
        n = u.node
        approx = n.kwargs.get("approximate", n.args[1] if len(n.args) > 1 else "none")
        fn = "gelu_tanh" if approx == "tanh" else "gelu"
        src = bld.src(n.args[0])
        t = bld.act_type(u.name, "output", u.name)
        tab = tables.function_table(fn, bld.qtype(src), t, bld.cfg.table_index_bits)
        bld.set(u, bld.add(Lookup(u.name, (src,), u.name, table=tab), t))


@HANDLERS.register
class _AddHandler(Handler):
    """``a + b`` of two tensors of one shape (residuals) -> ``add``; a tensor plus a constant (a positional
    table ``self.pos(torch.arange(T))``, an ``nn.Parameter``, a number) -> ``add_const``."""

    classes = ("aten.add",)

    def check(self, u, where):
        n = u.node
        fx = _torch_fx_node()
        if len(n.args) != 2:
            return [f"{where}: add with {len(n.args)} operands not supported"]
        if n.kwargs.get("alpha", 1) != 1:
            return [f"{where}: add with alpha={n.kwargs['alpha']} not supported"]
        if len(u.inputs) == 2 and _shape(n.args[0]) != _shape(n.args[1]):
            return [f"{where}: add of shapes {_shape(n.args[0])} and {_shape(n.args[1])} (broadcasting) not supported"]
        if not all(isinstance(a, (fx, int, float)) for a in n.args):
            return [f"{where}: add of {[type(a).__name__ for a in n.args]} not supported"]
        return []

    def build(self, bld, u):
        n = u.node
        data = [a for a in n.args if hasattr(a, "name") and a in u.inputs]
        if len(data) == 2:
            a, b = bld.src(n.args[0]), bld.src(n.args[1])
            t = bld.act_type(u.name, "output", u.name)
            return bld.set(u, bld.add(Add(u.name, (a, b), u.name), t))
        (d,) = data
        other = n.args[1] if n.args[0] is d else n.args[0]
        src = bld.src(d)
        c = np.asarray(bld.const(other) if hasattr(other, "name") else float(other), dtype=np.float64)
        shape = tuple(bld.g.tensors[src].shape)
        if c.ndim > len(shape) and c.shape[0] == 1:  # a leading batch axis of 1 (an nn.Parameter [1, T, D])
            c = c.reshape(c.shape[1:])
        try:
            c = np.broadcast_to(c, shape)
        except ValueError:
            bld.problems.append(f"{_where(u)}: the constant of shape {c.shape} does not broadcast to one sample "
                                f"{shape} (the batch axis left out)")
            return
        ct = bld.cfg.layers.get(u.name, {}).get("const") or weight_type(c, bld.cfg.bias_bits)
        bld.roles[(u.name, "const")] = u.name
        t = bld.act_type(u.name, "output", u.name)
        bld.float_units.append(u.name)
        bld.set(u, bld.add(AddConst(u.name, (src,), u.name, const=quantize_float(c, ct), const_type=ct), t))


def _torch_fx_node():
    return _torch().fx.Node


def _flat_ok(u) -> str | None:
    """None when the reshape makes [batch, everything] of a [batch, T, D] tensor (row-major)."""
    ins, out = _shape(u.inputs[0]) if u.inputs else (), _shape(u.node)
    if len(out) == 2 and len(ins) == 3 and out[1] == ins[1] * ins[2]:
        return None
    if ins == out:
        return None
    return f"reshape {ins} -> {out} not supported; only flattening (batch, tokens, features) to (batch, tokens*features)"


@HANDLERS.register
class _FlattenHandler(Handler):
    classes = ("aten.flatten", "aten.view", "aten.reshape", "aten._unsafe_view")
    takes_masks = True

    def check(self, u, where):
        if u.inputs and _mask_derived(u.inputs[0]) and _op(u.inputs[0]) in ("eq", "ne", "bitwise_not",
                                                                             "logical_not", "unsqueeze", "to"):
            return []  # a view of a padding mask (checked where it is used)
        r = _flat_ok(u)
        return [f"{where}: {r}"] if r else []

    def build(self, bld, u):
        src = bld.src(u.inputs[0])
        if isinstance(src, _Mark):
            return bld.set(u, src)
        if _shape(u.inputs[0]) == _shape(u.node):
            return bld.set(u, src)
        bld.set(u, bld.add(Flatten(u.name, (src,), u.name), bld.qtype(src)))


@HANDLERS.register
class _MeanHandler(Handler):
    classes = ("aten.mean",)

    def check(self, u, where):
        n = u.node
        ins = _shape(n.args[0])
        dims = n.args[1] if len(n.args) > 1 else None
        keep = n.args[2] if len(n.args) > 2 else n.kwargs.get("keepdim", False)
        dims = [d % len(ins) for d in dims] if dims is not None else None
        if len(ins) != 3 or dims != [1] or keep:
            return [f"{where}: mean over dims {n.args[1] if len(n.args) > 1 else 'all'} of shape {ins} "
                    f"(keepdim={keep}) not supported; only the mean over the sequence: x.mean(dim=1)"]
        return []

    def build(self, bld, u):
        src = bld.src(u.node.args[0])
        steps = bld.g.tensors[src].shape[0]
        t = bld.act_type(u.name, "output", u.name)
        bld.set(u, bld.add(GlobalAvgPool(u.name, (src,), u.name, scale=round(2 ** 16 / steps), scale_frac=16), t))


@HANDLERS.register
class _DropoutHandler(Handler):
    classes = tuple(f"aten.{k}" for k in sorted(_IDENTITY))

    def check(self, u, where):
        n = u.node
        if _op(n) in ("dropout", "feature_dropout", "alpha_dropout") and len(n.args) > 2 and n.args[2]:
            return [f"{where}: dropout in training mode; export the model in eval mode"]
        return []

    def build(self, bld, u):  # pragma: no cover - identities are resolved in _Builder.build
        bld.set(u, bld.src(u.inputs[0]))


def _table(prog: _Program, u: _Unit) -> np.ndarray:
    """The embedding table [vocabulary, depth] of an Embedding unit (float64)."""
    n = next(m for m in u.nodes if _op(m) == "embedding")
    return prog.value(n.args[0])


@HANDLERS.register
class _EmbeddingHandler(Handler):
    """Token ids (the model's integer input) -> table rows (the IR's ``embedding``; the table keeps
    ``weight_bits``).  An embedding of a constant (``self.pos(torch.arange(T))``) is a constant: PyTorch
    evaluates it and the ``+`` that adds it becomes an ``add_const``.  ``padding_idx``, ``sparse`` and
    ``scale_grad_by_freq`` change training only (the gradient; the row is looked up as stored), so they
    convert; ``max_norm`` rescales rows on every call and is refused."""

    classes = ("Embedding", "aten.embedding")

    def check(self, u, where):
        emb = [m for m in u.nodes if _op(m) == "embedding"]
        if len(emb) != 1:
            return [f"{where}: expected one embedding lookup, found {len(emb)}"]
        p = []
        for m in u.nodes:
            if _op(m) == "embedding_renorm_":
                p.append(f"{where}: max_norm={m.args[2]} is not supported (PyTorch renormalizes the looked-up "
                         f"rows of the table in place on every call); valid: max_norm=None (renormalize the "
                         f"weight once before export)")
        bad = sorted({_op(m) for m in u.nodes} - {"embedding", "embedding_renorm_", "detach", "alias"})
        if bad:
            p.append(f"{where}: operations {', '.join(bad)} in the embedding are not supported")
        ids = emb[0].args[1]
        if ids.op != "placeholder":
            p.append(f"{where}: the ids must be the model's input (integer token ids, shape (batch, tokens)), "
                     f"not {ids.name!r} computed from it (e.g. x.long()): export the model with an integer input")
        else:
            v = ids.meta.get("val")
            if v is not None and (v.dtype.is_floating_point or len(_shape(ids)) != 2):
                p.append(f"{where}: ids of dtype {v.dtype} and shape {tuple(_shape(ids))} not supported; "
                         f"valid: integer token ids of shape (batch, tokens)")
        return p

    def build(self, bld, u):
        n = next(m for m in u.nodes if _op(m) == "embedding")
        table = _table(bld.prog, u)
        src = bld.src(n.args[1])
        ov = bld.cfg.layers.get(u.name, {})
        tt = ov.get("table") or weight_type(table, bld.cfg.weight_bits)
        bld.roles[(u.name, "table")] = u.name
        out_t = ov.get("output") or tt.with_(rounding=bld.cfg.rounding, overflow=bld.cfg.overflow)  # exact
        bld.roles[(u.name, "output")] = u.name
        bld.tensor_of[n.name] = bld.add(Embedding(u.name, (src,), u.name, table=quantize_float(table, tt),
                                                  table_type=tt), out_t)
        bld.set(u, bld.tensor_of[n.name])


# -- padding masks ---------------------------------------------------------------------
class _ConstantArgument(Exception):
    def __init__(self, node):
        super().__init__(node.name)
        self.node = node


@dataclass
class _Mark:
    """A value of the padding mask's world, not an IR tensor.  ``keep`` is the IR tensor ``[T]`` that is
    nonzero where a token is kept (the ids themselves for PAD = 0, else ``ids - PAD``).  kind ``mask``: the
    mask itself, True / nonzero / -inf at the padding positions when ``at_pad`` (``ids == PAD``), at the kept
    ones otherwise (``ids != PAD``, ``~(ids == PAD)``); ``zeros``: ``zeros_like(mask)``; ``product``:
    ``h * keep``; ``sum``: ``(h * keep).sum(1)``; ``count``: ``keep.sum(1)``."""

    what: str
    keep: str
    ids: str
    pad: int
    at_pad: bool = True
    kind: str = "mask"
    tensor: str | None = None

    def but(self, **kw) -> "_Mark":
        from dataclasses import replace
        return replace(self, **kw)


def _mask_derived(node) -> bool:
    """True when ``node`` is computed from a comparison of the ids (a padding mask)."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if not hasattr(n, "all_input_nodes") or n.name in seen:
            continue
        seen.add(n.name)
        if n.op == "call_function" and _op(n) in ("eq", "ne"):
            return True
        todo.extend(n.all_input_nodes)
    return False


_MASK_HINT = ("a padding mask is ids == PAD (or ids != PAD) of the integer token ids, given to attention "
              "(key_padding_mask / src_key_padding_mask) or used in the masked mean (h * keep).sum(1) / keep.sum(1) "
              "with keep = (ids != PAD).unsqueeze(-1).float()")


@HANDLERS.register
class _CompareHandler(Handler):
    """``ids == PAD`` / ``ids != PAD`` on the integer token ids: a padding mask (no IR op of its own)."""

    classes = ("aten.eq", "aten.ne")

    def check(self, u, where):
        n = u.node
        a = n.args[0]
        b = n.args[1] if len(n.args) > 1 else None
        ok_b = isinstance(b, (int, float)) and not isinstance(b, bool) and float(b) == int(b) and b >= 0
        v = getattr(a, "meta", {}).get("val")
        if getattr(a, "op", None) != "placeholder" or not ok_b or v is None or v.dtype.is_floating_point:
            return [f"{where}: comparison {_op(n)}({getattr(a, 'name', a)}, {getattr(b, 'name', b)!r}) not "
                    f"supported; {_MASK_HINT}"]
        return []

    def build(self, bld, u):
        n = u.node
        ids = bld.src(n.args[0])
        pad = int(n.args[1])
        keep = bld.keep_tensor(u, ids, pad)
        if keep is None:
            return
        eq = _op(n) == "eq"
        bld.tensor_of[n.name] = _Mark(f"ids {'==' if eq else '!='} {pad}", keep, n.args[0].name, pad, at_pad=eq)


@HANDLERS.register
class _MaskOpHandler(Handler):
    """What PyTorch does to a padding mask on its way to attention or to a masked mean: negation, unsqueeze,
    conversion to float, ``masked_fill(zeros_like(m), m, -inf)`` (an additive mask), expand."""

    classes = ("aten.bitwise_not", "aten.logical_not", "aten.unsqueeze", "aten.to", "aten._to_copy",
               "aten.zeros_like", "aten.masked_fill", "aten.masked_fill_", "aten.expand", "aten.float")
    takes_masks = True

    def check(self, u, where):
        n = u.node
        if _op(n) not in ("to", "_to_copy", "float") and not (n.args and _mask_derived(n.args[0])):
            return [f"{where}: supported on a padding mask only; {_MASK_HINT}"]
        return []

    def build(self, bld, u):
        n = u.node
        op = _op(n)
        where = _where(u)
        m = bld.tensor_of.get(n.args[0].name) if hasattr(n.args[0], "name") else None
        if not isinstance(m, _Mark):
            dt = n.kwargs.get("dtype", n.args[1] if len(n.args) > 1 else None)
            if op in ("to", "_to_copy", "float") and (dt is None or getattr(dt, "is_floating_point", False)):
                return bld.set(u, bld.src(n.args[0]))  # a float tensor stays a float tensor
            bld.problems.append(f"{where}: supported on a padding mask only; {_MASK_HINT}")
            return
        if m.kind not in ("mask", "zeros"):
            bld.problems.append(f"{where}: {op} of a partial masked mean ({m.kind}) not supported; {_MASK_HINT}")
            return
        if op in ("bitwise_not", "logical_not"):
            out = m.but(at_pad=not m.at_pad, what=f"~({m.what})")
        elif op == "zeros_like":
            out = m.but(kind="zeros")
        elif op in ("masked_fill", "masked_fill_"):
            cond = bld.tensor_of.get(n.args[1].name) if hasattr(n.args[1], "name") else None
            val = n.args[2] if len(n.args) > 2 else None
            if m.kind != "zeros" or not isinstance(cond, _Mark) or cond.kind != "mask" \
                    or not (isinstance(val, float) and val == -math.inf):
                bld.problems.append(f"{where}: masked_fill is supported only as masked_fill(zeros_like(mask), mask, "
                                    f"-inf) (PyTorch's additive form of a padding mask); {_MASK_HINT}")
                return
            out = cond.but(what=f"additive({cond.what})")
        else:
            out = m
        bld.tensor_of[n.name] = out


@HANDLERS.register
class _MaskedMeanHandler(Handler):
    """The masked mean over the sequence, ``(h * keep).sum(1) / keep.sum(1)`` (``keep`` the float mask of
    the kept tokens, ``[batch, tokens, 1]``; ``keep.sum(1).clamp(min=c)`` with ``0 < c <= 1`` too) -> the
    IR's ``masked_avg_pool`` (a sample whose every token is padding gives 0)."""

    classes = ("aten.mul", "aten.sum", "aten.div", "aten.clamp", "aten.clamp_min")
    takes_masks = True

    def check(self, u, where):
        n = u.node
        op = _op(n)
        if not any(_mask_derived(a) for a in n.args if hasattr(a, "name")):
            return [f"{where}: {op} is supported only in the masked mean over the sequence; {_MASK_HINT}"]
        if op == "sum":
            dims = n.args[1] if len(n.args) > 1 else None
            keep = n.args[2] if len(n.args) > 2 else n.kwargs.get("keepdim", False)
            if dims is None or [d % 3 for d in dims] != [1] or keep:
                return [f"{where}: sum over dims {dims} (keepdim={keep}) not supported; the masked mean sums over "
                        f"the sequence: (h * keep).sum(1) / keep.sum(1)"]
        return []

    def build(self, bld, u):
        n = u.node
        op = _op(n)
        where = _where(u)
        args = [bld.tensor_of.get(a.name) if hasattr(a, "name") else a for a in n.args]
        marks = [a for a in args if isinstance(a, _Mark)]
        bad = f"{where}: {op} not supported here; {_MASK_HINT}"
        if op == "mul":
            if len(marks) != 1 or not all(isinstance(a, (str, _Mark)) for a in args[:2]):
                bld.problems.append(bad)
                return
            m = marks[0]
            data = next(a for a in args[:2] if isinstance(a, str))
            mnode = n.args[args.index(m)]
            shape = tuple(bld.g.tensors[data].shape)
            if m.kind != "mask" or m.at_pad or len(shape) != 2 or _shape(mnode)[1:] != (shape[0], 1):
                bld.problems.append(f"{where}: h * keep needs keep = (ids != PAD).unsqueeze(-1).float() of shape "
                                    f"(batch, {shape[0]}, 1) and h of shape (batch, tokens, features); got "
                                    f"{m.what} of shape {_shape(mnode)}")
                return
            bld.tensor_of[n.name] = m.but(kind="product", tensor=data)
        elif op == "sum":
            m = args[0]
            if not isinstance(m, _Mark) or not (m.kind == "product" or (m.kind == "mask" and not m.at_pad)):
                bld.problems.append(bad)
                return
            bld.tensor_of[n.name] = m.but(kind="sum" if m.kind == "product" else "count")
        elif op in ("clamp", "clamp_min"):
            m = args[0]
            lo = n.args[1] if len(n.args) > 1 else n.kwargs.get("min")
            hi = n.args[2] if len(n.args) > 2 else n.kwargs.get("max")
            if not isinstance(m, _Mark) or m.kind != "count" or hi is not None \
                    or not (isinstance(lo, (int, float)) and 0 < lo <= 1):
                bld.problems.append(f"{where}: only keep.sum(1).clamp(min=c) with 0 < c <= 1 is supported "
                                    f"(the count of kept tokens, kept away from 0)")
                return
            bld.tensor_of[n.name] = m
        else:  # div
            a, b = args[0], args[1] if len(args) > 1 else None
            if not (isinstance(a, _Mark) and isinstance(b, _Mark) and a.kind == "sum" and b.kind == "count"
                    and a.keep == b.keep):
                bld.problems.append(bad)
                return
            steps = bld.g.tensors[a.tensor].shape[0]
            recip = [0] + [round(2 ** 16 / c) for c in range(1, steps + 1)]
            t = bld.act_type(u.name, "output", u.name)
            bld.float_units.append(u.name)
            bld.set(u, bld.add(MaskedAvgPool(u.name, (a.tensor, a.keep), u.name, recip=recip, scale_frac=16), t))


def _attention_mask(bld, u: _Unit, heads: int):
    """(keep tensor or None, causal) of an attention unit: the mask PyTorch adds to the scores is read on
    the calibration data and must equal a key padding mask of the ids, a causal mask, or both."""
    torch = _torch()
    prog = bld.prog
    where = _where(u)
    marks = [bld.tensor_of[a.name] for a in u.inputs if isinstance(bld.tensor_of.get(a.name), _Mark)]
    sd = [m for m in u.nodes if _op(m) == "scaled_dot_product_attention"]
    flag = False
    if sd:
        m = sd[0]
        mnode = m.args[3] if len(m.args) > 3 else m.kwargs.get("attn_mask")
        flag = bool(m.args[5] if len(m.args) > 5 else m.kwargs.get("is_causal", False))
    else:
        bb = [m for m in u.nodes if _op(m) == "baddbmm"]
        mnode = bb[0].args[0] if bb else None
    if mnode is None:
        if marks:
            bld.problems.append(f"{where}: the padding mask does not reach the attention scores")
        return None, flag
    mark = marks[0] if marks else None
    if any(m.kind != "mask" or (m.keep, m.pad) != (mark.keep, mark.pad) for m in marks):
        bld.problems.append(f"{where}: the attention takes {len(marks)} different masks; one padding mask "
                            f"(ids == PAD) and/or a causal mask supported")
        return None, False
    v = prog.values.get(mnode.name)
    if v is None:
        v = prog.params.get(mnode.name)
    if not isinstance(v, torch.Tensor):
        bld.problems.append(f"{where}: cannot read the attention mask {mnode.name!r}")
        return None, False
    v = v.detach().to("cpu")
    if v.dtype == torch.bool:
        masked = (~v).numpy()
    else:
        f = v.to(torch.float64).numpy()
        masked = np.isneginf(f)
        if not np.all(f[~masked] == 0):
            bld.problems.append(f"{where}: the attention mask adds values other than 0 and -inf (a float bias); "
                                f"only masks supported: a key padding mask (ids == PAD) and a causal mask "
                                f"(is_causal=True with nn.Transformer.generate_square_subsequent_mask, or a "
                                f"constant upper-triangular -inf / True attn_mask)")
            return None, False
    tq, tk = masked.shape[-2:]
    if masked.ndim == 3:
        masked = masked.reshape((-1, heads, tq, tk)) if masked.shape[0] % heads == 0 else masked[:, None]
    elif masked.ndim == 2:
        masked = masked[None, None]
    nb = masked.shape[0]
    tri = np.triu(np.ones((tq, tk), bool), 1)
    cands = ([(True, False), (True, True)] if mark else [(False, True), (False, False)])
    if flag:
        cands = [c for c in cands if c[1]]
    for use_keep, causal in cands:
        e = np.zeros((1, 1, tq, tk), bool)
        if use_keep:
            ids = np.asarray(prog.values[mark.ids].detach().to("cpu").numpy())
            if len(ids) < nb:
                ids = np.concatenate([ids, np.zeros((nb - len(ids),) + ids.shape[1:], ids.dtype)])
            e = e | (ids[:nb] == mark.pad)[:, None, None, :]  # PyTorch masks the keys where this is True
        if causal:
            e = e | tri
        try:
            shape = np.broadcast_shapes(e.shape, masked.shape)
        except ValueError:
            continue
        if np.array_equal(np.broadcast_to(e, shape), np.broadcast_to(masked, shape)):
            if not use_keep and not causal:
                return None, False
            return (mark.keep if use_keep else None), causal
    what = f"the padding mask {mark.what}" if mark else "a constant"
    bld.problems.append(f"{where}: the attention mask (from {what}) is neither a key padding mask (key_padding_mask "
                        f"/ src_key_padding_mask = ids == PAD: True or -inf at the padding) nor a causal mask "
                        f"(is_causal=True with nn.Transformer.generate_square_subsequent_mask, or a constant "
                        f"upper-triangular -inf / True attn_mask) nor both")
    return None, False


_MHA_OPS = {"linear", "transpose", "unflatten", "unsqueeze", "squeeze", "contiguous", "select", "view",
            "reshape", "permute", "scaled_dot_product_attention", "dropout", "mul", "bmm", "baddbmm",
            "softmax", "_softmax", "mean", "chunk", "split", "getitem", "clone", "expand", "_unsafe_view",
            "_assert_tensor_metadata", "div", "matmul", "t", "alias", "slice", "split_with_sizes"}
# what PyTorch does to masks inside the attention (the mask itself is read on the calibration data)
_MHA_MASK_OPS = {"masked_fill", "masked_fill_", "zeros_like", "add", "logical_or", "bitwise_or", "to", "_to_copy",
                 "full", "ones", "zeros", "triu", "tril", "bitwise_not", "logical_not", "where", "full_like",
                 "new_zeros", "new_full", "fill", "fill_", "eq", "type_as", "float"}


def _attention_inputs(u: _Unit):
    """(data inputs, mask inputs) of an attention unit: a data input reaches the projections (linear)."""
    data, masks = [], []
    for a in u.inputs:
        dep, todo = set(), [a]
        while todo:
            n = todo.pop()
            for c in n.users:
                if c.name not in dep and any(c is m for m in u.nodes):
                    dep.add(c.name)
                    if _op(c) not in ("scaled_dot_product_attention", "bmm", "baddbmm", "matmul", "softmax"):
                        todo.append(c)  # stop at the attention product: the output projection is after it
        (data if any(_op(m) == "linear" and m.name in dep for m in u.nodes) else masks).append(a)
    return data, masks


@HANDLERS.register
class _MultiheadAttentionHandler(Handler):
    classes = ("MultiheadAttention",)

    def check(self, u, where):
        p = []
        ops = [_op(m) for m in u.nodes]
        bad = sorted({o for o in ops if o not in _MHA_OPS | _MHA_MASK_OPS})
        if bad:
            p.append(f"{where}: operations {', '.join(bad)} inside the attention are not supported "
                     f"(add_bias_kv, add_zero_attn and the like)")
        data, masks = _attention_inputs(u)
        if len(data) != 1:
            p.append(f"{where}: {len(data)} distinct inputs; only self-attention mha(x, x, x) is supported "
                     f"(with a key padding mask and/or a causal mask)")
        for a in masks:
            if not _mask_derived(a):
                p.append(f"{where}: the mask {a.name!r} is not computed from the token ids; {_MASK_HINT}")
        sdpa = [m for m in u.nodes if _op(m) == "scaled_dot_product_attention"]
        for m in sdpa:
            if m.kwargs.get("scale") is not None or (len(m.args) > 6 and m.args[6] is not None):
                p.append(f"{where}: a custom attention scale is not supported")
        if len(u.outputs) > 1:
            p.append(f"{where}: returned attention weights are used; only the attention output is supported "
                     f"(need_weights=False)")
        if not p:
            d = _head_dim(u)
            if d is None:
                p.append(f"{where}: cannot find the attention product (scaled_dot_product_attention or bmm)")
            else:
                seq = _attended(u)
                ins = _shape(data[0]) if data else ()
                if len(ins) != 3 or seq != ins[1]:
                    p.append(f"{where}: attends over an axis of length {seq}, not the sequence of input {ins}; "
                             f"use batch_first=True with (batch, tokens, features) inputs")
        return p

    takes_masks = True

    def build(self, bld, u):
        p = bld.prog
        sd = p.ep.state_dict
        path = u.name
        (x,), _ = _attention_inputs(u)
        src = bld.src(x)
        E = _shape(x)[-1]
        dk = _head_dim(u)
        heads = E // dk
        keep, causal = _attention_mask(bld, u, heads)
        if f"{path}.in_proj_weight" in sd:
            w_in = sd[f"{path}.in_proj_weight"].detach().double().numpy()
            ws = [w_in[i * E:(i + 1) * E] for i in range(3)]
        else:
            ws = [sd[f"{path}.{k}_proj_weight"].detach().double().numpy() for k in "qkv"]
        b_in = sd.get(f"{path}.in_proj_bias")
        bs = [None] * 3 if b_in is None else [b_in.detach().double().numpy()[i * E:(i + 1) * E] for i in range(3)]
        hs = {}
        for part, w, b in zip(("query", "key", "value"), ws, bs):
            t_name = f"{path}/{part}"
            x = bld.add(bld.dense(t_name, src, w.T, b), bld.act_type(path, part, t_name))
            hs[part] = bld.add(SplitHeads(f"{path}/{part}_split", (x,), f"{path}/{part}_heads", heads=heads),
                               bld.qtype(x))
        sf = 16
        scores = f"{path}/scores"
        bld.add(MatMul(scores, (hs["query"], hs["key"]), scores, transpose_b=True,
                       scale=round(2 ** sf / math.sqrt(dk)), scale_frac=sf), bld.act_type(path, "scores", scores))
        if keep is not None or causal:
            scores = bld.mask_scores(path, scores, keep, causal)
        probs = bld.softmax(path, f"{path}/probs", scores)
        ctx = f"{path}/context"
        bld.add(MatMul(ctx, (probs, hs["value"]), ctx), bld.act_type(path, "context", ctx))
        merged = bld.add(MergeHeads(f"{path}/merge", (ctx,), f"{path}/merged"), bld.qtype(ctx))
        wo = sd[f"{path}.out_proj.weight"].detach().double().numpy()
        bo = sd.get(f"{path}.out_proj.bias")
        op = bld.dense(path, merged, wo.T, None if bo is None else bo.detach().double().numpy())
        bld.float_units.append(path)
        bld.set(u, bld.add(op, bld.act_type(path, "output", path)))


def _head_dim(u) -> int | None:
    for m in u.nodes:
        if _op(m) == "scaled_dot_product_attention":
            return _shape(m.args[0])[-1]
        if _op(m) in ("bmm", "baddbmm", "matmul"):
            a = m.args[1] if _op(m) == "baddbmm" else m.args[0]
            return _shape(a)[-1]
    return None


def _attended(u) -> int | None:
    for m in u.nodes:
        if _op(m) == "scaled_dot_product_attention":
            return _shape(m.args[0])[-2]
        if _op(m) in ("bmm", "baddbmm", "matmul"):
            a = m.args[1] if _op(m) == "baddbmm" else m.args[0]
            return _shape(a)[-2]
    return None


# -- Brevitas ---------------------------------------------------------------------------
def _act_quant(u: _Unit, prog: _Program, where: str):
    """(FixedType, relu, problems) of a Brevitas activation quantizer unit (QuantIdentity, QuantReLU)."""
    data = _data_nodes(u)
    dn = [m for m in u.nodes if m.name in data]
    ops = [_op(m) for m in dn]
    rnd = [m for m in dn if _op(m) in _ROUNDERS]
    if not rnd:
        return None, False, [f"{where}: no quantizer on the data path (act_quant=None is a float identity); "
                             f"give it a power-of-two quantizer"]
    if len(rnd) > 1:
        return None, False, [f"{where}: {len(rnd)} roundings on the data path; one quantizer per module supported"]
    r = rnd[0]
    relu = "relu" in ops[:ops.index(_op(r))]
    bad = sorted({o for o in ops if o not in {"relu", "div", "mul", "add", "sub", _op(r), "gt", "lt", "ge", "le",
                                               "where", "type_as", "clamp", "clamp_min", "clamp_max", "to",
                                               "_assert_tensor_metadata", "view", "reshape", "hardtanh",
                                               "detach", "alias", "identity"}})
    if bad:
        return None, relu, [f"{where}: operations {', '.join(bad)} in the quantizer are not supported"]
    div = next((m for m in dn if _op(m) == "div" and m.args[0].name not in _after(r, dn)), None)
    if div is None:
        return None, relu, [f"{where}: cannot find the quantizer's scale"]
    scale = prog.value(div.args[1])
    if scale is None or scale.size != 1 or not scale.reshape(-1)[0] > 0:
        return None, relu, [f"{where}: only one positive per-tensor scale is supported"]
    s = float(scale.reshape(-1)[0])
    e = math.log2(s)
    if e != round(e):
        return None, relu, [f"{where}: scale {s!r} is not a power of two; use a power-of-two scaling "
                            f"(e.g. brevitas.quant.Int8ActPerTensorFixedPoint)"]
    mode = {"floor": Rounding.TRN, "round": getattr(Rounding, "RND_CONV", None)}.get(_op(r))
    if mode is None:
        return None, relu, [f"{where}: rounding {_ROUNDERS[_op(r)]} is not in the IR (it rounds with floor, "
                            f"half up or half to even); quantize with float_to_int_impl_type='round' or 'floor'"]
    # the integer bounds: Brevitas clamps the rounded integer before rescaling
    x_in = prog.value(u.inputs[0])
    y = prog.value(u.output)
    q = y / s
    lo, hi = float(np.min(q)), float(np.max(q))
    frac = -int(round(e))
    bounds = _clamp_bounds(r, dn, prog)
    if bounds is None:
        return None, relu, [f"{where}: cannot find the quantizer's clamp"]
    blo, bhi = bounds
    signed = blo < 0
    width = bits_for(int(blo), int(bhi), signed)
    t = FixedType(max(width, 2 if signed else 1), frac, signed, mode, Overflow.SAT)
    if (int(blo), int(bhi)) != (t.min_int, t.max_int):
        return None, relu, [f"{where}: integer range [{int(blo)}, {int(bhi)}] is not a full {width}-bit range "
                            f"(narrow range is not supported)"]
    v = np.maximum(x_in, 0) if relu else x_in
    mine = quantize_float(v, t) * 2.0 ** -t.frac
    if v.shape != y.shape or not np.array_equal(mine, y):
        k = int(np.sum(mine != y)) if v.shape == y.shape else -1
        return None, relu, [f"{where}: the quantizer read as {t} does not reproduce Brevitas on the calibration data "
                            f"({k} values differ; range seen {lo}..{hi})"]
    return t, relu, []


def _after(r, dn) -> set:
    out = {r.name}
    for m in dn:
        if any(a.name in out for a in m.all_input_nodes):
            out.add(m.name)
    return out


def _clamp_bounds(r, dn, prog):
    """The integer bounds compared against after the rounding (where(gt(x, hi)) / where(lt(x, lo)) or clamp)."""
    after = _after(r, dn)
    lo = hi = None
    for m in dn:
        if m.name not in after:
            continue
        o = _op(m)
        if o in ("gt", "lt") and len(m.args) > 1:
            v = prog.value(m.args[1]) if hasattr(m.args[1], "name") else np.asarray(m.args[1], dtype=float)
            if v is not None and v.size == 1:
                if o == "gt":
                    hi = float(v.reshape(-1)[0]) if hi is None else hi
                else:
                    lo = float(v.reshape(-1)[0]) if lo is None else lo
        elif o in ("clamp", "hardtanh") and len(m.args) > 2:
            lo, hi = float(m.args[1]), float(m.args[2])
    if lo is None or hi is None or lo != round(lo) or hi != round(hi):
        return None
    return lo, hi


@HANDLERS.register
class _QuantActHandler(Handler):
    classes = ("QuantIdentity", "QuantReLU")

    def check(self, u, where):
        if len(u.inputs) != 1 or len(u.outputs) != 1:
            return [f"{where}: one input and one output expected"]
        return []

    def build(self, bld, u):
        t, relu, p = _act_quant(u, bld.prog, _where(u))
        if p:
            bld.problems.extend(p)
            return
        if u.cls == "QuantReLU" and not relu:
            bld.problems.append(f"{_where(u)}: QuantReLU without its ReLU")
            return
        src = bld.src(u.inputs[0])
        bld.roles.pop((u.name, "output"), None)
        if u.name in bld.cfg.layers and "output" in bld.cfg.layers[u.name]:
            bld.problems.append(f"{_where(u)}: has a quantizer; a config override would change the model")
        bld.set(u, bld.quantizer(u, src, t, relu))


@HANDLERS.register
class _QuantLinearHandler(Handler):
    classes = ("QuantLinear",)

    def check(self, u, where):
        lin = [m for m in u.nodes if _op(m) == "linear"]
        if len(lin) != 1:
            return [f"{where}: expected one linear product, found {len(lin)}"]
        if len(u.inputs) != 1:
            return [f"{where}: one input expected"]
        if u.output is not lin[0]:
            return [f"{where}: an output quantizer inside QuantLinear is not supported; put a QuantIdentity "
                    f"or QuantReLU after it"]
        if lin[0].args[0] is not u.inputs[0]:
            return [f"{where}: an input quantizer inside QuantLinear is not supported; put a QuantIdentity "
                    f"before it"]
        return []

    def build(self, bld, u):
        p = bld.prog
        where = _where(u)
        lin = next(m for m in u.nodes if _op(m) == "linear")
        src = bld.src(lin.args[0])
        w = p.value(lin.args[1])
        bnode = lin.args[2] if len(lin.args) > 2 else None
        b = p.value(bnode)
        wt = _dyadic_type(w, where + " weight", bld.problems, _quantized(lin.args[1], u))
        bt = None
        if b is not None and _quantized(bnode, u):
            bt = _dyadic_type(b, where + " bias", bld.problems, True, max_width=32)
        if wt is None or bld.problems:
            return
        if b is not None and bt is None:
            bld.float_units.append(u.name + " (float bias)")
        op = bld.dense(u.name, src, w.T, b, wt, bt)
        bld.set(u, bld.add(op, bld.act_type(u.name, "output", u.name)))


def _quantized(node, u) -> bool:
    """True when a rounding inside the unit produced ``node`` (a quantized weight or bias)."""
    inside = {m.name for m in u.nodes}
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n is None or n.name in seen or n.name not in inside:
            continue
        seen.add(n.name)
        if _op(n) in _ROUNDERS:
            return True
        todo.extend(n.all_input_nodes)
    return False


def _dyadic_type(v: np.ndarray, where: str, problems: list, quantized: bool, max_width: int = 16) -> FixedType | None:
    """The type holding ``v`` exactly: values k * 2**-frac of a power-of-two quantizer."""
    if not quantized:
        problems.append(f"{where}: not quantized (a float tensor); quantize it with a power-of-two quantizer")
        return None
    nz = np.abs(v[v != 0])
    if nz.size == 0:
        return FixedType(2, 0, True, Rounding.RND, Overflow.SAT)
    for frac in range(-16, 33):
        m = v * 2.0 ** frac
        if np.all(m == np.round(m)):
            mi = np.round(m)
            w = bits_for(int(mi.min()), int(mi.max()), True)
            if w > max_width:
                break
            return FixedType(max(w, 2), frac, True, Rounding.RND, Overflow.SAT)
    problems.append(f"{where}: values are not integers times one power of two (a scale that is not a power of "
                    f"two, or per-channel scales); use power-of-two per-tensor scaling "
                    f"(e.g. brevitas.quant.Int8WeightPerTensorFixedPoint)")
    return None


SUPPORTED = HANDLERS.supported


# -- convert --------------------------------------------------------------------------
def _check(prog: _Program) -> list[str]:
    p = []
    if len(prog.user_inputs) != 1:
        p.append(f"the model takes {len(prog.user_inputs)} inputs; one (batch, tokens, features) or "
                 f"(batch, features) tensor, or (batch, tokens) integer token ids, is supported (a padding mask "
                 f"is computed inside the model from the ids: ids == PAD)")
    else:
        s = _shape(prog.by_name[prog.user_inputs[0]])
        if len(s) not in (2, 3):
            p.append(f"input shape {s} not supported; (batch, tokens, features) or (batch, features)")
    out = prog.ep.graph.output_node().args[0]
    if len(out) != 1:
        p.append(f"the model returns {len(out)} values; one tensor is supported")
    seen = {}
    for u in prog.units:
        if u.const:
            continue  # PyTorch evaluates it (its consumer checks the value)
        where = _where(u)
        if not u.cls.startswith("aten.") and u.name in seen:
            p.append(f"{where}: a module called more than once (shared weights) is not supported")
        seen[u.name] = u
        h = HANDLERS.get(u.cls)
        if h is None:
            kind = "function" if u.cls.startswith("aten.") else "module"
            p.append(f"{where}: {kind} not supported; supported: {', '.join(HANDLERS.supported)}")
            continue
        p.extend(h.check(u, where))
    names = [u.name for u in prog.units if u.cls.startswith("aten.") and _op(u.node) not in _IDENTITY
             and not u.const]
    dup = sorted({n for n in names if names.count(n) > 1})
    for d in dup:
        p.append(f"module {d!r}: called more than once (shared weights) is not supported")
    return p


def convert(model, config=None, calibration=None) -> Graph:
    """Convert a PyTorch model (``nn.Module``, Brevitas included, or a ``torch.export`` program)
    to a verified :class:`Graph`.

    ``calibration``: input samples (batch first) for range analysis of the parts without a
    quantizer and for checking Brevitas quantizers; required for an ``nn.Module`` (it gives
    the input shape), else 256 standard-normal samples of the program's input shape.
    """
    torch = _torch()
    cfg = config if isinstance(config, ConvertConfig) else ConvertConfig.from_dict(config)
    if isinstance(model, torch.nn.Module):
        if calibration is None:
            raise FabformerError("a PyTorch nn.Module needs calibration data (it gives the input shape): "
                                 "convert(model, calibration=x)")
        name = type(model).__name__
        ep = export(model, np.asarray(calibration))
    elif isinstance(model, TorchModel):
        ep, name = model.program, model.name
    elif isinstance(model, torch.export.ExportedProgram):
        ep, name = model, "model"
    else:
        raise FabformerError(f"not a PyTorch model: {type(model).__name__}")
    prog = _Program(ep)
    problems = _check(prog)
    if problems:
        raise ConversionError(problems)
    shape = _shape(prog.by_name[prog.user_inputs[0]])[1:]
    if calibration is None:
        calibration = np.random.default_rng(0).standard_normal((256,) + tuple(shape))
    calibration = np.asarray(calibration, dtype=np.float64)
    if tuple(calibration.shape[1:]) != tuple(shape):
        raise ConversionError([f"calibration data has shape {calibration.shape}; expected (n, {', '.join(map(str, shape))})"])
    prog.evaluate(calibration)
    first = _Builder(prog, cfg, None, name)
    g0 = first.build()
    if first.problems:
        raise ConversionError(first.problems)
    _check_overrides(cfg, first.roles, None)
    _, env = g0.predict(calibration, trace=True, mode="float")
    ranges = {k: float(np.max(np.abs(v))) if np.size(v) else 0.0 for k, v in env.items()}
    b = _Builder(prog, cfg, ranges, name)
    g = b.build()
    if b.problems:
        raise ConversionError(b.problems)
    g.meta = {"source": name, "frontend": "torch", "calibration_samples": int(len(calibration)),
              "torch_units": {u.name: u.cls for u in prog.units
                              if not (u.cls.startswith("aten.") and _op(u.node) in _IDENTITY)},
              "float_units": sorted(set(b.float_units))}
    return g.verify()
