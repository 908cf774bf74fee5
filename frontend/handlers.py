"""The shape every frontend's layer handlers share.

A frontend (Keras/QKeras, PyTorch, …) has one :class:`Handler` per layer class
it converts.  A handler holds the two things the frontend needs of that class,
together: ``check`` (every problem of one layer, collected before anything is
built, so the user reads them all in one error) and ``build`` (the IR ops of the
layer, added through the frontend's builder).  A :class:`Handlers` table maps
layer class names to handlers; an unsupported class is reported with the list of
supported ones.
"""
from __future__ import annotations

__all__ = ["Handler", "Handlers"]


class Handler:
    """One layer class of one frontend: its check and its build.

    ``layer`` is the frontend's description of one layer (for Keras: name, class name,
    the layer object, its inbound tensors and call arguments); ``where`` names it in
    messages.  ``check`` returns a list of problem strings; ``build`` adds IR ops with
    ``builder`` and records the layer's output tensor there.
    """

    #: layer class names this handler converts
    classes: tuple = ()

    def check(self, layer, where: str) -> list[str]:
        return []

    def build(self, builder, layer) -> None:  # pragma: no cover - every handler defines it
        raise NotImplementedError(type(self).__name__)


class Handlers:
    """The handler table of one frontend: ``{layer class name: Handler}``."""

    def __init__(self, frontend: str):
        self.frontend = frontend
        self._by_class: dict[str, Handler] = {}

    def register(self, cls):
        """Class decorator: instantiate a :class:`Handler` subclass and register it under its ``classes``."""
        h = cls()
        for name in cls.classes:
            self._by_class[name] = h
        return cls

    def get(self, class_name: str) -> Handler | None:
        return self._by_class.get(class_name)

    @property
    def supported(self) -> list[str]:
        return list(self._by_class)

    def check(self, layers, where_of, class_of) -> list[str]:
        """Every problem of every layer, unsupported classes included."""
        p = []
        for L in layers:
            where = where_of(L)
            h = self.get(class_of(L))
            if h is None:
                p.append(f"{where}: layer type not supported; supported: {', '.join(self.supported)}")
                continue
            p.extend(h.check(L, where))
        return p
