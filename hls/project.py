"""Write, compile and run a Vitis HLS project for a graph (C-simulation with g++)."""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fabformer import registry
from fabformer.names import Namer, sanitize
from fabformer.vectors import flat_batch, hardware_inputs
from ..errors import FabformerError
from ..fixed import dequantize
from ..ir import Graph, Quantize
from ..outdir import prepare_dir
from .config import HLSConfig
from .emit import ctype
from .templates import render

INCLUDE_DIR = Path(__file__).resolve().parent / "include"


def ap_types_dir() -> Path:
    """The ``ap_fixed`` headers shipped inside the installed hls4ml package (Apache-2.0)."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise FabformerError("the ap_fixed headers come from the hls4ml package, which is not installed; "
                             "install it with: pip install 'fabformer[hls]' (hls4ml==1.3.0)")
    d = Path(list(spec.submodule_search_locations)[0]) / "templates" / "vivado" / "ap_types"
    if not (d / "ap_fixed.h").is_file():
        raise FabformerError(f"hls4ml is installed but has no ap_types headers at {d}")
    return d




def _const_lines(values: np.ndarray, per_line: int = 16) -> list[str]:
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    return [", ".join(flat[i:i + per_line]) + ("," if i + per_line < len(flat) else "")
            for i in range(0, len(flat), per_line)]


@dataclass
class _T:
    name: str
    var: str
    type: str
    size_name: str
    size: int
    shape: tuple
    ctype: str


class _Gen:
    """Builds the render context of the generated files from a graph and a config."""

    def __init__(self, g: Graph, cfg: HLSConfig):
        self.g, self.cfg = g, cfg
        self.top = cfg.name or sanitize(g.name)
        self.ns = self.top + "_p"
        tensor_name = Namer(taken=[self.top, self.ns])
        self.node_name = Namer()
        self.t = {}
        for name, t in g.tensors.items():
            if t.type is None:
                continue
            base = tensor_name(name)
            self.t[name] = _T(name, "t_" + base, "fx_" + base, "N_" + base.upper(), t.size, t.shape, ctype(t.type))
        self.quant = [n for n in g.nodes if isinstance(n, Quantize)]
        for n in g.nodes:
            registry.get(n, "hls")  # a clear error (with the reason) for a kind without a kernel

    def context(self) -> dict:
        g, ns = self.g, self.ns
        inputs = [self.t[t] for t in hardware_inputs(g)]  # one argument per graph input, in order
        outputs = [self.t[o] for o in g.outputs]
        args = [{"name": "in_" + t.var[2:], "decl": f"const {ns}::{t.type} in_{t.var[2:]}[{ns}::{t.size_name}]"}
                for t in inputs]
        args += [{"name": "out_" + t.var[2:], "decl": f"{ns}::{t.type} out_{t.var[2:]}[{ns}::{t.size_name}]"}
                 for t in outputs]
        ref = {t.name: "in_" + t.var[2:] for t in inputs}
        out_ref = {t.name: "out_" + t.var[2:] for t in outputs}
        buffers, body, configs, consts, pragmas = [], [], [], [], []
        for n in g.nodes:
            if isinstance(n, Quantize):
                continue
            e = registry.get(n, "hls")(n, g, self.cfg)
            cname = "config_" + self.node_name(n.name)
            ins = [self.t[i] for i in n.inputs]
            io = ([("type", "in_t", ins[0].type)] if len(ins) == 1 else
                  [("type", "in_a_t", ins[0].type), ("type", "in_b_t", ins[1].type)])
            io.append(("type", "out_t", self.t[n.output].type))
            configs.append({"name": cname, "node": n.name, "kind": n.kind, "fields": io + e.fields})
            dst = out_ref.get(n.output)
            if dst is None:
                dst = self.t[n.output].var
                buffers.append(self.t[n.output])
            ref.setdefault(n.output, dst)
            cargs = [ref[i] for i in n.inputs] + [dst]
            for c in e.consts:
                cn = f"{c.name}_{self.node_name(n.name)}"
                consts.append({"name": cn, "ctype": c.ctype, "size": int(np.asarray(c.values).size),
                               "lines": _const_lines(c.values), "comment": f"{n.name}: {c.name}"})
                cargs.append(f"{ns}::{cn}")
                if c.partition == -1:
                    pragmas.append(f"ARRAY_PARTITION variable={ns}::{cn} complete")
                elif c.partition > 1:
                    pragmas.append(f"ARRAY_PARTITION variable={ns}::{cn} cyclic factor={c.partition}")
            body.append(f"fab::{e.kernel}<{ns}::{cname}>({', '.join(cargs)});  // {n.name}")
        for t in outputs:  # graph outputs that are quantized inputs: copy through
            if ref.get(t.name) != out_ref[t.name]:
                body.append(f"for (int i = 0; i < {ns}::{t.size_name}; i++) {out_ref[t.name]}[i] = {ref[t.name]}[i];")
        offs, o = [], 0
        for t in outputs:
            offs.append({"name": "y_" + t.var[2:], "type": t.type, "size_name": t.size_name, "offset": o,
                         "tensor": t.name})
            o += t.size
        ins, in_size = [], 0
        for t in inputs:  # a sample's input vector: every input flattened, in graph.inputs order
            ins.append({"name": "x_" + t.var[2:], "type": t.type, "size_name": t.size_name, "offset": in_size})
            in_size += t.size
        return {
            "graph_name": g.name, "top": self.top, "ns": ns, "guard": self.top.upper(),
            "tensors": [t.__dict__ for t in self.t.values()], "configs": configs, "consts": consts,
            "args": args, "buffers": [b.__dict__ for b in buffers], "body": body, "const_pragmas": pragmas,
            "inputs": ins, "outputs": offs, "in_size": in_size, "out_total": o,
            "call_args": ", ".join([a["name"] for a in ins] + [a["name"] for a in offs]),
            "part": self.cfg.part, "clock": self.cfg.clock_period_ns, "n_nodes": len(g.nodes), "macs": g.macs(),
        }


class HLSProject:
    """A written HLS project folder; ``compile()`` then ``predict(x)`` run it in C-simulation."""

    def __init__(self, graph: Graph, path: Path, config: HLSConfig, top: str, out_total: int):
        self.graph, self.path, self.config, self.top = graph, Path(path), config, top
        self.out_total = out_total
        self._lib = None
        self._fn = None
        self.compile_seconds = None
        self.compile_cached = False  # True when compile() reused a library built from the same sources

    # -- build -------------------------------------------------------------------
    def sources(self) -> list[Path]:
        return [self.path / "firmware" / f"{self.top}.cpp", self.path / f"{self.top}_bridge.cpp"]

    def compile(self, build_dir=None, native: bool = True) -> "HLSProject":
        """Build the project (g++ -std=c++17 -O2) into a shared library and load it; returns the
        project, so ``hls.write(graph, dir).compile().predict(x)`` reads as one chain.

        ``native=True`` (the default) compiles the kernels on native integers
        (``-DFAB_NATIVE``: ``fab_native.h``); ``native=False`` on the ``ap_int`` /
        ``ap_fixed`` types that synthesis and the Vitis testbench use.  Both equal
        the golden model bit for bit (``tests/test_hls.py`` checks both)."""
        lib, secs = _build([self], Path(build_dir) if build_dir else self.path / "build", native)
        self.compile_seconds = secs
        self.library = lib
        return self

    def _attach(self, lib):
        self._lib = lib
        fn = getattr(lib, f"{self.top}_predict")
        fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_longlong)]
        fn.restype = ctypes.c_int
        self._fn = fn

    # -- run ---------------------------------------------------------------------
    def predict(self, x, raw: bool = False):
        """C-simulation over a batch.  Returns dequantized outputs shaped like
        ``graph.predict(x)``; with ``raw=True`` the integer mantissas (int64)."""
        if self._fn is None:
            raise FabformerError(f"HLS project {str(self.path)!r} is not compiled; call compile() first")
        g = self.graph
        x = np.ascontiguousarray(flat_batch(g, x))
        n = x.shape[0]
        y = np.zeros((n, self.out_total), dtype=np.int64)
        self._fn(n, x.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                 y.ctypes.data_as(ctypes.POINTER(ctypes.c_longlong)))
        outs, o = [], 0
        for name in g.outputs:
            t = g.tensors[name]
            m = y[:, o:o + t.size].reshape((n,) + tuple(t.shape))
            o += t.size
            outs.append(m if raw else dequantize(m, t.type.frac))
        return outs[0] if len(outs) == 1 else outs


_GXX_ERR = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?:(?P<col>\d+):)? (?:fatal )?error: (?P<msg>.*)$", re.M)


def _build(projects: list[HLSProject], build_dir: Path, native: bool = True):
    """Compile one or more projects into one shared library (one translation unit)."""
    ap = ap_types_dir()
    build_dir = Path(build_dir).resolve()  # g++ runs in the project folder: no relative paths
    build_dir.mkdir(parents=True, exist_ok=True)
    unity = ("#define FAB_NATIVE 1\n" if native else "") + "".join(
        f'#include "{s.resolve()}"\n' for p in projects for s in p.sources())
    digest = hashlib.sha256(unity.encode() + b"".join(
        f.read_bytes() for p in projects for f in sorted((p.path / "firmware").rglob("*.h")) + p.sources()
    )).hexdigest()[:12]
    src = build_dir / f"csim_{digest}.cpp"
    src.write_text(unity)
    lib = build_dir / f"libcsim_{digest}.so"
    t0 = time.perf_counter()
    cached = lib.exists()  # the same sources were compiled before: reused, not rebuilt
    if not cached:
        cmd = [os.environ.get("CXX", "g++"), "-std=c++17", "-O2", "-fPIC", "-shared", "-w",
               f"-I{ap}", f"-I{INCLUDE_DIR}", str(src), "-o", str(lib) + ".tmp"]
        r = subprocess.run(cmd, capture_output=True, text=True,
                           cwd=projects[0].path if len(projects) == 1 else build_dir)
        (build_dir / "compile.log").write_text(" ".join(cmd) + "\n" + r.stdout + r.stderr)
        if r.returncode != 0:
            raise FabformerError(_compile_message(r.stderr, build_dir / "compile.log"))
        os.replace(str(lib) + ".tmp", lib)
    secs = time.perf_counter() - t0
    handle = ctypes.CDLL(str(lib.resolve()))
    for p in projects:
        p._attach(handle)
        p.compile_seconds = secs
        p.compile_cached = cached
    return lib, secs


def _compile_message(stderr: str, log: Path) -> str:
    m = _GXX_ERR.search(stderr)
    if not m:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        return f"g++ failed to compile the HLS project:\n{tail}\n(full log: {log})"
    f, line = m.group("file"), int(m.group("line"))
    src = ""
    try:
        src = Path(f).read_text().splitlines()[line - 1].strip()
    except (OSError, IndexError):
        pass
    return (f"g++ failed to compile the HLS project: {f}:{line}: error: {m.group('msg')}\n"
            f"    {line} | {src}\n(full log: {log})")


def compile_together(projects: list[HLSProject], build_dir, native: bool = True) -> float:
    """Compile several projects (distinct top names) into one library, one g++ run; returns seconds
    (``native`` as in :meth:`HLSProject.compile`)."""
    tops = [p.top for p in projects]
    dup = sorted({t for t in tops if tops.count(t) > 1})
    if dup:
        raise FabformerError(f"projects compiled together need distinct top names; repeated: {', '.join(dup)} "
                             f"(set HLSConfig(name=...))")
    return _build(projects, Path(build_dir), native)[1]


def write(graph: Graph, out_dir, config: HLSConfig | dict | None = None, tb_inputs=None) -> HLSProject:
    """Write a Vitis HLS project for ``graph`` into ``out_dir`` (created, or one fabformer made).

    ``tb_inputs`` are the testbench's input vectors (default: ``config.tb_samples``
    random inputs); their golden outputs are written next to them.
    """
    if config is None:
        config = HLSConfig()
    elif isinstance(config, dict):
        config = HLSConfig.from_dict(config)
    graph.verify()
    config.check(graph)
    gen = _Gen(graph, config)
    ctx = gen.context()
    out = prepare_dir(out_dir)
    files = {
        f"firmware/{gen.top}.cpp": render("top.cpp", **ctx),
        f"firmware/{gen.top}.h": render("top.h", **ctx),
        "firmware/parameters.h": render("parameters.h", **ctx),
        "firmware/weights.h": render("weights.h", **ctx),
        f"{gen.top}_bridge.cpp": render("bridge.cpp", **ctx),
        f"{gen.top}_test.cpp": render("test.cpp", **ctx),
        "build_prj.tcl": render("build_prj.tcl", **ctx),
        "README.md": render("README.md", **ctx),
        "hls_config.json": json.dumps(config.to_dict(), indent=1, sort_keys=True) + "\n",
    }
    for h in sorted(INCLUDE_DIR.glob("*.h")):
        files[f"firmware/fabformer/{h.name}"] = h.read_text()
    if tb_inputs is None:
        from fabformer.vectors import random_inputs
        tb_inputs = random_inputs(graph, config.tb_samples, seed=0)
    flat = flat_batch(graph, tb_inputs)
    _, env = graph.predict(tb_inputs, trace=True)
    golden = np.concatenate([np.asarray(env[o]).reshape(len(flat), -1) for o in graph.outputs], axis=1)
    files["tb_data/tb_input.dat"] = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in flat)
    files["tb_data/tb_output_golden.dat"] = "".join(" ".join(str(int(v)) for v in row) + "\n" for row in golden)
    for rel, text in files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
    return HLSProject(graph, out, config, gen.top, ctx["out_total"])
