"""One registry entry per op kind: which backend implements it, or why it does not.

An entry is keyed by the op's IR class (``fabformer.ir.Dense``, …) and holds, per
backend, the function that implements the op there or an :class:`Unsupported`
with the reason (that reason is the user's error message).  Backends register
themselves when their module is imported:

=====================  ===============================  =================================
backend                module that registers             what it registers
=====================  ===============================  =================================
``golden``             ``fabformer.golden``              ``fn(op, graph, inputs, xp)`` → integers
``float``              ``fabformer.golden``              ``fn(op, graph, inputs, xp)`` → floats
``hls``                ``fabformer.hls.emit``            ``fn(op, graph, ctx)`` → ``Emitted``
``rtl.<arch>``         ``fabformer.rtl``                 ``fn(op, graph, parallelism)`` → block
``example``            ``fabformer.apps.testing``        ``fn(seed, overflow)`` → test ``Graph``
=====================  ===============================  =================================

A backend declares itself with :func:`declare`; ``tests/test_registry.py`` walks
every IR op kind and fails when a declared backend neither implements it nor
marks it unsupported.  The foundation imports no backend: the registry only
holds what the backends put in it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import FabformerError

__all__ = ["Unsupported", "op_kind", "op_kinds", "declare", "backends", "implements", "unsupported", "get",
           "find", "entry", "missing", "kinds_of", "view", "set_interpreter", "interpreter"]


@dataclass(frozen=True)
class Unsupported:
    """A backend's statement that it does not implement an op kind, and why."""

    reason: str


_KINDS: dict[str, type] = {}  # op kind -> IR class (fabformer.ir registers every op class)
_BACKENDS: dict[str, str] = {}  # name -> what it is (for messages)
_TABLE: dict[tuple, object] = {}  # (op class, backend) -> function | Unsupported
_INTERPRETER: list = []  # the golden model's graph interpreter (fabformer.golden sets it)


def op_kind(cls: type) -> type:
    """Class decorator (used by ``fabformer.ir``): register an IR op class under its ``kind``."""
    _KINDS[cls.kind] = cls
    return cls


def op_kinds() -> dict[str, type]:
    """``{kind: IR op class}`` of every op kind, in registration order."""
    return dict(_KINDS)


def set_interpreter(fn: Callable) -> None:
    """``fabformer.golden`` registers the function that runs a whole graph."""
    _INTERPRETER[:] = [fn]


def interpreter() -> Callable:
    if not _INTERPRETER:
        raise FabformerError("the golden model is not loaded (import fabformer.golden)")
    return _INTERPRETER[0]


def declare(backend: str, description: str) -> None:
    """Declare a backend: from now on every op kind must be implemented or marked unsupported there."""
    _BACKENDS[backend] = description


def backends() -> dict[str, str]:
    return dict(_BACKENDS)


def _op_class(op):
    if isinstance(op, str):
        cls = _KINDS.get(op)
        if cls is None:
            raise FabformerError(f"unknown op kind {op!r}; valid kinds: {', '.join(sorted(_KINDS))}")
        return cls
    if isinstance(op, type) and _KINDS.get(getattr(op, "kind", None)) is op:
        return op
    if _KINDS.get(getattr(type(op), "kind", None)) is type(op):
        return type(op)
    raise FabformerError(f"not an op kind or IR op class: {op!r}")


def _check_backend(backend: str) -> None:
    if backend not in _BACKENDS:
        raise FabformerError(f"unknown backend {backend!r}; declared backends: {', '.join(sorted(_BACKENDS))}")


def implements(op, backend: str) -> Callable:
    """Decorator: ``fn`` implements op kind ``op`` (IR class or kind name) in ``backend``."""
    cls = _op_class(op)
    _check_backend(backend)

    def deco(fn):
        _TABLE[(cls, backend)] = fn
        return fn
    return deco


def unsupported(op, backend: str, reason: str) -> None:
    """Mark op kind ``op`` as not implemented in ``backend``, with the reason the user will read."""
    _check_backend(backend)
    _TABLE[(_op_class(op), backend)] = Unsupported(reason)


def find(op, backend: str):
    """The function or :class:`Unsupported` registered for ``op`` in ``backend`` (None if neither)."""
    return _TABLE.get((_op_class(op), backend))


def get(op, backend: str) -> Callable:
    """The implementation of ``op`` (an op, IR class or kind) in ``backend``; a clear
    :class:`FabformerError` when there is none."""
    cls = _op_class(op)
    found = _TABLE.get((cls, backend))
    if callable(found) and not isinstance(found, Unsupported):
        return found
    where = f"{op.name}: " if hasattr(op, "name") and not isinstance(op, type) else ""
    supported = ", ".join(kinds_of(backend)) or "none"
    if isinstance(found, Unsupported):
        raise FabformerError(f"{where}op kind {cls.kind!r} is not supported by {backend}: {found.reason} "
                             f"(supported there: {supported})")
    raise FabformerError(f"{where}op kind {cls.kind!r} has no {backend} implementation (supported there: {supported})")


def entry(op) -> dict:
    """Every backend's registration for one op kind: ``{backend: function | Unsupported | None}``."""
    cls = _op_class(op)
    return {b: _TABLE.get((cls, b)) for b in sorted(_BACKENDS)}


def kinds_of(backend: str) -> list[str]:
    """The op kinds ``backend`` implements."""
    return sorted(cls.kind for (cls, b), v in _TABLE.items() if b == backend and not isinstance(v, Unsupported))


def missing() -> list[str]:
    """``"<kind> in <backend>"`` for every op kind a declared backend neither implements nor marks unsupported."""
    return [f"{cls.kind} in {b}" for cls in _KINDS.values() for b in sorted(_BACKENDS)
            if (cls, b) not in _TABLE]


class view:
    """A read-only ``{kind: function}`` mapping of one backend's implementations."""

    def __init__(self, backend: str):
        self.backend = backend

    def __getitem__(self, kind):
        fn = _TABLE.get((_op_class(kind), self.backend))
        if fn is None or isinstance(fn, Unsupported):
            raise KeyError(kind)
        return fn

    def __contains__(self, kind):
        try:
            self[kind]
        except (KeyError, FabformerError):
            return False
        return True

    def __iter__(self):
        return iter(kinds_of(self.backend))

    def __len__(self):
        return len(kinds_of(self.backend))

    def keys(self):
        return list(self)
