"""fabformer.boards: board definitions, the UART shell and the build flows.

``build(graph, "ulx3s-85f", out)`` fits the graph's parallelism to the board,
wraps the model in the UART shell, runs the open flow (or writes the Vivado
plan for Xilinx boards) and returns the report; see :mod:`.build`.
"""
from .platforms import BOARDS, PART_DEVICES, PartTarget, get_board, get_target

__all__ = ["BOARDS", "PART_DEVICES", "PartTarget", "get_board", "get_target", "build"]


def build(graph, board, out, **kw):
    from .build import build as _build
    return _build(graph, board, out, **kw)
