"""The op registry and the layering of the package.

Every op kind of the IR is implemented, or marked unsupported with a reason, by
every declared backend; the foundation imports no backend or application;
backends import no application and no other package's underscored names.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fabformer
from fabformer import ir, registry
from fabformer.errors import FabformerError

ROOT = Path(__file__).resolve().parent.parent
FOUNDATION = ROOT / "fabformer"
BACKENDS = {"frontend": "fabformer.frontend", "hls": "fabformer.hls", "rtl": "fabformer.rtl",
            "sim": "fabformer.sim", "boards": "fabformer.boards"}
APPS = ROOT / "apps"


def _load_every_backend():
    import fabformer.golden  # noqa: F401
    import fabformer.hls.emit  # noqa: F401
    import fabformer.rtl  # noqa: F401
    import fabformer.apps.testing  # noqa: F401


def test_every_op_kind_is_covered_by_every_backend():
    _load_every_backend()
    assert set(registry.backends()) >= {"golden", "float", "hls", "rtl.dataflow", "example"}
    assert registry.missing() == [], (
        "op kinds that a backend neither implements nor marks unsupported (registry.unsupported(kind, backend, "
        "reason)): " + ", ".join(registry.missing()))
    assert set(registry.op_kinds()) == set(ir.OPS)


def test_coverage_check_fails_when_an_entry_is_removed():
    _load_every_backend()
    key = (ir.Relu, "hls")
    saved = registry._TABLE.pop(key)
    try:
        assert registry.missing() == ["relu in hls"]
        with pytest.raises(FabformerError, match=r"op kind 'relu' has no hls implementation \(supported there: "):
            registry.get("relu", "hls")
    finally:
        registry._TABLE[key] = saved
    assert registry.missing() == []


def test_unsupported_reason_is_the_users_message():
    _load_every_backend()
    registry.declare("test.arch", "a test backend")
    try:
        for cls in ir.OPS.values():
            registry.unsupported(cls, "test.arch", f"{cls.kind} needs a multiplier this test lacks")
        op = ir.Relu("my_relu", ("x",), "y")
        with pytest.raises(FabformerError, match=r"^my_relu: op kind 'relu' is not supported by test.arch: "
                                                 r"relu needs a multiplier this test lacks"):
            registry.get(op, "test.arch")
    finally:
        registry._BACKENDS.pop("test.arch")
        for cls in ir.OPS.values():
            registry._TABLE.pop((cls, "test.arch"), None)


def test_unknown_kind_and_backend_are_named():
    with pytest.raises(FabformerError, match="unknown op kind 'conv2d'; valid kinds: add, (.*, )?dense, "):
        registry.get("conv2d", "golden")
    with pytest.raises(FabformerError, match="unknown backend 'verilog'; declared backends: "):
        registry.implements("relu", "verilog")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import in ``path``, relative ones resolved."""
    pkg = _package_of(path)
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = pkg.split(".")
                base = parts[:len(parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.append((mod, [a.name for a in node.names]))
    return out


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    top = {"fabformer": "fabformer", "apps": "fabformer.apps", **{k: v for k, v in BACKENDS.items()}}
    parts = list(rel.parts[:-1])
    base = top[parts[0]]
    return ".".join([base] + parts[1:])


def _py(folder: Path):
    return sorted(p for p in folder.rglob("*.py"))


def test_foundation_imports_no_backend_and_no_application():
    bad = []
    for path in _py(FOUNDATION):
        if path.name == "__init__.py":  # the package face: `fabformer.convert` dispatches to the frontends
            continue
        for mod, _ in _imports(path):
            if mod and (mod.startswith("fabformer.apps") or any(mod.startswith(b) for b in BACKENDS.values())):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert bad == []


def test_backends_import_no_application_and_no_private_names_of_other_packages():
    bad = []
    for folder, pkg in BACKENDS.items():
        for path in _py(ROOT / folder):
            for mod, names in _imports(path):
                if not mod or not mod.startswith("fabformer"):
                    continue
                if mod.startswith("fabformer.apps"):
                    bad.append(f"{path.relative_to(ROOT)} imports the application {mod}")
                own = mod == pkg or mod.startswith(pkg + ".")
                if not own:
                    if any(part.startswith("_") for part in mod.split(".")):
                        bad.append(f"{path.relative_to(ROOT)} imports private module {mod}")
                    bad += [f"{path.relative_to(ROOT)} imports {mod}.{n}" for n in names
                            if n.startswith("_") and n != "__version__"]
    assert bad == []


def test_cli_modules_only_parse_and_print():
    """No backend holds a command-line module; the applications hold them all."""
    assert not [p for f in BACKENDS for p in (ROOT / f).rglob("cli.py")]
    assert fabformer.__version__
